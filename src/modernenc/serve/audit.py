"""The audit trail: one row per automated decision (a classification, or the spans extracted from a text),
append-only review rows, each table a hash chain.

Every row stores ``prev_hash`` (the previous row's ``row_hash``; 64 zeros for the first) and ``row_hash`` =
SHA-256 of the row's canonical JSON (its sequence number, ``prev_hash`` and every field, keys sorted). A
changed, inserted or deleted row breaks the chain at that row, and ``verify_audit_db`` names it. What a
chain alone cannot show is the loss of its newest rows: record the head hash that ``audit verify`` prints
somewhere else (a ticket, a signed log) to pin the trail's length as well.

The service talks to an ``AuditStore``; ``SQLiteAuditStore`` is the embedded default (WAL, a full fsync per
commit: a decision a client received survives a crash or a power cut). A shared database for several
replicas implements the same four methods.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from modernenc.utils.outputs import check_output_file, writing_file

GENESIS = "0" * 64
SCHEMA_VERSION = 2  # 2 added the extractions table; a version 1 trail gains it when a server opens it
VERDICTS = ("event", "no_event")
EXPORT_FORMATS = (".csv", ".jsonl")


class AuditError(RuntimeError):
    """The trail could not be written, or does not verify; the message names the row or the problem."""


class UnknownDecision(KeyError):
    """A review names a decision_id the trail does not hold."""


def utc_now() -> str:
    """UTC time as ISO 8601 with microseconds and a Z: fixed width, so text order is time order."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class DecisionRecord:
    """One automated decision: who asked, on what input, with which model, rule and outcome."""

    decision_id: str
    request_id: str
    created_at: str
    key_name: str | None  # the API key's name; None when the server runs without keys
    text_sha256: str
    text: str | None  # only with --audit-store-text
    model_digest: str  # SHA-256 of the weights
    dtype: str
    threshold_name: str  # thresholds.json's chosen key, or "request" for a request's own threshold
    threshold: float
    review_lo: float
    review_hi: float
    probability: float
    label: str
    needs_review: bool
    truncated: bool


@dataclass(frozen=True)
class ExtractionRecord:
    """The spans a span tagger returned for one text, with who asked, on what input and with which model."""

    extraction_id: str
    request_id: str
    created_at: str
    key_name: str | None
    text_sha256: str
    text: str | None  # only with --audit-store-text
    model_digest: str
    dtype: str
    spans: str  # the spans returned, as canonical JSON (keys sorted): exactly what the client received
    truncated: bool


@dataclass(frozen=True)
class ReviewRecord:
    """A human verdict on a decision. Never edited: a second review is another row."""

    review_id: str
    decision_id: str
    created_at: str
    key_name: str | None
    reviewer: str
    verdict: str  # one of VERDICTS
    note: str | None


DECISION_FIELDS = tuple(DecisionRecord.__dataclass_fields__)
REVIEW_FIELDS = tuple(ReviewRecord.__dataclass_fields__)
EXTRACTION_FIELDS = tuple(ExtractionRecord.__dataclass_fields__)
BOOLEAN_FIELDS = ("needs_review", "truncated")


