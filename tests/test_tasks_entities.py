"""Strict entity scores, checked against seqeval's strict IOB2 mode and hand-worked cases."""

from __future__ import annotations

import random

import pytest
from seqeval.metrics import classification_report
from seqeval.scheme import IOB2, Entities

from modernenc.tasks.entities import (
    EntityCounts,
    bio_tags,
    entities_from_tags,
    is_bio,
    score_tag_sequences,
)

TAGS = bio_tags(["DRUG", "EFFECT"])


def seqeval_scores(gold, predicted) -> dict:
    return classification_report(
        gold, predicted, mode="strict", scheme=IOB2, output_dict=True, zero_division=0
    )


def assert_matches_seqeval(gold, predicted) -> None:
    ours = score_tag_sequences(gold, predicted).scores()
    theirs = seqeval_scores(gold, predicted)
    for name in [*ours.keys() - {"micro"}, "micro"]:
        reference = theirs["micro avg" if name == "micro" else name]
        for key in ("precision", "recall", "f1"):
            theirs_key = "f1-score" if key == "f1" else key
            assert ours[name][key] == pytest.approx(reference[theirs_key], abs=1e-12), (name, key)
        assert ours[name]["support"] == reference["support"]
    assert set(ours) - {"micro"} == {k for k in theirs if not k.endswith(" avg")}


def test_hand_worked_sequences():
    # I-X after O or after another type opens nothing in strict mode; B-X B-X is two entities.
    tags = ["I-DRUG", "B-DRUG", "I-DRUG", "O", "I-EFFECT", "B-EFFECT", "B-EFFECT", "I-DRUG", "B-DRUG"]
    assert entities_from_tags(tags) == [("DRUG", 1, 3), ("EFFECT", 5, 6), ("EFFECT", 6, 7), ("DRUG", 8, 9)]
    counts = EntityCounts().update([("DRUG", 0, 2), ("EFFECT", 3, 5)], [("DRUG", 0, 2), ("EFFECT", 3, 4)])
    scores = counts.scores()
    assert scores["DRUG"]["f1"] == 1.0 and scores["EFFECT"]["f1"] == 0.0  # a boundary off is wrong
    assert scores["micro"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2, "predicted": 2}


@pytest.mark.parametrize("seed", range(5))
def test_entities_and_scores_equal_seqeval_on_random_sequences(seed):
    rng = random.Random(seed)
    gold = [[rng.choice(TAGS) for _ in range(rng.randint(0, 30))] for _ in range(200)]
    # predictions that mostly agree, as a tagger's do, with ill-formed runs mixed in
    predicted = [[t if rng.random() < 0.8 else rng.choice(TAGS) for t in seq] for seq in gold]
    for seq in gold + predicted:
        theirs = Entities([seq], IOB2).entities[0]
        assert entities_from_tags(seq) == [(e.tag, e.start, e.end) for e in theirs]
    assert_matches_seqeval(gold, predicted)


def test_no_predictions_and_no_gold_score_zero_like_seqeval():
    gold = [["B-DRUG", "O"], ["O", "O"]]
    nothing = [["O", "O"], ["O", "O"]]
    assert_matches_seqeval(gold, nothing)
    assert score_tag_sequences(nothing, gold).scores()["micro"]["precision"] == 0.0


def test_bio_vocabulary():
    assert TAGS == ["O", "B-DRUG", "I-DRUG", "B-EFFECT", "I-EFFECT"]
    assert is_bio(TAGS) and not is_bio(["O", "DRUG"]) and not is_bio(["O"]) and not is_bio(["O", "B-"])
    with pytest.raises(ValueError, match="sequence 0: 2 gold tags but 1 predicted"):
        score_tag_sequences([["O", "O"]], [["O"]])
