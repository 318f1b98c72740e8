"""Decision rules of a binary detector: thresholds chosen on validation, per precision, in `thresholds.json`.

Fine-tuning writes ``thresholds.json`` beside the weights with ``write_thresholds`` (the fp32 rule);
``modernenc calibrate`` adds the rule of another precision with ``write_precision_rule``; ``modernenc
predict --dtype X`` reads X's with ``read_thresholds(model_dir, "X")``::

    {
      "version": 2,
      "positive_label": 1,                      # class index whose probability is thresholded
      "label_names": ["no_ade", "ade"],         # optional; else the config's id2label (if not LABEL_i)
      "target_recall": 0.95,                    # optional: the recall "target_recall" was chosen for
      "max_length": 256,                        # optional: tokens per text in the validation that chose
                                                #   the thresholds; predict truncates the same way
      "weights_sha256": "9f2c...",              # optional: the model.safetensors they were chosen for
      "thresholds": {"default": 0.5, "max_f1": 0.41, "target_recall": 0.18},  # fp32's, on validation
      "chosen": "target_recall",                # the key of "thresholds" that decides (needed if several)
      "review_band": [0.09, 0.59],              # optional: [lo, hi], inclusive
      "calibration": {...},                     # optional: how `modernenc calibrate` chose them
      "variants": {                             # optional: the rules of other precisions, same fields
        "int8": {"thresholds": {...}, "chosen": "target_recall", "review_band": [...], "calibration": {...}}
      }
    }

The top-level rule is fp32's, so a reader of version 1 (or of the README's snippet) still finds the rule
fine-tuning chose. A bf16 or int8 model's probabilities differ from fp32's, so its thresholds are chosen
on its own validation scores and recorded under ``variants``; the task's facts (labels, positive class,
target recall, truncation) are shared. Version 1 files (no ``variants``) are read as fp32 rules.

A file describes the weights it was chosen for: when ``weights_sha256`` no longer matches the folder's
``model.safetensors`` (the weights were replaced), reading it is an error, not a silent fallback to 0.5.

Decisions: ``label`` is the positive label when ``probability >= threshold``. The threshold is
``--threshold`` if given, else ``thresholds[chosen]`` of the precision's rule, else (fp32 only, no
thresholds.json) 0.5. ``needs_review`` is ``lo <= probability <= hi`` for the review band: ``--review-band``
if given, else the rule's band (unless ``--threshold`` moved the threshold away from the one that band was
built around), else ``default_review_band(threshold)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modernenc.utils.files import sha256_file
from modernenc.utils.outputs import record_if_tracked
from modernenc.utils.precision import PRECISIONS
from modernenc.utils.tables import read_text

THRESHOLDS_FILE = "thresholds.json"
WEIGHTS_FILE = "model.safetensors"  # the weights a rule was chosen for
THRESHOLDS_VERSION = 2  # 2: per-precision rules under "variants"; version 1 files are read as fp32 rules
TOP_LEVEL_PRECISION = "fp32"  # the precision of the top-level rule, which fine-tuning writes
RULE_FIELDS = ("thresholds", "chosen", "review_band", "calibration")  # per precision; the rest is shared


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
    precision: str = TOP_LEVEL_PRECISION  # the model variant whose probabilities these thresholds cut
    calibration: dict[str, Any] | None = None  # how `modernenc calibrate` chose them, when it did

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


def _rule_fields(rule: DecisionRule) -> dict[str, Any]:
    """What one precision's rule records: its thresholds, the chosen one, its band and its provenance."""
    band = rule.review_band or default_review_band(rule.threshold)  # explicit in the file
    return {
        "thresholds": rule.thresholds,
        "chosen": rule.chosen,
        "review_band": list(band),
        "calibration": rule.calibration,
    }


def weights_sha256(model_dir: str | Path) -> str | None:
    """SHA-256 of a folder's ``model.safetensors``; None when it has no single weights file."""
    weights = Path(model_dir) / WEIGHTS_FILE
    return sha256_file(weights) if weights.is_file() else None


def _write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write via a temporary file, so a crash never leaves a half-written rule behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_without_nones(data), indent=2) + "\n")
    tmp.replace(path)
    record_if_tracked(path)  # still a part of a model folder modernenc wrote (utils/outputs.py)
    return path


