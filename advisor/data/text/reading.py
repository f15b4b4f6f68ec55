"""Reading a text-classification dataset: three layouts, one :class:`TextDataset`.

::

    reviews.csv                      a manifest: text,label[,split] (.csv, .tsv, .jsonl, .parquet)
    data/{train,validation,test}.csv split files, the Hugging Face layout (any of the manifest formats)
    data/[train/]<class>/<file>.txt  class folders, scikit-learn's load_files layout

Columns are found by the names datasets use (``text``, ``sentence``, ``review``, … ``label``, ``class``, …
``split``, fastai's ``is_valid``), as for image manifests (``advisor/data/images/manifest.py``); a table with one
column besides the label reads that column as the text; ``TextReadOptions`` names them explicitly.

Bad input raises :class:`DatasetError` naming the file and the fix. Bytes that are not UTF-8 are not: a
text holding a few is read with U+FFFD in their place and counted (the scan warns); only a table that is
mostly not UTF-8 is refused.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tl_advise.advisor.data.images.layout import FLAT_SPLIT, SPLIT_ORDER, is_ignored
from tl_advise.advisor.data.images.manifest import (
    FALSE_VALUES,
    FLAG_COLUMNS,
    LABEL_COLUMNS,
    SPLIT_COLUMNS,
    SPLIT_VALUES,
    TRUE_VALUES,
    cell_text,
    column_list,
    find_column,
    named_column,
    normalise,
    split_of,
)
from tl_advise.advisor.data.tables import Table, parse_csv, parse_jsonl, read_parquet
from tl_advise.schema.errors import DatasetError
from tl_advise.schema.formatting import counted
from tl_advise.schema.models import SkippedFile
from tl_advise.schema.text import TextSource, TextSourceKind

logger = logging.getLogger(__name__)

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet")
# Files of a class folder read as text: load_files reads every file; 20 Newsgroups' have no extension.
TEXT_SUFFIXES = frozenset({".txt", ".text", ""})
TEXT_COLUMNS = (
    "text", "texts", "sentence", "sentences", "content", "review", "review_text", "reviewtext", "body",
    "message", "sms", "document", "doc", "tweet", "comment", "utterance", "question", "abstract", "passage",
    "string", "input", "excerpt", "description", "title", "x",
)
TEXT_LABEL_COLUMNS = (*LABEL_COLUMNS, "sentiment", "polarity", "intent", "topic", "emotion", "stance", "is_spam")
EXPECTED_TEXT_TABLE = ("expected a table with a text column and a label column, e.g. text,label (name others "
                       "with text_column/label_column, --text-column/--label-column at the command line)")
EXPECTED_TEXT_LAYOUT = ("expected a table (.csv, .tsv, .jsonl, .parquet) with text and label columns, a folder of "
                        "split files (train.csv, validation.csv, test.csv), or class folders of .txt files "
                        "(root/<class>/*.txt)")
# A table whose rows are mostly not UTF-8 was saved in another encoding: refuse it instead of reading mojibake.
MAX_UNDECODABLE_SHARE = 0.5
REPLACEMENT = "\ufffd"


@dataclass(frozen=True)
class TextReadOptions:
    """How to read a text dataset; every field None means: detect it."""

    text_column: str | None = None
    label_column: str | None = None
    split_column: str | None = None


@dataclass(frozen=True, slots=True)
class TextExample:
    text: str
    label: str
    split: str
    where: str  # "train.csv line 12", "pos/0001.txt": where a person finds it
    undecodable: int = 0  # bytes that were not UTF-8, read as U+FFFD


@dataclass
class TextDataset:
    """The texts of a dataset with their labels and splits, in reading order."""

    source: TextSource
    examples: list[TextExample]
    skipped: list[SkippedFile] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        return sorted({e.label for e in self.examples})

    @property
    def splits(self) -> list[str]:
        present = {e.split for e in self.examples}
        return [s for s in (*SPLIT_ORDER, FLAT_SPLIT) if s in present]

    @property
    def train_split(self) -> str:
        """The split that trains: ``train`` when there is one, else the only (or first) one."""
        return "train" if "train" in self.splits else self.splits[0]

    def subset(self, split: str | None = None) -> list[TextExample]:
        return [e for e in self.examples if split is None or e.split == split]

    def texts(self, split: str | None = None) -> list[str]:
        return [e.text for e in self.subset(split)]

    def labels(self, split: str | None = None) -> list[str]:
        return [e.label for e in self.subset(split)]

    def __len__(self) -> int:
        return len(self.examples)


# --------------------------------------------------------------------------- entry point


def read_text_dataset(data: str | Path, options: TextReadOptions | None = None) -> TextDataset:
    """The dataset at ``data`` (a table, a folder of split files or a folder of class folders)."""
    options = options or TextReadOptions()
    path = Path(os.path.abspath(Path(data).expanduser()))
    if not path.exists():
        raise DatasetError(f"{path} does not exist; {EXPECTED_TEXT_LAYOUT}")
    try:
        if path.is_file():
            if path.suffix.lower() not in TABLE_SUFFIXES:
                raise DatasetError(f"{path} is not a table this reads ({', '.join(TABLE_SUFFIXES)}); "
                                   f"{EXPECTED_TEXT_LAYOUT}")
            dataset = _from_tables(path, [(path, None)], options, kind="manifest")
        else:
            dataset = _from_folder(path, options)
    finally:
        _parse_unchanged.cache_clear()  # the examples hold the texts now: a long-lived process keeps no table
    _check_classes(dataset)
    return dataset


def _from_folder(folder: Path, options: TextReadOptions) -> TextDataset:
    try:
        entries = sorted(p for p in folder.iterdir() if not is_ignored(p.name))
    except OSError as exc:
        raise DatasetError(f"cannot list {folder}: {exc.strerror or exc}") from exc
    tables = [p for p in entries if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES]
    split_tables = [(p, SPLIT_VALUES[p.stem.lower()]) for p in tables if p.stem.lower() in SPLIT_VALUES]
    if split_tables:
        split_tables.sort(key=lambda ps: (SPLIT_ORDER.index(ps[1]), ps[0].name))
        _warn_twice_named(folder, split_tables)
        others = [p.name for p in tables if p.stem.lower() not in SPLIT_VALUES]
        if others:
            logger.warning("%s has split files (%s); ignoring the other tables: %s", folder,
                           ", ".join(p.name for p, _ in split_tables), ", ".join(others))
        return _from_tables(folder, [(p, s) for p, s in split_tables], options, kind="split_files")
    if len(tables) == 1:
        return _from_tables(folder, [(tables[0], None)], options, kind="manifest")
    dirs = [p for p in entries if p.is_dir()]
    if dirs:
        given = [name for name, value in options.__dict__.items() if value]
        if given:
            flags = ", ".join(f"--{name.replace('_', '-')}" for name in given)
            one = len(given) == 1
            raise DatasetError(f"{flags} (the API's {'/'.join(given)}) {'applies' if one else 'apply'} to a table, "
                               f"and {folder} holds class folders: leave {'it' if one else 'them'} out")
        return _from_class_folders(folder, dirs)
    if tables:
        raise DatasetError(f"{folder} holds {len(tables)} tables ({', '.join(p.name for p in tables[:5])}) and none "
                           "is named after a split; give the one to read, or name them train.csv, "
                           "validation.csv, test.csv")
    raise DatasetError(f"{folder} holds no table and no class folder; {EXPECTED_TEXT_LAYOUT}")


def _warn_twice_named(folder: Path, split_tables: list[tuple[Path, str]]) -> None:
    seen: dict[str, str] = {}
    for path, split in split_tables:
        if split in seen:
            logger.warning("%s: %s and %s are both the %r split; their rows are merged", folder, seen[split],
                           path.name, split)
        seen.setdefault(split, path.name)


def _no_text_in_class_folders(where: str, skipped: list[SkippedFile]) -> DatasetError:
    """Class folders with files but no text: most often images read with --modality text. Their suffixes say
    so at once, where three repeats of 'not a text file (.jpg)' and a table's expected columns did not."""
    others = [s for s in skipped if not s.reason.startswith("not a text file")]
    if others:
        reasons = "; ".join(f"{s.path}: {s.reason}" for s in others[:3])
        return DatasetError(f"{where} holds no usable text ({reasons}); {EXPECTED_TEXT_LAYOUT}")
    suffixes = Counter(Path(s.path).suffix.lower() for s in skipped).most_common()
    listed = ", ".join(f"{n} {suffix}" for suffix, n in suffixes[:4]) + (", …" if len(suffixes) > 4 else "")
    return DatasetError(f"{where} holds no text files: its class folders hold {listed} files, and class folders "
                        "of texts hold .txt files; for images leave --modality text out (or say --modality image)")


