"""Training the text strategies from their recipes (``runners.text.strategies``) and judging the text advice
(``run_text_advice``)."""

from tl_advise.runners.text.api import make_text_splits, run_text_advice

__all__ = ["make_text_splits", "run_text_advice"]
