"""Decoding images the way every backbone expects them: RGB, 8-bit, the backbone's own preprocessing."""

from __future__ import annotations

import numpy as np
from PIL import Image
from torchvision import transforms as T

from tl_advise.advisor.decode import open_rgb, to_rgb  # re-exported: decoding lives where torch is not needed
from tl_advise.schema.models import Preprocessing

PIXEL_BASELINE_SIZE = 32  # raw-pixel baseline: 32×32 greyscale (similarity notes, point 5)

_INTERPOLATION = {
    "bicubic": T.InterpolationMode.BICUBIC,
    "bilinear": T.InterpolationMode.BILINEAR,
    "nearest": T.InterpolationMode.NEAREST,
}

__all__ = ["PIXEL_BASELINE_SIZE", "eval_transform", "interpolation_mode", "open_rgb", "pixel_baseline", "to_rgb"]


def eval_transform(pre: Preprocessing) -> T.Compose:
    """Resize the shorter side to input/crop_pct, centre-crop to input size, normalise."""
    return T.Compose([
        T.Resize(pre.resize_size, interpolation=_INTERPOLATION[pre.interpolation]),
        T.CenterCrop(pre.input_size),
        T.ToTensor(),
        T.Normalize(pre.mean, pre.std),
    ])


def pixel_baseline(img: Image.Image) -> np.ndarray:
    """The cheap label-aware baseline: the image as 32×32 greyscale pixels, flattened (uint8)."""
    small = img.convert("L").resize((PIXEL_BASELINE_SIZE, PIXEL_BASELINE_SIZE), Image.Resampling.BILINEAR)
    return np.array(small, dtype=np.uint8).reshape(-1)


def interpolation_mode(pre: Preprocessing) -> T.InterpolationMode:
    return _INTERPOLATION[pre.interpolation]
