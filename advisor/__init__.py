"""tl-advise: measured transfer-learning advice for image classifiers.

>>> from tl_advise.advisor import advise
>>> result = advise("path/to/images")          # doctest: +SKIP
>>> result.recommendation.strategy             # doctest: +SKIP
'feature_extraction'

The names below are loaded on first use: ``tl_advise.rules`` imports the advisor's models, and an eager
import of the API here would make ``import tl_advise.rules`` (before the advisor) circular.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tl_advise.advisor.api import AdviceSession, advise, advise_session
    from tl_advise.advisor.errors import TLAdviseError
    from tl_advise.advisor.models import SCHEMA_VERSION, AdviceResult

_EXPORTS = {
    "advise": "tl_advise.advisor.api",
    "advise_session": "tl_advise.advisor.api",
    "AdviceSession": "tl_advise.advisor.api",
    "TLAdviseError": "tl_advise.advisor.errors",
    "AdviceResult": "tl_advise.advisor.models",
    "SCHEMA_VERSION": "tl_advise.advisor.models",
}

__all__ = ["SCHEMA_VERSION", "AdviceResult", "AdviceSession", "TLAdviseError", "advise", "advise_session"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tl_advise.advisor' has no attribute {name!r}")