def _check_classes(dataset: TextDataset) -> None:
    where = dataset.source.root
    if not dataset.examples:
        if dataset.source.kind == "class_folders":
            raise _no_text_in_class_folders(where, dataset.skipped)
        reasons = "; ".join(f"{s.path}: {s.reason}" for s in dataset.skipped[:3])
        raise DatasetError(f"{where} holds no usable text{' (' + reasons + ')' if reasons else ''}; "
                           f"{EXPECTED_TEXT_TABLE}")
    classes = dataset.classes
    if len(classes) < 2:
        column = f" (column {dataset.source.label_column!r})" if dataset.source.label_column else ""
        raise DatasetError(f"{where} has {len(classes)} class{column}: {classes[0]!r}; a classifier needs at least "
                           "2 — check the label column, or add the other classes' texts")


# --------------------------------------------------------------------------- decoding


def decode(data: bytes, where: str) -> tuple[str, int]:
    """Text from bytes: UTF-8 (a byte-order mark dropped; UTF-16 when a UTF-16 BOM says so), else UTF-8 with
    each undecodable byte read as U+FFFD; returns the text and how many bytes were replaced."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16"), 0
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{where} starts as UTF-16 but is not ({exc.reason}); save it as UTF-8") from exc
    try:
        return data.decode("utf-8-sig"), 0
    except UnicodeDecodeError:
        text = data.decode("utf-8-sig", errors="replace")
        return text, text.count(REPLACEMENT) - data.decode("utf-8-sig", errors="ignore").count(REPLACEMENT)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from exc


# --------------------------------------------------------------------------- tables


def read_rows(path: Path) -> Table:
    """A table's rows; raises :class:`DatasetError` naming the file when it cannot be read. The last table read
    is kept while its file is unchanged: deciding the modality reads the training table, then the reader does."""
    try:
        stat = path.stat()
    except OSError:
        return _parse_rows(path)  # names the file and why it cannot be read
    return _parse_unchanged(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=1)
def _parse_unchanged(path: Path, mtime_ns: int, size: int) -> Table:
    return _parse_rows(path)


def _parse_rows(path: Path) -> Table:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        table = read_parquet(path, str(path), save_as="it")
        if not table.rows:
            raise DatasetError(f"{path} has no rows; {EXPECTED_TEXT_TABLE}")
        return table
    text, _ = decode(_read_bytes(path), str(path))
    if not text.strip():
        raise DatasetError(f"{path} is empty; {EXPECTED_TEXT_TABLE}")
    table = (parse_jsonl(path, text, hint='a .jsonl file holds one JSON object per line, e.g. {"text": "great phone", '
                         '"label": "positive"}', example='{"text": "great phone", "label": "positive"}')
             if suffix == ".jsonl" else parse_csv(path, text, "\t" if suffix == ".tsv" else None))
    if not table.rows:
        raise DatasetError(f"{path} has a header ({', '.join(table.columns)}) but no rows; {EXPECTED_TEXT_TABLE}")
    return table


def read_texts(path: Path, *, text_column: str | None = None) -> list[str]:
    """Texts to classify (``tl-advise predict --file``): a table's text column (named, else found by name as for
    a dataset, else its only column), or any other file's non-blank lines. Raises :class:`DatasetError` naming
    the file when it cannot be read or holds no text."""
    if path.suffix.lower() in TABLE_SUFFIXES:
        table = read_rows(path)
        column = (named_column(table.path, table.columns, text_column, "text_column") if text_column
                  else find_column(table.columns, TEXT_COLUMNS) or (table.columns[0] if len(table.columns) == 1
                                                                    else None))
        if column is None:
            raise DatasetError(f"{path} has no text column; its columns are: {column_list(table.columns)}; name it "
                               f"with --text-column (recognised: {', '.join(TEXT_COLUMNS[:8])}, …)")
        texts = [t for _, row in table.rows if (t := _text_cell(row.get(column))) is not None and t.strip()]
    else:
        if text_column:
            raise DatasetError(f"--text-column {text_column!r}: {path} is not a table (.csv, .tsv, .jsonl, "
                               ".parquet) but one text per line; leave --text-column out")
        data = _read_bytes(path)
        if _is_binary(data):
            raise DatasetError(f"{path} is binary (NUL bytes), not text: give one text per line (.txt), or a table "
                               "with a text column")
        texts = [line for line in decode(data, str(path))[0].splitlines() if line.strip()]
    if not texts:
        raise DatasetError(f"{path} holds no text: give one text per line, or a table with a text column")
    check_utf8(path, sum(REPLACEMENT in t for t in texts), len(texts))
    return texts


def check_utf8(path: Path, undecodable: int, read: int) -> None:
    """Refuse a file most of whose ``read`` texts held bytes that are not UTF-8 (``undecodable`` of them): read as
    UTF-8 with replacements they would be trained on garbled (Parquet stores text as UTF-8 already)."""
    if read and undecodable / read > MAX_UNDECODABLE_SHARE and path.suffix.lower() != ".parquet":
        raise DatasetError(f"{path} is not UTF-8: {undecodable} of its {read} texts hold bytes that are not (an "
                           "older encoding such as Windows-1252 or Latin-1?); save it as UTF-8")


def _is_binary(data: bytes) -> bool:
    """NUL bytes near the start, and no UTF-16 byte-order mark: an image, an archive, a model, not text."""
    return b"\x00" in data[:4096] and not data.startswith((b"\xff\xfe", b"\xfe\xff"))


# --------------------------------------------------------------------------- columns


@dataclass
class _Columns:
    text: str
    label: str
    split: str | None = None
    flag_split: str | None = None  # the split a true value in a boolean column means


def _columns(table: Table, options: TextReadOptions, fixed_split: str | None) -> _Columns:
    label = (named_column(table.path, table.columns, options.label_column, "label_column") if options.label_column
             else find_column(table.columns, TEXT_LABEL_COLUMNS))
    rest = [c for c in table.columns if c != label]
    text = (named_column(table.path, table.columns, options.text_column, "text_column") if options.text_column
            else find_column(rest, TEXT_COLUMNS))
    if text is None:
        others = [c for c in rest if normalise(c) not in SPLIT_COLUMNS and normalise(c) not in FLAG_COLUMNS]
        if label is not None and len(others) == 1:
            text = others[0]
            logger.info("%s: reading the column %r as the text (the only one beside the label)", table.path, text)
    if text is None:
        raise DatasetError(f"{table.path} has no text column; its columns are: {column_list(table.columns)}; name it "
                           f"with text_column (--text-column; recognised: {', '.join(TEXT_COLUMNS[:8])}, …)")
    if label is None:
        raise DatasetError(f"{table.path} has no label column; its columns are: {column_list(table.columns)}; "
                           f"name it with label_column (--label-column; recognised: "
                           f"{', '.join(TEXT_LABEL_COLUMNS[:8])}, …)")
    if label == text:
        raise DatasetError(f"{table.path}: the text and label columns are both {text!r}")
    columns = _Columns(text=text, label=label)
    if fixed_split is None:
        _split_column(table, options, columns)
    elif options.split_column:
        logger.warning("%s: the split comes from the file's name (%s); split_column is ignored", table.path,
                       fixed_split)
    return columns


def _split_column(table: Table, options: TextReadOptions, columns: _Columns) -> None:
    if options.split_column:
        name: str | None = named_column(table.path, table.columns, options.split_column, "split_column")
    else:
        rest = [c for c in table.columns if c not in (columns.text, columns.label)]
        name = find_column(rest, SPLIT_COLUMNS) or find_column(rest, tuple(FLAG_COLUMNS))
    if name is None:
        return
    values = {v.lower() for _, row in table.rows if (v := cell_text(row.get(name))) is not None}
    booleans = bool(values) and values <= TRUE_VALUES | FALSE_VALUES
    flag = FLAG_COLUMNS.get(normalise(name))
    if flag is None and options.split_column and booleans:
        flag = "test" if "test" in normalise(name) else "val"
    if flag is not None and booleans:
        columns.split, columns.flag_split = name, flag
    elif values and values <= set(SPLIT_VALUES):
        columns.split = name
    elif options.split_column:
        shown = ", ".join(repr(v) for v in sorted(values)[:5]) or "nothing"
        raise DatasetError(f"{table.path}: column {name!r} (split_column) holds {shown}, not split names; use "
                           "train, val (valid, validation, dev) and test")
    else:
        logger.warning("%s: column %r does not hold split names (train, val, test); it is ignored", table.path, name)


def _text_cell(value: object) -> str | None:
    """A text cell as it is (inner whitespace kept); None when missing. An empty string stays: the scan counts
    it as an empty text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bytes):
        return decode(value, "a cell")[0]
    if isinstance(value, list | tuple | dict | set):
        return None
    return str(value)


