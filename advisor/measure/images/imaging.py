"""Decoding images the way every backbone expects them: RGB, 8-bit, the backbone's own preprocessing."""

from __future__ import annotations

from torchvision import transforms as T

from tl_advise.advisor.data.images.decode import (  # re-exported: decoding lives where torch is not needed
    open_rgb,
    to_rgb,
)
from tl_advise.advisor.measure.images.preprocess import PIXEL_BASELINE_SIZE, pixel_baseline
from tl_advise.schema.models import Preprocessing

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


def interpolation_mode(pre: Preprocessing) -> T.InterpolationMode:
    return _INTERPOLATION[pre.interpolation]
