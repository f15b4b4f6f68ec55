"""EXIF orientation: images are read as a viewer shows them (the scan's sizes, embedding, training and
prediction alike). Torch-free, so that the scan can use it."""

from __future__ import annotations

from PIL import Image, ImageOps

EXIF_ORIENTATION = 0x0112
# EXIF orientations 5-8 turn the image by 90°: the stored width is the displayed height.
QUARTER_TURNS = frozenset({5, 6, 7, 8})


def exif_orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # a malformed EXIF block: show the pixels as stored, like a viewer that ignores it
        return 1


def upright(img: Image.Image) -> Image.Image:
    """The image as a viewer shows it: a phone photo stored sideways with an EXIF orientation is turned."""
    if exif_orientation(img) == 1:
        return img
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # a malformed EXIF block
        return img
