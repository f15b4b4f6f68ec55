"""Materialise a small sample dataset from data a dependency already ships (no network needed)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from tl_advise.schema.errors import ConfigError

logger = logging.getLogger(__name__)

SAMPLE_DATASETS = ("digits",)


def write_digits(target: Path, *, scale: int = 4) -> int:
    """scikit-learn's 1,797 handwritten digits as ``target/<digit>/<n>.png`` (8×8 upscaled ``scale``×)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    if target.exists() and any(target.iterdir()):
        if _holds_digits(target, len(digits.images)):
            logger.info("%s already holds the digits sample; nothing to do", target)
            return len(digits.images)
        raise ConfigError(f"{target} exists and is not empty; name a new folder for the sample data")
    for i, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        pixels = (np.asarray(image) * (255.0 / 16.0)).astype(np.uint8)
        img = Image.fromarray(pixels, mode="L").resize((8 * scale, 8 * scale), Image.Resampling.NEAREST)
        path = target / str(label) / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path)
    logger.info("wrote %d images in 10 classes to %s", len(digits.images), target)
    return len(digits.images)


def _holds_digits(target: Path, expected: int) -> bool:
    """Re-running the quick start must not fail: an earlier, complete copy is accepted as it is."""
    folders = sorted(p.name for p in target.iterdir())
    if folders != [str(d) for d in range(10)]:
        return False
    return sum(1 for _ in target.glob("*/*.png")) == expected
