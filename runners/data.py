"""Which images train, validate and test, and how they are decoded and augmented.

Validation is the dataset's own ``val`` split when it has one; otherwise a seeded, stratified
hold-out in which byte-identical files always land on the same side (a duplicate on both sides
would measure memory, not generalisation).
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from tl_advise.advisor.data.images.sampling import stratified_sample
from tl_advise.advisor.data.images.scan import DatasetScan, ImageRecord, display_name
from tl_advise.advisor.measure.images.imaging import interpolation_mode, open_rgb
from tl_advise.schema.errors import DatasetError
from tl_advise.schema.formatting import counted
from tl_advise.schema.models import Augmentation, DuplicateGroup, Preprocessing

logger = logging.getLogger(__name__)


@dataclass
class Splits:
    train: list[ImageRecord]
    val: list[ImageRecord]
    test: list[ImageRecord]
    validation: str  # how val was made, for the report


# --------------------------------------------------------------------------- splits


def duplicate_groups(records: Sequence[ImageRecord], root: Path,
                     duplicates: Sequence[DuplicateGroup]) -> list[list[ImageRecord]]:
    """``records`` grouped so that byte-identical files share a group; singletons otherwise."""
    group_of: dict[str, int] = {}
    for i, group in enumerate(duplicates):
        for path in group.paths:
            group_of[path] = i
    groups: dict[object, list[ImageRecord]] = {}
    for record in records:
        rel = display_name(record.path, root)
        key: object = ("dup", group_of[rel]) if rel in group_of else ("file", rel)
        groups.setdefault(key, []).append(record)
    return list(groups.values())


def stratified_holdout(records: Sequence[ImageRecord], root: Path, duplicates: Sequence[DuplicateGroup],
                       *, fraction: float, seed: int) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """(train, val): about ``fraction`` of every class in val, duplicates kept together, seeded."""
    by_class: dict[str, list[list[ImageRecord]]] = defaultdict(list)
    for group in duplicate_groups(records, root, duplicates):
        by_class[group[0].class_name].append(group)
    rng = random.Random(seed)
    val_paths: set[Path] = set()
    for name in sorted(by_class):
        groups = sorted(by_class[name], key=lambda g: min(r.path for r in g))
        rng.shuffle(groups)
        n_images = sum(len(g) for g in groups)
        # At least one validation image per class when the class can spare one.
        wanted = max(1, round(fraction * n_images)) if len(groups) > 1 else 0
        taken = 0
        for group in groups:
            if taken >= wanted:
                break
            val_paths.update(r.path for r in group)
            taken += len(group)
    train = [r for r in records if r.path not in val_paths]
    val = [r for r in records if r.path in val_paths]
    return train, val


def subsample_per_class(records: Sequence[ImageRecord], cap: int | None, seed: int) -> list[ImageRecord]:
    """At most ``cap`` images per class, chosen with a seeded RNG; order as in ``records``."""
    return stratified_sample(records, per_class=cap, total=None, seed=seed)


def make_splits(scan: DatasetScan, *, val_fraction: float, seed: int,
                max_train_per_class: int | None = None) -> Splits:
    splits = {r.split for r in scan.records}
    test = scan.split_records("test") if "test" in splits else []
    if "val" in splits:
        train = scan.split_records("train")
        val = scan.split_records("val")
        validation = "the dataset's val/ split"
    else:
        pool = scan.split_records("train") if "train" in splits else scan.split_records("all")
        train, val = stratified_holdout(pool, scan.root, scan.summary.duplicates, fraction=val_fraction,
                                        seed=seed)
        validation = (f"seeded stratified {val_fraction:.0%} hold-out (seed {seed}), "
                      "duplicates kept together")
    if not train:
        raise DatasetError(f"{scan.root} has no training images (expected train/ or class folders)")
    if not val:
        raise DatasetError(f"{scan.root}: no validation images; every class needs at least 2 distinct images")
    if max_train_per_class is not None:
        train = subsample_per_class(train, max_train_per_class, seed)
        validation += f"; training subsampled to at most {counted(max_train_per_class, 'image')} per class"
    return Splits(train=train, val=val, test=test, validation=validation)


# --------------------------------------------------------------------------- transforms


def resized(pre: Preprocessing, image_size: int) -> Preprocessing:
    """The backbone's preprocessing at another input size (same crop ratio, interpolation, normalisation)."""
    return pre if image_size == pre.input_size else pre.model_copy(update={"input_size": image_size})


