"""Document readers for raw corpora: plain text, JSONL, parquet, WikiExtractor output, HF datasets.

Every reader yields ``Document`` objects. A document that cannot be used (bad bytes, bad JSON, missing
field, empty text) is still yielded, with ``skip_reason`` set, so callers count and report every skip
instead of losing documents silently.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

FORMATS = ("auto", "text", "jsonl", "parquet", "wikiextractor", "hf")
# Compressed files would otherwise be read as text and tokenized as garbage.
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zip", ".tgz")
_BOM = b"\xef\xbb\xbf"
_WIKI_DOC_RE = re.compile(rb'^<doc id="([^"]*)"[^>]*>\s*$')


@dataclass
class Document:
    id: str
    text: str | None
    skip_reason: str | None = None


NOT_UTF8 = "non-UTF-8 bytes"
# What to do about each kind of skipped document, printed beside its count.
SKIP_HINTS = {
    NOT_UTF8: "re-encode the files as UTF-8, e.g. iconv -f latin1 -t utf-8 IN > OUT",
    "invalid JSON": "each line of a JSONL file must be one JSON object",
    "unterminated <doc> (file truncated?)": "the WikiExtractor file ends inside a document",
}
SKIP_EXAMPLES = 3  # documents named per skip reason


def _decode(raw: bytes, doc_id: str) -> Document:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Document(doc_id, None, NOT_UTF8)
    return _checked(doc_id, text)


class SkippedDocuments:
    """Counts of skipped documents per reason, with the first few documents (file:line) of each."""

    def __init__(self, counts: dict[str, int] | None = None, examples: dict[str, list[str]] | None = None):
        self.counts: dict[str, int] = dict(counts or {})
        self.examples: dict[str, list[str]] = {k: list(v) for k, v in (examples or {}).items()}

    def add(self, doc: Document) -> None:
        reason = doc.skip_reason or "unknown"
        self.counts[reason] = self.counts.get(reason, 0) + 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < SKIP_EXAMPLES:
            shown.append(doc.id)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def _where(self, reason: str) -> str:
        shown = self.examples.get(reason, [])
        return ", ".join(shown) + (", ..." if self.counts[reason] > len(shown) else "")

    def inline(self) -> str:
        """``reason: n at file:line, ...; reason: ...`` for a one-sentence error."""
        return "; ".join(f"{r}: {n:,} at {self._where(r)}" for r, n in sorted(self.counts.items()))

    def fixes(self) -> list[str]:
        """The known fixes for the reasons seen (SKIP_HINTS)."""
        return [SKIP_HINTS[reason] for reason in sorted(self.counts) if reason in SKIP_HINTS]

    def lines(self) -> list[str]:
        """One line per reason: count, the first documents, and the fix when there is a known one."""
        out = []
        for reason, n in sorted(self.counts.items()):
            where = f" (first: {self._where(reason)})" if self.examples.get(reason) else ""
            hint = f"; {SKIP_HINTS[reason]}" if reason in SKIP_HINTS else ""
            out.append(f"  {reason}: {n:,}{where}{hint}")
        return out


def _checked(doc_id: str, text: str) -> Document:
    if not text.strip():
        return Document(doc_id, None, "empty document")
    return Document(doc_id, text)


def read_text(path: Path, split_on: str = "line") -> Iterator[Document]:
    """One document per line (``split_on='line'``) or per blank-line separated block (``'paragraph'``)."""
    data = path.read_bytes().removeprefix(_BOM)
    if split_on == "line":  # documents are named file:line (1-based)
        for lineno, raw in enumerate(data.splitlines(), 1):
            yield _decode(raw, f"{path}:{lineno}")
        return
    if split_on != "paragraph":
        raise ValueError(f"split_on must be 'line' or 'paragraph', got {split_on!r}")
    start = 0  # paragraphs are named by the line they start on
    for separator in [*re.finditer(rb"(?:\r?\n){2,}", data), None]:
        end = separator.start() if separator else len(data)
        raw = data[start:end]
        if separator is not None or raw.strip():  # trailing newlines at the end are not a document
            line = data.count(b"\n", 0, start) + 1
            yield _decode(raw.strip(b"\r\n"), f"{path}:{line}")
        start = separator.end() if separator else end


def read_jsonl(path: Path, text_field: str = "text", id_field: str | None = None) -> Iterator[Document]:
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            doc_id = f"{path}:{lineno}"
            if lineno == 1:
                raw = raw.removeprefix(_BOM)  # editors on Windows start UTF-8 files with one
            if not raw.strip():
                continue  # blank separator lines are formatting, not documents
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                yield Document(doc_id, None, NOT_UTF8)
                continue
            except json.JSONDecodeError:
                yield Document(doc_id, None, "invalid JSON")
                continue
            if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                yield Document(doc_id, None, f"missing string field '{text_field}'")
                continue
            if id_field and record.get(id_field) is not None:
                doc_id = str(record[id_field])
            yield _checked(doc_id, record[text_field])


def read_parquet(path: Path, text_field: str = "text", id_field: str | None = None) -> Iterator[Document]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:  # pyarrow's message does not name the file
        raise ValueError(f"{path} is not a readable parquet file: {err}") from None
    if text_field not in pf.schema_arrow.names:
        raise ValueError(f"{path} has no column '{text_field}' (columns: {pf.schema_arrow.names})")
    columns = [text_field] + ([id_field] if id_field else [])
    row = 0
    for batch in pf.iter_batches(columns=columns, batch_size=1024):
        texts = batch.column(text_field).to_pylist()
        ids = batch.column(id_field).to_pylist() if id_field else [None] * len(texts)
        for text, doc_id in zip(texts, ids, strict=True):
            doc_id = str(doc_id) if doc_id is not None else f"{path} row {row + 1}"
            row += 1
            if isinstance(text, bytes):  # binary columns may hold arbitrary bytes
                yield _decode(text, doc_id)
            elif isinstance(text, str):
                yield _checked(doc_id, text)
            else:
                yield Document(doc_id, None, f"missing string field '{text_field}'")


def read_wikiextractor(path: Path) -> Iterator[Document]:
    """Parse one WikiExtractor file: ``<doc id=..>`` / title line / text / ``</doc>``; the title is kept."""
    doc_id, lines, start = None, [], 0
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            if doc_id is None:
                match = _WIKI_DOC_RE.match(raw)
                if match:
                    doc_id, lines, start = match.group(1).decode("utf-8", "replace"), [], lineno
                continue
            if raw.rstrip() == b"</doc>":
                yield _decode(b"".join(lines).strip(), f"{path}:{start} (doc id {doc_id})")
                doc_id = None
            else:
                lines.append(raw)
    if doc_id is not None:
        yield Document(f"{path}:{start} (doc id {doc_id})", None, "unterminated <doc> (file truncated?)")


def read_hf_dataset(
    name: str,
    config: str | None = None,
    split: str = "train",
    text_field: str = "text",
    data_files: list[str] | None = None,
) -> Iterator[Document]:
    """Stream a dataset through ``datasets.load_dataset`` (a hub name or a builder such as ``json``)."""
    import datasets

    from modernenc.utils.hub import offline_unless_reachable

    with offline_unless_reachable() as offline:
        try:
            ds = datasets.load_dataset(name, config, split=split, data_files=data_files, streaming=True)
            iterator = iter(ds)
            first = next(iterator, None)
        except Exception as err:  # hub errors come in many types (connection, not found, gated, offline)
            from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

            is_local = name in _PACKAGED_DATASETS_MODULES or Path(name).exists()
            if offline and not is_local:
                raise RuntimeError(
                    f"could not load the Hugging Face dataset '{name}': the Hub is unreachable (offline); "
                    "download it elsewhere and pass a local file or folder (text, jsonl, parquet) as --input"
                ) from err
            raise RuntimeError(
                f"could not load the Hugging Face dataset '{name}': {type(err).__name__}: {err}"
            ) from err
    records = iter(()) if first is None else _chain_first(first, iterator)
    for i, record in enumerate(records):
        doc_id = f"{name}:{split}:{i}"
        text = record.get(text_field)
        if not isinstance(text, str):
            yield Document(doc_id, None, f"missing string field '{text_field}'")
        else:
            yield _checked(doc_id, text)


def _chain_first(first, rest):
    yield first
    yield from rest


def _looks_like_wikiextractor(path: Path) -> bool:
    with path.open("rb") as f:
        return bool(_WIKI_DOC_RE.match(f.readline()))


def detect_format(path: Path) -> str:
    suffixes = "".join(path.suffixes[-2:]).lower()
    if suffixes.endswith((".jsonl", ".json")):
        return "jsonl"
    if suffixes.endswith(".parquet"):
        return "parquet"
    if _looks_like_wikiextractor(path):
        return "wikiextractor"
    return "text"


def list_input_files(path: Path) -> list[Path]:
    """A file, or every non-hidden file under a folder in sorted order (README files are documentation)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"input {path} does not exist")
    files = [
        p
        for p in sorted(path.rglob("*"))
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
        and not p.name.lower().startswith("readme")
    ]
    if not files:
        raise FileNotFoundError(f"input folder {path} holds no files")
    return files


def iter_documents(
    inputs: Iterable[str | Path],
    fmt: str = "auto",
    *,
    text_field: str = "text",
    id_field: str | None = None,
    text_split: str = "line",
    hf_config: str | None = None,
    hf_split: str = "train",
    hf_data_files: list[str] | None = None,
) -> Iterator[Document]:
    """Yield documents from every input, in a deterministic order (inputs as given, files sorted)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {FORMATS}")
    for source in inputs:
        if fmt == "hf":
            yield from read_hf_dataset(str(source), hf_config, hf_split, text_field, hf_data_files)
            continue
        for path in list_input_files(Path(source)):
            if path.suffix.lower() in COMPRESSED_SUFFIXES:
                raise ValueError(f"{path} is compressed; decompress it first (e.g. gunzip -k {path.name})")
            kind = detect_format(path) if fmt == "auto" else fmt
            if kind == "jsonl":
                yield from read_jsonl(path, text_field, id_field)
            elif kind == "parquet":
                yield from read_parquet(path, text_field, id_field)
            elif kind == "wikiextractor":
                yield from read_wikiextractor(path)
            else:
                yield from read_text(path, text_split)
