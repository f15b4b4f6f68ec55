"""Where the images of a dataset folder are: the two layouts, their split folders and class folders.

    root/<class>/<images>                      flat: one split, "all"
    root/{train,val,test}/<class>/<images>     splits ("valid" and "validation" read as "val")

Only folders are looked at here; the files inside the class folders are the scan's (``advisor/data/images/scan.py``).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from PIL import Image

from tl_advise.schema.errors import DatasetError

logger = logging.getLogger(__name__)

EXPECTED_LAYOUT = "expected root/<class>/<images> or root/{train,val,test}/<class>/<images>"

FLAT_SPLIT = "all"
SPLIT_ALIASES: dict[str, str] = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}
SPLIT_ORDER: tuple[str, ...] = ("train", "val", "test")

# Junk that file managers and notebooks leave behind; names starting with "." are hidden too.
IGNORED_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})


@dataclass(frozen=True)
class ClassDir:
    split: str
    class_name: str
    folder: Path


def check_root(root: str | Path) -> Path:
    # abspath, not resolve(): keep the user's spelling of symlinked folders in the output.
    path = Path(os.path.abspath(Path(root).expanduser()))
    if not path.exists():
        raise DatasetError(f"dataset folder {path} does not exist; {EXPECTED_LAYOUT}")
    if not path.is_dir():
        raise DatasetError(f"{path} is a file, not a folder or a label manifest (.csv, .tsv, .jsonl, .parquet); "
                           f"{EXPECTED_LAYOUT}")
    return path


def is_ignored(name: str) -> bool:
    return name.startswith(".") or name in IGNORED_NAMES


def _visible_entries(folder: Path) -> tuple[list[Path], list[Path]]:
    """(sub-folders, files) of ``folder``, hidden ones left out, sorted by name."""
    try:
        entries = sorted(p for p in folder.iterdir() if not is_ignored(p.name))
    except OSError as exc:
        raise DatasetError(f"cannot list {folder}: {exc.strerror or exc}") from exc
    dirs = [p for p in entries if p.is_dir()]
    files = [p for p in entries if not p.is_dir()]
    return dirs, files


def find_containers(root: Path) -> tuple[Literal["flat", "splits"], list[tuple[str, Path]]]:
    """The folders that hold class folders, each with its split name."""
    dirs, _ = _visible_entries(root)
    split_dirs = [d for d in dirs if d.name.lower() in SPLIT_ALIASES]
    if not split_dirs:
        return "flat", [(FLAT_SPLIT, root)]
    others = [d.name for d in dirs if d not in split_dirs]
    if others:
        logger.warning(
            "%s has split folders (%s); ignoring the other top-level folders: %s",
            root, ", ".join(d.name for d in split_dirs), ", ".join(others),
        )
    containers = [(SPLIT_ALIASES[d.name.lower()], d) for d in split_dirs]
    seen = Counter(split for split, _ in containers)
    for split, n in seen.items():
        if n > 1:
            logger.warning("%s has %d folders for the split %r; their images are merged", root, n, split)
    containers.sort(key=lambda sc: (SPLIT_ORDER.index(sc[0]), sc[1].name))
    return "splits", containers


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in Image.registered_extensions()


def find_class_dirs(root: Path, containers: Sequence[tuple[str, Path]]) -> list[ClassDir]:
    class_dirs: list[ClassDir] = []
    saw_files = False
    for split, container in containers:
        dirs, files = _visible_entries(container)
        loose_images = [f for f in files if _is_image_name(f)]
        where = "the root" if container == root else f"split folder {container.name}/"
        saw_files = saw_files or bool(files)
        if files:
            logger.debug("ignoring %d loose files in %s: %s", len(files), where, [f.name for f in files])
        if loose_images and not dirs:
            if container == root:
                raise DatasetError(
                    f"{root} holds {len(loose_images)} image files but no class folders; "
                    f"{EXPECTED_LAYOUT} (one sub-folder per class)"
                )
            logger.warning(
                "%s holds %d unlabelled images and no class folders; they are ignored",
                where, len(loose_images),
            )
        class_dirs.extend(ClassDir(split, d.name, d) for d in dirs)
    if not class_dirs:
        found = "only loose files" if saw_files else "nothing"
        raise DatasetError(f"{root} holds no class folders (found {found}); {EXPECTED_LAYOUT}")
    return class_dirs


def split_names(layout: str, containers: Sequence[tuple[str, Path]]) -> list[str]:
    if layout == "flat":
        return [FLAT_SPLIT]
    return sorted({split for split, _ in containers}, key=SPLIT_ORDER.index)
