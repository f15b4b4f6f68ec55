"""Label manifests: a table of image paths and labels (CSV, TSV, JSON Lines, Parquet) read as a dataset.

::

    tl-advise labels.csv                  path,label[,split]; paths relative to the manifest's folder
    tl-advise labels.csv --image-root D   … or to D (absolute paths are taken as they are)
    tl-advise data/                       data/metadata.csv (.jsonl, .parquet), or data/<split>/metadata.csv:
                                          the Hugging Face ImageFolder convention, ``file_name`` beside the images

Columns are found by the names datasets use (``file_name``, ``path``, ``image``, … ``label``, ``class``,
``target``, … ``split``, fastai's ``is_valid``, …) or named with ``--path-column/--label-column/--split-column``.
A manifest becomes the same :class:`~tl_advise.advisor.data.images.scan.Listing` as a folder walk, so everything after
it (headers, unreadable files, duplicates, sampling, the cache, ``--run``'s splits) is one code path.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from tl_advise.advisor.data.images.layout import FLAT_SPLIT, SPLIT_ALIASES, SPLIT_ORDER
from tl_advise.advisor.data.images.scan import Listing, list_files
from tl_advise.advisor.data.tables import EXPECTED_COLUMNS, READERS, Table, read_table
from tl_advise.schema.errors import DatasetError
from tl_advise.schema.formatting import counted
from tl_advise.schema.models import SkippedFile

logger = logging.getLogger(__name__)

HF_METADATA = ("metadata.csv", "metadata.jsonl", "metadata.parquet")  # Hugging Face ImageFolder

# Column names as datasets spell them (compared after normalising: lower case, camelCase and
# spaces/dashes/dots to underscores), most specific first. Id-like names come last: Kaggle
# manifests often give an id without its extension (see _Resolver).
PATH_COLUMNS = (
    "file_name", "filename", "file_path", "filepath", "path", "image_path", "img_path", "image_file",
    "image_filename", "image_name", "img_name", "imagename", "fname", "file", "image", "img", "relative_path",
    "image_index", "image_id", "img_id", "id_code", "id",
)
LABEL_COLUMNS = (
    "label", "labels", "class", "class_name", "classname", "class_label", "label_name", "category",
    "category_name", "target", "y", "breed", "species", "diagnosis", "dx", "tag",
)
SPLIT_COLUMNS = ("split", "subset", "set", "partition", "data_split", "dataset_split", "stage", "fold")
# Boolean columns that mark one split (fastai's from_csv uses is_valid); true → this split, false → train.
FLAG_COLUMNS = {"is_valid": "val", "is_val": "val", "is_validation": "val", "valid": "val", "is_test": "test"}
SPLIT_VALUES = {**SPLIT_ALIASES, "training": "train", "dev": "val", "testing": "test"}
TRUE_VALUES = frozenset({"true", "1", "yes", "y", "t"})
FALSE_VALUES = frozenset({"false", "0", "no", "n", "f"})

@dataclass(frozen=True)
class ManifestOptions:
    """How to read a manifest; every field None means: detect it."""

    image_root: Path | None = None
    path_column: str | None = None
    label_column: str | None = None
    split_column: str | None = None

    @property
    def given(self) -> list[str]:
        flags = {"--image-root": self.image_root, "--path-column": self.path_column,
                 "--label-column": self.label_column, "--split-column": self.split_column}
        return [flag for flag, value in flags.items() if value is not None]


@dataclass
class _Entry:
    """One usable row: a resolved file, its label and split, and where it was listed."""

    path: Path
    written: str
    label: str
    split: str
    where: str


@dataclass
class _Columns:
    path: str
    label: str
    split: str | None
    flag_split: str | None = None  # the split a true value in a boolean split column means


@dataclass
class _Collected:
    entries: list[_Entry] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)  # (as written, reason) of files not found
    first_row: dict[Path, tuple[str, str, str]] = field(default_factory=dict)  # file -> (manifest, where, label)
    declared: dict[str, list[str]] = field(default_factory=dict)  # every label a usable row names


# --------------------------------------------------------------------------- entry point


def manifest_listing(data: str | Path, options: ManifestOptions | None = None) -> Listing | None:
    """The listing of a manifest file, or of a folder holding Hugging Face ``metadata.*`` with labels;
    None when ``data`` is neither (a plain class-folder dataset, or a missing path)."""
    options = options or ManifestOptions()
    path = Path(os.path.abspath(Path(data).expanduser()))
    if path.is_file() and path.suffix.lower() in READERS:
        return _listing([(read_table(path), None)], options, where=path)
    if path.is_dir():
        tables = _hf_metadata(path)
        if tables:
            return _hf_listing(path, tables, options)
    if options.given and path.exists():
        one = len(options.given) == 1
        raise DatasetError(f"{', '.join(options.given)} {'applies' if one else 'apply'} to a label manifest, and "
                           f"{path} is not one; give a .csv, .tsv, .jsonl or .parquet file, or a folder with "
                           "metadata.csv beside its images")
    return None


def _hf_metadata(folder: Path) -> list[tuple[Path, str | None]]:
    """``folder/metadata.*``, else one ``folder/<split>/metadata.*`` per split folder (with its split)."""
    own = _metadata_file(folder)
    if own is not None:
        return [(own, None)]
    found: list[tuple[Path, str | None]] = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and p.name.lower() in SPLIT_ALIASES):
        meta = _metadata_file(sub)
        if meta is not None:
            found.append((meta, SPLIT_ALIASES[sub.name.lower()]))
    return found


def _metadata_file(folder: Path) -> Path | None:
    present = [folder / name for name in HF_METADATA if (folder / name).is_file()]
    if len(present) > 1:
        logger.warning("%s holds %s; reading %s", folder, ", ".join(p.name for p in present), present[0].name)
    return present[0] if present else None


def _hf_listing(folder: Path, metadata: list[tuple[Path, str | None]], options: ManifestOptions) -> Listing | None:
    tables = [(read_table(path), split) for path, split in metadata]
    labelled = options.label_column is not None or all(find_column(t.columns, LABEL_COLUMNS) for t, _ in tables)
    has_class_folders = any(p.is_dir() and not p.name.startswith(".") and p.name.lower() not in SPLIT_ALIASES
                            for p in folder.iterdir())
    if not labelled and (has_class_folders or any(split for _, split in tables)) and not options.given:
        # Hugging Face reads the labels from the folder names then; so do we.
        logger.info("%s has no label column: labels come from the class folders",
                    ", ".join(t.path.name for t, _ in tables))
        return None
    return _listing(tables, options, where=folder)


# --------------------------------------------------------------------------- columns


def normalise(name: str) -> str:
    """``fileName``, ``File Name``, ``file-name`` → ``file_name``."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name.strip())
    return re.sub(r"[\s\-.]+", "_", spaced).lower()


