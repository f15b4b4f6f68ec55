"""Images or texts? What a dataset path holds, decided from its layout before either reader runs.

A table is about images when a column is named like an image path or its first values are image files, and
about texts when a column is named like a text column; a folder, by the split tables it holds (train.csv, …)
or by the files in its class folders (.txt against image files). When both could be meant (split tables of
texts beside class folders of images, too) the error says how to choose (``--modality``).
"""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path
from typing import Literal

from PIL import Image

from tl_advise.advisor.data.images.layout import SPLIT_ORDER, is_ignored
from tl_advise.advisor.data.images.manifest import PATH_COLUMNS, SPLIT_VALUES, normalise
from tl_advise.advisor.data.text.reading import (
    EXPECTED_TEXT_LAYOUT,
    TABLE_SUFFIXES,
    TEXT_COLUMNS,
    TEXT_SUFFIXES,
    read_rows,
)
from tl_advise.schema.errors import DatasetError

Modality = Literal["image", "text"]
MODALITIES: tuple[str, ...] = ("auto", "image", "text")
_FILES_LOOKED_AT = 2000  # enough to tell .txt from image files in any sane layout, cheap on a million
_CLEAR_MAJORITY = 0.9
_EXTENSION = re.compile(r"\.[a-z0-9]{1,6}")


def detect_modality(data: str | Path, *, text_column: str | None = None, path_column: str | None = None) -> Modality:
    """``image`` or ``text`` for the dataset at ``data``; a column named on the command line decides first."""
    if text_column:
        return "text"
    if path_column:
        return "image"
    path = Path(data).expanduser()
    if path.is_file():
        if path.suffix.lower() in TABLE_SUFFIXES:
            return _table_modality(path)
        if _is_image_name(path.name):
            return "image"  # one image: the image reader explains the folder it expects
        raise _not_a_dataset_file(path)  # a lone .txt or a spreadsheet: either could be meant, name both
    if not path.exists() and path.suffix.lower() in TABLE_SUFFIXES:  # an image manifest or texts: name both
        raise DatasetError(f"{path} does not exist; expected for images root/<class>/<images>, "
                           f"root/{{train,val,test}}/<class>/<images> or a label manifest, for texts "
                           f"{EXPECTED_TEXT_LAYOUT.removeprefix('expected ')}")
    if not path.is_dir():
        return "image"  # a missing folder: the image reader names it, after the options are checked
    try:
        entries = sorted(p for p in path.iterdir() if not is_ignored(p.name))
    except OSError:
        return "image"
    split_tables = [p for p in entries if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES
                    and p.stem.lower() in SPLIT_VALUES]
    if split_tables:  # the training table decides: a test.csv often has no labels, or only an id and the text
        modality = _table_modality(min(split_tables, key=lambda p: SPLIT_ORDER.index(SPLIT_VALUES[p.stem.lower()])))
        folders = [p for p in entries if p.is_dir()]
        if modality == "text" and folders:  # class folders of images beside tables of texts: either could be meant
            texts, images = _file_counts(folders)
            if images and images >= _CLEAR_MAJORITY * (texts + images):
                raise _ambiguous(path, f"split tables of texts ({', '.join(p.name for p in split_tables)})",
                                 f"class folders of images ({', '.join(p.name for p in folders[:5])}"
                                 f"{', …' if len(folders) > 5 else ''}: {images} images looked at)")
        return modality
    return _folder_modality(path)


def _not_a_dataset_file(path: Path) -> DatasetError:
    spreadsheet = " (save a spreadsheet as .csv)" if path.suffix.lower() in (".xlsx", ".xls", ".ods") else ""
    return DatasetError(f"{path} is a file, not a folder or a table this reads (.csv, .tsv, .jsonl, .parquet)"
                        f"{spreadsheet}; expected for images root/<class>/<images>, root/{{train,val,test}}/<class>/"
                        f"<images> or a label manifest, for texts {EXPECTED_TEXT_LAYOUT.removeprefix('expected ')}")


def _table_modality(table_path: Path) -> Modality:
    table = read_rows(Path(os.path.abspath(table_path)))  # spelled as the reader will: it reuses this read
    columns = {normalise(c) for c in table.columns}
    first = [v for _, row in itertools.islice(table.rows, 20) for v in row.values() if isinstance(v, str)]
    texts = bool(columns & set(TEXT_COLUMNS))
    # A bare 'id' names an image only without a text column: Kaggle's text tables start with one (id,text,label).
    named = columns & set(PATH_COLUMNS) - ({"id"} if texts else set())
    images = bool(named) or any(_is_image_name(v) for v in first)
    if images and not texts:
        return "image"
    if texts and not images:
        return "text"
    raise DatasetError(
        f"cannot tell whether {table_path} lists images or texts (its columns: {', '.join(table.columns)}); "
        "say which with --modality image (and --path-column) or --modality text (and --text-column)")


def _is_image_name(value: str) -> bool:
    # Most values of a text table are sentences: only a plausible extension is worth loading PIL's plugins for.
    suffix = Path(value.strip()).suffix.lower()
    return bool(_EXTENSION.fullmatch(suffix)) and suffix in Image.registered_extensions()


def _file_counts(folders: list[Path]) -> tuple[int, int]:
    """(text files, image files) among the first files found under ``folders``."""
    texts = images = 0
    files = (Path(root) / name for folder in folders for root, _, names in os.walk(folder) for name in names
             if not is_ignored(name))
    for file in itertools.islice(files, _FILES_LOOKED_AT):
        suffix = file.suffix.lower()
        if suffix in TEXT_SUFFIXES:
            texts += 1
        elif suffix in Image.registered_extensions():
            images += 1
    return texts, images


def _ambiguous(where: Path, texts: str, images: str) -> DatasetError:
    return DatasetError(f"{where} holds both {texts} and {images}; say which to read with --modality image or "
                        "--modality text")


def _folder_modality(folder: Path) -> Modality:
    texts, images = _file_counts([folder])
    total = texts + images
    if total == 0 or images >= _CLEAR_MAJORITY * total:
        return "image"  # no files at all: the image reader explains the expected layout
    if texts >= _CLEAR_MAJORITY * total:
        return "text"
    raise _ambiguous(folder, f"text files ({texts})", f"images ({images}) among the first {total} files looked at")
