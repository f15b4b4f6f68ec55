"""The text modality: reading a text-classification dataset, scanning it, a text backbone and the signals of
how far the texts sit from the backbone's source domain.

Reading and scanning import neither torch nor transformers; ``backbone`` and ``similarity`` do (import them
by name: ``from tl_advise.advisor.text.backbone import load_text_backbone``).
"""

from tl_advise.advisor.text.reading import TextDataset, TextExample, TextReadOptions, read_text_dataset
from tl_advise.advisor.text.scan import scan_texts

__all__ = ["TextDataset", "TextExample", "TextReadOptions", "read_text_dataset", "scan_texts"]
