"""ADE corpus v2 as character spans: the drug and adverse-effect mentions of each sentence, and their pairs.

``DRUG-AE.rel`` has one line per drug-effect relation: ``PMID|sentence|effect|begin|end|drug|begin|end``.
Its offsets count from the start of the abstract, not the sentence, so each mention is placed by its text:

- **Placing.** The sentences of one abstract sit at one document offset, so the offsets of every mention of
  a sentence vote for it (each occurrence of a mention's text proposes ``begin - position``); the offset
  most mentions agree on wins, and each mention goes where it puts it. A mention whose text is not there
  goes to its nearest occurrence, which keeps the relative order and distance of drug and effect. A
  mention whose text is nowhere in the sentence is not placed, and counted. On the corpus files every one
  of the 13,642 mentions lands exactly where the voted offset puts it.
- **Merging.** Mentions of every relation line of a sentence are merged; identical spans are kept once.
- **Overlaps.** BIO tags hold one label per token, so of two overlapping spans the longer is kept (the
  earlier on a tie), and relations of a dropped span are dropped; both are counted. In this corpus the
  overlaps are 120 drugs nested in their effect ("codeine" in "codeine intoxication"): the effect is kept.
  Published joint models (SpERT, PFN) likewise drop the ~120 relations with overlapping entities.
- **Split.** Rows follow the sentence-classification split (``ade_data.make_splits``) exactly, so a
  sentence is in the same split in both tasks; negative sentences have no spans.

The Hugging Face relation config carries no document offsets; there a mention with several occurrences goes
to the one nearest its partner in the relation (the closest drug-effect pair, the earliest on a tie).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from modernenc.pv.ade_data import POSITIVE_FILE, SPLITS, Row, _read_lines

ENTITY_TYPES = ("DRUG", "EFFECT")  # class order of the tagger: O, B-DRUG, I-DRUG, B-EFFECT, I-EFFECT
HF_RELATION_CONFIG = "Ade_corpus_v2_drug_ade_relation"


@dataclass(frozen=True)
class RelationLine:
    """One line of DRUG-AE.rel; ``*_begin`` are document offsets, None where the source has none (HF)."""

    pmid: str
    sentence: str
    effect: str
    effect_begin: int | None
    drug: str
    drug_begin: int | None


@dataclass
class SpanStats:
    """What building the span rows did, for the printed report and split_info.json."""

    relation_lines: int = 0
    mentions: int = 0  # two per relation line
    placed_exactly: int = 0  # at the position the document offsets give
    placed_nearest: int = 0  # at the nearest occurrence of their text
    unplaced: int = 0  # text not found in the sentence
    duplicates_merged: int = 0  # mentions that repeat a span already kept
    overlaps_dropped: int = 0  # spans dropped because a longer one overlaps them
    relations: int = 0  # distinct (drug span, effect span) pairs kept
    relations_dropped: int = 0  # pairs that lost a span to an overlap or to placing
    unplaced_examples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "unplaced_examples"}


def read_relation_lines(folder: str | Path) -> list[RelationLine]:
    """Every line of ``folder/DRUG-AE.rel``, with its document offsets."""
    path = Path(folder) / POSITIVE_FILE
    out = []
    for i, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) != 8:
            raise ValueError(f"{path}:{i}: expected 8 '|' columns, got {len(parts)}")
        pmid, sentence, effect, effect_begin, _, drug, drug_begin, _ = parts
        try:
            offsets = int(effect_begin), int(drug_begin)
        except ValueError:
            raise ValueError(
                f"{path}:{i}: the begin offsets {effect_begin!r}, {drug_begin!r} are not integers"
            ) from None
        out.append(RelationLine(pmid, sentence.strip(), effect, offsets[0], drug, offsets[1]))
    return out


def read_relation_lines_hf(name: str, config: str = HF_RELATION_CONFIG) -> list[RelationLine]:
    """The Hugging Face relation config (``text``, ``drug``, ``effect``) through ``datasets``: no document
    offsets, so mentions are placed by their text alone."""
    from modernenc.pv.ade_data import load_hf_split

    ds = load_hf_split(name, config)
    return [
        RelationLine("", text.strip(), effect, None, drug, None)
        for text, drug, effect in zip(ds["text"], ds["drug"], ds["effect"], strict=True)
    ]


def occurrences(sentence: str, mention: str) -> list[int]:
    """Every start position of ``mention`` in ``sentence``, overlapping ones included."""
    found, i = [], sentence.find(mention)
    while i >= 0 and mention:
        found.append(i)
        i = sentence.find(mention, i + 1)
    return found


def sentence_offset(sentence: str, mentions: Iterable[tuple[str, int]]) -> int | None:
    """The document offset of ``sentence`` most (text, document begin) mentions agree on; ties go to the
    smallest offset, so the result does not depend on the order of the lines."""
    votes: Counter[int] = Counter()
    for text, begin in set(mentions):
        votes.update({begin - i for i in occurrences(sentence, text)})
    if not votes:
        return None
    best = max(votes.values())
    return min(offset for offset, n in votes.items() if n == best)


def _nearest(positions: list[int], expected: int) -> int:
    return min(positions, key=lambda p: (abs(p - expected), p))


def _closest_pair(drugs: list[int], effects: list[int]) -> tuple[int, int]:
    return min(((d, e) for d in drugs for e in effects), key=lambda de: (abs(de[0] - de[1]), de))


def _place_group(lines: list[RelationLine], stats: SpanStats) -> list[tuple[tuple | None, tuple | None]]:
    """(drug span, effect span) per relation line of one abstract's sentence; None for a mention not found."""
    sentence = lines[0].sentence
    with_offsets = all(line.drug_begin is not None for line in lines)
    offset = None
    if with_offsets:
        offset = sentence_offset(
            sentence, [m for x in lines for m in ((x.drug, x.drug_begin), (x.effect, x.effect_begin))]
        )
    pairs = []
    for line in lines:
        mentions = {"DRUG": (line.drug, line.drug_begin), "EFFECT": (line.effect, line.effect_begin)}
        found = {label: occurrences(sentence, text) for label, (text, _) in mentions.items()}
        starts: dict[str, int | None] = {}
        if offset is None and found["DRUG"] and found["EFFECT"]:
            starts["DRUG"], starts["EFFECT"] = _closest_pair(found["DRUG"], found["EFFECT"])
            stats.placed_nearest += 2
        else:
            for label, (_, begin) in mentions.items():
                if not found[label]:
                    starts[label] = None
                elif offset is not None and begin - offset in found[label]:
                    starts[label] = begin - offset
                    stats.placed_exactly += 1
                else:
                    expected = begin - offset if offset is not None else found[label][0]
                    starts[label] = _nearest(found[label], expected)
                    stats.placed_nearest += 1
        spans = {}
        for label, start in starts.items():
            text = mentions[label][0]
            if start is None:
                stats.unplaced += 1
                if len(stats.unplaced_examples) < 5:
                    stats.unplaced_examples.append(f"{label} {text!r} not in {sentence[:80]!r}")
                spans[label] = None
            else:
                spans[label] = (start, start + len(text), label)
        pairs.append((spans["DRUG"], spans["EFFECT"]))
    return pairs


