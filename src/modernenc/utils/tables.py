"""Rows of JSONL, CSV or parquet files, with errors that name the file, the line and the columns it has.

Training data (`read_labelled_texts`) and `modernenc predict` inputs both come through here.
"""

from __future__ import annotations

import csv
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


def read_lines(path: Path) -> list[str]:
    r"""The lines of a UTF-8 text file, split on "\n" only (a trailing "\r" is dropped), without a BOM.

    Not ``str.splitlines``: it also splits on U+2028, form feeds and more, which JSON strings and texts
    may hold, and that would break rows and shift line numbers.
    """
    with path.open(encoding="utf-8-sig", newline="") as f:  # -sig: drop a BOM; newline="": no translation
        return [line.removesuffix("\r") for line in f.read().split("\n")]


def _read_jsonl(path: Path, columns: Sequence[str], hint: str) -> list[dict[str, Any]]:
    rows = []
    for i, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
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


def _read_csv(path: Path, columns: Sequence[str], hint: str) -> list[dict[str, Any]]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # the default 128 KiB cap breaks on long documents
    with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: drop the BOM spreadsheets write
        reader = csv.DictReader(f)
        if not reader.fieldnames:  # no header: the file is empty
            return []
        for column in columns:
            if column not in reader.fieldnames:
                raise missing_column(str(path), column, reader.fieldnames, hint)
        rows = list(reader)
    for i, row in enumerate(rows, 2):  # line 1 is the header
        if None in row:
            raise ValueError(f"{path}:{i} has more fields than the header's {len(reader.fieldnames)}")
    return rows


def _read_parquet(path: Path, columns: Sequence[str], hint: str) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    for column in columns:
        if column not in names:
            raise missing_column(str(path), column, names, hint)
    return pq.read_table(path).to_pylist()
