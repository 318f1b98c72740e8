"""ADE corpus v2 sentence classification: read, de-duplicate, sub-sample and split as published.

Protocol (Gurulingappa et al., 2012; see the corpus README): positives are the unique sentences of
``DRUG-AE.rel``, negatives the unique sentences of ``ADE-NEG.txt``. Negatives are sub-sampled to the number
of positives, then each class is split 60/20/20, giving 2,562/855/854 sentences per class.

Sentences are sorted before any random step, so a split depends only on the *set* of sentences and the seed:
the local files and the Hugging Face copy give identical splits.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from modernenc.utils.tables import read_lines

POSITIVE_FILE = "DRUG-AE.rel"
NEGATIVE_FILE = "ADE-NEG.txt"
DOSE_FILE = "DRUG-DOSE.rel"
SPLITS = ("train", "validation", "test")
HF_NAME = "ade_corpus_v2"
HF_CONFIG = "Ade_corpus_v2_classification"
# Published per-class sizes of the balanced split, for the 4,271 unique positive sentences.
PUBLISHED_POSITIVES = 4271
PUBLISHED_UNIQUE = 20896  # 4,271 positive + 16,625 negative unique sentences
PUBLISHED_SIZES = {"train": 2562, "validation": 855, "test": 854}

Row = dict  # {"text": str, "label": 0 | 1}


@dataclass
class AdeSentences:
    """Unique sentences per class, plus what de-duplication did (for the report)."""

    positives: list[str]
    negatives: list[str]
    raw_rows: dict[str, int] = field(default_factory=dict)  # rows read per class, before de-duplication
    conflicts: int = 0  # sentences labelled both ways; kept as positives


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"ADE corpus file {path} not found")
    return read_lines(path)  # a non-UTF-8 file fails naming its line


def read_raw_ade(folder: str | Path) -> list[tuple[str, int]]:
    """Every (sentence, label) row of the corpus files, duplicates included, in file order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"ADE corpus folder {folder} does not exist")
    rows = []
    for i, line in enumerate(_read_lines(folder / POSITIVE_FILE), 1):
        if line.strip():
            parts = line.split("|")  # PMID|sentence|effect|begin|end|drug|begin|end
            if len(parts) != 8:
                raise ValueError(f"{folder / POSITIVE_FILE}:{i}: expected 8 '|' columns, got {len(parts)}")
            rows.append((parts[1].strip(), 1))
    for i, line in enumerate(_read_lines(folder / NEGATIVE_FILE), 1):
        if line.strip():
            parts = line.split(" ", 2)  # PMID NEG sentence
            if len(parts) != 3 or parts[1] != "NEG":
                raise ValueError(f"{folder / NEGATIVE_FILE}:{i}: expected 'PMID NEG sentence'")
            rows.append((parts[2].strip(), 0))
    for label, name in ((1, POSITIVE_FILE), (0, NEGATIVE_FILE)):
        if not any(row_label == label for _, row_label in rows):  # splits without a class are no splits
            raise ValueError(f"ADE corpus file {folder / name} holds no sentences; is it the right folder?")
    return rows


def corpus_sentences(folder: str | Path) -> list[str]:
    """Every sentence of the corpus files, for decontamination: ``DRUG-AE.rel`` and ``DRUG-DOSE.rel``
    (``PMID|sentence|...``) and ``ADE-NEG.txt`` (``PMID NEG sentence``); none is an error."""
    folder = Path(folder)
    out = []
    for name in (POSITIVE_FILE, DOSE_FILE):
        if (folder / name).exists():
            out += [
                parts[1]
                for parts in (line.split("|") for line in _read_lines(folder / name))
                if len(parts) > 1
            ]
    if (folder / NEGATIVE_FILE).exists():
        for line in _read_lines(folder / NEGATIVE_FILE):
            parts = line.split(" ", 2)
            if len(parts) == 3 and parts[1] == "NEG":
                out.append(parts[2])
    if not out:
        raise ValueError(f"{folder} holds no {POSITIVE_FILE}, {DOSE_FILE} or {NEGATIVE_FILE} sentences")
    return out


def load_hf_split(name: str = HF_NAME, config: str = HF_CONFIG):
    """The ``train`` split of a Hugging Face dataset config through ``datasets``; offline and uncached, one
    sentence that says to pass the local corpus folder instead."""
    import datasets

    from modernenc.utils.hub import offline_unless_reachable

    with offline_unless_reachable() as offline:  # a cached copy still loads offline
        try:
            return datasets.load_dataset(name, config, split="train")
        except Exception as err:  # hub errors come in many types (connection, offline, not found)
            if offline:
                raise RuntimeError(
                    f"cannot load the Hugging Face dataset '{name}' offline; pass the local corpus folder "
                    "instead, e.g. --source ../shared/data/ade_corpus_v2"
                ) from err
            raise RuntimeError(
                f"cannot load the Hugging Face dataset '{name}': {type(err).__name__}: {err}"
            ) from err


def read_raw_hf(name: str = HF_NAME, config: str = HF_CONFIG) -> list[tuple[str, int]]:
    """The Hugging Face classification config (columns ``text``, ``label``) through ``datasets``."""
    ds = load_hf_split(name, config)
    return [(text.strip(), int(label)) for text, label in zip(ds["text"], ds["label"], strict=True)]


