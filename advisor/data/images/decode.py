"""Decoding any image file to 8-bit RGB with PIL alone (no torch), for the backbones and the HTML report."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tl_advise.advisor.data.images.exif import upright

_HIGH_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode → 8-bit RGB: 16-bit scaled (not clipped), alpha composited on white, CMYK converted."""
    if img.mode in _HIGH_BIT_MODES:
        arr = np.asarray(img, dtype=np.float32)
        # 16-bit data uses the full 0..65535 range; a float or 32-bit image is scaled by its own maximum.
        full_scale = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max(initial=0.0)), 255.0)
        img = Image.fromarray(np.clip(arr * (255.0 / full_scale), 0, 255).astype(np.uint8), mode="L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB") if img.mode != "RGB" else img


def open_rgb(path: str, draft_size: int | None = None) -> Image.Image:
    """Decode ``path`` to RGB. ``draft_size`` lets JPEG decode at a reduced scale (DCT scaling), which is
    several times faster for photos much larger than the network input; the result is never smaller
    than ``draft_size`` on its shorter side."""
    with Image.open(path) as img:
        if draft_size is not None and img.format == "JPEG":
            img.draft("RGB", (draft_size, draft_size))
        img.load()
        return to_rgb(upright(img))
