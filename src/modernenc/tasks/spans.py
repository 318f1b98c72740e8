"""Character spans in raw text, for token classification: check them, tokenize, tag every token in BIO.

A row is a text and its labelled spans, ``{"text": ..., "spans": [{"start", "end", "label", "text"?}]}``,
``end`` exclusive. The text is tokenized as it is (no pre-splitting into words), and the tokenizer's
character offsets tie every token back to the text, so predictions map back to exact character spans.

Tags: a span's first token is ``B-X``, its other tokens ``I-X``, every other token ``O``. Each word's first
sub-token carries the word's tag, and so do its other sub-tokens (``I-X`` inside a span, ``O`` outside):
`transformers`' token-classification pipeline groups *every* token's prediction (``aggregation_strategy=
"simple"``), so a model trained on first sub-tokens only would leave the others untrained and split its
mentions there. [CLS] and [SEP] get IGNORE_INDEX. A span whose ends fall inside a token cannot be tagged
exactly; it is widened to whole tokens and counted (``num_misaligned``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from modernenc.model.config import IGNORE_INDEX
from modernenc.tasks.classification_data import TokenizedTexts
from modernenc.tasks.entities import OUTSIDE, Entity, entities_from_tags
from modernenc.utils.tables import DataColumnError

Span = tuple[int, int, str]  # (start, end, label), character offsets, end exclusive
SPAN_KEYS = ("start", "end", "label")


def _describe(span: object) -> str:
    text = repr(span)
    return text if len(text) <= 120 else text[:117] + "..."


def check_spans(
    texts: Sequence[str],
    span_lists: Sequence[object],
    origin: str,
    entity_types: Sequence[str] | None = None,
) -> list[list[Span]]:
    """Validate every row's spans and return them as sorted ``(start, end, label)`` tuples.

    Each problem is one sentence naming the file, the row (1-based), the span and what is wrong: not a list
    of ``{start, end, label}`` objects, offsets out of range, a ``text`` that differs from
    ``text[start:end]``, a label outside ``entity_types`` (when given), or two spans that overlap (BIO tags
    hold one label per token).
    """
    known = set(entity_types) if entity_types is not None else None
    out = []
    for row, (text, spans) in enumerate(zip(texts, span_lists, strict=True), 1):
        where = f"{origin}: row {row}"
        if not isinstance(spans, list):
            raise DataColumnError(
                f"{where}: spans must be a list of {{start, end, label}} objects; got {spans!r}"
            )
        found = []
        for k, span in enumerate(spans, 1):
            what = f"{where}, span {k} {_describe(span)}"
            if not isinstance(span, dict) or any(key not in span for key in SPAN_KEYS):
                raise DataColumnError(f"{what} must be an object with keys start, end and label")
            start, end, label = span["start"], span["end"], span["label"]
            if any(isinstance(v, bool) or not isinstance(v, int) for v in (start, end)):
                raise DataColumnError(f"{what}: start and end must be integers")
            if not 0 <= start < end <= len(text):
                raise DataColumnError(
                    f"{what} is out of range for a text of {len(text)} characters (need 0 <= start < end "
                    f"<= {len(text)})"
                )
            if not isinstance(label, str) or not label or label == OUTSIDE:
                raise DataColumnError(f"{what}: label must be a non-empty entity type other than 'O'")
            if "text" in span and text[start:end] != span["text"]:
                raise DataColumnError(
                    f"{what} does not match its text: text[{start}:{end}] is {text[start:end]!r}"
                )
            if known is not None and label not in known:
                raise DataColumnError(
                    f"{what} has the entity type {label!r}, which is not one of {sorted(known)}"
                )
            found.append((start, end, label))
        found = sorted(set(found))
        for a, b in zip(found, found[1:], strict=False):
            if b[0] < a[1]:
                raise DataColumnError(
                    f"{where}: spans {a} and {b} overlap; BIO tags hold one label per token, so keep "
                    "one of them"
                )
        out.append(found)
    return out


def span_types(span_lists: Sequence[Sequence[Span]]) -> list[str]:
    """The entity types of checked spans, sorted."""
    return sorted({label for spans in span_lists for _, _, label in spans})


def trimmed_offsets(text: str, offsets: Sequence[tuple[int, int]]) -> np.ndarray:
    """Token offsets without the whitespace byte-level tokens carry ("Ġcaused" starts at the space)."""
    out = np.asarray(offsets, dtype=np.int64).reshape(-1, 2).copy()
    for row in out:
        start, end = int(row[0]), int(row[1])
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        row[0], row[1] = start, end
    return out


def tag_tokens(offsets: np.ndarray, spans: Sequence[Span]) -> tuple[list[str], int]:
    """BIO tags for tokens at ``offsets`` (trimmed, (0, 0) for specials), and how many spans do not start
    and end on token boundaries. A token already given to an earlier span stays with it."""
    tags = [OUTSIDE] * len(offsets)
    misaligned = 0
    for start, end, label in spans:
        inside = [
            i
            for i, (s, e) in enumerate(offsets)
            if tags[i] == OUTSIDE and ((s < end and e > start) or (s == e and start < s < end))
        ]
        if not inside:
            misaligned += 1
            continue
        tags[inside[0]] = f"B-{label}"
        for i in inside[1:]:
            tags[i] = f"I-{label}"
        first, last = offsets[inside[0]], offsets[inside[-1]]
        misaligned += int(first[0] != start or last[1] != end)
    return tags, misaligned


def char_spans(text: str, offsets: np.ndarray, entities: Sequence[Entity]) -> list[Span]:
    """Token entities ``(label, first, end)`` as character spans ``(start, end, label)``, whitespace
    trimmed."""
    out = []
    for label, first, end in entities:
        start, stop = int(offsets[first][0]), int(offsets[end - 1][1])
        while stop > start and text[stop - 1].isspace():
            stop -= 1
        out.append((start, stop, label))
    return out


@dataclass
class TokenizedSpans(TokenizedTexts):
    """Token ids and BIO tag ids per text, plus what maps them back to characters."""

    texts: list[str] = field(default_factory=list)
    offsets: list[np.ndarray] = field(default_factory=list)  # [tokens, 2] per text, trimmed
    gold: list[list[Span]] = field(default_factory=list)
    num_misaligned: int = 0  # spans whose ends fall inside a token: widened to whole tokens
    num_spans_cut: int = 0  # spans beyond max_length tokens: not trained on, lost to the tagger


def frame(tokenizer, texts: Sequence[str], cls_id: int, sep_id: int) -> list[tuple[list[int], np.ndarray]]:
    """``[CLS] ... [SEP]`` ids and trimmed offsets per text (specials at (0, 0)), untruncated."""
    tokenizer.no_padding()
    tokenizer.no_truncation()
    adds_specials = tokenizer.encode("").ids == [cls_id, sep_id]
    out = []
    for text, enc in zip(
        texts, tokenizer.encode_batch(list(texts), add_special_tokens=adds_specials), strict=True
    ):
        ids, offsets = list(enc.ids), list(enc.offsets)
        if adds_specials:
            ids, offsets = ids[1:-1], offsets[1:-1]
        out.append(([cls_id, *ids, sep_id], trimmed_offsets(text, [(0, 0), *offsets, (0, 0)])))
    return out


def tokenize_spans(
    texts: Sequence[str],
    spans: Sequence[Sequence[Span]],
    vocabulary: Sequence[str],
    tokenizer_path: str | Path,
    max_length: int,
) -> TokenizedSpans:
    """Ids ``[CLS] ... [SEP]`` (cut to ``max_length``) and a BIO tag id for every token but the specials."""
    from modernenc.data.masking import load_tokenizer

    if max_length < 2:
        raise ValueError(f"max_length must leave room for [CLS] and [SEP]; got {max_length}")
    tokenizer = load_tokenizer(tokenizer_path)
    cls_id, sep_id = (tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]"))
    index = {tag: i for i, tag in enumerate(vocabulary)}
    out = TokenizedSpans([], [], texts=list(texts), gold=[list(s) for s in spans])
    for row_spans, (ids, offsets) in zip(spans, frame(tokenizer, texts, cls_id, sep_id), strict=True):
        tags, misaligned = tag_tokens(offsets, row_spans)
        labels = [IGNORE_INDEX, *(index[t] for t in tags[1:-1]), IGNORE_INDEX]
        if len(ids) > max_length:
            kept = max_length - 1
            out.num_spans_cut += sum(1 for t in tags[kept:-1] if t.startswith("B-"))
            ids, offsets = [*ids[:kept], sep_id], np.concatenate([offsets[:kept], [[0, 0]]])
            labels = [*labels[:kept], IGNORE_INDEX]
            out.num_truncated += 1
        out.input_ids.append(np.asarray(ids, dtype=np.int64))
        out.labels.append(np.asarray(labels, dtype=np.int64))
        out.offsets.append(offsets)
        out.num_misaligned += misaligned
    return out


def tag_entities(tag_ids: Sequence[int], labels: Sequence[int], names: Sequence[str]) -> list[Entity]:
    """Strict entities of the labelled positions (``labels != IGNORE_INDEX``) of one sequence, with
    positions counted in the full sequence."""
    positions = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
    found = entities_from_tags([names[tag_ids[i]] for i in positions])
    return [(label, positions[a], positions[b - 1] + 1) for label, a, b in found]
