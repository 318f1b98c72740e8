"""The final evaluation of a BIO tagger: strict entity precision, recall and F1 per type and micro, on every
text and on the texts that hold at least one gold entity, plus the token-level macro F1.

Texts with spans (``tasks/spans.py``) are scored on character spans: a predicted span counts only if its
label, start and end equal a gold span's, as the written data has them. Pre-split words are scored on
tag positions. Decoding is the one ``modernenc predict`` uses (``tasks/extract.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from modernenc.model.config import IGNORE_INDEX
from modernenc.tasks.classification_data import TokenizedTexts
from modernenc.tasks.entities import EntityCounts, format_entity_table
from modernenc.tasks.spans import TokenizedSpans, char_spans, tag_entities


def score_split(
    names: list[str], texts: TokenizedTexts, probs: list[np.ndarray]
) -> tuple[dict[str, Any], list[list[tuple]]]:
    """Scores of one split from tag probabilities per sequence, and the predicted entities per text."""
    from sklearn.metrics import f1_score

    every, with_gold = EntityCounts(), EntityCounts()
    gold_tags, predicted_tags, predicted = [], [], []
    texts_with_gold = 0
    for i, (labels, p) in enumerate(zip(texts.labels, probs, strict=True)):
        tag_ids = p.argmax(-1)
        keep = labels != IGNORE_INDEX
        gold_tags.append(labels[keep])
        predicted_tags.append(tag_ids[keep])
        found = tag_entities(tag_ids, labels, names)
        if isinstance(texts, TokenizedSpans):
            gold = [(label, s, e) for s, e, label in texts.gold[i]]
            found = [(label, s, e) for s, e, label in char_spans(texts.texts[i], texts.offsets[i], found)]
        else:
            gold = tag_entities(labels, labels, names)
        every.update(gold, found)
        if gold:
            with_gold.update(gold, found)
            texts_with_gold += 1
        predicted.append(found)
    y_true, y_pred = np.concatenate(gold_tags), np.concatenate(predicted_tags)
    scores = {
        "num_texts": len(texts.labels),
        "num_texts_with_gold": texts_with_gold,
        "entities": every.scores(),
        "entities_texts_with_gold": with_gold.scores(),
        "token_macro_f1": float(
            f1_score(y_true, y_pred, labels=list(range(len(names))), average="macro", zero_division=0)
        ),
    }
    return scores, predicted


def evaluate_tagger(
    model, names: list[str], splits: dict[str, TokenizedTexts], out_dir: str | Path, batch_size: int = 64
) -> dict[str, Any]:
    """Score every split but train; write ``report.json`` and ``report.md`` into ``out_dir``."""
    from modernenc.tasks.extract import predict_token_probabilities

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"tags": names, "splits": {}}
    lines = [
        "Strict entity scores: a predicted entity counts only with the gold type, start and end.",
        "Token macro F1 is over every labelled token, O included.",
    ]
    for split, texts in splits.items():
        if split == "train":
            continue
        probs = predict_token_probabilities(model, texts.input_ids, batch_size)
        scores, _ = score_split(names, texts, probs)
        report["splits"][split] = scores
        lines += [
            "",
            f"## {split}: all {scores['num_texts']} texts (token macro F1 {scores['token_macro_f1']:.4f})",
            "",
            format_entity_table(scores["entities"]),
            "",
            f"## {split}: the {scores['num_texts_with_gold']} texts with at least one gold entity",
            "",
            format_entity_table(scores["entities_texts_with_gold"]),
        ]
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    return report
