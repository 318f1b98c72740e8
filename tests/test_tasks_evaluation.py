"""Metrics and thresholds against independent truths: hand counts, sklearn, brute-force searches."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from modernenc.tasks.evaluation import (
    binary_metrics,
    evaluate_at_thresholds,
    format_table,
    plot_precision_recall,
    select_thresholds,
)


def random_scores(n=300, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    probs = np.clip(0.35 * labels + 0.65 * rng.random(n), 0, 1)  # informative but overlapping
    return labels, probs


def test_hand_computed_counts():
    labels = [1, 1, 1, 0, 0, 0, 1, 0]
    probs = [0.9, 0.6, 0.4, 0.7, 0.2, 0.5, 0.5, 0.1]
    # At 0.5 (p >= t is positive): predicted 1 at .9 .6 .7 .5 .5 -> TP 3 (.9 .6 .5), FP 2 (.7 .5), FN 1 (.4)
    m = binary_metrics(labels, probs, 0.5)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (3, 2, 1, 2)
    assert m["precision"] == pytest.approx(3 / 5)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["threshold"] == 0.5


@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.63, 0.9])
def test_matches_sklearn_on_random_data(threshold):
    labels, probs = random_scores()
    m = binary_metrics(labels, probs, threshold)
    pred = (probs >= threshold).astype(int)
    assert m["f1"] == pytest.approx(f1_score(labels, pred, zero_division=0))
    assert m["precision"] == pytest.approx(precision_score(labels, pred, zero_division=0))
    assert m["recall"] == pytest.approx(recall_score(labels, pred))
    assert m["accuracy"] == pytest.approx(accuracy_score(labels, pred))
    assert m["auroc"] == pytest.approx(roc_auc_score(labels, probs))


def test_degenerate_cases_do_not_crash():
    none_predicted = binary_metrics([0, 1, 1], [0.1, 0.2, 0.3], threshold=0.9)
    assert none_predicted["precision"] == 0.0 and none_predicted["recall"] == 0.0
    assert none_predicted["f1"] == 0.0
    single_class = binary_metrics([0, 0, 0], [0.1, 0.7, 0.3], threshold=0.5)
    assert math.isnan(single_class["auroc"]) and single_class["recall"] == 0.0
    with pytest.raises(ValueError, match="differ in length"):
        binary_metrics([0, 1], [0.5])
    with pytest.raises(ValueError, match="0 or 1"):
        binary_metrics([0, 2], [0.5, 0.5])


@pytest.mark.parametrize("target", [0.8, 0.95, 1.0])
def test_target_recall_threshold_is_the_highest_reaching_the_target(target):
    labels, probs = random_scores(seed=1)
    t = select_thresholds(labels, probs, target_recall=target)["target_recall"]
    assert recall_score(labels, (probs >= t).astype(int)) >= target
    # Highest: admitting one distinct score fewer falls short of the target.
    lowest_admitted = probs[probs >= t].min()
    assert recall_score(labels, (probs > lowest_admitted).astype(int)) < target
    # Halfway between observed scores, so a score recomputed with float noise does not cross it.
    assert np.abs(probs - t).min() > 1e-6


def test_max_f1_equals_brute_force():
    labels, probs = random_scores(seed=2)
    f1s = {t: f1_score(labels, (probs >= t).astype(int)) for t in sorted(set(probs.tolist()))}
    best = max(f1s.values())
    chosen = select_thresholds(labels, probs)["max_f1"]
    lowest_admitted = probs[probs >= chosen].min()  # the observed score the threshold stands for
    assert f1s[lowest_admitted] == pytest.approx(best)
    assert lowest_admitted == min(t for t, f in f1s.items() if f == pytest.approx(best))  # ties: lowest


def test_ties_and_defaults():
    # Tied scores share a threshold: all of them become positive together.
    th = select_thresholds([1, 0, 1, 0], [0.8, 0.8, 0.3, 0.1], target_recall=0.5)
    assert th["default"] == 0.5 and th["target_recall"] == pytest.approx(0.55)  # halfway from 0.8 to 0.3
    assert th["max_f1"] == pytest.approx(0.2)  # admits 0.3, predicts 1,1,1,0: F1 0.8 beats 0.5
    with pytest.raises(ValueError, match="no positives"):
        select_thresholds([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="target_recall"):
        select_thresholds([0, 1], [0.1, 0.2], target_recall=0)


def test_validation_thresholds_apply_unchanged_to_test():
    val_labels, val_probs = random_scores(seed=3)
    test_labels, test_probs = random_scores(seed=4)
    thresholds = select_thresholds(val_labels, val_probs)
    results = evaluate_at_thresholds(test_labels, test_probs, thresholds)
    assert set(results) == {"default", "max_f1", "target_recall"}
    for name, m in results.items():
        assert m["threshold"] == thresholds[name]
        assert m == binary_metrics(test_labels, test_probs, thresholds[name])


def test_table_and_plot(tmp_path):
    labels, probs = random_scores()
    thresholds = select_thresholds(labels, probs)
    table = format_table(evaluate_at_thresholds(labels, probs, thresholds))
    lines = table.splitlines()
    assert len(lines) == 2 + 3 and "F1" in lines[0] and "AUROC" in lines[0]
    assert all(name in table for name in thresholds)
    assert "n/a" in format_table({"x": binary_metrics([0, 0], [0.1, 0.9])})  # NaN AUROC
    png = plot_precision_recall(labels, probs, thresholds, tmp_path / "plots" / "pr.png", "ADE validation")
    data = png.read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"
