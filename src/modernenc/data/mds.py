"""Tokenize documents into ModernBERT-style chunks and write them as zstd-compressed MDS shards.

Layout of an output folder::

    out/train/index.json + shard.00000.mds.zstd ...
    out/validation/...          (only when validation_fraction > 0)
    out/report.json             (what was read, written and skipped)
    out/.modernenc-outputs.json (every file written, so `--force` replaces only those: utils/outputs.py)
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from streaming import MDSWriter
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from modernenc.data.corpus import Document, SkippedDocuments
from modernenc.data.decontaminate import Decontaminator

SPLITS = ("train", "validation")
REPORT_FILE = "report.json"


def mds_columns(vocab_size: int) -> dict[str, str]:
    # uint16 halves storage and I/O for vocabularies up to 65,536 ids (ModernBERT has 50,368).
    return {"input_ids": "ndarray:uint16" if vocab_size <= 1 << 16 else "ndarray:int32"}


def chunk_tokens(ids: list[int] | np.ndarray, max_length: int, cls_id: int, sep_id: int) -> list[np.ndarray]:
    """Split a document's tokens into ``[CLS] ... [SEP]`` chunks of at most ``max_length`` tokens.

    Long documents become several chunks (nothing is truncated); short ones stay whole. Every chunk gets
    its own CLS/SEP, as in ModernBERT pre-training, so each chunk is a valid standalone sequence.
    """
    if max_length < 3:
        raise ValueError("max_length must leave room for [CLS], [SEP] and at least one token")
    body = max_length - 2
    ids = np.asarray(ids, dtype=np.int64)
    return [
        np.concatenate([[cls_id], ids[start : start + body], [sep_id]]).astype(np.int64)
        for start in range(0, len(ids), body)
    ]


def assign_split(text: str, validation_fraction: float, seed: int = 0) -> str:
    """Deterministic hold-out from a hash of the text: identical documents always land in the same split."""
    if validation_fraction <= 0:
        return "train"
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, key=str(seed).encode()).digest()
    return "validation" if int.from_bytes(digest, "big") / 2**64 < validation_fraction else "train"


@dataclass
class CorpusReport:
    documents_read: int = 0
    documents_written: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    chunks: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    shards: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    documents_split_into_chunks: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_examples: dict[str, list[str]] = field(default_factory=dict)  # the first documents per reason
    decontaminated: int = 0
    eval_sentences_indexed: int = 0
    eval_sentences_too_short: int = 0
    max_length: int = 0
    chunk_length_histogram: dict[str, int] = field(default_factory=dict)
    chunk_length_stats: dict[str, float] = field(default_factory=dict)
    # What the ids mean: a reader with another tokenizer is refused (check_prepared_with).
    tokenizer_vocab_size: int = 0
    tokenizer_sha256: str = ""

    def format(self) -> str:
        lines = [
            f"documents read      {self.documents_read:,}",
            "documents written   " + ", ".join(f"{s} {n:,}" for s, n in self.documents_written.items()),
            "chunks (sequences)  " + ", ".join(f"{s} {n:,}" for s, n in self.chunks.items()),
            "tokens              " + ", ".join(f"{s} {n:,}" for s, n in self.tokens.items()),
            "shards              " + ", ".join(f"{s} {n:,}" for s, n in self.shards.items()),
            f"docs split into chunks of <= {self.max_length} tokens: {self.documents_split_into_chunks:,}",
            f"skipped documents   {sum(self.skipped.values()):,}",
        ]
        if self.tokenizer_sha256:
            lines.insert(
                0,
                f"tokenizer           {self.tokenizer_vocab_size:,} ids, vocabulary sha256 "
                f"{self.tokenizer_sha256[:12]}",
            )
        lines += SkippedDocuments(self.skipped, self.skipped_examples).lines()
        if self.eval_sentences_indexed or self.eval_sentences_too_short or self.decontaminated:
            lines.append(
                f"decontamination     dropped {self.decontaminated:,} documents containing one of "
                f"{self.eval_sentences_indexed:,} evaluation sentences "
                f"({self.eval_sentences_too_short:,} shorter sentences not used)"
            )
        stats = self.chunk_length_stats
        if stats:
            lines.append(
                "chunk length        "
                + ", ".join(f"{k} {v:,.0f}" if k != "mean" else f"{k} {v:,.1f}" for k, v in stats.items())
            )
            lines += [f"  {bucket:>12}: {n:,}" for bucket, n in self.chunk_length_histogram.items()]
        return "\n".join(lines)


def vocabulary_digest(tokenizer: Tokenizer) -> str:
    """SHA-256 of a tokenizer's vocabulary, every token with its id: what the ids in a shard stand for."""
    vocab = sorted(tokenizer.get_vocab(with_added_tokens=True).items(), key=lambda item: item[1])
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode("utf-8")).hexdigest()