def spans_json(spans: Sequence[dict]) -> str:
    """The canonical JSON an extraction row stores (and hashes) for the spans a client received."""
    return json.dumps(list(spans), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _columns(record: DecisionRecord | ExtractionRecord | ReviewRecord) -> dict:
    """Field values as SQLite stores and returns them (booleans as 0/1), so hashing before the insert and
    after reading back sees the same values."""
    return {k: int(v) if isinstance(v, bool) else v for k, v in asdict(record).items()}


def row_hash(seq: int, prev_hash: str, columns: dict) -> str:
    payload = {"seq": seq, "prev_hash": prev_hash, **columns}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()  # floats: repr, exact round trip


class AuditStore(Protocol):
    """Where the service records decisions and reviews. Each call is one transaction: all or nothing."""

    location: str  # for the start-up line

    def append_decisions(self, records: Sequence[DecisionRecord]) -> None: ...

    def append_extractions(self, records: Sequence[ExtractionRecord]) -> None: ...

    def append_review(self, record: ReviewRecord) -> None:
        """Raises ``UnknownDecision`` when ``record.decision_id`` is not in the trail."""

    def pending_reviews(self, limit: int) -> list[dict]:
        """Decisions flagged ``needs_review`` with no review yet, oldest first."""

    def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------------------
# SQLite

_EXTRACTIONS = """
CREATE TABLE IF NOT EXISTS extractions (
    seq INTEGER PRIMARY KEY,
    extraction_id TEXT NOT NULL UNIQUE,
    request_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    key_name TEXT,
    text_sha256 TEXT NOT NULL,
    text TEXT,
    model_digest TEXT NOT NULL,
    dtype TEXT NOT NULL,
    spans TEXT NOT NULL,
    truncated INTEGER NOT NULL,
    prev_hash TEXT NOT NULL,
    row_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS extractions_time ON extractions (created_at);
"""


def _append_only(*tables: str) -> str:
    return "".join(
        f"""
CREATE TRIGGER IF NOT EXISTS {table}_no_{action} BEFORE {action.upper()} ON {table}
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only: {table} rows cannot be {past}'); END;"""
        for table in tables
        for action, past in (("update", "changed"), ("delete", "deleted"))
    )


_SCHEMA = (
    f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS decisions (
    seq INTEGER PRIMARY KEY,
    decision_id TEXT NOT NULL UNIQUE,
    request_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    key_name TEXT,
    text_sha256 TEXT NOT NULL,
    text TEXT,
    model_digest TEXT NOT NULL,
    dtype TEXT NOT NULL,
    threshold_name TEXT NOT NULL,
    threshold REAL NOT NULL,
    review_lo REAL NOT NULL,
    review_hi REAL NOT NULL,
    probability REAL NOT NULL,
    label TEXT NOT NULL,
    needs_review INTEGER NOT NULL,
    truncated INTEGER NOT NULL,
    prev_hash TEXT NOT NULL,
    row_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_flagged ON decisions (seq) WHERE needs_review = 1;
CREATE INDEX IF NOT EXISTS decisions_time ON decisions (created_at);
CREATE TABLE IF NOT EXISTS reviews (
    seq INTEGER PRIMARY KEY,
    review_id TEXT NOT NULL UNIQUE,
    decision_id TEXT NOT NULL REFERENCES decisions (decision_id),
    created_at TEXT NOT NULL,
    key_name TEXT,
    reviewer TEXT NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ({", ".join(repr(v) for v in VERDICTS)})),
    note TEXT,
    prev_hash TEXT NOT NULL,
    row_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reviews_decision ON reviews (decision_id, seq);
"""
    + _EXTRACTIONS
    + _append_only("decisions", "reviews", "extractions")
)


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: transactions are the explicit BEGIN IMMEDIATE ... COMMIT below.
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    connection.row_factory = sqlite3.Row
    try:
        connection.execute("PRAGMA foreign_keys = ON")
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as err:
        connection.close()
        raise AuditError(f"{path} is not an SQLite database ({err})") from None
    return connection


def _damage(connection: sqlite3.Connection, pragma: str = "quick_check", limit: int = 3) -> list[str]:
    """SQLite's own check of every page (``quick_check``, or ``integrity_check`` that also compares indexes
    with their tables): its first ``limit`` problems, none when the file is sound. SQLite reports them as
    lines, some rows holding several, under a '*** in database main ***' heading."""
    try:
        lines = [line for row in connection.execute(f"PRAGMA {pragma}") for line in str(row[0]).splitlines()]
    except sqlite3.DatabaseError as err:  # damage the check itself trips over
        return [str(err)]
    return [] if lines == ["ok"] else [line for line in lines if not line.startswith("***")][:limit]


def _check_schema(connection: sqlite3.Connection, path: Path) -> None:
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not {"meta", "decisions", "reviews"} <= tables:
        raise AuditError(
            f"{path} is an SQLite database but not a modernenc audit trail (tables: {sorted(tables)})"
        )
    row = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None or int(row[0]) > SCHEMA_VERSION:
        raise AuditError(
            f"{path} has audit schema version {row[0] if row else 'none'}; this modernenc reads up to "
            f"{SCHEMA_VERSION}"
        )


class SQLiteAuditStore:
    """The embedded store. One connection, used by one thread at a time (the server's audit thread)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.location = str(self.path.resolve())
        if self.path.is_dir():
            raise AuditError(f"--audit-db {path} is a folder; give a file path")
        if not self.path.parent.is_dir():
            raise AuditError(f"--audit-db {path}: folder {self.path.parent} does not exist")
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        self._db = _connect(self.path)
        try:
            # Before anything is written: appending to a damaged file can spread the damage, and every
            # decision answered from then on would go into a trail that no longer verifies. This reads the
            # whole file once, so start-up takes longer as the trail grows.
            damage = [] if fresh else _damage(self._db)
            if damage:
                raise AuditError(
                    f"--audit-db {path} is damaged (SQLite's quick_check: {'; '.join(damage)}); nothing was "
                    "written to it: restore it from a backup or choose another --audit-db"
                )
            if fresh or not self._has_tables():
                if not fresh and self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                    raise AuditError(
                        f"{path} is an SQLite database of something else; choose another --audit-db"
                    )
                self._db.executescript(_SCHEMA)
                self._db.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
            _check_schema(self._db, self.path)
            if not self._has_tables("extractions"):  # a version 1 trail: add the table, keep every row
                self._db.executescript(_EXTRACTIONS + _append_only("extractions"))
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise AuditError(f"{path}: SQLite refused WAL mode (journal_mode={mode})")
            # FULL: every commit reaches the disk before the response; a power cut loses no answered decision.
            self._db.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as err:
            self._db.close()
            raise AuditError(f"cannot use {path} as the audit trail: {err}") from None
        except AuditError:
            self._db.close()
            raise

    def _has_tables(self, name: str = "decisions") -> bool:
        row = self._db.execute("SELECT count(*) FROM sqlite_master WHERE name = ?", (name,)).fetchone()
        return bool(row[0])

    def _append(self, table: str, fields: Sequence[str], records: Sequence) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")  # the write lock, before reading the chain's head
        try:
            head = db.execute(f"SELECT seq, row_hash FROM {table} ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev = (head[0], head[1]) if head else (0, GENESIS)
            rows = []
            for record in records:
                seq += 1
                columns = _columns(record)
                digest = row_hash(seq, prev, columns)
                rows.append((seq, *(columns[f] for f in fields), prev, digest))
                prev = digest
            names = ", ".join(("seq", *fields, "prev_hash", "row_hash"))
            marks = ", ".join("?" * (len(fields) + 3))
            db.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def append_decisions(self, records: Sequence[DecisionRecord]) -> None:
        if records:
            self._append("decisions", DECISION_FIELDS, records)

    def append_extractions(self, records: Sequence[ExtractionRecord]) -> None:
        if records:
            self._append("extractions", EXTRACTION_FIELDS, records)

    def append_review(self, record: ReviewRecord) -> None:
        known = self._db.execute(
            "SELECT 1 FROM decisions WHERE decision_id = ?", (record.decision_id,)
        ).fetchone()
        if known is None:  # decisions are never deleted, so this cannot change before the insert
            raise UnknownDecision(record.decision_id)
        self._append("reviews", REVIEW_FIELDS, [record])

    def pending_reviews(self, limit: int) -> list[dict]:
        rows = self._db.execute(
            f"""SELECT {", ".join(DECISION_FIELDS)} FROM decisions AS d WHERE needs_review = 1
            AND NOT EXISTS (SELECT 1 FROM reviews AS r WHERE r.decision_id = d.decision_id)
            ORDER BY seq LIMIT ?""",
            (limit,),
        )
        return [_decision_dict(row) for row in rows]

    def count(self, table: str = "decisions") -> int:
        return self._db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

    def close(self) -> None:
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # leave one tidy file behind
        finally:
            self._db.close()


def _decision_dict(row: sqlite3.Row) -> dict:
    out = dict(row)
    for name in BOOLEAN_FIELDS:
        if name in out:
            out[name] = bool(out[name])
    return out


# ---------------------------------------------------------------------------------------------------------
# verify and export (the `modernenc audit` commands)


@dataclass(frozen=True)
class ChainReport:
    decisions: int
    reviews: int
    decisions_head: str  # the newest row's hash: record it elsewhere to pin the trail's length
    reviews_head: str
    extractions: int = 0
    extractions_head: str = GENESIS


def open_existing(path: str | Path) -> sqlite3.Connection:
    """An existing audit trail, opened for reading only."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"audit database {path} is a folder; give the .sqlite file")
    if not path.is_file():
        raise FileNotFoundError(f"audit database {path} does not exist")
    db = _connect(path)
    _check_schema(db, path)
    db.execute("PRAGMA query_only = ON")
    return db


def _table_exists(db: sqlite3.Connection, name: str) -> bool:
    found = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
    return found is not None


def _verify_table(
    db: sqlite3.Connection, table: str, fields: Sequence[str], id_field: str
) -> tuple[int, str]:
    expected_seq, prev = 1, GENESIS
    for row in db.execute(f"SELECT seq, {', '.join(fields)}, prev_hash, row_hash FROM {table} ORDER BY seq"):
        name = f"{table} row seq={row['seq']} ({id_field}={row[id_field]})"
        if row["seq"] != expected_seq:
            missing = f"seq={expected_seq}" + (
                f" to {row['seq'] - 1}" if row["seq"] - 1 > expected_seq else ""
            )
            raise AuditError(f"{table} rows {missing} are missing: the chain breaks before {name}")
        if row["prev_hash"] != prev:
            raise AuditError(f"{name} breaks the chain: its prev_hash is not the previous row's hash")
        if row_hash(row["seq"], prev, {f: row[f] for f in fields}) != row["row_hash"]:
            raise AuditError(f"{name} was altered: its contents do not match its row_hash")
        expected_seq, prev = expected_seq + 1, row["row_hash"]
    return expected_seq - 1, prev


def verify_audit_db(path: str | Path) -> ChainReport:
    """SQLite's integrity check, then both chains from their first row; raises ``AuditError`` naming the
    first broken row."""
    db = open_existing(path)
    try:
        problems = _damage(db, "integrity_check")
        if problems:
            raise AuditError(f"{path} fails SQLite's integrity check: {'; '.join(problems)}")
        db.execute("BEGIN")  # one snapshot, while a live server keeps appending
        decisions, decisions_head = _verify_table(db, "decisions", DECISION_FIELDS, "decision_id")
        reviews, reviews_head = _verify_table(db, "reviews", REVIEW_FIELDS, "review_id")
        extractions, extractions_head = 0, GENESIS
        if _table_exists(db, "extractions"):  # a version 1 trail that no server opened since has none
            extractions, extractions_head = _verify_table(
                db, "extractions", EXTRACTION_FIELDS, "extraction_id"
            )
        orphan = db.execute(
            "SELECT r.seq, r.review_id FROM reviews AS r LEFT JOIN decisions AS d USING (decision_id) "
            "WHERE d.decision_id IS NULL ORDER BY r.seq LIMIT 1"
        ).fetchone()
        if orphan is not None:
            raise AuditError(
                f"reviews row seq={orphan[0]} (review_id={orphan[1]}) reviews a decision the trail lacks"
            )
        db.execute("COMMIT")
        return ChainReport(decisions, reviews, decisions_head, reviews_head, extractions, extractions_head)
    finally:
        db.close()


EXPORT_REVIEW_COLUMNS = (
    "review_verdict",
    "reviewer",
    "review_note",
    "reviewed_at",
    "review_key_name",
    "reviews",
)


def parse_since(value: str) -> str:
    """An ISO date or date-time (naive means UTC) as the trail's timestamp format, for comparison."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--since {value!r} is not an ISO date or date-time (e.g. 2026-01-31)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _export_rows(db: sqlite3.Connection, since: str | None) -> Iterator[dict]:
    query = f"""
        SELECT {", ".join(f"d.{f}" for f in DECISION_FIELDS)},
               r.verdict AS review_verdict, r.reviewer, r.note AS review_note, r.created_at AS reviewed_at,
               r.key_name AS review_key_name,
               (SELECT count(*) FROM reviews WHERE decision_id = d.decision_id) AS reviews
        FROM decisions AS d
        LEFT JOIN reviews AS r ON r.seq = (
            SELECT max(seq) FROM reviews WHERE decision_id = d.decision_id)
        {"WHERE d.created_at >= ?" if since else ""}
        ORDER BY d.seq"""
    for row in db.execute(query, (since,) if since else ()):
        yield _decision_dict(row)


def _extraction_rows(db: sqlite3.Connection, since: str | None) -> Iterator[dict]:
    if not _table_exists(db, "extractions"):
        return
    query = f"""SELECT {", ".join(EXTRACTION_FIELDS)} FROM extractions
        {"WHERE created_at >= ?" if since else ""} ORDER BY seq"""
    for row in db.execute(query, (since,) if since else ()):
        yield _decision_dict(row)


EXPORTS = {  # table -> (CSV columns, rows)
    "decisions": ((*DECISION_FIELDS, *EXPORT_REVIEW_COLUMNS), _export_rows),
    "extractions": (EXTRACTION_FIELDS, _extraction_rows),
}


def export_audit_db(
    path: str | Path,
    out: str | Path,
    since: str | None = None,
    force: bool = False,
    table: str = "decisions",
) -> int:
    """Write every decision (with its latest review) or every extraction (``table``), from ``since``, to
    .csv or .jsonl; returns the count."""
    out = Path(out)
    if out.suffix.lower() not in EXPORT_FORMATS:
        raise ValueError(f"--out {out} must end in {' or '.join(EXPORT_FORMATS)}")
    if table not in EXPORTS:
        raise ValueError(f"unknown audit table {table!r}; choose {' or '.join(EXPORTS)}")
    columns, rows = EXPORTS[table]
    # --force replaces only an earlier export, never the database or a file of the user's
    check_output_file(out, kind="audit-export", force=force, inputs=[path], what="--out")
    start = parse_since(since) if since else None
    db = open_existing(path)
    count = 0
    try:
        db.execute("BEGIN")
        with (
            writing_file(out, kind="audit-export", tool="audit export") as tmp,
            tmp.open("w", newline="", encoding="utf-8") as f,
        ):
            writer = None
            if out.suffix.lower() == ".csv":
                writer = csv.DictWriter(f, fieldnames=list(columns))
                writer.writeheader()
            for row in rows(db, start):
                if writer is not None:
                    writer.writerow(row)
                else:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
                count += 1
        db.execute("COMMIT")
    finally:
        db.close()
    return count
