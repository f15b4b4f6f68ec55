"""The texts a text run trains, validates and is tested on (``make_text_splits``): the dataset's own splits, or a
seeded, stratified share held out of train. The building blocks (``runners.text.blocks``) hand a user the same
split, so their loop trains on the texts ``--run`` trains on."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from tl_advise.advisor.data.text.reading import TextDataset, TextExample
from tl_advise.schema.errors import DatasetError


@dataclass(frozen=True)
class TextSplit:
    texts: list[str]
    labels: list[int]  # class indices

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class TextSplits:
    train: TextSplit
    val: TextSplit
    test: TextSplit | None
    classes: list[str]
    validation: str  # how the validation split was made


def _stratified_take(indices_by_class: dict[str, list[int]], share: float, rng: random.Random,
                     minimum: int = 1) -> set[int]:
    taken: set[int] = set()
    for members in indices_by_class.values():
        if len(members) < 2:
            continue
        k = min(len(members) - 1, max(minimum, round(share * len(members))))
        taken.update(rng.sample(members, k))
    return taken


def make_text_splits(dataset: TextDataset, *, val_fraction: float = 0.2, seed: int = 0,
                     max_train_per_class: int | None = None) -> TextSplits:
    """Train, validation and test texts (class indices in ``dataset.classes`` order). The dataset's own val
    split validates when it has one; else a seeded, stratified ``val_fraction`` of the training split is held
    out. ``max_train_per_class``: a seeded subsample of the training texts, the same share per class."""
    classes = dataset.classes
    index = {c: i for i, c in enumerate(classes)}
    rng = random.Random(seed)
    train = dataset.subset(dataset.train_split)
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(train):
        by_class[e.label].append(i)
    if max_train_per_class is not None:
        by_class = {c: sorted(rng.sample(m, min(len(m), max_train_per_class))) for c, m in by_class.items()}
    keep = sorted(i for m in by_class.values() for i in m)
    if "val" in dataset.splits and dataset.train_split != "val":
        val_rows = dataset.subset("val")
        validation = f"the dataset's val split ({len(val_rows)} texts)"
        held: set[int] = set()
    else:
        held = _stratified_take(by_class, val_fraction, rng)
        val_rows = [train[i] for i in sorted(held)]
        validation = f"{len(held)} texts held out of {dataset.train_split} ({val_fraction:.0%} per class, seed {seed})"
    train_rows = [train[i] for i in keep if i not in held]
    test_rows = dataset.subset("test") if "test" in dataset.splits and dataset.train_split != "test" else []

    def split(rows: Sequence[TextExample]) -> TextSplit:
        return TextSplit(texts=[r.text for r in rows], labels=[index[r.label] for r in rows])

    splits = TextSplits(train=split(train_rows), val=split(val_rows), test=split(test_rows) if test_rows else None,
                        classes=classes, validation=validation)
    if len({*splits.train.labels}) < 2 or len(splits.val) == 0:
        raise DatasetError(f"{dataset.source.root}: too few texts to train and validate (train {len(splits.train)}, "
                           f"val {len(splits.val)}, over {len({*splits.train.labels})} classes): without a validation "
                           f"split, {val_fraction:.0%} of each class's training texts is held out, so give every "
                           "class at least 2 training texts (far more to learn anything), or add a validation split")
    return splits
