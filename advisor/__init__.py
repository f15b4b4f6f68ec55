"""tl-advise: measured transfer-learning advice for image classifiers.

>>> from tl_advise.advisor import advise
>>> result = advise("path/to/images")          # doctest: +SKIP
>>> result.recommendation.strategy             # doctest: +SKIP
'feature_extraction'

The advisor measures (scan, sample, embed, similarity) and advises through the rules; it sits above
``tl_advise.schema`` and ``tl_advise.rules`` and below the runners and the command line. The names below are
imported when first used: reading a text dataset need not build the image advice.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tl_advise.advisor.api import AdviceSession, advise, advise_session
    from tl_advise.schema.errors import TLAdviseError
    from tl_advise.schema.models import SCHEMA_VERSION, AdviceResult

_WHERE = {"AdviceSession": "tl_advise.advisor.api", "advise": "tl_advise.advisor.api",
          "advise_session": "tl_advise.advisor.api", "TLAdviseError": "tl_advise.schema.errors",
          "SCHEMA_VERSION": "tl_advise.schema.models", "AdviceResult": "tl_advise.schema.models"}

__all__ = ["SCHEMA_VERSION", "AdviceResult", "AdviceSession", "TLAdviseError", "advise", "advise_session"]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