def resolve_overlaps(spans: set[tuple[int, int, str]]) -> tuple[list[tuple[int, int, str]], int]:
    """Non-overlapping spans, longest first (earlier start, then label, on a tie), sorted by position;
    and how many were dropped."""
    kept: list[tuple[int, int, str]] = []
    for span in sorted(spans, key=lambda s: (s[0] - s[1], s[0], s[2])):
        if all(span[1] <= k[0] or span[0] >= k[1] for k in kept):
            kept.append(span)
    return sorted(kept), len(spans) - len(kept)


def build_span_rows(lines: list[RelationLine]) -> tuple[dict[str, dict], SpanStats]:
    """``{"text", "spans", "relations"}`` per sentence of ``lines``, keyed by the sentence."""
    stats = SpanStats(relation_lines=len(lines), mentions=2 * len(lines))
    groups: dict[tuple[str, str], list[RelationLine]] = defaultdict(list)
    for line in lines:
        groups[(line.sentence, line.pmid)].append(line)  # one document offset per abstract's sentence
    spans: dict[str, set] = defaultdict(set)
    pairs: dict[str, set] = defaultdict(set)
    placed = 0
    for (sentence, _), group in sorted(groups.items()):
        for drug, effect in _place_group(group, stats):
            for span in (drug, effect):
                if span is not None:
                    spans[sentence].add(span)
                    placed += 1
            if drug is not None and effect is not None:
                pairs[sentence].add((drug, effect))
            else:
                stats.relations_dropped += 1
    rows = {}
    for sentence in sorted(set(line.sentence for line in lines)):
        kept, dropped = resolve_overlaps(spans[sentence])
        stats.overlaps_dropped += dropped
        index = {span: i for i, span in enumerate(kept)}
        relations = sorted((index[d], index[e]) for d, e in pairs[sentence] if d in index and e in index)
        stats.relations += len(relations)
        stats.relations_dropped += sum(1 for d, e in pairs[sentence] if d not in index or e not in index)
        rows[sentence] = {
            "text": sentence,
            "spans": [{"start": s, "end": e, "label": label, "text": sentence[s:e]} for s, e, label in kept],
            "relations": [list(pair) for pair in relations],
        }
    stats.duplicates_merged = placed - sum(len(s) for s in spans.values())
    return rows, stats


