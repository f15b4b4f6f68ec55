"""``tl-advise --run``: train the recommended strategy for real and check the measurement against the advice.

``run_advice(session, RunOptions(output_dir=...))`` trains, measures and writes ``metrics.json``,
``report.md``, ``learning_curves.png`` and one best model per strategy; ``predict`` / ``predict_images``
reload a model and classify new images; ``blocks`` (``from tl_advise.runners import blocks``) gives the
recipe as parts for a training loop of your own (docs/building-blocks.md). Importing this package imports
torch; ``RunOptions`` itself lives in ``tl_advise.schema.run_options``, so validating options does not.
"""

from tl_advise.runners.api import run_advice
from tl_advise.runners.trained_model import load_trained_model, predict, predict_images
from tl_advise.schema.run_options import RunOptions

__all__ = ["RunOptions", "load_trained_model", "predict", "predict_images", "run_advice"]
