"""The ADE extraction baselines: the lexicon matcher and the all-pairs relation rule, on hand-worked cases,
and the results table's span rows on a tiny split."""

from __future__ import annotations

from modernenc.pv.lexicon_baseline import Lexicon
from modernenc.pv.span_scores import score_rows


def spans_of(found: list[dict]) -> list[tuple]:
    return [(s["start"], s["end"], s["label"], s["text"]) for s in found]


def test_lexicon_longest_case_insensitive_match_at_word_boundaries():
    lexicon = Lexicon(
        [
            ("aspirin", "DRUG"),
            ("Aspirin", "DRUG"),
            ("lithium", "DRUG"),
            ("lithium toxicity", "EFFECT"),
            ("toxicity", "EFFECT"),
            ("rash", "EFFECT"),
            ("rash", "DRUG"),  # seen once as each: the tie goes to DRUG, alphabetically first
            ("rash", "EFFECT"),  # now EFFECT twice, DRUG once: EFFECT
            ("5-FU", "DRUG"),
        ]
    )
    text = "LITHIUM TOXICITY and a rash after 5-FU-induced colitis; thrash; aspirinate; lithium."
    assert spans_of(lexicon.match(text)) == [
        (0, 16, "EFFECT", "LITHIUM TOXICITY"),  # the longest entry wins over "lithium"
        (23, 27, "EFFECT", "rash"),
        (34, 38, "DRUG", "5-FU"),  # inside "5-FU-induced"
        (76, 83, "DRUG", "lithium"),
    ]  # no "rash" inside "thrash", no "aspirin" inside "aspirinate"
    assert len(lexicon) == 6
    assert Lexicon([("rash", "EFFECT"), ("rash", "DRUG")]).match("rash")[0]["label"] == "DRUG"


def test_lexicon_from_training_rows():
    rows = [{"text": "Rash after amoxicillin.", "spans": [{"start": 0, "end": 4, "label": "EFFECT"}]}]
    assert spans_of(Lexicon.from_rows(rows).match("A RASH.")) == [(2, 6, "EFFECT", "RASH")]


def test_scores_count_strict_entities_and_all_pairs_relations_by_hand():
    text = "Aspirin and warfarin caused bleeding and rash."
    gold = {
        "text": text,
        "spans": [
            {"start": 0, "end": 7, "label": "DRUG"},
            {"start": 12, "end": 20, "label": "DRUG"},
            {"start": 28, "end": 36, "label": "EFFECT"},
            {"start": 41, "end": 45, "label": "EFFECT"},
        ],
        "relations": [[0, 2], [1, 2]],  # both drugs -> bleeding; the rash is not paired
    }
    negative = {"text": "Nothing here.", "spans": [], "relations": []}
    predicted = [
        [
            {"start": 0, "end": 7, "label": "DRUG"},
            {"start": 12, "end": 20, "label": "DRUG"},
            {"start": 28, "end": 45, "label": "EFFECT"},  # boundary wrong: not a match
        ],
        [{"start": 0, "end": 7, "label": "DRUG"}],  # a false alarm in a negative sentence
    ]
    scores = score_rows([gold, negative], predicted)
    # entities: 2 right of 4 predicted, 4 gold
    assert (
        scores["entities"]["micro"]["precision"] == 2 / 4 and scores["entities"]["micro"]["recall"] == 2 / 4
    )
    assert scores["entities_positive"]["micro"]["precision"] == 2 / 3  # the negative sentence left out
    assert scores["entities"]["DRUG"]["f1"] == 2 * 2 / (3 + 2)
    # relations: pairs (aspirin, 28-45) and (warfarin, 28-45) match no gold pair
    assert scores["relations"]["micro"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 2,
        "predicted": 2,
    }
    # the gold mentions themselves: the rule pairs 2 drugs x 2 effects = 4, of which 2 are gold
    oracle = score_rows([gold], [gold["spans"]])
    assert oracle["entities"]["micro"]["f1"] == 1.0
    assert oracle["relations"]["micro"]["precision"] == 0.5 and oracle["relations"]["micro"]["recall"] == 1.0