def span_splits(classification: dict[str, list[Row]], rows: dict[str, dict]) -> dict[str, list[dict]]:
    """The classification split with each sentence's spans: the same sentences, in the same order."""
    empty = {"spans": [], "relations": []}
    out = {}
    for name, split in classification.items():
        out[name] = []
        for row in split:
            if row["label"] == 1 and row["text"] not in rows:
                raise ValueError(f"positive sentence {row['text'][:80]!r} has no relation lines")
            found = rows.get(row["text"], empty) if row["label"] == 1 else empty
            out[name].append({"text": row["text"], "spans": found["spans"], "relations": found["relations"]})
    return out


def count_spans(rows: list[dict]) -> dict[str, int]:
    labels = Counter(span["label"] for row in rows for span in row["spans"])
    return {
        "sentences": len(rows),
        "with_spans": sum(1 for row in rows if row["spans"]),
        **{label: labels.get(label, 0) for label in ENTITY_TYPES},
        "relations": sum(len(row["relations"]) for row in rows),
    }


def format_span_counts(splits: dict[str, list[dict]]) -> str:
    """A plain-text table of sentences, DRUG and EFFECT mentions and relations per split."""
    columns = ("sentences", "with_spans", *ENTITY_TYPES, "relations")
    lines = [f"{'split':<12}" + "".join(f"{c:>12}" for c in columns)]
    totals = Counter()
    for name, rows in splits.items():
        counts = count_spans(rows)
        totals.update(counts)
        lines.append(f"{name:<12}" + "".join(f"{counts[c]:>12,}" for c in columns))
    lines.append(f"{'all':<12}" + "".join(f"{totals[c]:>12,}" for c in columns))
    return "\n".join(lines)


def format_stats(stats: SpanStats) -> str:
    """What placing, merging and overlap handling did, in two lines."""
    share = stats.unplaced / stats.mentions if stats.mentions else 0.0
    lines = [
        f"read {stats.relation_lines:,} relation lines = {stats.mentions:,} mentions: "
        f"{stats.placed_exactly:,} placed at their document offset, {stats.placed_nearest:,} at the nearest "
        f"occurrence of their text, {stats.unplaced:,} could not be placed ({100 * share:.2f}%)",
        f"merged {stats.duplicates_merged:,} repeated mentions into the span already kept; dropped "
        f"{stats.overlaps_dropped:,} spans nested in or overlapping a longer one; kept {stats.relations:,} "
        f"distinct drug-effect relations ({stats.relations_dropped:,} dropped with a span)",
    ]
    lines += [f"  not placed: {example}" for example in stats.unplaced_examples]
    return "\n".join(lines)


def write_span_splits(splits: dict[str, list[dict]], out: str | Path, info: dict) -> dict:
    """Write ``<split>.jsonl`` and ``split_info.json`` (``info`` + counts + sha256); returns the info."""
    out = Path(out)
    digests = {}
    for name in SPLITS:
        data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in splits[name])
        (out / f"{name}.jsonl").write_text(data, encoding="utf-8")
        digests[f"{name}.jsonl"] = hashlib.sha256(data.encode("utf-8")).hexdigest()
    info = {**info, "counts": {name: count_spans(rows) for name, rows in splits.items()}, "sha256": digests}
    (out / "split_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info
