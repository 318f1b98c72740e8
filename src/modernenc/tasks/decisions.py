"""Decision rules of a binary detector: the thresholds chosen on validation, and `thresholds.json`.

Fine-tuning writes ``thresholds.json`` beside the weights with ``write_thresholds``; ``modernenc predict``
reads it with ``read_thresholds``::

    {
      "version": 1,
      "positive_label": 1,                      # class index whose probability is thresholded
      "label_names": ["no_ade", "ade"],         # optional; else the config's id2label (if not LABEL_i)
      "thresholds": {"default": 0.5, "max_f1": 0.41, "target_recall": 0.18},  # chosen on validation
      "target_recall": 0.95,                    # optional: the recall "target_recall" was chosen for
      "chosen": "target_recall",                # the key of "thresholds" used for decisions
      "review_band": [0.09, 0.59],              # optional: [lo, hi], inclusive
      "max_length": 256,                        # optional: tokens per text in the validation that chose
                                                #   the thresholds; predict truncates the same way
      "weights_sha256": "9f2c..."               # optional: the model.safetensors they were chosen for
    }

A rule describes the weights it was chosen for: when ``weights_sha256`` no longer matches the folder's
``model.safetensors`` (the weights were replaced), reading it is an error, not a silent fallback to 0.5.

Decisions: ``label`` is the positive label when ``probability >= threshold``. The threshold is
``--threshold`` if given, else ``thresholds[chosen]`` from thresholds.json, else 0.5. ``needs_review`` is
``lo <= probability <= hi`` for the review band: ``--review-band`` if given, else the file's band (unless
``--threshold`` moved the threshold away from the one that band was built around), else
``default_review_band(threshold)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from modernenc.utils.files import sha256_file
from modernenc.utils.tables import read_text

THRESHOLDS_FILE = "thresholds.json"
WEIGHTS_FILE = "model.safetensors"  # the weights a rule was chosen for
THRESHOLDS_VERSION = 1


@dataclass
class DecisionRule:
    """What turns a probability into a decision; the contents of thresholds.json."""

    thresholds: dict[str, float] = field(default_factory=lambda: {"default": 0.5})
    chosen: str = "default"
    positive_label: int = 1
    label_names: list[str] | None = None
    target_recall: float | None = None
    review_band: tuple[float, float] | None = None
    max_length: int | None = None

    @property
    def threshold(self) -> float:
        return self.thresholds[self.chosen]


def default_review_band(threshold: float) -> tuple[float, float]:
    """Halfway from the threshold to 0 and to 1: ``[t / 2, t + (1 - t) / 2]`` (0.5 -> [0.25, 0.75]).

    Probabilities near the decision boundary are the ones the model is least sure of, so they go to a human.
    The band is wide on purpose: a missed adverse event costs far more than a reviewer's minute. With a low
    recall-oriented threshold (say 0.1 -> [0.05, 0.55]) it still catches the borderline negatives.
    """
    return round(threshold / 2, 12), round(threshold + (1 - threshold) / 2, 12)  # 0.6, not 0.6000000000000001


def _check_probability(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{what} must be a number in [0, 1]; got {value!r}")
    return float(value)


def _check_band(band: Sequence[float], what: str) -> tuple[float, float]:
    if len(band) != 2:
        raise ValueError(f"{what} must be two numbers [lo, hi]; got {list(band)!r}")
    lo, hi = (_check_probability(v, what) for v in band)
    if lo > hi:
        raise ValueError(f"{what} must have lo <= hi; got [{lo}, {hi}]")
    return lo, hi


def _validate(rule: DecisionRule, source: str) -> DecisionRule:
    if not rule.thresholds:
        raise ValueError(f"{source}: 'thresholds' is empty")
    for name, value in rule.thresholds.items():
        _check_probability(value, f"{source}: thresholds[{name!r}]")
    if rule.chosen not in rule.thresholds:
        raise ValueError(
            f"{source}: chosen={rule.chosen!r} is not one of thresholds {sorted(rule.thresholds)}"
        )
    if rule.review_band is not None:
        rule.review_band = _check_band(rule.review_band, f"{source}: review_band")
    if rule.target_recall is not None:
        _check_probability(rule.target_recall, f"{source}: target_recall")
    if isinstance(rule.positive_label, bool) or not isinstance(rule.positive_label, int):
        raise ValueError(f"{source}: positive_label must be a class index; got {rule.positive_label!r}")
    if rule.max_length is not None and (
        isinstance(rule.max_length, bool) or not isinstance(rule.max_length, int) or rule.max_length < 2
    ):
        raise ValueError(f"{source}: max_length must be an integer >= 2; got {rule.max_length!r}")
    return rule


def write_thresholds(
    model_dir: str | Path,
    thresholds: Mapping[str, float],
    *,
    chosen: str = "target_recall",
    target_recall: float | None = None,
    label_names: Sequence[str] | None = None,
    positive_label: int = 1,
    review_band: Sequence[float] | None = None,
    max_length: int | None = None,
) -> Path:
    """Write ``model_dir/thresholds.json`` (format in the module docstring); returns its path.

    ``thresholds`` are the validation-chosen ones (``evaluation.select_thresholds``). Without
    ``review_band`` the default band around ``thresholds[chosen]`` is written, so the file is explicit.
    The digest of ``model_dir/model.safetensors``, when there is one, binds the rule to those weights.
    """
    path = Path(model_dir) / THRESHOLDS_FILE
    rule = _validate(
        DecisionRule(
            thresholds={k: float(v) for k, v in thresholds.items()},
            chosen=chosen,
            positive_label=positive_label,
            label_names=list(label_names) if label_names is not None else None,
            target_recall=target_recall,
            review_band=tuple(review_band) if review_band is not None else None,
            max_length=max_length,
        ),
        str(path),
    )
    band = rule.review_band or default_review_band(rule.threshold)
    weights = Path(model_dir) / WEIGHTS_FILE
    data = {
        "version": THRESHOLDS_VERSION,
        "positive_label": rule.positive_label,
        "label_names": rule.label_names,
        "thresholds": rule.thresholds,
        "target_recall": rule.target_recall,
        "chosen": rule.chosen,
        "review_band": list(band),
        "max_length": rule.max_length,
        "weights_sha256": sha256_file(weights)
        if (weights := Path(model_dir) / WEIGHTS_FILE).is_file()
        else None,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: v for k, v in data.items() if v is not None}, indent=2) + "\n")
    return path


def read_thresholds(model_dir: str | Path) -> DecisionRule | None:
    """The decision rule in ``model_dir/thresholds.json``, or None when the folder has none."""
    path = Path(model_dir) / THRESHOLDS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(read_text(path))  # a non-UTF-8 file fails naming its line
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("thresholds"), dict):
        raise ValueError(f'{path} must be an object with a "thresholds" mapping, e.g. {{"default": 0.5}}')
    if data.get("version", THRESHOLDS_VERSION) > THRESHOLDS_VERSION:
        raise ValueError(
            f"{path} has format version {data['version']}; this modernenc reads up to {THRESHOLDS_VERSION}"
        )
    recorded = data.get("weights_sha256")
    weights = Path(model_dir) / WEIGHTS_FILE
    if recorded is not None and weights.is_file() and sha256_file(weights) != recorded:
        raise ValueError(
            f"{path} was chosen for other weights than {weights} (the model was replaced since): its "
            "thresholds do not apply. Choose them again on validation (fine-tune, or `modernenc calibrate`), "
            "remove the file, or pass --threshold"
        )
    thresholds = data["thresholds"]
    band = data.get("review_band")
    return _validate(
        DecisionRule(
            thresholds=dict(thresholds),
            chosen=data.get("chosen", "default" if "default" in thresholds else next(iter(thresholds), "")),
            positive_label=data.get("positive_label", 1),
            label_names=data.get("label_names"),
            target_recall=data.get("target_recall"),
            review_band=tuple(band) if isinstance(band, list) else band,
            max_length=data.get("max_length"),
        ),
        str(path),
    )


def resolve_decision(
    rule: DecisionRule | None, threshold: float | None = None, review_band: Sequence[float] | None = None
) -> tuple[float, tuple[float, float], str]:
    """(threshold, review band, where the threshold came from) after command-line overrides."""
    if threshold is not None:
        t, source = _check_probability(threshold, "--threshold"), "--threshold"
    elif rule is not None:
        t, source = rule.threshold, f"{THRESHOLDS_FILE} ({rule.chosen!r})"
    else:
        t, source = 0.5, f"default (no {THRESHOLDS_FILE})"
    if review_band is not None:
        band = _check_band(review_band, "--review-band")
    elif rule is not None and rule.review_band is not None and t == rule.threshold:
        band = rule.review_band
    else:  # the file's band was built around another threshold
        band = default_review_band(t)
    return t, band, source
