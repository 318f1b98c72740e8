"""Sequence-classification fine-tuning: the data of a run, and the final evaluation of its best model.

The final evaluation follows pharmacovigilance practice: thresholds are chosen on the validation split
(0.5, the F1-maximising one, and the one reaching the target recall) and reported unchanged on test, where
recall (sensitivity) is the primary metric because a missed adverse event costs more than a false alarm.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from modernenc.data.masking import load_tokenizer
from modernenc.model.encoder import ModernEncoderPreTrainedModel
from modernenc.tasks.classification_data import (
    TokenizedTexts,
    encode_labels,
    label_vocabulary,
    read_labelled_texts,
    tokenize_texts,
    tokenize_words,
)

SPLIT_KEYS = {"train": "train", "validation": "eval", "test": "test"}  # split name -> data.<key>


@dataclass
class ClassificationData:
    label_names: list[str]  # label values, in class-id order
    positive_index: int  # the class whose recall and precision are reported (the event to detect)
    splits: dict[str, TokenizedTexts]  # train / validation / test, those the config names


def load_classification_data(cfg: DictConfig) -> ClassificationData:
    """Read, label-map and tokenize every split the config names; errors name the file and column.

    `model.task: token_classification` reads a list of words and a list of tags per row.
    """
    data = cfg.data
    if data.test and not data.eval:
        raise ValueError(
            "data.test is set but data.eval is not: test results are reported at thresholds chosen on the "
            "validation split, so set data.eval too"
        )
    raw = {
        split: read_labelled_texts(
            data[key], data.text_column, data.label_column, data.dataset, data.dataset_config
        )
        for split, key in SPLIT_KEYS.items()
        if data[key]
    }
    token_level = cfg.model.task == "token_classification"
    if token_level and isinstance(raw["train"][0][0], str):  # texts with character spans
        return _load_span_data(cfg, raw)
    if not token_level and isinstance(raw["train"][1][0], list):
        raise ValueError(
            f"{data.dataset or data.train}: '{data.label_column}' holds lists (spans or tags), not one label "
            f"per text; set model.task=token_classification to tag them"
        )
    names = label_vocabulary(raw["train"][1], data.labels)
    if len(names) < 2:  # torchmetrics would fail later with a message about its own arguments
        origin = f"{data.dataset}[{data.train}]" if data.dataset else data.train
        raise ValueError(
            f"{origin} has one class: every row's {data.label_column!r} is {names[0]!r}; a classifier needs "
            "examples of at least two classes (check data.label_column, or list them in data.labels)"
        )
    positive_index = positive_class(names, cfg.evaluation.positive_label)
    if len(names) == 2:
        print(f"positive class (recall, precision and thresholds are about it): {names[positive_index]!r}")
    splits = {}
    for split, (texts, labels) in raw.items():
        origin = data.dataset or data[SPLIT_KEYS[split]]
        if token_level != isinstance(texts[0], list):
            wanted = "a list of words" if token_level else "a text"
            raise ValueError(f"{origin}: model.task={cfg.model.task} needs {wanted} in '{data.text_column}'")
        if token_level:
            splits[split] = tokenize_words(texts, labels, names, data.tokenizer, data.max_seq_len)
        else:
            tokenizer = load_tokenizer(data.tokenizer)
            specials = [tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]")]
            ids, truncated = tokenize_texts(tokenizer, texts, data.max_seq_len, *specials)
            arrays = [np.asarray(x, dtype=np.int64) for x in ids]
            splits[split] = TokenizedTexts(arrays, encode_labels(labels, names, origin), truncated)
        truncated = splits[split].num_truncated
        if truncated:
            print(f"note: {truncated} {split} texts were longer than {data.max_seq_len} tokens and truncated")
    if len(names) == 2 and not token_level and "validation" in splits:
        seen = set(splits["validation"].labels.tolist())
        for index in (positive_index, 1 - positive_index):
            if index not in seen:
                raise ValueError(
                    f"{data.eval} has no {names[index]!r} examples; choosing a threshold for a target "
                    "recall needs both classes in the validation split"
                )
    return ClassificationData(names, positive_index, splits)


def _load_span_data(cfg: DictConfig, raw: dict[str, tuple[list, list]]) -> ClassificationData:
    """Texts with labelled character spans: BIO tags over every token; ``data.labels`` are the entity types
    (default: those of the training spans, sorted), and other splits may use no others."""
    from modernenc.tasks.entities import bio_tags
    from modernenc.tasks.spans import check_spans, span_types, tokenize_spans

    data = cfg.data
    origin = {split: data.dataset or data[SPLIT_KEYS[split]] for split in raw}
    declared = [str(t) for t in data.labels] if data.labels is not None else None
    train = check_spans(*raw["train"], origin["train"], declared)
    types = declared or span_types(train)
    if not types:
        raise ValueError(
            f"{origin['train']} has no spans in '{data.label_column}'; there is nothing to learn"
        )
    names = bio_tags(types)
    splits = {}
    for split, (texts, span_lists) in raw.items():
        checked = train if split == "train" else check_spans(texts, span_lists, origin[split], types)
        splits[split] = tokenize_spans(texts, checked, names, data.tokenizer, data.max_seq_len)
        found = splits[split]
        if found.num_truncated:
            print(
                f"note: {found.num_truncated} {split} texts were longer than {data.max_seq_len} tokens and "
                f"truncated; {found.num_spans_cut} spans beyond the cut are not tagged"
            )
        if found.num_misaligned:
            print(
                f"note: {found.num_misaligned} {split} spans start or end inside a token; they are tagged on "
                "the whole tokens, so the tagger cannot reproduce them exactly"
            )
    print(f"entity types: {', '.join(types)} (tags: {', '.join(names)})")
    return ClassificationData(names, 0, splits)


# Labels that name the absence of the event, so the other of two labels is the one to detect ("O" is
# outside every tagged span in BIO tags).
NEGATIVE_LABELS = {"0", "false", "no", "o"}


def positive_class(names: list[str], positive_label: object = None) -> int:
    """The class index of the event to detect: `positive_label` if given, else, for two classes, the one
    that is not 0 / false / no / O. Other label pairs must name it, as guessing could put a recall target
    on the wrong class."""
    if positive_label is not None:
        label = str(positive_label)
        if label not in names:
            # YAML 1.1 reads an unquoted yes/no/true/false as a boolean, which arrives as 'True'/'False'.
            quote = "; quote yes/no/true/false labels in YAML" if label in ("True", "False") else ""
            raise ValueError(f"evaluation.positive_label={label!r} is not one of the labels {names}{quote}")
        return names.index(label)
    if len(names) != 2:
        return 0
    negatives = [i for i, name in enumerate(names) if name.lower() in NEGATIVE_LABELS]
    if len(negatives) != 1:
        raise ValueError(
            f"the labels {names} do not say which class is the event to detect; set "
            f"evaluation.positive_label to one of them"
        )
    return 1 - negatives[0]


def evaluate_classifier(
    model: ModernEncoderPreTrainedModel,
    data: ClassificationData,
    out_dir: str | Path,
    target_recall: float = 0.95,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Choose thresholds on validation, report them on every split, and write report + PR curves.

    Writes `report.json`, `report.md` and `pr_curve_<split>.png` into `out_dir`; returns the report.
    """
    from modernenc.tasks.decisions import default_review_band
    from modernenc.tasks.evaluation import (
        evaluate_at_thresholds,
        format_table,
        plot_precision_recall,
        select_thresholds,
    )
    from modernenc.tasks.predict import predict_probabilities

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if "validation" not in data.splits:
        raise ValueError("thresholds are chosen on the validation split; set data.eval")
    if len(data.label_names) != 2:
        raise ValueError("threshold selection needs a binary task")
    pos = data.positive_index
    scores = {}
    for split, texts in data.splits.items():
        if split == "train":
            continue
        probs = predict_probabilities(model, texts.input_ids, batch_size, positive_label=pos, progress=False)
        scores[split] = ((texts.labels == pos).astype(int), probs)
    thresholds = select_thresholds(*scores["validation"], target_recall=target_recall)
    band = default_review_band(thresholds["target_recall"])  # what predict flags for a human by default
    report: dict[str, Any] = {
        "positive_label": data.label_names[pos],
        "target_recall": target_recall,
        "thresholds": thresholds,
        "review_band": list(band),
        "splits": {},
    }
    lines = [
        f"positive class: {data.label_names[pos]!r}",
        f"thresholds chosen on validation (target recall {target_recall}): {thresholds}",
    ]
    for split, (labels, probs) in scores.items():
        results = evaluate_at_thresholds(labels, probs, thresholds)
        review = review_workload(labels, probs, thresholds["target_recall"], band)
        report["splits"][split] = {"num_examples": len(labels), "results": results, "review": review}
        plot_precision_recall(
            labels, probs, thresholds, out_dir / f"pr_curve_{split}.png", title=f"{split}: precision-recall"
        )
        lines += ["", f"## {split} ({len(labels)} examples)", "", format_table(results), ""]
        in_band, beyond = review["missed_in_band"], review["missed"] - review["missed_in_band"]
        lines.append(
            f"review band [{band[0]:.4g}, {band[1]:.4g}] around the target_recall threshold: "
            f"{review['needs_review']} of {len(labels)} need review; of the {review['missed']} events below "
            f"the threshold, {in_band} {_are(in_band)} in the band and {beyond} {_are(beyond)} missed even "
            "with review"
        )
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=float))
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    return report


def _are(count: int) -> str:
    return "is" if count == 1 else "are"


def review_workload(
    labels: np.ndarray, probs: np.ndarray, threshold: float, band: tuple[float, float]
) -> dict[str, int]:
    """What the review band costs and catches: texts a human must read, and, of the events the threshold
    misses, how many the band still sends to a human."""
    in_band = (probs >= band[0]) & (probs <= band[1])
    missed = (labels == 1) & (probs < threshold)
    return {
        "needs_review": int(in_band.sum()),
        "missed": int(missed.sum()),
        "missed_in_band": int((missed & in_band).sum()),
    }
