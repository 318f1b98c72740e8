"""Rows of JSONL, CSV or parquet files, with errors that name the file, the line and the columns it has.

Training data (`read_labelled_texts`) and `modernenc predict` inputs both come through here.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TABLE_FORMATS = (".jsonl", ".json", ".csv", ".parquet")  # .json is read as JSON Lines


class DataColumnError(ValueError):
    """A column or label the data does not have; the message lists what it does have."""


def missing_column(where: str, column: str, columns: Sequence[str], hint: str = "") -> DataColumnError:
    have = ", ".join(repr(c) for c in columns) or "none"
    return DataColumnError(f"{where} has no column {column!r}; its columns are: {have}{hint}")


def read_rows(path: str | Path, columns: Sequence[str] = (), hint: str = "") -> list[dict[str, Any]]:
    """Every row of a table file as a dict; each must hold ``columns`` (``hint`` says how to pick others)."""
    path = Path(path)
    if path.suffix.lower() not in TABLE_FORMATS:
        raise ValueError(f"cannot read {path}: supported formats are {', '.join(TABLE_FORMATS)}")
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    reader = {".csv": _read_csv, ".parquet": _read_parquet}.get(path.suffix.lower(), _read_jsonl)
    rows = reader(path, columns, hint)
    if not rows:
        raise ValueError(f"{path} holds no rows (the file is empty)")
    return rows


class NotUtf8Error(ValueError):
    """A text file that is not UTF-8; the message names the file, the line and the fix."""


# Byte-order marks of what spreadsheets save as "Unicode text"; UTF-32's first, as it starts like UTF-16's
WIDE_BOMS = {
    codecs.BOM_UTF32_LE: "UTF-32",
    codecs.BOM_UTF32_BE: "UTF-32",
    codecs.BOM_UTF16_LE: "UTF-16",
    codecs.BOM_UTF16_BE: "UTF-16",
}


def read_text(path: str | Path) -> str:
    """A UTF-8 text file's contents without a BOM; other bytes fail naming the file, the line and the fix.

    UTF-16 and UTF-32 (Excel's "Unicode text") are named as such: read as latin1 they become text with a
    NUL between letters, which classifies as noise without an error."""
    path = Path(path)
    data = path.read_bytes()
    convert = f"{path.name} > {path.stem}-utf8{path.suffix}"
    for bom, encoding in WIDE_BOMS.items():
        if data.startswith(bom):
            raise NotUtf8Error(
                f"{path} is {encoding} (it starts with a {encoding} byte-order mark), not UTF-8; save the "
                f"file as UTF-8, e.g. iconv -f {encoding.lower()} -t utf-8 {convert}"
            )
    nul = data.find(b"\x00")
    if nul >= 0:  # valid UTF-8, but no text holds NUL: UTF-16 without a byte-order mark, or not text
        line, column = data.count(b"\n", 0, nul) + 1, nul - (data.rfind(b"\n", 0, nul) + 1) + 1
        raise NotUtf8Error(
            f"{path}:{line} holds a NUL byte (column {column}), which no text does: UTF-16 without a "
            f"byte-order mark looks like this. Save the file as UTF-8, e.g. iconv -f utf-16le -t utf-8 "
            f"{convert}"
        )
    try:
        return data.decode("utf-8-sig")  # -sig: drop the BOM editors and spreadsheets write
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise NotUtf8Error(
            f"{path}:{line} is not UTF-8 (byte 0x{data[err.start]:02x} at column {column}); save the file as "
            f"UTF-8, e.g. iconv -f latin1 -t utf-8 {convert}"
        ) from None


def read_lines(path: Path) -> list[str]:
    r"""The lines of a UTF-8 text file, split on "\n" only (a trailing "\r" is dropped), without a BOM.

    Not ``str.splitlines``: it also splits on U+2028, form feeds and more, which JSON strings and texts
    may hold, and that would break rows and shift line numbers.
    """
    return [line.removesuffix("\r") for line in read_text(path).split("\n")]


def _read_jsonl(path: Path, columns: Sequence[str], hint: str) -> list[dict[str, Any]]:
    rows = []
    for i, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        if not rows and _opens_array_of_objects(line):  # the usual mistake: a whole-file JSON array
            raise ValueError(
                f"{path} holds a JSON array; rows are read as JSON Lines, one object per line: convert it, "
                f"e.g. jq -c '.[]' {path.name} > {path.stem}-lines.jsonl"
            )
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{i} is not valid JSON: {err}") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{i} must be a JSON object with keys {list(columns)}")
        for column in columns:  # checked per row: JSON Lines rows need not share keys
            if column not in row:
                raise missing_column(f"{path}:{i}", column, list(row), hint)
        rows.append(row)
    return rows


def _opens_array_of_objects(line: str) -> bool:
    """Whether a first line starts a JSON array of objects: ``[`` of a pretty-printed one, or all of one."""
    if not line.lstrip().startswith("["):
        return False
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return True  # "[" or "[{...}," : an array continued on the next lines
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _read_csv(path: Path, columns: Sequence[str], hint: str) -> list[dict[str, Any]]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # the default 128 KiB cap breaks on long documents
    # strict: without it a quote that is never closed swallows every later line into one field, so the
    # rows after it vanish into one text without a word.
    text = read_text(path)
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    if not reader.fieldnames:  # no header: the file is empty
        return []
    twice = sorted({name for name in reader.fieldnames if reader.fieldnames.count(name) > 1})
    if twice:  # a row keeps only the last column of a name: the others' values would vanish
        raise ValueError(f"{path}:1 names more than one column {', '.join(map(repr, twice))}; rename them")
    for column in columns:
        if column not in reader.fieldnames:
            raise missing_column(str(path), column, reader.fieldnames, hint)
    lines = text.split("\n")
    rows, line = [], reader.line_num + 1

    def first_line_of_row() -> int:  # the reader skips blank lines, and a quoted field may span several
        return next((n for n in range(line, len(lines)) if lines[n - 1] not in ("", "\r")), line)

    try:
        for row in reader:
            if None in row:
                raise ValueError(
                    f"{path}:{first_line_of_row()} has more fields than the header's {len(reader.fieldnames)}"
                )
            rows.append(row)
            line = reader.line_num + 1
    except csv.Error as err:  # e.g. a quote never closed, or text after a closing quote
        unclosed = " (a quoted field in it is never closed)" if "end of data" in str(err) else ""
        raise ValueError(f"{path}:{first_line_of_row()} is not valid CSV{unclosed}: {err}") from None
    return rows


def _read_parquet(path: Path, columns: Sequence[str], hint: str) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
        for column in columns:
            if column not in names:
                raise missing_column(str(path), column, names, hint)
        return pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as err:  # pyarrow's messages do not name the file
        raise ValueError(f"{path} is not a readable parquet file: {err}") from None
