"""Reading a text-classification dataset and scanning it. Imports neither torch nor transformers; the text
backbone and its signals are in ``advisor.measure.text`` (``from tl_advise.advisor.measure.text.backbone import
load_text_backbone``).
"""

from tl_advise.advisor.data.text.reading import TextDataset, TextExample, TextReadOptions, read_text_dataset
from tl_advise.advisor.data.text.scan import scan_texts

__all__ = ["TextDataset", "TextExample", "TextReadOptions", "read_text_dataset", "scan_texts"]
