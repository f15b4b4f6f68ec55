"""The advice-quality benchmark's datasets and cases: the dataset table (a person's label, training size),
the seeded level folders (at most N train images per class, a fixed validation split), and how cases are
named and ordered."""

from __future__ import annotations

import math
import os
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


# A person's label (../shared/README.md) and the training image size: the native size rounded up to 64
# for the tiny-image sets (28 px X-rays, 25 px faces, 64 px satellite tiles), --image-size for photos,
# except where `train_px` sets it: flowers5's 4,000+ photos per case at 96 px took over 5 min per epoch
# on the shared 2-core machine, more than a working session per case; at 64 px a case fits in one.
# sign_digits (100 px, rounded up: 128 px) trains at 64 px too, a quarter of the pixels: a hand's outline
# on a plain background survives it, and its four levels x three seeds fit the grid's budget.
# `source`: subsets of one source (../shared/README.md) are one dataset wherever datasets are left out or
# clustered: leaving out eurosat_medium while fitting on eurosat_small would hold nothing out.
DATASETS: dict[str, dict[str, Any]] = {
    "hymenoptera": {"person": "close", "native_px": None},
    "flowers5_small": {"person": "close", "native_px": None, "source": "flowers"},
    "lfw_faces_vs_nonfaces": {"person": "in between", "native_px": 25},
    "eurosat_small": {"person": "far", "native_px": 64, "source": "eurosat"},
    "pneumoniamnist": {"person": "far", "native_px": 28},
    # The size axis (../shared/README.md): close small band, far medium band, an in-between tiny set.
    "flowers5": {"person": "close", "native_px": None, "train_px": 64, "source": "flowers"},
    "eurosat_medium": {"person": "far", "native_px": 64, "source": "eurosat"},
    "sign_digits": {"person": "in between", "native_px": 100, "train_px": 64},
    # `tl-advise sample-data digits`: scikit-learn's 8x8 digits, not in ../shared (an out-of-sample case).
    "digits": {"person": "far", "native_px": 8},
}


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _classes(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir())


# The copies' modification time: fixed, so that a case's file identities (path, size, mtime) and with them
# the runners' checkpoint fingerprints survive a rebuild of the level folder — and a session whose shared
# data were re-created with new mtimes, which made symlinks (following them to the source) useless for
# resuming a case in the next session.
COPY_MTIME_NS = 1_700_000_000 * 10**9


