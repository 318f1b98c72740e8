"""Scores of ADE span extraction against the written split: entities, and the all-pairs relation baseline.

- **Entities**: strict character spans (type, start and end equal), per type and micro, on every sentence
  and on the positive sentences alone (those with mentions: the setting of the published joint models).
- **Relations**: a baseline, not a relation model. Every DRUG is paired with every EFFECT of its sentence;
  a pair is right when both spans are exactly a gold pair's. Scored on the gold mentions too, it shows what
  the pairing rule itself costs.
"""

from __future__ import annotations

from collections.abc import Sequence

from modernenc.tasks.entities import EntityCounts

RELATION = "DRUG-EFFECT"
# Published joint entity and relation extraction on ADE (10-fold cross-validation over the 4,272 positive
# sentences, overlapping entities removed; strict): ../shared/reference/deployment-anchors.md.
PUBLISHED_ANCHORS = [
    ("SpERT (published)", 89.3, 78.8),
    ("PFN, BERT-base (published)", 89.6, 80.0),
]
PUBLISHED_PROTOCOL = "10-fold cross-validation on the positive sentences, not this split"


def _spans(spans: Sequence[dict]) -> set[tuple[str, int, int]]:
    return {(s["label"], int(s["start"]), int(s["end"])) for s in spans}


def all_pairs(spans: set[tuple[str, int, int]]) -> set[tuple]:
    drugs = [s for s in spans if s[0] == "DRUG"]
    effects = [s for s in spans if s[0] == "EFFECT"]
    return {(RELATION, d, e) for d in drugs for e in effects}


def gold_pairs(row: dict) -> set[tuple]:
    spans = [(s["label"], s["start"], s["end"]) for s in row["spans"]]
    return {(RELATION, spans[d], spans[e]) for d, e in row["relations"]}


def score_rows(gold_rows: Sequence[dict], predicted: Sequence[Sequence[dict]]) -> dict[str, dict]:
    """Entity and all-pairs relation scores of ``predicted`` spans per row, on all rows and on the rows with
    gold spans."""
    if len(gold_rows) != len(predicted):
        raise ValueError(f"{len(gold_rows)} gold rows but {len(predicted)} predictions")
    counts = {
        name: EntityCounts() for name in ("entities", "entities_positive", "relations", "relations_positive")
    }
    for row, found in zip(gold_rows, predicted, strict=True):
        gold, spans = _spans(row["spans"]), _spans(found)
        pairs = (gold_pairs(row), all_pairs(spans))
        counts["entities"].update(gold, spans)
        counts["relations"].update(*pairs)
        if gold:
            counts["entities_positive"].update(gold, spans)
            counts["relations_positive"].update(*pairs)
    return {name: c.scores() for name, c in counts.items()}