def dedupe(rows: Iterable[tuple[str, int]]) -> AdeSentences:
    """Unique sentences per class (exact match); a sentence labelled both ways is a positive.

    A sentence lands in ADE-NEG.txt only if it has no drug-AE relation, so a positive label wins.
    """
    raw = {"positive": 0, "negative": 0}
    pos: dict[str, None] = {}
    neg: dict[str, None] = {}
    for text, label in rows:
        if label not in (0, 1):
            raise ValueError(f"label must be 0 or 1, got {label!r} for {text[:60]!r}")
        raw["positive" if label else "negative"] += 1
        (pos if label else neg)[text] = None
    conflicts = pos.keys() & neg.keys()
    negatives = [s for s in neg if s not in conflicts]
    return AdeSentences(list(pos), negatives, raw, len(conflicts))


def load_ade_sentences(folder: str | Path) -> tuple[list[str], list[str]]:
    """(positives, negatives): the unique sentences of DRUG-AE.rel and ADE-NEG.txt."""
    found = dedupe(read_raw_ade(folder))
    return found.positives, found.negatives


def split_sizes(n: int) -> dict[str, int]:
    """60/20/20 of one class: train and test round down, validation takes the rest (4,271 -> 2562/855/854)."""
    train, test = n * 3 // 5, n // 5
    return {"train": train, "validation": n - train - test, "test": test}


def make_splits(
    positives: list[str], negatives: list[str], seed: int = 42, natural: bool = False
) -> dict[str, list[Row]]:
    """Stratified 60/20/20 splits; negatives sub-sampled to the positives' count unless ``natural``.

    Expects de-duplicated, disjoint classes (see ``dedupe``), so no sentence can appear in two splits.
    """
    if set(positives) & set(negatives):
        raise ValueError("positives and negatives overlap; de-duplicate them first")
    rng = random.Random(seed)
    pos, neg = sorted(set(positives)), sorted(set(negatives))  # order-independent of the source
    rng.shuffle(pos)
    rng.shuffle(neg)
    if not natural:
        if len(neg) < len(pos):
            raise ValueError(f"only {len(neg)} negatives to sub-sample to {len(pos)} positives")
        neg = neg[: len(pos)]  # a prefix of a random permutation is a uniform sample
        if len(pos) == PUBLISHED_POSITIVES:
            assert split_sizes(len(pos)) == PUBLISHED_SIZES, split_sizes(len(pos))
    for label, sentences in (("positive", pos), ("negative", neg)):
        sizes = split_sizes(len(sentences))
        if not all(sizes.values()):  # an empty split would train, choose thresholds or test on nothing
            empty = ", ".join(name for name, n in sizes.items() if n == 0)
            raise ValueError(
                f"only {len(sentences)} unique {label} sentence(s): the {empty} split(s) would get none of "
                "them (60/20/20 needs at least 5 per class)"
            )
    splits: dict[str, list[Row]] = {name: [] for name in SPLITS}
    for label, sentences in ((1, pos), (0, neg)):
        start = 0
        for name, size in split_sizes(len(sentences)).items():
            splits[name] += [{"text": s, "label": label} for s in sentences[start : start + size]]
            start += size
    for rows in splits.values():
        rng.shuffle(rows)  # interleave the classes
    return splits


def count_labels(rows: list[Row]) -> dict[str, int]:
    pos = sum(r["label"] for r in rows)
    return {"negative": len(rows) - pos, "positive": pos, "total": len(rows)}


def write_jsonl(rows: Iterable[Row], path: str | Path) -> str:
    """Write one ``{"text", "label"}`` object per line; returns the file's sha256."""
    data = "".join(
        json.dumps({"text": r["text"], "label": int(r["label"])}, ensure_ascii=False) + "\n" for r in rows
    )
    Path(path).write_text(data, encoding="utf-8")
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def read_jsonl(path: str | Path) -> list[Row]:
    return [json.loads(line) for line in read_lines(Path(path)) if line.strip()]


def format_counts(splits: dict[str, list[Row]]) -> str:
    """A plain-text table of sentences per split and class."""
    lines = [f"{'split':<12}{'negative':>10}{'positive':>10}{'total':>10}"]
    totals = {"negative": 0, "positive": 0, "total": 0}
    for name, rows in splits.items():
        c = count_labels(rows)
        totals = {k: totals[k] + c[k] for k in totals}
        lines.append(f"{name:<12}{c['negative']:>10,}{c['positive']:>10,}{c['total']:>10,}")
    lines.append(f"{'all':<12}{totals['negative']:>10,}{totals['positive']:>10,}{totals['total']:>10,}")
    return "\n".join(lines)


def write_splits(splits: dict[str, list[Row]], out: str | Path, info: dict) -> dict:
    """Write ``<split>.jsonl`` and ``split_info.json`` (``info`` + counts + sha256) into the folder ``out``
    (the CLI gives a staging folder, see ``modernenc.utils.outputs.writing_folder``); returns the info."""
    out = Path(out)
    sha = {f"{name}.jsonl": write_jsonl(rows, out / f"{name}.jsonl") for name, rows in splits.items()}
    info = {**info, "counts": {name: count_labels(rows) for name, rows in splits.items()}, "sha256": sha}
    (out / "split_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info
