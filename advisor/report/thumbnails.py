"""A few small thumbnails per class for the HTML report, as inline ``data:`` URIs (the dataset is only read).

Picked seeded at random from the scan's readable images (the training split first, where there is one);
a file that fails to decode now is left out (the scan reports damaged files; this is only a picture).
"""

from __future__ import annotations

import base64
import io
import logging
import random
from collections import defaultdict
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from tl_advise.advisor.data.images.decode import open_rgb
from tl_advise.advisor.data.images.scan import DatasetScan, ImageRecord
from tl_advise.schema.models import printable

logger = logging.getLogger(__name__)

THUMBNAIL_PX = 96  # longer side
PER_CLASS = 6
MAX_THUMBNAILS = 300  # ~1 MB of page at most: many classes get fewer each, very many classes only the first
JPEG_QUALITY = 80


@dataclass(frozen=True)
class Thumbnail:
    path: str  # relative to the dataset root
    data_uri: str
    width: int
    height: int


def pick_records(scan: DatasetScan, per_class: int = PER_CLASS, seed: int = 0) -> dict[str, list[ImageRecord]]:
    """Class -> up to ``per_class`` records, seeded; the training split's images when the layout has splits."""
    by_class: dict[str, list[ImageRecord]] = defaultdict(list)
    preferred = scan.split_records(scan.train_split)
    for record in preferred or scan.records:
        by_class[record.class_name].append(record)
    for record in scan.records:  # a class with no training image still gets its picture
        if record.class_name not in by_class:
            by_class[record.class_name].append(record)
    rng = random.Random(seed)
    return {name: sorted(rng.sample(by_class[name], min(per_class, len(by_class[name]))), key=lambda r: r.path)
            for name in scan.classes if by_class.get(name)}


def thumbnail(record: ImageRecord, shown_path: str, size: int = THUMBNAIL_PX) -> Thumbnail | None:
    try:
        image = open_rgb(str(record.path), draft_size=size)
    except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        logger.debug("no thumbnail for %s (%s)", record.path, exc)
        return None
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    uri = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return Thumbnail(path=shown_path, data_uri=uri, width=image.width, height=image.height)


def _shown_path(record: ImageRecord, scan: DatasetScan) -> str:
    """The path as the page shows it: relative to the root, escaped like every name in the results."""
    try:
        shown = record.path.relative_to(scan.root).as_posix()
    except ValueError:  # an image outside the root (e.g. listed by a manifest)
        shown = record.path.name
    return printable(shown)


def class_thumbnails(scan: DatasetScan, per_class: int = PER_CLASS, seed: int = 0,
                     size: int = THUMBNAIL_PX) -> dict[str, list[Thumbnail]]:
    """Class -> its thumbnails, in class order; at most ``MAX_THUMBNAILS`` in all."""
    per_class = max(1, min(per_class, MAX_THUMBNAILS // max(len(scan.classes), 1)))
    out: dict[str, list[Thumbnail]] = {}
    picked = pick_records(scan, per_class, seed)
    for name in list(picked)[:MAX_THUMBNAILS // per_class]:
        thumbs = [thumbnail(r, _shown_path(r, scan), size) for r in picked[name]]
        out[printable(name)] = [t for t in thumbs if t is not None]
    return out
