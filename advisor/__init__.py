"""tl-advise: measured transfer-learning advice for image classifiers.

>>> from tl_advise.advisor import advise
>>> result = advise("path/to/images")          # doctest: +SKIP
>>> result.recommendation.strategy             # doctest: +SKIP
'feature_extraction'

The advisor measures (scan, sample, embed, similarity) and advises through the rules; it sits above
``tl_advise.schema`` and ``tl_advise.rules`` and below the runners and the command line.
"""

from tl_advise.advisor.api import AdviceSession, advise, advise_session
from tl_advise.schema.errors import TLAdviseError
from tl_advise.schema.models import SCHEMA_VERSION, AdviceResult

__all__ = ["SCHEMA_VERSION", "AdviceResult", "AdviceSession", "TLAdviseError", "advise", "advise_session"]
