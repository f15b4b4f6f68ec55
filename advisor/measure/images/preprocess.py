"""A decoded image → the network's input and the raw-pixel baseline, with PIL and numpy alone.

``network_input`` is torchvision's eval transform (``Resize`` of the shorter side on the PIL image,
``CenterCrop``, ``ToTensor``, ``Normalize``) written out step for step, so that both inference engines
see bit-identical inputs without importing torch (``tests/test_preprocess.py`` holds the equality).
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from tl_advise.advisor.data.images.decode import open_rgb
from tl_advise.schema.models import Preprocessing

PIXEL_BASELINE_SIZE = 32  # raw-pixel baseline: 32×32 greyscale (similarity notes, point 5)
PIXELS = PIXEL_BASELINE_SIZE * PIXEL_BASELINE_SIZE

RESAMPLING = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


def pixel_baseline(img: Image.Image) -> np.ndarray:
    """The cheap label-aware baseline: the image as 32×32 greyscale pixels, flattened (uint8)."""
    small = img.convert("L").resize((PIXEL_BASELINE_SIZE, PIXEL_BASELINE_SIZE), Image.Resampling.BILINEAR)
    return np.array(small, dtype=np.uint8).reshape(-1)


def _resize_shorter_side(img: Image.Image, size: int, resample: Image.Resampling) -> Image.Image:
    width, height = img.size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)  # torchvision truncates the long side
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    if (new_w, new_h) == (width, height):
        return img
    return img.resize((new_w, new_h), resample)


def _center_crop(img: Image.Image, size: int) -> Image.Image:
    width, height = img.size
    if width < size or height < size:  # torchvision pads with zeros first, evenly (the extra pixel right/below)
        padded = Image.new(img.mode, (max(width, size), max(height, size)))
        padded.paste(img, ((max(size - width, 0)) // 2, (max(size - height, 0)) // 2))
        img, (width, height) = padded, padded.size
    top = round((height - size) / 2.0)
    left = round((width - size) / 2.0)
    return img.crop((left, top, left + size, top + size))


@functools.lru_cache(maxsize=8)
def _normalising_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(3, 256): every 8-bit value's normalised float32, computed as ToTensor + Normalize compute it
    ((v / 255 − mean) / std in float32), so a lookup gives the same bits in about half the time."""
    scaled = np.arange(256, dtype=np.float32) / np.float32(255)
    return np.stack([(scaled - np.float32(m)) / np.float32(s) for m, s in zip(mean, std, strict=True)])


def normalised(cropped: Image.Image, pre: Preprocessing) -> np.ndarray:
    """A cropped RGB image as normalised float32, channels first."""
    pixels = np.asarray(cropped, dtype=np.uint8)
    table = _normalising_table(tuple(pre.mean), tuple(pre.std))
    return np.stack([table[c][pixels[..., c]] for c in range(3)])


def network_input(img: Image.Image, pre: Preprocessing) -> np.ndarray:
    """``img`` (RGB) as the backbone's float32 input, channels first (3, input_size, input_size)."""
    cropped = _center_crop(_resize_shorter_side(img, pre.resize_size, RESAMPLING[pre.interpolation]),
                           pre.input_size)
    return normalised(cropped, pre)


def load_for_network(path: str, pre: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``path`` (JPEG at reduced scale where it is larger than needed): network input, pixel baseline."""
    img = open_rgb(path, draft_size=pre.resize_size)
    return network_input(img, pre), pixel_baseline(img)
