"""Choose one precision's decision thresholds on validation and record them in `thresholds.json`.

A bf16 or int8 model's probabilities are not fp32's: a threshold chosen for a target recall on fp32
scores can miss that recall on int8 scores. Calibration re-scores the labelled validation texts with the
precision that will be deployed, chooses its thresholds exactly as fine-tuning chose fp32's
(``evaluation.select_thresholds`` at the file's target recall, the same truncation, the same positive
class), and records them beside the others (``decisions.write_precision_rule``), with what they were
chosen on: the validation file's name, digest and size, the device, torch's version and, for int8, the
activation bits this CPU uses.

Every check runs before the model is scored, and nothing is written unless all of it succeeds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modernenc.tasks.decisions import (
    THRESHOLDS_FILE,
    DecisionRule,
    default_review_band,
    read_thresholds,
    recorded_precisions,
    weights_replaced,
    write_precision_rule,
    write_thresholds,
)
from modernenc.tasks.evaluation import DEFAULT_TARGET_RECALL, binary_metrics, select_thresholds
from modernenc.utils.files import sha256_file
from modernenc.utils.tables import read_rows

COLUMN_HINT = " (choose others with --text-column / --label-column)"


@dataclass
class Calibration:
    """What `calibrate` chose and wrote."""

    precision: str
    path: Path  # the thresholds.json written
    rule: DecisionRule
    examples: int
    positives: int
    validation: dict[str, float]  # binary_metrics on validation at the chosen threshold
    fp32_threshold: float | None  # fp32's chosen threshold, for comparison (None: fp32 was calibrated)


def _classifier_config(model_dir: Path) -> dict:
    """config.json of a fine-tuned binary sequence classifier; one sentence when the folder is not one."""
    from modernenc.model import ModernEncoderForSequenceClassification

    wanted = ModernEncoderForSequenceClassification.hf_architecture
    from modernenc.tasks.predict import check_is_modernbert, check_model_folder

    config_file = check_model_folder(model_dir) / "config.json"  # a .pt file: says to export-hf it first
    if not config_file.is_file():
        raise FileNotFoundError(f"{model_dir} is not a model folder: it has no config.json")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{config_file} is not valid JSON: {err}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_file} must hold a JSON object (a ModernBERT config)")
    check_is_modernbert(model_dir, config)
    architectures = config.get("architectures") or []
    if wanted not in architectures:
        found = "/".join(architectures) or "no architecture"
        raise ValueError(
            f"{model_dir} is not a fine-tuned sequence classifier (its config.json names {found}, not "
            f"{wanted}): thresholds are calibrated for a binary text classifier"
        )
    labels = len(config.get("id2label") or {}) or config.get("num_labels", 2)
    if labels != 2:
        raise ValueError(f"{model_dir} classifies into {labels} labels; thresholds need a binary classifier")
    return config


def _label_names(rule: DecisionRule | None, config: dict) -> list[str]:
    """The model's label values in class order: thresholds.json's, else config.json's id2label."""
    if rule is not None and rule.label_names:
        return [str(n) for n in rule.label_names]
    id2label = {int(k): str(v) for k, v in (config.get("id2label") or {}).items()}
    if id2label and not all(id2label.get(i) == f"LABEL_{i}" for i in range(2)):
        return [id2label[i] for i in range(2)]
    return ["0", "1"]  # transformers' placeholder names: the labels are class indices


def _read_validation(
    path: Path, text_column: str, label_column: str, names: Sequence[str], positive: int, model_dir: Path
) -> tuple[list[str], np.ndarray]:
    """Texts and 0/1 labels (1: the positive class); errors name the file, the column or the label."""
    rows = read_rows(path, [text_column, label_column], COLUMN_HINT)
    texts, labels = [], []
    for number, row in enumerate(rows, 1):
        text = row[text_column]
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{path}: row {number} has {text_column}={text!r}; expected a non-empty text")
        texts.append(text)
        labels.append(str(row[label_column]))
    unknown = sorted(set(labels) - set(names))
    if unknown:
        raise ValueError(
            f"{path} has {label_column} values {unknown[:5]} that {model_dir} does not know; its labels are "
            f"{list(names)}"
        )
    y = np.array([names.index(label) == positive for label in labels], dtype=np.int64)
    for cls, count in ((positive, int(y.sum())), (1 - positive, int(len(y) - y.sum()))):
        if count == 0:
            raise ValueError(
                f"{path} has no {names[cls]!r} examples; choosing a threshold for a target recall needs "
                "both classes"
            )
    return texts, y


def _positive_class(names: list[str], positive_label: str | None) -> int:
    from modernenc.tasks.classification import NEGATIVE_LABELS

    if positive_label is not None:
        if positive_label not in names:
            raise ValueError(f"--positive-label {positive_label!r} is not one of the model's labels {names}")
        return names.index(positive_label)
    negatives = [i for i, name in enumerate(names) if name.lower() in NEGATIVE_LABELS]
    if len(negatives) != 1:
        raise ValueError(
            f"the labels {names} do not say which class is the event to detect; pass --positive-label"
        )
    return 1 - negatives[0]