def find_column(columns: Sequence[str], names: Sequence[str]) -> str | None:
    """The first of ``names`` (normalised) among ``columns``; image and text tables alike."""
    by_name = {normalise(c): c for c in reversed(columns)}  # the first column wins a tie
    return next((by_name[n] for n in names if n in by_name), None)


def named_column(path: Path, columns: Sequence[str], given: str, flag: str) -> str:
    """The column a user named (exactly, else after normalising), or an error naming the file's columns."""
    if given in columns:
        return given
    match = find_column(columns, [normalise(given)])
    if match is None:
        raise DatasetError(f"{path} has no column {given!r} ({flag}); its columns are: {column_list(columns)}")
    return match


def column_list(columns: Sequence[str]) -> str:
    return ", ".join(repr(c) for c in columns) if columns else "none"


def _looks_like_image_file(value: str) -> bool:
    return Path(value.strip()).suffix.lower() in Image.registered_extensions()


def _headerless(table: Table) -> Table:
    """A CSV whose first line is already data (``a.jpg,cat``): columns become column1, column2, …"""
    names = [f"column{i}" for i in range(1, len(table.columns) + 1)]
    rows: list[tuple[str, dict[str, object]]] = [("line 1", dict(zip(names, table.columns, strict=True)))]
    rows += [(where, dict(zip(names, list(values.values()), strict=False))) for where, values in table.rows]
    logger.info("%s has no header row: reading column 1 as the image path and column 2 as the label", table.path)
    return Table(path=table.path, columns=names, rows=rows)


