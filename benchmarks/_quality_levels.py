"""The advice-quality benchmark's datasets and cases: the dataset table (a person's label, training size),
the seeded level folders (at most N train images per class, a fixed validation split), and how cases are
named and ordered."""

from __future__ import annotations

import math
import os
import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


# A person's label (../shared/README.md) and the training image size: the native size rounded up to 64
# for the tiny-image sets (28 px X-rays, 25 px faces, 64 px satellite tiles), --image-size for photos,
# except where `train_px` sets it: flowers5's 4,000+ photos per case at 96 px took over 5 min per epoch
# on the shared 2-core machine, more than a working session per case; at 64 px a case fits in one.
# sign_digits (100 px, rounded up: 128 px) trains at 64 px too, a quarter of the pixels: a hand's outline
# on a plain background survives it, and its four levels x three seeds fit the grid's budget.
DATASETS: dict[str, dict[str, Any]] = {
    "hymenoptera": {"person": "close", "native_px": None},
    "flowers5_small": {"person": "close", "native_px": None},
    "lfw_faces_vs_nonfaces": {"person": "in between", "native_px": 25},
    "eurosat_small": {"person": "far", "native_px": 64},
    "pneumoniamnist": {"person": "far", "native_px": 28},
    # The size axis (../shared/README.md): close small band, far medium band, an in-between tiny set.
    "flowers5": {"person": "close", "native_px": None, "train_px": 64},
    "eurosat_medium": {"person": "far", "native_px": 64},
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


def build_level(src: Path, dest: Path, level: int | None, seed: int, val_fraction: float = 0.2) -> dict[str, int]:
    """A train/ + val/ (+ test/) folder of copies: at most ``level`` train images per class (None: all), seeded.

    Validation is the dataset's own val/ split when it has one; otherwise a seeded ``val_fraction`` hold-out
    per class made once, the same at every level. A test/ split is linked as it is (a test score).
    Returns the per-class train counts.
    """
    if dest.exists():
        shutil.rmtree(dest)
    rng = random.Random(seed)
    counts: dict[str, int] = {}
    train_root, val_root, test_root = split_layout(src)
    for cls in _classes(train_root):
        files = _images(cls)
        if val_root is not None:
            train, val = files, (_images(val_root / cls.name) if (val_root / cls.name).is_dir() else [])
        else:
            shuffled = files[:]
            rng.shuffle(shuffled)
            n_val = max(1, round(val_fraction * len(files)))
            val, train = sorted(shuffled[:n_val]), sorted(shuffled[n_val:])
        if level is not None and len(train) > level:
            train = sorted(random.Random(f"{seed}:{cls.name}:{level}").sample(train, level))
        _copy_all(train, dest / "train" / cls.name)
        _copy_all(val, dest / "val" / cls.name)
        if test_root is not None and (test_root / cls.name).is_dir():
            _copy_all(_images(test_root / cls.name), dest / "test" / cls.name)
        counts[cls.name] = len(train)
    return counts


def levels_for(src: Path, wanted: Sequence[int], seed: int, full: bool = False) -> list[int | None]:
    """The wanted levels below the dataset's train size per class, then None (all) if a level reached it
    or ``full`` asks for the whole dataset."""
    train_root, val_root, _ = split_layout(src)
    per_class = [len(_images(c)) for c in _classes(train_root)]
    available = min(per_class) if val_root is not None else min(n - max(1, round(0.2 * n)) for n in per_class)
    levels: list[int | None] = [lv for lv in sorted(set(wanted)) if lv < available]
    if full or len(levels) < len(set(wanted)):
        levels.append(None)
    return levels


def level_name(level: int | None) -> str:
    return "full" if level is None else f"{level}/class"


def level_from_name(name: str) -> int | None:
    """The inverse of :func:`level_name`."""
    return None if name == "full" else int(name.split("/")[0])


def case_key(case: dict[str, Any]) -> tuple[str, str, int]:
    """A case is one dataset at one level with one seed (files written before seeds were a key: seed 0)."""
    return case["dataset"], case["level"], int(case.get("seed", 0))


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