def _without_nones(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _without_nones(v) if isinstance(v, dict) else v for k, v in data.items() if v is not None}


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
    calibration: Mapping[str, Any] | None = None,
) -> Path:
    """Write a new ``model_dir/thresholds.json`` holding the fp32 rule (format in the module docstring).

    ``thresholds`` are the validation-chosen ones (``evaluation.select_thresholds``). Without
    ``review_band`` the default band around ``thresholds[chosen]`` is written, so the file is explicit.
    The digest of ``model_dir/model.safetensors``, when there is one, binds the rule to those weights. A
    previous file is replaced whole: its other precisions' rules were chosen for the weights it described.
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
            calibration=dict(calibration) if calibration is not None else None,
        ),
        str(path),
    )
    data = {
        "version": THRESHOLDS_VERSION,
        "positive_label": rule.positive_label,
        "label_names": rule.label_names,
        "target_recall": rule.target_recall,
        "max_length": rule.max_length,
        "weights_sha256": weights_sha256(model_dir),
        **_rule_fields(rule),
    }
    return _write_json(path, data)


def write_precision_rule(
    model_dir: str | Path,
    precision: str,
    thresholds: Mapping[str, float],
    *,
    chosen: str = "target_recall",
    review_band: Sequence[float] | None = None,
    calibration: Mapping[str, Any] | None = None,
) -> Path:
    """Record ``precision``'s rule in the folder's existing thresholds.json, beside the others; returns its
    path. fp32's replaces the top-level rule. The task's shared facts (labels, positive class, target
    recall, truncation) stay as they are, and the file is bound to the folder's current weights."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    model_dir = Path(model_dir)
    path = model_dir / THRESHOLDS_FILE
    data = _read_file(model_dir, check_weights=False)
    if data is None:
        raise FileNotFoundError(
            f"{path} does not exist; a {precision} rule is recorded beside the fp32 one that fine-tuning "
            "writes (write_thresholds)"
        )
    rule = _validate(
        DecisionRule(
            thresholds={k: float(v) for k, v in thresholds.items()},
            chosen=chosen,
            review_band=tuple(review_band) if review_band is not None else None,
            precision=precision,
            calibration=dict(calibration) if calibration is not None else None,
        ),
        f"{path} ({precision})",
    )
    data = {**data, "version": THRESHOLDS_VERSION, "weights_sha256": weights_sha256(model_dir)}
    if precision == TOP_LEVEL_PRECISION:
        data.update(_rule_fields(rule))
    else:
        data["variants"] = {**data.get("variants", {}), precision: _rule_fields(rule)}
    return _write_json(path, data)


def _read_file(model_dir: Path, check_weights: bool = True) -> dict[str, Any] | None:
    """The checked JSON object of ``model_dir/thresholds.json``, or None when there is none."""
    path = model_dir / THRESHOLDS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(read_text(path))  # a non-UTF-8 file fails naming its line
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("thresholds"), dict):
        raise ValueError(f'{path} must be an object with a "thresholds" mapping, e.g. {{"default": 0.5}}')
    version = data.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version > THRESHOLDS_VERSION:
        raise ValueError(
            f"{path} has format version {version!r}; this modernenc reads up to {THRESHOLDS_VERSION}"
        )
    variants = data.get("variants", {})
    if not isinstance(variants, dict) or not all(isinstance(v, dict) for v in variants.values()):
        raise ValueError(f'{path}: "variants" must map each precision to its rule, e.g. {{"int8": {{...}}}}')
    unknown = sorted(set(variants) - set(PRECISIONS))
    if unknown:
        raise ValueError(
            f"{path} holds rules for unknown precisions {unknown}; known: {', '.join(PRECISIONS)}"
        )
    if check_weights and weights_replaced(model_dir, data):
        raise ValueError(
            f"{path} was chosen for other weights than {model_dir / WEIGHTS_FILE} (the model was replaced "
            "since): its thresholds do not apply. Choose them again on validation (fine-tune, or `modernenc "
            "calibrate`) or remove the file"  # not --threshold: the file's labels and truncation are its too
        )
    return data


def weights_replaced(model_dir: str | Path, data: Mapping[str, Any] | None = None) -> bool:
    """True when thresholds.json records the digest of other weights than the folder's model.safetensors."""
    model_dir = Path(model_dir)
    data = _read_file(model_dir, check_weights=False) if data is None else data
    recorded = (data or {}).get("weights_sha256")
    weights = model_dir / WEIGHTS_FILE
    return recorded is not None and weights.is_file() and sha256_file(weights) != recorded