def _columns(table: Table, options: ManifestOptions, fixed_split: str | None) -> tuple[Table, _Columns]:
    explicit = options.path_column or options.label_column
    if (not explicit and table.path.suffix.lower() in (".csv", ".tsv") and len(table.columns) >= 2
            and find_column(table.columns, PATH_COLUMNS) is None and _looks_like_image_file(table.columns[0])):
        table = _headerless(table)
        return table, _Columns(path="column1", label="column2", split=None)

    path_col = (named_column(table.path, table.columns, options.path_column, "--path-column") if options.path_column
                else find_column(table.columns, PATH_COLUMNS))
    if path_col is None:
        raise DatasetError(f"{table.path} has no image path column; its columns are: {column_list(table.columns)}; "
                           f"name it with --path-column (recognised: {', '.join(PATH_COLUMNS[:8])}, …)")
    rest = [c for c in table.columns if c != path_col]
    label_col = (named_column(table.path, table.columns, options.label_column, "--label-column") if options.label_column
                 else find_column(rest, LABEL_COLUMNS))
    if label_col is None:
        raise DatasetError(f"{table.path} has no label column; its columns are: {column_list(table.columns)}; "
                           f"name it with --label-column (recognised: {', '.join(LABEL_COLUMNS[:8])}, …)")
    if label_col == path_col:
        raise DatasetError(f"{table.path}: the path and label columns are both {path_col!r}")
    columns = _Columns(path=path_col, label=label_col, split=None)
    if fixed_split is None:
        _split_column(table, options, columns)
    elif options.split_column:
        logger.warning("%s: the split comes from its folder (%s); --split-column is ignored", table.path, fixed_split)
    return table, columns


def _split_column(table: Table, options: ManifestOptions, columns: _Columns) -> None:
    """Sets ``columns.split`` (and ``flag_split`` for a boolean column) when the table has a usable one."""
    taken = {columns.path, columns.label}
    if options.split_column:
        name: str | None = named_column(table.path, table.columns, options.split_column, "--split-column")
    else:
        rest = [c for c in table.columns if c not in taken]
        name = find_column(rest, SPLIT_COLUMNS) or find_column(rest, tuple(FLAG_COLUMNS))
    if name is None:
        return
    values = {v.lower() for _, row in table.rows if (v := cell_text(row.get(name))) is not None}
    if not values:
        if options.split_column:
            raise DatasetError(f"{table.path}: column {name!r} (--split-column) is empty")
        return
    booleans = values <= TRUE_VALUES | FALSE_VALUES
    flag = FLAG_COLUMNS.get(normalise(name))
    if flag is None and options.split_column and booleans:  # a boolean column named by the user
        flag = "test" if "test" in normalise(name) else "val"
    if flag is not None and booleans:
        columns.split, columns.flag_split = name, flag
        return
    unknown = sorted(values - set(SPLIT_VALUES))
    if not unknown:
        columns.split = name
        return
    shown = ", ".join(repr(v) for v in unknown[:5]) + (", …" if len(unknown) > 5 else "")
    if options.split_column:
        raise DatasetError(f"{table.path}: column {name!r} (--split-column) holds {shown}, not split names; "
                           "use train, val (valid, validation, dev) and test")
    logger.warning("%s: column %r holds %s, not split names (train, val, test); it is ignored", table.path, name,
                   shown)


def cell_text(value: object) -> str | None:
    """A cell as text; None when empty. Integral floats (Parquet/JSON numbers) lose their '.0'."""
    if value is None or isinstance(value, list | tuple | dict | set | bytes):
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            value = int(value)
    text = str(value).strip()
    return text or None


def split_of(row: dict[str, object], split_column: str | None, flag_split: str | None,
             fixed_split: str | None) -> str | None:
    """A row's split: the folder's (``fixed_split``), else its split column's value (a split name, or a flag
    that marks ``flag_split``), else the flat split; None when its cell is empty. Image and text tables alike."""
    if fixed_split is not None:
        return fixed_split
    if split_column is None:
        return FLAT_SPLIT
    value = cell_text(row.get(split_column))
    if value is None:
        return None
    if flag_split is not None:
        return flag_split if value.lower() in TRUE_VALUES else "train"
    return SPLIT_VALUES[value.lower()]


# --------------------------------------------------------------------------- rows to files


class _Resolver:
    """A manifest's path → an absolute file. An id without an extension (``0a1b2c``, as many Kaggle CSVs
    give it) is matched to the one image file with that stem beside it."""

    def __init__(self) -> None:
        self._stems: dict[Path, dict[str, str | None]] = {}

    def resolve(self, written: str, base: Path) -> Path:
        text = written.replace("\\", "/") if os.sep == "/" else written  # a manifest written on Windows
        path = Path(text).expanduser()
        path = Path(os.path.abspath(path if path.is_absolute() else base / path))
        if path.exists() or path.suffix.lower() in Image.registered_extensions():
            return path
        match = self._by_stem(path.parent).get(path.name)
        return path.parent / match if match else path

    def _by_stem(self, folder: Path) -> dict[str, str | None]:
        if folder not in self._stems:
            stems: dict[str, str | None] = {}
            try:
                names = sorted(os.listdir(folder))
            except OSError:
                names = []
            for name in names:
                stem, ext = os.path.splitext(name)
                if ext.lower() in Image.registered_extensions():
                    stems[stem] = None if stem in stems else name  # two images share the stem: do not guess
            self._stems[folder] = stems
        return self._stems[folder]


