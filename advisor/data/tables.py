"""Reading a label manifest's rows: CSV (separator detected), TSV, JSON Lines, Parquet (with pyarrow)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from tl_advise.schema.errors import DatasetError

READERS = (".csv", ".tsv", ".jsonl", ".parquet")

EXPECTED_COLUMNS = ("expected a table with an image path column and a label column, e.g. file_name,label "
                    "(name others with --path-column/--label-column)")


@dataclass
class Table:
    path: Path
    columns: list[str]
    rows: list[tuple[str, dict[str, object]]]  # (where, as a person counts: "line 12" / "row 3"; values)


def read_table(path: Path) -> Table:
    """A manifest's rows; raises :class:`DatasetError` naming the file when it cannot be read."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _read_parquet(path)
    text = _read_text(path)
    if suffix == ".jsonl":
        return _read_jsonl(path, text)
    return _read_csv(path, text, "\t" if suffix == ".tsv" else None)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                           "save the manifest as UTF-8") from exc
    except OSError as exc:
        raise DatasetError(f"cannot read the manifest {path}: {exc.strerror or exc}") from exc


def _delimiter(header_line: str) -> str:
    """The likeliest separator of a .csv: spreadsheets in many locales write ';'."""
    counts = {sep: header_line.count(sep) for sep in (",", ";", "\t", "|")}
    best = max(counts, key=lambda sep: counts[sep])
    return best if counts[best] else ","


def _read_csv(path: Path, text: str, delimiter: str | None) -> Table:
    if not text.strip():
        raise DatasetError(f"the manifest {path} is empty; {EXPECTED_COLUMNS}")
    sep = delimiter or _delimiter(text.split("\n", 1)[0])
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    try:
        header = [name.strip() for name in next(reader)]
        rows: list[tuple[str, dict[str, object]]] = []
        for values in reader:
            if not any(v.strip() for v in values):
                continue
            rows.append((f"line {reader.line_num}", dict(zip(header, values, strict=False))))
    except csv.Error as exc:
        raise DatasetError(f"{path} line {reader.line_num}: not readable as CSV ({exc})") from exc
    return Table(path=path, columns=header, rows=rows)


def _read_jsonl(path: Path, text: str) -> Table:
    rows: list[tuple[str, dict[str, object]]] = []
    columns: dict[str, None] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise DatasetError(f"{path} line {number}: not valid JSON ({exc}); a .jsonl manifest holds one "
                               "JSON object per line") from exc
        if not isinstance(value, dict):
            raise DatasetError(f"{path} line {number}: a JSON {type(value).__name__}, not an object such as "
                               '{"file_name": "a.jpg", "label": "cat"}')
        columns.update(dict.fromkeys(value))
        rows.append((f"line {number}", value))
    if not rows:
        raise DatasetError(f"the manifest {path} is empty; {EXPECTED_COLUMNS}")
    return Table(path=path, columns=list(columns), rows=rows)


def _read_parquet(path: Path) -> Table:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise DatasetError(f"reading the Parquet manifest {path} needs pyarrow: pip install 'tl-advise[parquet]' "
                           "(or save the manifest as .csv)") from exc
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises its own hierarchy (ArrowInvalid, ArrowIOError, …) for bad files
        raise DatasetError(f"cannot read the Parquet manifest {path}: {exc}") from exc
    rows = [(f"row {i}", values) for i, values in enumerate(table.to_pylist(), 1)]
    return Table(path=path, columns=list(table.column_names), rows=rows)
