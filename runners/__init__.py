"""``tl-advise --run``: train the recommended strategy for real and check the measurement against the advice.

``run_advice(session, RunOptions(output_dir=...))`` trains, measures and writes ``metrics.json``,
``report.md``, ``learning_curves.png`` and one best model per strategy; ``predict`` / ``predict_images``
reload a model and classify new images.
The names are loaded on first use, so that validating ``RunOptions`` does not import torch (and no
submodule shares a name with them: importing it would replace the name with the module).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tl_advise.runners.api import run_advice
    from tl_advise.runners.options import RunOptions
    from tl_advise.runners.trained_model import load_trained_model, predict, predict_images

_EXPORTS = {
    "run_advice": "tl_advise.runners.api",
    "RunOptions": "tl_advise.runners.options",
    "load_trained_model": "tl_advise.runners.trained_model",
    "predict": "tl_advise.runners.trained_model",
    "predict_images": "tl_advise.runners.trained_model",
}

__all__ = ["RunOptions", "load_trained_model", "predict", "predict_images", "run_advice"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tl_advise.runners' has no attribute {name!r}")
