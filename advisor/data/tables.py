"""Reading a label manifest's rows: CSV (separator detected), TSV, JSON Lines, Parquet (with pyarrow)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
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
        return read_parquet(path, f"the Parquet manifest {path}", save_as="the manifest")
    text = _read_text(path)
    if not text.strip():
        raise DatasetError(f"the manifest {path} is empty; {EXPECTED_COLUMNS}")
    if suffix == ".jsonl":
        table = parse_jsonl(path, text, hint="a .jsonl manifest holds one JSON object per line",
                            example='{"file_name": "a.jpg", "label": "cat"}')
        if not table.rows:
            raise DatasetError(f"the manifest {path} is empty; {EXPECTED_COLUMNS}")
        return table
    return parse_csv(path, text, "\t" if suffix == ".tsv" else None)


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


def parse_csv(path: Path, text: str, delimiter: str | None = None) -> Table:
    """The rows of a CSV/TSV ``text`` read from ``path`` (``delimiter`` None: detected from the header); each row
    named by the line it starts on (a quoted field may span lines); blank rows skipped."""
    sep = delimiter or _delimiter(text.split("\n", 1)[0])
    read = [0]  # characters of ``text`` the reader has taken: where the next row starts

    def lines() -> Iterator[str]:
        for physical_line in io.StringIO(text, newline=""):
            read[0] += len(physical_line)
            yield physical_line

    reader = csv.reader(lines(), delimiter=sep)
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, 1 << 30))  # a long document is one field; the default limit is 128 KiB
    try:
        header = [name.strip() for name in next(reader)]
        last, last_line, last_values = 0, 1, header  # the last row: where it starts (character, line), its values
        _check_header(path, header)
        rows: list[tuple[str, dict[str, object]]] = []
        overflowing: list[tuple[int, int]] = []  # (line, values) of rows with values beyond the header's columns
        line = reader.line_num + 1
        start = read[0]
        for values in reader:
            last, last_line, last_values, start = start, line, values, read[0]
            if any(v.strip() for v in values):
                if any(v.strip() for v in values[len(header):]):
                    overflowing.append((line, len(values)))
                rows.append((f"line {line}", dict(zip(header, values, strict=False))))
            line = reader.line_num + 1
        _check_quotes_closed(path, text[last:], sep, last_line, last_values)
    except csv.Error as exc:
        raise DatasetError(f"{path} line {reader.line_num}: not readable as CSV ({exc})") from exc
    finally:
        csv.field_size_limit(limit)
    if overflowing:
        (first, n_values), more = overflowing[0], len(overflowing) - 1
        raise DatasetError(
            f"{path} line {first}: {n_values} values under a header of {len(header)} columns ({', '.join(header)})"
            f"{f', and {more} more line(s) like it' if more else ''}; a value holding the separator {sep!r} must be "
            f'quoted ("great{sep} really"), or every line give one value per column')
    return Table(path=path, columns=header, rows=rows)


def _check_quotes_closed(path: Path, last_row: str, sep: str, line: int, values: list[str]) -> None:
    """Refuse a quoted field that is never closed: read leniently it swallows every line after it as one value
    (the rows after it vanish, the row itself lacks its label). Such a field is always the last row's last, and
    only a strict reading of that row says so (``unexpected end of data``)."""
    try:
        for _ in csv.reader(io.StringIO(last_row, newline=""), delimiter=sep, strict=True):
            pass
    except csv.Error as exc:
        if "end of data" not in str(exc):
            return  # something the lenient reading accepts (a quote inside a value): not this problem
        opened = line + sum(v.count("\n") for v in values[:-1])  # the lines spanned by the row's earlier values
        raise DatasetError(f"{path} line {opened}: a quoted field starts there and is never closed, so the rest of "
                           "the file reads as one value; close its quote, or fix the quoting (a quote inside a "
                           'quoted value is doubled: "")') from None


def _check_header(path: Path, header: list[str]) -> None:
    """Refuse a header naming a column twice: its rows would keep only the last one's values (blank names, from
    trailing separators, may repeat)."""
    seen: dict[str, int] = {}
    for number, name in enumerate(header, 1):
        if name and name in seen:
            raise DatasetError(f"{path}: the header names the column {name!r} twice (columns {seen[name]} and "
                               f"{number}); rename one of them")
        seen.setdefault(name, number)


def parse_jsonl(path: Path, text: str, *, hint: str, example: str) -> Table:
    """The objects of a JSON Lines ``text``, one per non-blank line; ``hint`` ends the message for a line that is
    not JSON, ``example`` shows an object for a line that is JSON but not an object."""
    rows: list[tuple[str, dict[str, object]]] = []
    columns: dict[str, None] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise DatasetError(f"{path} line {number}: not valid JSON ({exc}); {hint}") from exc
        if not isinstance(value, dict):
            raise DatasetError(f"{path} line {number}: a JSON {type(value).__name__}, not an object such as "
                               f"{example}")
        columns.update(dict.fromkeys(value))
        rows.append((f"line {number}", value))
    return Table(path=path, columns=list(columns), rows=rows)


def read_parquet(path: Path, what: str, *, save_as: str) -> Table:
    """A Parquet file's rows (with pyarrow); ``what`` names the file in messages, ``save_as`` what to save as .csv
    when pyarrow is missing."""
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise DatasetError(f"reading {what} needs pyarrow: pip install 'tl-advise[parquet]' (or save {save_as} as "
                           ".csv)") from exc
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises its own hierarchy (ArrowInvalid, ArrowIOError, …) for bad files
        raise DatasetError(f"cannot read {what}: {exc}") from exc
    rows = [(f"row {i}", values) for i, values in enumerate(table.to_pylist(), 1)]
    return Table(path=path, columns=list(table.column_names), rows=rows)
