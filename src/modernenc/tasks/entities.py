"""Entity-level scores for BIO-tagged sequences: strict matching, per type and micro-averaged.

An entity is a ``B-X`` tag followed by every ``I-X`` after it (IOB2). Strict means seqeval's strict IOB2
mode (``classification_report(..., mode="strict", scheme=IOB2)``): an ``I-X`` that follows ``O`` or another
type starts nothing, and a predicted entity counts only if its type, start and end all equal a gold
entity's. The numbers equal seqeval's (a test checks that on real predictions), without needing it.

Entities are ``(label, start, end)`` with ``end`` exclusive; the positions are whatever the caller counts
in (tag indices, or character offsets).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

OUTSIDE = "O"
Entity = tuple[str, int, int]  # (label, start, end), end exclusive


def is_bio(tags: Iterable[str]) -> bool:
    """Whether every tag is ``O``, ``B-X`` or ``I-X`` and at least one names a type."""
    tags = list(tags)
    return any(t != OUTSIDE for t in tags) and all(
        t == OUTSIDE or (t[:2] in ("B-", "I-") and len(t) > 2) for t in tags
    )


def bio_tags(entity_types: Sequence[str]) -> list[str]:
    """``O`` then ``B-X``, ``I-X`` for each type, in the given order: the class ids of a tagger."""
    return [OUTSIDE, *(f"{prefix}-{label}" for label in entity_types for prefix in ("B", "I"))]


def entity_types(tags: Iterable[str]) -> list[str]:
    """The types ``X`` of ``B-X``/``I-X`` tags, in first-seen order."""
    return list(dict.fromkeys(t[2:] for t in tags if t != OUTSIDE))


def entities_from_tags(tags: Sequence[str]) -> list[Entity]:
    """Strict IOB2 entities of one sequence: each ``B-X`` with the ``I-X`` run that follows it."""
    found = []
    i = 0
    while i < len(tags):
        tag = tags[i]
        if not tag.startswith("B-"):
            i += 1  # O, or an I-X that no B-X opened: not an entity in strict mode
            continue
        label, end = tag[2:], i + 1
        while end < len(tags) and tags[end] == f"I-{label}":
            end += 1
        found.append((label, i, end))
        i = end
    return found


@dataclass
class EntityCounts:
    """True positives, predicted and gold entities per type; add more sequences with ``update``."""

    tp: dict[str, int] = field(default_factory=dict)
    predicted: dict[str, int] = field(default_factory=dict)
    gold: dict[str, int] = field(default_factory=dict)

    def update(self, gold: Iterable[Entity], predicted: Iterable[Entity]) -> EntityCounts:
        """Count one sequence (or one text); entities are compared as exact ``(label, start, end)``."""
        gold, predicted = set(gold), set(predicted)
        for label, *_ in gold:
            self.gold[label] = self.gold.get(label, 0) + 1
        for label, *_ in predicted:
            self.predicted[label] = self.predicted.get(label, 0) + 1
        for label, *_ in gold & predicted:
            self.tp[label] = self.tp.get(label, 0) + 1
        return self

    @property
    def types(self) -> list[str]:
        return sorted(set(self.gold) | set(self.predicted))

    def scores(self) -> dict[str, dict[str, float]]:
        """Precision, recall, F1 and support per type and ``micro`` (over every entity); 0 when undefined,
        as seqeval reports with ``zero_division=0``."""
        out = {t: _prf(self.tp.get(t, 0), self.predicted.get(t, 0), self.gold.get(t, 0)) for t in self.types}
        out["micro"] = _prf(sum(self.tp.values()), sum(self.predicted.values()), sum(self.gold.values()))
        return out


def _prf(tp: int, predicted: int, gold: int) -> dict[str, float]:
    precision = tp / predicted if predicted else 0.0
    recall = tp / gold if gold else 0.0
    f1 = 2 * tp / (predicted + gold) if predicted + gold else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": gold, "predicted": predicted}


def score_tag_sequences(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> EntityCounts:
    """Strict entity counts over pairs of gold and predicted tag sequences of equal lengths."""
    counts = EntityCounts()
    for row, (g, p) in enumerate(zip(gold, predicted, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"sequence {row}: {len(g)} gold tags but {len(p)} predicted")
        counts.update(entities_from_tags(g), entities_from_tags(p))
    return counts


def format_entity_table(scores: dict[str, dict[str, float]]) -> str:
    """A markdown table of ``EntityCounts.scores()``: one row per type, then micro."""
    lines = ["| type | precision | recall | F1 | gold | predicted |", "|:--|--:|--:|--:|--:|--:|"]
    for name, s in scores.items():
        lines.append(
            f"| {name} | {100 * s['precision']:.1f} | {100 * s['recall']:.1f} | {100 * s['f1']:.1f} | "
            f"{s['support']} | {s['predicted']} |"
        )
    return "\n".join(lines)