class TokenizerMismatchError(ValueError):
    """Shards read with a tokenizer other than the one they were prepared with."""


def check_prepared_with(folder: str | Path, tokenizer: Tokenizer, name: str | Path) -> None:
    """Refuse to read the MDS folder ``folder`` (a split of a prepared corpus) with ``tokenizer`` (called
    ``name`` in messages) when the corpus' report records another vocabulary: every id would be read as
    another token, or as none. Corpora without the record (prepared elsewhere, or by an older modernenc)
    pass; their readers check each id against the vocabulary size instead."""
    folder = Path(folder)
    report_file = folder.parent / REPORT_FILE
    if not report_file.is_file():
        return
    try:
        report = json.loads(report_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # not a report this check can read; the per-id check still applies
    recorded = report.get("tokenizer_sha256") if isinstance(report, dict) else None
    if not recorded or recorded == vocabulary_digest(tokenizer):
        return
    size, prepared_size = tokenizer.get_vocab_size(with_added_tokens=True), report.get("tokenizer_vocab_size")
    if prepared_size == size:
        which = f"one with the same {size:,} ids but other tokens behind them"
    elif isinstance(prepared_size, int):
        which = f"one of {prepared_size:,} ids, not {size:,}"
    else:
        which = "another vocabulary"
    raise TokenizerMismatchError(
        f"{folder} was prepared with another tokenizer than {name} ({which}); its ids would be read as "
        "other tokens, so give the tokenizer it was prepared with, or prepare the corpus again with this one"
    )


def _length_summary(counts: np.ndarray, max_length: int) -> tuple[dict[str, int], dict[str, float]]:
    """Histogram in power-of-two buckets plus an exact ``== max_length`` bucket; percentiles from counts."""
    total = int(counts.sum())
    if total == 0:
        return {}, {}
    hist: dict[str, int] = {}
    lo = 1
    while lo < max_length:
        hi = min(2 * lo - 1, max_length - 1)
        hist[f"{lo}-{hi}"] = int(counts[lo : hi + 1].sum())
        lo = hi + 1
    hist[f"={max_length}"] = int(counts[max_length])
    lengths = np.arange(len(counts))
    cdf = np.cumsum(counts)

    def pct(q: float) -> int:
        return int(np.searchsorted(cdf, q * total))

    stats = {
        "min": float(lengths[counts > 0].min()),
        "p50": pct(0.5),
        "p90": pct(0.9),
        "max": float(lengths[counts > 0].max()),
        "mean": float((lengths * counts).sum() / total),
    }
    return hist, stats


def _why_train_is_empty(report: CorpusReport) -> str:
    """The error for a run that wrote no training sample, with the counts that tell which problem it was."""
    if report.documents_written["validation"]:
        return (
            f"all {report.documents_written['validation']:,} usable documents went to the validation split, "
            "so train would be empty; add documents or lower the validation fraction"
        )
    if report.documents_read == 0:
        return "no documents were usable: the input holds none (is it empty?); nothing was written"
    skipped = SkippedDocuments(report.skipped, report.skipped_examples)
    fixes = "; ".join([*skipped.fixes(), "check --format and --text-field"])
    return (
        f"no documents were usable: read {report.documents_read:,}, skipped {skipped.total:,} "
        f"({skipped.inline() or 'none'}), dropped {report.decontaminated:,} by decontamination; nothing was "
        f"written ({fixes})"
    )


def write_mds_corpus(
    documents: Iterable[Document],
    tokenizer: Tokenizer,
    out_dir: str | Path,
    *,
    max_length: int = 1024,
    validation_fraction: float = 0.0,
    split_seed: int = 0,
    decontaminator: Decontaminator | None = None,
    shard_size_limit: int | str = "64mb",
    encode_batch_size: int = 256,
    progress: bool = True,
) -> CorpusReport:
    """Tokenize, chunk, split and write ``documents`` into ``out_dir`` (which must already be prepared)."""
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    if cls_id is None or sep_id is None:
        raise ValueError("tokenizer must define [CLS] and [SEP] tokens")
    out_dir = Path(out_dir)
    columns = mds_columns(tokenizer.get_vocab_size(with_added_tokens=True))
    np_dtype = np.uint16 if columns["input_ids"].endswith("uint16") else np.int32
    splits = SPLITS if validation_fraction > 0 else ("train",)
    report = CorpusReport(
        max_length=max_length,
        tokenizer_vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
        tokenizer_sha256=vocabulary_digest(tokenizer),
    )
    if decontaminator is not None:
        report.eval_sentences_indexed = decontaminator.num_sentences
        report.eval_sentences_too_short = decontaminator.num_ignored
    skipped = SkippedDocuments()
    length_counts = np.zeros(max_length + 1, dtype=np.int64)

    writers = {
        s: MDSWriter(out=str(out_dir / s), columns=columns, compression="zstd", size_limit=shard_size_limit)
        for s in splits
    }

    def flush(batch: list[Document]) -> None:
        encodings = tokenizer.encode_batch([d.text for d in batch], add_special_tokens=False)
        for doc, enc in zip(batch, encodings, strict=True):
            if not enc.ids:  # e.g. only characters the tokenizer drops
                skipped.add(Document(doc.id, None, "no tokens after tokenization"))
                continue
            split = assign_split(doc.text, validation_fraction, split_seed)
            chunks = chunk_tokens(enc.ids, max_length, cls_id, sep_id)
            report.documents_written[split] += 1
            report.documents_split_into_chunks += len(chunks) > 1
            for chunk in chunks:
                writers[split].write({"input_ids": chunk.astype(np_dtype)})
                report.chunks[split] += 1
                report.tokens[split] += len(chunk)
                length_counts[len(chunk)] += 1

    try:
        batch: list[Document] = []
        bar = tqdm(documents, unit="doc", desc="tokenizing", disable=not progress, mininterval=1.0)
        for doc in bar:
            report.documents_read += 1
            if doc.skip_reason is not None:
                skipped.add(doc)
                continue
            if decontaminator is not None and decontaminator.contains_eval_sentence(doc.text):
                report.decontaminated += 1
                continue
            batch.append(doc)
            if len(batch) == encode_batch_size:
                flush(batch)
                batch = []
                bar.set_postfix(tokens=f"{sum(report.tokens.values()):,}", refresh=False)
        if batch:
            flush(batch)
    finally:
        for writer in writers.values():
            writer.finish()

    report.skipped, report.skipped_examples = skipped.counts, skipped.examples
    if report.chunks["train"] == 0:
        for s in splits:  # empty shards would pass for a corpus until train.py fails on them
            shutil.rmtree(out_dir / s, ignore_errors=True)
        raise ValueError(_why_train_is_empty(report))
    for s in splits:
        index = json.loads((out_dir / s / "index.json").read_text())
        report.shards[s] = len(index["shards"])
    report.chunk_length_histogram, report.chunk_length_stats = _length_summary(length_counts, max_length)
    (out_dir / REPORT_FILE).write_text(json.dumps(asdict(report), indent=2))
    return report


def read_report(out_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(out_dir) / REPORT_FILE).read_text())
