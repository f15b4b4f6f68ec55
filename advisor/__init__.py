"""tl-advise: measured transfer-learning advice for image classifiers.

>>> from tl_advise.advisor import advise
>>> result = advise("path/to/images")          # doctest: +SKIP
>>> result.recommendation.strategy             # doctest: +SKIP
'feature_extraction'
"""

from tl_advise.advisor.api import AdviceSession, advise, advise_session
from tl_advise.advisor.errors import TLAdviseError
from tl_advise.advisor.models import SCHEMA_VERSION, AdviceResult

__all__ = ["SCHEMA_VERSION", "AdviceResult", "AdviceSession", "TLAdviseError", "advise", "advise_session"]