def _from_tables(root: Path, tables: list[tuple[Path, str | None]], options: TextReadOptions, *,
                 kind: TextSourceKind) -> TextDataset:
    examples: list[TextExample] = []
    skipped: list[SkippedFile] = []
    chosen: _Columns | None = None
    for path, fixed_split in tables:
        table = read_rows(path)
        if kind == "split_files" and len(tables) > 1 and fixed_split != "train" and not options.label_column \
                and find_column(table.columns, TEXT_LABEL_COLUMNS) is None:
            train = next((p for p, s in tables if s == "train"), None)
            alone = f"advise on {train} alone (tl-advise {train}), or " if train else ""
            raise DatasetError(f"{path} has no label column (its columns are: {column_list(table.columns)}): an "
                               f"unlabelled {fixed_split} file cannot be judged on; {alone}move {path.name} out of "
                               f"{root}")
        columns = _columns(table, options, fixed_split)
        chosen = chosen or columns
        examples_before = len(examples)
        bad_rows = 0
        for where, row in table.rows:
            at = f"{path.name} {where}"
            text = _text_cell(row.get(columns.text))
            label = cell_text(row.get(columns.label))
            split = split_of(row, columns.split, columns.flag_split, fixed_split)
            if text is None:
                skipped.append(SkippedFile(path=at, reason=f"no value in the text column {columns.text!r}"))
            elif label is None:
                skipped.append(SkippedFile(path=at, reason=f"no label in the column {columns.label!r}"))
            elif split is None:
                skipped.append(SkippedFile(path=at, reason=f"no split in the column {columns.split!r}"))
            else:
                replaced = text.count(REPLACEMENT)
                bad_rows += bool(replaced)
                examples.append(TextExample(text=text, label=label, split=split, where=at, undecodable=replaced))
        check_utf8(path, bad_rows, len(examples) - examples_before)
    assert chosen is not None
    source = TextSource(kind=kind, root=str(root), files=[str(p) for p, _ in tables], text_column=chosen.text,
                        label_column=chosen.label, split_column=chosen.split)
    logger.info("%s: %s read, %s skipped", root, counted(len(examples), "text"), counted(len(skipped), "row"))
    return TextDataset(source=source, examples=examples, skipped=skipped)


