"""The ranking's sample decoded once and shared by every candidate backbone.

``SharedDecoder.load`` has ``load_for_network``'s contract and gives the same bits: each candidate's
network input is made with its own preprocessing (resize, crop, normalisation) from one decoded image. A
JPEG decodes at a reduced scale where it is much larger than the candidate's resize size (``open_rgb``'s
draft), so the decoded image is keyed by the size it decodes to for that candidate, read from the header:
candidates whose drafts give the same size share one decode, the others decode their own. Decoded images
are kept up to ``max_bytes`` (8-bit RGB); past it an image is decoded again for each candidate.
"""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image

from tl_advise.advisor.data.images.decode import open_rgb
from tl_advise.advisor.measure.images.preprocess import network_input, pixel_baseline
from tl_advise.schema.models import Preprocessing

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAX_BYTES", "SharedDecoder", "decoded_size"]

# A 128-image sample of 500×375 photos holds 72 MB; photos JPEG-drafted near 300 px about as much.
DEFAULT_MAX_BYTES = 512 * 1024 * 1024


def decoded_size(path: str, draft_size: int) -> tuple[int, int]:
    """The size ``open_rgb(path, draft_size)`` decodes to (before EXIF rotation), from the header alone."""
    with Image.open(path) as img:
        if img.format == "JPEG":
            img.draft("RGB", (draft_size, draft_size))
        return img.size


class SharedDecoder:
    """Decoded images of one sample, shared by the candidates (one thread: PyTorch's loader without workers)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._images: dict[tuple[str, tuple[int, int]], tuple[Image.Image, np.ndarray]] = {}
        self._bytes = 0
        self.decodes = 0
        self.reuses = 0

    def image(self, path: str, draft_size: int) -> tuple[Image.Image, np.ndarray]:
        """The decoded RGB image and its pixel baseline, as ``open_rgb(path, draft_size)`` gives them."""
        key = (path, decoded_size(path, draft_size))
        found = self._images.get(key)
        if found is not None:
            self.reuses += 1
            return found
        img = open_rgb(path, draft_size=draft_size)
        decoded = (img, pixel_baseline(img))
        self.decodes += 1
        size = img.width * img.height * 3
        if self._bytes + size <= self.max_bytes:
            self._images[key] = decoded
            self._bytes += size
        return decoded

    def load(self, path: str, pre: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
        """``load_for_network(path, pre)`` from the shared decode: the network input and the pixel baseline."""
        img, pixels = self.image(path, pre.resize_size)
        return network_input(img, pre), pixels