def eval_transform(pre: Preprocessing) -> T.Compose:
    return T.Compose([
        T.Resize(pre.resize_size, interpolation=interpolation_mode(pre)),
        T.CenterCrop(pre.input_size),
        T.ToTensor(),
        T.Normalize(pre.mean, pre.std),
    ])


def train_transform(pre: Preprocessing, augmentation: Augmentation) -> T.Compose:
    """The recipe's per-image augmentation as torchvision transforms, in a fixed order: sizing, geometric,
    photometric, then tensor and normalisation.

    Without a crop scale the image is resized and centre-cropped as for evaluation. No flip is added unless
    the recipe asks (a flip can change the label of text, digits or oriented scans). Batch mixing (mixup,
    cutmix) is not a per-image transform: ``runners.mixing`` applies it to each batch.
    """
    interp = interpolation_mode(pre)
    sizing: list[torch.nn.Module] = (
        [T.RandomResizedCrop(pre.input_size, scale=augmentation.crop_scale, interpolation=interp)]
        if augmentation.crop_scale is not None
        else [T.Resize(pre.resize_size, interpolation=interp), T.CenterCrop(pre.input_size)]
    )
    geometric: list[torch.nn.Module] = []
    if augmentation.hflip:
        geometric.append(T.RandomHorizontalFlip())
    if augmentation.vflip:
        geometric.append(T.RandomVerticalFlip())
    if augmentation.rotation_degrees:
        geometric.append(T.RandomRotation(augmentation.rotation_degrees, interpolation=T.InterpolationMode.BILINEAR))
    photometric: list[torch.nn.Module] = []
    if augmentation.color_jitter:
        s = augmentation.color_jitter
        photometric.append(T.ColorJitter(brightness=s, contrast=s, saturation=s))
    if augmentation.rand_augment is not None:
        photometric.append(T.RandAugment(num_ops=augmentation.rand_augment.ops,
                                         magnitude=augmentation.rand_augment.magnitude,
                                         interpolation=T.InterpolationMode.BILINEAR))
    return T.Compose([*sizing, *geometric, *photometric, T.ToTensor(), T.Normalize(pre.mean, pre.std)])


# --------------------------------------------------------------------------- datasets and loaders


class ImageRecordDataset(Dataset[tuple[torch.Tensor, int]]):
    """Decodes records to RGB (JPEG draft decoding for speed) and applies ``transform``."""

    def __init__(self, records: Sequence[ImageRecord], transform: T.Compose, draft_size: int) -> None:
        self.records = list(records)
        self.transform = transform
        self.draft_size = draft_size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        record = self.records[index]
        image = open_rgb(str(record.path), draft_size=self.draft_size)
        return self.transform(image), record.label


def seed_worker(worker_id: int) -> None:
    """DataLoader workers: seed numpy and random from the worker's torch seed (set by the generator)."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """One generator per epoch, so shuffling and augmentation depend on (seed, epoch) only: a resumed
    run sees exactly the batches an uninterrupted one would have seen."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def make_loader(dataset: Dataset[tuple[torch.Tensor, int]], *, batch_size: int, shuffle: bool,
                num_workers: int, generator: torch.Generator | None = None, pin_memory: bool = False,
                ) -> DataLoader[tuple[torch.Tensor, int]]:
    n = len(dataset)  # type: ignore[arg-type]
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
        num_workers=num_workers if n > batch_size else 0, worker_init_fn=seed_worker,
        pin_memory=pin_memory, persistent_workers=False,
        # A last batch of one cannot train batch norm; dropping it is harmless when shuffling.
        drop_last=shuffle and n % batch_size == 1,
    )