# --------------------------------------------------------------------------- class folders


def _from_class_folders(root: Path, dirs: list[Path]) -> TextDataset:
    split_dirs = [d for d in dirs if d.name.lower() in SPLIT_VALUES]
    containers = ([(SPLIT_VALUES[d.name.lower()], d) for d in split_dirs] if split_dirs else [(FLAT_SPLIT, root)])
    if split_dirs and len(split_dirs) < len(dirs):
        logger.warning("%s has split folders (%s); ignoring the other folders: %s", root,
                       ", ".join(d.name for d in split_dirs), ", ".join(d.name for d in dirs if d not in split_dirs))
    examples: list[TextExample] = []
    skipped: list[SkippedFile] = []
    for split, container in sorted(containers, key=lambda sc: (SPLIT_ORDER.index(sc[0]) if sc[0] in SPLIT_ORDER
                                                                 else len(SPLIT_ORDER), sc[1].name)):
        class_dirs = sorted(p for p in container.iterdir() if p.is_dir() and not is_ignored(p.name))
        for class_dir in class_dirs:
            for path in sorted(p for p in class_dir.rglob("*") if p.is_file() and not is_ignored(p.name)):
                where = path.relative_to(root).as_posix()
                if path.suffix.lower() not in TEXT_SUFFIXES:
                    skipped.append(SkippedFile(path=where, reason=f"not a text file ({path.suffix}); class folders "
                                                                  "hold .txt files"))
                    continue
                data = _read_bytes(path)
                if _is_binary(data):
                    skipped.append(SkippedFile(path=where, reason="binary content (NUL bytes), not text"))
                    continue
                text, replaced = decode(data, where)
                examples.append(TextExample(text=text, label=class_dir.name, split=split, where=where,
                                            undecodable=replaced))
    if not examples and not skipped:
        raise DatasetError(f"{root} holds folders but no text files in them; {EXPECTED_TEXT_LAYOUT}")
    logger.info("%s: %d texts in class folders, %d files skipped", root, len(examples), len(skipped))
    return TextDataset(source=TextSource(kind="class_folders", root=str(root), files=[]), examples=examples,
                       skipped=skipped)


def median_per_class(counts: dict[str, int]) -> float:
    return float(statistics.median(counts.values())) if counts else 0.0
