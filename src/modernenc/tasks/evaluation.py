"""Binary-classification metrics and decision thresholds for ADE detection.

A missed adverse event costs far more than a false alarm, so a single 0.5 cut-off is not enough: besides
the default we pick the F1-optimal threshold and the highest threshold that still reaches a target recall
(the best precision at that sensitivity). Thresholds are chosen on validation and applied unchanged on
test; choosing them on test would overstate what a deployed model achieves.

Convention everywhere: an example is predicted positive when ``probability >= threshold``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

DEFAULT_THRESHOLD = 0.5
DEFAULT_TARGET_RECALL = 0.95
THRESHOLD_NAMES = ("default", "max_f1", "target_recall")


def _as_arrays(labels: Sequence[int] | np.ndarray, probs: Sequence[float] | np.ndarray):
    y = np.asarray(labels).reshape(-1)
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"labels and probs differ in length ({y.shape[0]} vs {p.shape[0]})")
    if y.size == 0:
        raise ValueError("labels and probs are empty")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 or 1; got values {sorted(set(y.tolist()))[:10]}")
    if np.isnan(p).any():
        raise ValueError("probs contain NaN")
    return y.astype(np.int64), p


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0  # no predicted (or no actual) positives: report 0, not NaN


def binary_metrics(
    labels: Sequence[int] | np.ndarray, probs: Sequence[float] | np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """F1, precision, recall, accuracy at ``threshold``, threshold-free AUROC, and the confusion counts.

    Degenerate cases do not raise: precision (recall) is 0 when nothing is predicted (labelled) positive,
    and AUROC is NaN when the labels hold a single class.
    """
    y, p = _as_arrays(labels, probs)
    pred = p >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    tn = int(np.sum(~pred & (y == 0)))
    auroc = float("nan")
    if 0 < y.sum() < y.size:
        from sklearn.metrics import roc_auc_score

        auroc = float(roc_auc_score(y, p))
    return {
        "threshold": float(threshold),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "accuracy": (tp + tn) / y.size,
        "auroc": auroc,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


def _threshold_sweep(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds descending, tp, fp) for every distinct score used as the threshold."""
    order = np.argsort(-p, kind="stable")
    scores, hits = p[order], y[order]
    tp = np.cumsum(hits)
    fp = np.cumsum(1 - hits)
    # Ties share one threshold; `p >= t` admits all of them, so keep the last index of each run.
    last = np.flatnonzero(np.r_[scores[1:] != scores[:-1], True])
    return scores[last], tp[last], fp[last]


def select_thresholds(
    labels: Sequence[int] | np.ndarray,
    probs: Sequence[float] | np.ndarray,
    target_recall: float = DEFAULT_TARGET_RECALL,
) -> dict[str, float]:
    """Thresholds ``default`` (0.5), ``max_f1`` and ``target_recall``, chosen on these (validation) labels.

    ``max_f1``: the threshold with the highest F1; among equal F1 the lowest threshold, since a missed
    event costs more than a false alarm. ``target_recall``: the highest threshold whose recall is
    ``>= target_recall``, i.e. the best precision at that sensitivity. Each sits halfway between the
    chosen score and the next lower one, so ``p >= threshold`` reproduces the counts seen here and a score
    recomputed with float noise (another kernel, batch or dtype) does not flip across it.
    """
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
    y, p = _as_arrays(labels, probs)
    positives = int(y.sum())
    if positives == 0:
        raise ValueError("labels contain no positives; recall (and so the thresholds) is undefined")
    thresholds, tp, fp = _threshold_sweep(y, p)
    f1 = 2 * tp / (2 * tp + fp + (positives - tp))
    best = np.flatnonzero(f1 == f1.max())[-1]  # thresholds descend: the last tie is the lowest
    # Recall only grows as the threshold falls, and the lowest threshold predicts every example positive
    # (recall 1), so the first threshold reaching the target exists and is the highest one that does.
    reach = np.flatnonzero(tp / positives >= target_recall)[0]
    below = np.r_[thresholds[1:], thresholds[-1] / 2]  # the next lower distinct score
    midpoints = (thresholds + below) / 2
    return {
        "default": DEFAULT_THRESHOLD,
        "max_f1": float(midpoints[best]),
        "target_recall": float(midpoints[reach]),
    }


def evaluate_at_thresholds(
    labels: Sequence[int] | np.ndarray, probs: Sequence[float] | np.ndarray, thresholds: Mapping[str, float]
) -> dict[str, dict[str, float]]:
    """``binary_metrics`` at each named threshold (e.g. validation-chosen thresholds applied to test)."""
    return {name: binary_metrics(labels, probs, t) for name, t in thresholds.items()}


def plot_precision_recall(
    labels: Sequence[int] | np.ndarray,
    probs: Sequence[float] | np.ndarray,
    thresholds: Mapping[str, float],
    path: str | Path,
    title: str = "Precision-recall",
) -> Path:
    """Write a PNG of the precision-recall curve with each named threshold marked and labelled."""
    # Figure + Agg canvas directly, not pyplot: no global backend switch, no GUI, safe in threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.metrics import average_precision_score, precision_recall_curve

    y, p = _as_arrays(labels, probs)
    fig = Figure(figsize=(6, 5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    if 0 < y.sum():
        precision, recall, _ = precision_recall_curve(y, p)
        ap = average_precision_score(y, p)
        ax.step(recall, precision, where="post", color="C0", label=f"PR curve (AP {ap:.3f})")
    ax.axhline(y.mean(), color="grey", linestyle=":", linewidth=1, label=f"chance ({y.mean():.2f})")
    for i, (name, t) in enumerate(thresholds.items()):
        m = binary_metrics(y, p, t)
        ax.plot(m["recall"], m["precision"], "o", color=f"C{i + 1}", markersize=8, label=f"{name} t={t:.3g}")
        ax.annotate(
            f"{name}\nt={t:.3g} P={m['precision']:.2f} R={m['recall']:.2f}",
            (m["recall"], m["precision"]),
            textcoords="offset points",
            xytext=(-10, -28 - 14 * i),  # stagger labels: nearby thresholds would overlap
            ha="right",
            fontsize=8,
            color=f"C{i + 1}",
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.8, "lw": 0},  # legible over lines
        )
    ax.set(xlabel="recall (sensitivity)", ylabel="precision", title=title, xlim=(0, 1.02), ylim=(0, 1.05))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    return path


def _fmt(value: float) -> str:
    return "n/a" if isinstance(value, float) and math.isnan(value) else f"{value:.4f}"


def format_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """A markdown table (readable as plain text) of ``evaluate_at_thresholds`` results, one row each."""
    header = ["threshold", "value", "F1", "precision", "recall", "accuracy", "AUROC", "TP", "FP", "FN", "TN"]
    rows = [
        [
            name,
            f"{m['threshold']:.4f}",
            *(_fmt(m[k]) for k in ("f1", "precision", "recall", "accuracy", "auroc")),
            *(str(m[k]) for k in ("tp", "fp", "fn", "tn")),
        ]
        for name, m in results.items()
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    # Name column left-aligned, numbers right-aligned (the colons are markdown alignment markers).
    rule = "|" + "|".join(
        ":" + "-" * (w + 1) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)
    )
    return "\n".join([line(header), rule + "|", *(line(r) for r in rows)])