def _collect(table: Table, columns: _Columns, base: Path, fixed_split: str | None, resolver: _Resolver,
             out: _Collected) -> None:
    name = table.path.name
    for where, row in table.rows:
        written = cell_text(row.get(columns.path))
        raw_label = row.get(columns.label)
        label = cell_text(raw_label)
        shown = written or f"{name} {where}"
        if written is None:
            out.skipped.append(SkippedFile(path=shown, reason=f"no image path ({name} {where})"))
            continue
        if label is None:
            kind = "a list: multi-label manifests are not supported" if isinstance(raw_label, list) else "empty"
            out.skipped.append(SkippedFile(path=shown, reason=f"the label is {kind} ({name} {where})"))
            continue
        split = split_of(row, columns.split, columns.flag_split, fixed_split)
        if split is None:
            out.skipped.append(SkippedFile(path=shown, reason=f"no split value ({name} {where})"))
            continue
        if re.match(r"^[a-z][a-z0-9+.-]*://", written, re.IGNORECASE):
            out.skipped.append(SkippedFile(path=shown, reason=f"a URL, not a local file ({name} {where}); "
                                                              "download the images and list their paths"))
            continue
        path = resolver.resolve(written, base)
        first = out.first_row.get(path)
        if first is not None:
            other = f", with the label {first[2]!r} there" if first[2] != label else ""
            out.skipped.append(SkippedFile(path=shown, reason=f"listed again ({name} {where}; first in "
                                                              f"{first[0]} {first[1]}{other})"))
            continue
        out.first_row[path] = (name, where, label)
        out.declared.setdefault(label, [f"{name}: class {label!r}"])
        if not path.is_file():
            reason = "not a file" if path.exists() else "file not found"
            at = "" if str(path) == written else f" at {path}"
            out.missing.append((written, f"{reason}{at} ({name} {where})"))
            continue
        out.entries.append(_Entry(path=path, written=written, label=label, split=split, where=f"{name} {where}"))


def _listing(tables: list[tuple[Table, str | None]], options: ManifestOptions, *, where: Path) -> Listing:
    start = time.perf_counter()
    if options.image_root is not None and not Path(options.image_root).is_dir():
        raise DatasetError(f"--image-root {options.image_root} is not a folder")
    resolver = _Resolver()
    out = _Collected()
    has_splits = False
    bases: list[str] = []
    for table, fixed_split in tables:
        table, columns = _columns(table, options, fixed_split)
        has_splits = has_splits or fixed_split is not None or columns.split is not None
        base = Path(os.path.abspath(options.image_root)) if options.image_root else table.path.parent
        bases.append(str(base))
        _collect(table, columns, base, fixed_split, resolver, out)

    # The images' common folder is the dataset root: relative paths in the report, the cache keys and
    # the "never write inside the dataset" check all use it, as for a folder layout.
    parents = {str(e.path.parent) for e in out.entries}
    root = Path(os.path.commonpath(sorted(parents))) if parents else where.parent if where.is_file() else where
    if out.missing:
        logger.warning("%s the manifest lists %s missing (e.g. %s)", counted(len(out.missing), "file"),
                       "is" if len(out.missing) == 1 else "are",
                       out.missing[0][1])
    records, unlisted, must_audit = list_files(root, [(e.path, e.label, e.split) for e in out.entries])
    skipped = out.skipped + [SkippedFile(path=written, reason=reason) for written, reason in out.missing] + unlisted
    splits = sorted({e.split for e in out.entries}, key=SPLIT_ORDER.index) if has_splits else [FLAT_SPLIT]
    manifests = [str(t.path) for t, _ in tables]
    hint = EXPECTED_COLUMNS
    if out.missing and not out.entries:
        hint = (f"relative paths start at {', '.join(sorted(set(bases)))}"
                f"{'' if options.image_root else ' (the manifest folder)'}; name another with --image-root")
    logger.info("manifest %s: %d usable rows, %d skipped", ", ".join(manifests), len(out.entries), len(skipped))
    return Listing(root=root, layout="splits" if has_splits else "flat", splits=splits or [FLAT_SPLIT],
                   records=records, must_audit=must_audit, skipped=skipped, declared=out.declared,
                   where=str(where), declares="lists the classes", hint=hint, manifests=manifests,
                   list_seconds=round(time.perf_counter() - start, 3))