def _copy_all(files: Sequence[Path], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        target = dest / f.name
        shutil.copyfile(f, target)
        os.utime(target, ns=(COPY_MTIME_NS, COPY_MTIME_NS))


def split_layout(src: Path) -> tuple[Path, Path | None, Path | None]:
    """(train root, val root or None, test root or None) of a dataset folder.

    ``train/`` + ``val/``: both used. ``train/`` without ``val/`` (e.g. ``train/`` + ``test/``): validation
    is held out from ``train/`` as the runners do, and ``test/`` is kept for a test score. No ``train/``:
    the folder itself holds the classes.
    """
    if not (src / "train").is_dir():
        return src, None, None
    val = next((src / n for n in ("val", "valid", "validation") if (src / n).is_dir()), None)
    test = src / "test" if (src / "test").is_dir() else None
    return src / "train", val, test


# Judging on held-out data (issue #23): the largest split a dataset has judges every strategy, and early
# stopping reads a smaller one held out of train. A dataset without a test/ split gets one carved out per
# seed (independent draws: a seed's test images are its own), capped so that the tiny levels keep a pool.
TEST_FRACTION, TEST_CAP = 0.4, 100  # carved test images per class: min(40 %, 100)
VAL_FRACTION, VAL_CAP = 0.2, 50  # early-stopping images per class held out of train: min(20 %, 50)


@dataclass(frozen=True)
class ClassSplit:
    """One class of a case: the train pool (levels subsample it), early-stopping and judging images."""

    pool: list[Path]
    val: list[Path]
    test: list[Path]
    test_is_source_split: bool  # the dataset's own split (the same images at every seed), else carved per seed


def _held_out(files: Sequence[Path], fraction: float, cap: int, rng: random.Random) -> tuple[list[Path], list[Path]]:
    """(held out, rest): a seeded min(fraction, cap) share of ``files``, at least one, never all."""
    shuffled = sorted(files)
    rng.shuffle(shuffled)
    n = min(cap, max(1, round(fraction * len(shuffled)))) if len(shuffled) > 1 else 0
    return sorted(shuffled[:n]), sorted(shuffled[n:])


def split_plan(src: Path, seed: int, judge: str = "test") -> dict[str, ClassSplit]:
    """Class name -> its split, seeded. ``judge="val"``: the layout of the grids before issue #23 (the
    dataset's val/, else a 20 % hold-out, judges; a test/ split is kept beside it but judges nothing).

    ``judge="test"``: the dataset's test/ judges; without one its val/ does, and early stopping reads a
    hold-out of train/; a dataset without splits has a test split carved out per seed.
    """
    rng = random.Random(seed)
    train_root, val_root, test_root = split_layout(src)
    plan = {}
    for cls in _classes(train_root):
        files = _images(cls)
        own_val = _images(val_root / cls.name) if val_root is not None and (val_root / cls.name).is_dir() else None
        own_test = _images(test_root / cls.name) if test_root is not None and (test_root / cls.name).is_dir() else None
        if judge == "val":
            val, pool = (own_val, files) if own_val is not None else _held_out(files, 0.2, len(files), rng)
            plan[cls.name] = ClassSplit(pool, val, own_test or [], True)
            continue
        source_split = own_test is not None or own_val is not None
        if own_test is not None:
            test, rest = own_test, files
        elif own_val is not None:
            test, rest = own_val, files
        else:
            test, rest = _held_out(files, TEST_FRACTION, TEST_CAP, rng)
        val, pool = (own_val, rest) if own_test is not None and own_val is not None else \
            _held_out(rest, VAL_FRACTION, VAL_CAP, rng)
        plan[cls.name] = ClassSplit(pool, val, test, source_split)
    return plan


def build_level(src: Path, dest: Path, level: int | None, seed: int, judge: str = "test") -> dict[str, int]:
    """A train/ + val/ + test/ folder of copies (:func:`split_plan`): at most ``level`` train images per class
    from the pool (None: all), seeded. Returns the per-class train counts."""
    if dest.exists():
        shutil.rmtree(dest)
    counts: dict[str, int] = {}
    for name, split in split_plan(src, seed, judge).items():
        train = split.pool
        if level is not None and len(train) > level:
            train = sorted(random.Random(f"{seed}:{name}:{level}").sample(train, level))
        _copy_all(train, dest / "train" / name)
        _copy_all(split.val, dest / "val" / name)
        if split.test:
            _copy_all(split.test, dest / "test" / name)
        counts[name] = len(train)
    return counts


def levels_for(src: Path, wanted: Sequence[int], seed: int, full: bool = False,
               judge: str = "test") -> list[int | None]:
    """The wanted levels below the dataset's train pool per class, then None (all) if a level reached it
    or ``full`` asks for the whole dataset."""
    available = min(len(s.pool) for s in split_plan(src, seed, judge).values())
    levels: list[int | None] = [lv for lv in sorted(set(wanted)) if lv < available]
    if full or len(levels) < len(set(wanted)):
        levels.append(None)
    return levels


def level_name(level: int | None) -> str:
    return "full" if level is None else f"{level}/class"


def level_from_name(name: str) -> int | None:
    """The inverse of :func:`level_name`."""
    return None if name == "full" else int(name.split("/")[0])


def case_key(case: dict[str, Any]) -> tuple[str, str, int, str | None]:
    """A case is one dataset at one level with one seed (files written before seeds were a key: seed 0), trained
    on one backbone: its ``--for`` target, None for the default backbone (every file from before ``--for``)."""
    return case["dataset"], case["level"], int(case.get("seed", 0)), case.get("target")


def case_order(case: dict[str, Any]) -> tuple[int, str, float, int]:
    """Datasets in DATASETS order (others after, by name), then levels from small to full, then seeds."""
    known = list(DATASETS)
    rank = known.index(case["dataset"]) if case["dataset"] in known else len(known)
    level = level_from_name(case["level"])
    return rank, case["dataset"], math.inf if level is None else float(level), case_key(case)[2]


def image_size_for(name: str, default: int) -> int:
    known = DATASETS.get(name, {})
    if known.get("train_px"):
        return min(default, known["train_px"])
    native = known.get("native_px")
    return min(default, 64) if native is not None and native <= 64 else default
