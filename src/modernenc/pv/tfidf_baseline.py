"""TF-IDF + logistic-regression baselines for ADE sentence classification: the bar an encoder must clear.

The strong baseline (``fit_strong``) is what a careful practitioner would run in a minute: word 1-2 grams
plus character 3-5 grams inside word boundaries (``char_wb``: robust to drug-name inflections and
misspellings such as "hepatotoxicity" / "hepatotoxic"), sublinear tf, liblinear logistic regression, and
C chosen on validation F1 at 0.5. Thresholds are then chosen on validation and applied unchanged to test,
exactly as for the fine-tuned encoders. The weak word-only model (``build_word_model``) is kept only as a
labelled row, so earlier tables can be compared.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support, roc_auc_score
from sklearn.pipeline import FeatureUnion, Pipeline, make_pipeline

# Inverse L2 strengths tried on validation; the grid spans under- to over-fitting on this split.
C_GRID = (1.0, 2.0, 4.0, 10.0, 20.0, 50.0)
WEAK_LABEL = "TF-IDF word 1-2 grams only, C=4 (weak baseline, earlier tables)"


def strong_features() -> FeatureUnion:
    """Word 1-2 grams + char_wb 3-5 grams (min_df=2: drop one-off character noise), both sublinear tf."""
    return FeatureUnion(
        [
            ("word", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, strip_accents="unicode")),
            (
                "char",
                TfidfVectorizer(
                    analyzer="char_wb",
                    ngram_range=(3, 5),
                    sublinear_tf=True,
                    min_df=2,
                    strip_accents="unicode",
                ),
            ),
        ]
    )


def _classifier(c: float, seed: int = 0) -> LogisticRegression:
    # liblinear: fast and exact on this small sparse problem
    return LogisticRegression(C=c, solver="liblinear", max_iter=1000, random_state=seed)


def build_strong_model(c: float, seed: int = 0) -> Pipeline:
    """The strong baseline at one C, unfitted."""
    return make_pipeline(strong_features(), _classifier(c, seed))


def build_word_model(c: float = 4.0, seed: int = 0) -> Pipeline:
    """The weak baseline of earlier tables: word 1-2 grams with sublinear tf only."""
    return make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1, strip_accents="unicode"),
        LogisticRegression(C=c, solver="liblinear", max_iter=1000, random_state=seed),
    )


def _texts_labels(rows: Sequence[dict]) -> tuple[list[str], list[int]]:
    if not rows:
        raise ValueError("rows must be non-empty")
    return [r["text"] for r in rows], [int(r["label"]) for r in rows]


@dataclass
class StrongFit:
    """The strong baseline at the C with the best validation F1, and that F1 for every C tried."""

    model: Pipeline
    c: float
    validation_f1: dict[float, float]  # F1 at 0.5 on validation, per C tried


def fit_strong(
    train_rows: Sequence[dict], validation_rows: Sequence[dict], grid: Sequence[float] = C_GRID
) -> StrongFit:
    """Fit the strong baseline for each C in ``grid`` on train; keep the best by validation F1 at 0.5.

    The features do not depend on C, so they are fitted once. Among equal F1 the smaller C (the stronger
    regularisation) wins.
    """
    if not grid:
        raise ValueError("the C grid is empty")
    texts, labels = _texts_labels(train_rows)
    val_texts, val_labels = _texts_labels(validation_rows)
    features = strong_features()
    x_train, x_val = features.fit_transform(texts), features.transform(val_texts)
    scores: dict[float, float] = {}
    best: tuple[float, LogisticRegression] | None = None
    for c in sorted(grid):
        classifier = _classifier(c).fit(x_train, labels)
        scores[c] = float(f1_score(val_labels, classifier.predict_proba(x_val)[:, 1] >= 0.5))
        if best is None or scores[c] > scores[best[0]]:
            best = (c, classifier)
    model = Pipeline([("features", features), ("classifier", best[1])])  # both fitted
    return StrongFit(model=model, c=best[0], validation_f1=scores)


def thresholded_results(
    model: Pipeline, validation_rows: Sequence[dict], test_rows: Sequence[dict], target_recall: float = 0.95
) -> dict:
    """Thresholds chosen on validation (0.5, max F1, target recall), applied unchanged to test.

    Returns ``{"thresholds", "results": {name: binary_metrics on test}, "examples_per_s"}``; the speed is
    vectorise + predict over the test rows.
    """
    from modernenc.tasks.evaluation import evaluate_at_thresholds, select_thresholds

    val_texts, val_labels = _texts_labels(validation_rows)
    thresholds = select_thresholds(val_labels, model.predict_proba(val_texts)[:, 1], target_recall)
    texts, labels = _texts_labels(test_rows)
    start = time.perf_counter()
    scores = model.predict_proba(texts)[:, 1]
    per_s = len(texts) / max(time.perf_counter() - start, 1e-9)
    return {
        "thresholds": thresholds,
        "results": evaluate_at_thresholds(labels, scores, thresholds),
        "examples_per_s": per_s,
    }


def fit(train_rows: Sequence[dict], c: float = 4.0) -> Pipeline:
    """Fit the weak word-only baseline on ``{"text", "label"}`` rows."""
    texts, labels = _texts_labels(train_rows)
    return build_word_model(c).fit(texts, labels)


def evaluate(model: Pipeline, rows: Sequence[dict]) -> dict:
    """F1/precision/recall/accuracy/AUROC for label 1 (ADE) at 0.5, and prediction throughput on ``rows``."""
    texts, labels = _texts_labels(rows)
    t0 = time.perf_counter()
    scores = model.predict_proba(texts)[:, 1]  # vectorising is part of the prediction cost
    predict_s = time.perf_counter() - t0
    preds = (scores >= 0.5).astype(int)
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, preds, average="binary", pos_label=1, zero_division=0
    )
    return {
        "f1": float(f1),
        "precision": float(precision),
        "recall": float(recall),
        "accuracy": float(accuracy_score(labels, preds)),
        # AUROC is undefined when the rows hold a single class
        "auroc": float(roc_auc_score(labels, scores)) if len(set(labels)) == 2 else float("nan"),
        "examples": len(rows),
        "predict_examples_per_s": len(rows) / predict_s if predict_s > 0 else float("inf"),
    }
