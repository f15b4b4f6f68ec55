"""Training the text strategies from their recipes (``runners.text.strategies``) and judging the text advice
(``run_text_advice``); ``blocks`` (``from tl_advise.runners.text import blocks``) gives a text recipe as parts for a
training loop of your own (docs/building-blocks.md), the parts the runner trains with."""

from tl_advise.runners.text.api import make_text_splits, run_text_advice

__all__ = ["make_text_splits", "run_text_advice"]