def recorded_precisions(model_dir: str | Path) -> list[str]:
    """The precisions thresholds.json holds a rule for, in `PRECISIONS` order (none without the file)."""
    data = _read_file(Path(model_dir), check_weights=False)
    if data is None:
        return []
    return [p for p in PRECISIONS if p == TOP_LEVEL_PRECISION or p in data.get("variants", {})]


def read_thresholds(
    model_dir: str | Path, precision: str = TOP_LEVEL_PRECISION, check_weights: bool = True
) -> DecisionRule | None:
    """``precision``'s decision rule in ``model_dir/thresholds.json``; None when the folder has no such file
    or the file records no rule for that precision (calibrate it: ``modernenc calibrate``)."""
    model_dir = Path(model_dir)
    data = _read_file(model_dir, check_weights)
    if data is None:
        return None
    path = model_dir / THRESHOLDS_FILE
    if precision == TOP_LEVEL_PRECISION:
        fields, source = data, str(path)
    elif precision in data.get("variants", {}):
        fields, source = data["variants"][precision], f"{path} ({precision})"
    else:
        return None
    thresholds = fields.get("thresholds")
    if not isinstance(thresholds, dict):
        raise ValueError(f'{source} must have a "thresholds" mapping, e.g. {{"default": 0.5}}')
    band = fields.get("review_band")
    return _validate(
        DecisionRule(
            thresholds=dict(thresholds),
            chosen=_chosen(fields, thresholds, source),
            positive_label=data.get("positive_label", 1),
            label_names=data.get("label_names"),
            target_recall=data.get("target_recall"),
            review_band=tuple(band) if isinstance(band, list) else band,
            max_length=data.get("max_length"),
            precision=precision,
            calibration=fields.get("calibration"),
        ),
        source,
    )


def _chosen(fields: Mapping[str, Any], thresholds: Mapping[str, Any], source: str) -> str:
    """The key of the threshold that decides. A file that lists several but does not say which is refused:
    falling back to "default" (0.5) would drop a recall-chosen threshold without a word."""
    if "chosen" in fields:
        return fields["chosen"]
    if len(thresholds) == 1:
        return next(iter(thresholds))
    raise ValueError(
        f'{source} lists thresholds {sorted(thresholds)} but not which one decides: add "chosen": NAME '
        '(fine-tuning and `modernenc calibrate` write "target_recall")'
    )


def uncalibrated_message(
    model_dir: str | Path, precision: str, alternative: str | None = "pass --threshold"
) -> str:
    """Why ``precision`` has no decision rule in ``model_dir``, the command that records one, and
    ``alternative``, where the caller offers one."""
    has = recorded_precisions(model_dir)
    what = (
        f"{Path(model_dir) / THRESHOLDS_FILE} records thresholds for {', '.join(has)} only"
        if has
        else (f"{model_dir} has no {THRESHOLDS_FILE}")
    )
    return (
        f"{what}, not for {precision}: the {precision} model's probabilities differ from fp32's, so its "
        f"thresholds must be chosen on its own validation scores. Run `modernenc calibrate {model_dir} "
        f"--dtype {precision} --validation FILE`" + (f", or {alternative}" if alternative else "")
    )


def resolve_decision(
    rule: DecisionRule | None, threshold: float | None = None, review_band: Sequence[float] | None = None
) -> tuple[float, tuple[float, float], str]:
    """(threshold, review band, where the threshold came from) after command-line overrides."""
    if threshold is not None:
        t, source = _check_probability(threshold, "--threshold"), "--threshold"
    elif rule is not None:
        variant = "" if rule.precision == TOP_LEVEL_PRECISION else f"{rule.precision}, "
        t, source = rule.threshold, f"{THRESHOLDS_FILE} ({variant}{rule.chosen!r})"
    else:
        t, source = 0.5, f"default (no {THRESHOLDS_FILE})"
    if review_band is not None:
        band = _check_band(review_band, "--review-band")
    elif rule is not None and rule.review_band is not None and t == rule.threshold:
        band = rule.review_band
    else:  # the file's band was built around another threshold
        band = default_review_band(t)
    return t, band, source
