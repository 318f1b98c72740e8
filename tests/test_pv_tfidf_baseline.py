"""The strong TF-IDF baseline on the real ADE split, recomputed independently with scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
from conftest import SHARED_DATA, run_cli
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score, roc_curve

from modernenc.pv.ade_data import read_jsonl
from modernenc.pv.results import tfidf_rows
from modernenc.pv.tfidf_baseline import C_GRID, WEAK_LABEL, fit_strong, thresholded_results


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> dict[str, list[dict]]:
    out = tmp_path_factory.mktemp("ade")
    assert run_cli("prepare-ade", "--source", SHARED_DATA / "ade_corpus_v2", "--out", out, "--force") == 0
    return {s: read_jsonl(out / f"{s}.jsonl") for s in ("train", "validation", "test")}


def sklearn_baseline(split):
    """The strong baseline built here from scikit-learn's parts: (best C, validation F1 per C, test and
    validation probabilities of the best C)."""
    text = {s: [r["text"] for r in rows] for s, rows in split.items()}
    y = {s: np.array([r["label"] for r in rows]) for s, rows in split.items()}
    word = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, strip_accents="unicode")
    char = TfidfVectorizer(
        analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, min_df=2, strip_accents="unicode"
    )
    x_train = scipy.sparse.hstack([word.fit_transform(text["train"]), char.fit_transform(text["train"])])

    def features(s):
        return scipy.sparse.hstack([word.transform(text[s]), char.transform(text[s])])

    f1, probs = {}, {}
    for c in (1, 2, 4, 10, 20, 50):
        clf = LogisticRegression(C=c, solver="liblinear", max_iter=1000).fit(x_train, y["train"])
        probs[c] = {s: clf.predict_proba(features(s))[:, 1] for s in ("validation", "test")}
        f1[c] = f1_score(y["validation"], probs[c]["validation"] >= 0.5)
    best = max(f1, key=lambda c: (f1[c], -c))
    return best, f1, probs[best], y


def test_strong_baseline_is_what_scikit_learn_computes_on_the_ade_split(split):
    ours = fit_strong(split["train"], split["validation"])
    row = thresholded_results(ours.model, split["validation"], split["test"], target_recall=0.95)
    best, val_f1, probs, y = sklearn_baseline(split)

    assert tuple(ours.validation_f1) == C_GRID
    assert ours.validation_f1 == pytest.approx({float(c): v for c, v in val_f1.items()}, abs=1e-12)
    assert ours.c == best == 10  # the C the deployment anchors report
    test_probs = ours.model.predict_proba([r["text"] for r in split["test"]])[:, 1]
    np.testing.assert_allclose(test_probs, probs["test"], atol=1e-9)

    at_half = row["results"]["default"]
    predicted = probs["test"] >= 0.5
    assert at_half["f1"] == pytest.approx(f1_score(y["test"], predicted))
    assert at_half["precision"] == pytest.approx(precision_score(y["test"], predicted))
    assert at_half["recall"] == pytest.approx(recall_score(y["test"], predicted))
    assert at_half["auroc"] == pytest.approx(roc_auc_score(y["test"], probs["test"]))
    assert [round(100 * at_half[k], 1) for k in ("f1", "precision", "recall", "auroc")] == [
        84.0,
        84.0,
        84.0,
        92.5,
    ]

    # Target recall: the highest validation score whose recall reaches 0.95 (roc_curve lists every distinct
    # score, descending), the threshold halfway down to the next lower score (the project's convention).
    _, tpr, scores = roc_curve(y["validation"], probs["validation"], drop_intermediate=False)
    reach = int(np.flatnonzero(tpr >= 0.95)[0])
    threshold = (scores[reach] + scores[reach + 1]) / 2
    assert row["thresholds"]["target_recall"] == pytest.approx(threshold)
    predicted = probs["test"] >= threshold
    at_target = row["results"]["target_recall"]
    assert at_target["recall"] == pytest.approx(recall_score(y["test"], predicted))
    assert at_target["precision"] == pytest.approx(precision_score(y["test"], predicted))
    assert (round(100 * at_target["recall"], 1), round(100 * at_target["precision"], 1)) == (95.1, 74.0)


def test_results_table_rows_name_the_strong_and_the_weak_baseline(split, tmp_path):
    from modernenc.pv.ade_data import write_jsonl

    for name, rows in split.items():  # a slice: this checks the rows' labels and layout, not the numbers
        write_jsonl(rows[:300], tmp_path / f"{name}.jsonl")
    rows = tfidf_rows(tmp_path)
    strong, weak = rows
    assert "char 3-5 grams" in strong and "chosen on validation" in strong and weak == WEAK_LABEL
    for row in rows.values():
        assert set(row["results"]) == {"default", "max_f1", "target_recall"}
        assert row["results"]["target_recall"]["threshold"] == pytest.approx(
            row["thresholds"]["target_recall"]
        )