def calibrate(
    model_dir: str | Path,
    validation: str | Path,
    precision: str,
    *,
    text_column: str = "text",
    label_column: str = "label",
    target_recall: float | None = None,
    positive_label: str | None = None,
    batch_size: int = 64,
    device: str | None = None,
    force: bool = False,
    progress: bool = True,
) -> Calibration:
    """Choose ``precision``'s thresholds on ``validation`` and record them in ``model_dir/thresholds.json``.

    Another precision's rule is recorded beside fp32's, which must exist (fine-tuning writes it; calibrate
    fp32 first otherwise). ``target_recall`` and ``positive_label`` apply when fp32's rule is created; an
    existing file's are kept, so every precision is held to the same target. Replacing a recorded rule
    needs ``force``.
    """
    import torch

    from modernenc.model.precision import check_precision, int8_setup
    from modernenc.tasks.classification_data import tokenize_texts
    from modernenc.tasks.predict import (
        load_classifier,
        predict_probabilities,
        refuse_non_finite,
        resolve_device,
    )

    model_dir, validation = Path(model_dir), Path(validation)
    check_precision(precision)
    config = _classifier_config(model_dir)
    # The task's facts (labels, positive class, target, truncation) hold even for replaced weights; the
    # rules of replaced weights do not, and only a new fp32 rule may start the file again.
    previous = read_thresholds(model_dir, check_weights=False)
    stale = previous is not None and weights_replaced(model_dir)
    existing = None if stale else previous
    if existing is None and precision != "fp32":
        why = "was chosen for other weights than the folder holds now" if stale else "does not exist"
        raise ValueError(
            f"{model_dir / THRESHOLDS_FILE} {why}: the {precision} rule is recorded beside the fp32 one that "
            f"fine-tuning writes. Record that first: modernenc calibrate {model_dir} --dtype fp32 "
            "--validation FILE"
        )
    if existing is not None and precision in recorded_precisions(model_dir) and not force:
        raise FileExistsError(
            f"{model_dir / THRESHOLDS_FILE} already records {precision} thresholds; pass --force to choose "
            "them again and replace them"
        )
    names = _label_names(previous, config)
    if previous is not None:
        positive = previous.positive_label
        if positive_label is not None and positive_label != names[positive]:
            raise ValueError(
                f"{THRESHOLDS_FILE} detects {names[positive]!r}; every precision's rule is for that class"
            )
    else:
        positive = _positive_class(names, positive_label)
    recorded_target = previous.target_recall if previous is not None else None
    if existing is not None:  # every precision is held to the same target
        recorded_target = recorded_target or DEFAULT_TARGET_RECALL
        if target_recall is not None and target_recall != recorded_target:
            raise ValueError(
                f"{THRESHOLDS_FILE}'s rules are chosen for target recall {recorded_target}; every precision "
                "is held to the same target (leave out --target-recall)"
            )
    target_recall = target_recall or recorded_target or DEFAULT_TARGET_RECALL
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"--target-recall must be in (0, 1]; got {target_recall}")
    texts, y = _read_validation(validation, text_column, label_column, names, positive, model_dir)
    torch_device = resolve_device(device, precision)

    model, tokenizer = load_classifier(model_dir, torch_device, precision)
    max_length = (previous.max_length if previous else None) or model.config.max_position_embeddings
    ids, _ = tokenize_texts(
        tokenizer, texts, max_length, model.config.cls_token_id, model.config.sep_token_id
    )
    probs = predict_probabilities(model, ids, batch_size, positive, progress)
    refuse_non_finite(probs, model_dir, f"rows of {validation}")  # select_thresholds would say only "NaN"
    thresholds = select_thresholds(y, probs, target_recall)
    chosen = existing.chosen if existing is not None and existing.chosen in thresholds else "target_recall"
    calibration = {
        "validation": str(validation),
        "validation_sha256": sha256_file(validation),
        "examples": len(y),
        "device": torch_device.type,
        "torch": torch.__version__.split("+")[0],
        **(int8_setup() if precision == "int8" else {"int8_activation_bits": None}),
    }
    band = default_review_band(thresholds[chosen])
    if existing is None:
        path = write_thresholds(
            model_dir,
            thresholds,
            chosen=chosen,
            target_recall=target_recall,
            label_names=names,
            positive_label=positive,
            review_band=band,
            max_length=max_length,
            calibration=calibration,
        )
    else:
        path = write_precision_rule(
            model_dir, precision, thresholds, chosen=chosen, review_band=band, calibration=calibration
        )
    return Calibration(
        precision=precision,
        path=path,
        rule=read_thresholds(model_dir, precision),
        examples=len(y),
        positives=int(y.sum()),
        validation=binary_metrics(y, probs, thresholds[chosen]),
        fp32_threshold=existing.threshold if existing is not None and precision != "fp32" else None,
    )


def format_calibration(c: Calibration) -> str:
    rule, m = c.rule, c.validation
    compare = f" (fp32's: {c.fp32_threshold:.4g})" if c.fp32_threshold is not None else ""
    return (
        f"{c.precision}: threshold {rule.threshold:.4g} ({rule.chosen!r}, target recall {rule.target_recall})"
        f"{compare} chosen on {c.examples} validation texts ({c.positives} positive): recall "
        f"{m['recall']:.4f}, precision {m['precision']:.4f} there; review band [{rule.review_band[0]:.4g}, "
        f"{rule.review_band[1]:.4g}]; wrote {c.path}"
    )
