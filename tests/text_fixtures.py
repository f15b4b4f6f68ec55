"""A tiny synthetic text backbone (a 3-layer, 16-wide BERT with random weights and a word-level fast tokenizer)
and tiny synthetic text sets: what the text runner tests train on in seconds, with no download."""

from __future__ import annotations

import random
from pathlib import Path

from tl_advise.advisor.data.text.reading import TextDataset, TextExample
from tl_advise.advisor.measure.text.backbone import TextBackbone
from tl_advise.schema.text import TextBackboneInfo, TextSource

POSITIVE = ["good", "great", "fine", "lovely", "superb", "happy", "bright", "warm"]
NEGATIVE = ["bad", "awful", "poor", "dull", "sad", "grim", "cold", "weak"]
SHARED = ["the", "film", "was", "a", "very", "plot", "and", "it", "really", "show"]
TINY_LAYERS = 3


def tiny_backbone(max_length: int = 64) -> TextBackbone:
    import torch
    import transformers
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    words = sorted({*POSITIVE, *NEGATIVE, *SHARED})
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, **{w: i + 4 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                                     cls_token="[CLS]", sep_token="[SEP]",
                                                     model_max_length=max_length)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=TINY_LAYERS,
                                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=max_length)
    model = transformers.BertModel(config).eval()
    info = TextBackboneInfo(name="tiny-bert", weights="random (tests)", source="folder", architecture="bert",
                            hidden_size=16, n_layers=TINY_LAYERS, max_length=max_length, normalize=True,
                            lowercase=True)
    return TextBackbone(info=info, tokenizer=tokenizer, model=model)


def sentence(rng: random.Random, label: str) -> str:
    own = POSITIVE if label == "positive" else NEGATIVE
    words = [rng.choice(SHARED) for _ in range(rng.randint(3, 6))] + [rng.choice(own) for _ in range(2)]
    rng.shuffle(words)
    return " ".join(words)


def tiny_dataset(root: Path, *, train: int = 20, val: int | None = 6, test: int | None = 8,
                 seed: int = 0) -> TextDataset:
    """Two classes of short synthetic sentences; ``train``/``val``/``test`` texts per class (None: no such split).
    Distinct texts (a duplicate would only add a scan finding)."""
    rng = random.Random(seed)
    seen: set[str] = set()
    examples: list[TextExample] = []
    for split, n in (("train", train), ("val", val), ("test", test)):
        for label in ("negative", "positive"):
            made = 0
            while n is not None and made < n:
                text = sentence(rng, label)
                if text in seen:
                    continue
                seen.add(text)
                examples.append(TextExample(text=text, label=label, split=split, where=f"{split} {made}"))
                made += 1
    root.mkdir(parents=True, exist_ok=True)
    return TextDataset(source=TextSource(kind="manifest", root=str(root), files=[]), examples=examples)
