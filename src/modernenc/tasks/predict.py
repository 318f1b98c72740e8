"""Batch inference with a fine-tuned binary classifier: texts in, decisions out.

The model folder is a Hugging Face export (``config.json``, ``model.safetensors``, ``tokenizer.json``) and
may hold the decision rules fine-tuning and calibration chose (``thresholds.json``, see
``modernenc.tasks.decisions``), one per precision.

Inference runs on packed tokens with no padding: texts are tokenized, sorted by length and sent
``batch_size`` at a time as one flat sequence with ``cu_seqlens``; the output keeps the input order.

From Python, in three steps (what ``predict_file`` does for a file)::

    model, tokenizer = load_classifier(folder, "cpu", precision="int8")   # fp32, bf16 or int8
    rule = read_thresholds(folder, "int8")           # that precision's DecisionRule, None if uncalibrated
    ids, _ = tokenize_texts(tokenizer, texts, rule.max_length, model.config.cls_token_id,
                            model.config.sep_token_id)
    probabilities = predict_probabilities(model, ids, positive_label=rule.positive_label)
"""

from __future__ import annotations

import csv
import datetime
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from modernenc.model.config import SPECIAL_TOKEN_FIELDS
from modernenc.tasks.classification_data import collate_packed, encode_texts, length_sorted_batches
from modernenc.tasks.decisions import (
    THRESHOLDS_FILE,
    DecisionRule,
    read_thresholds,
    resolve_decision,
    uncalibrated_message,
)
from modernenc.tasks.provenance import check_provenance_path, write_provenance
from modernenc.utils.outputs import check_output_file, writing_file
from modernenc.utils.precision import PRECISIONS
from modernenc.utils.tables import TABLE_FORMATS, read_lines, read_rows

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from modernenc.model import ModernEncoderForSequenceClassification

logger = logging.getLogger(__name__)

INPUT_FORMATS = (".txt", *TABLE_FORMATS)
OUTPUT_FORMATS = (".jsonl", ".csv")
OUTPUT_COLUMNS = ("probability", "label", "needs_review", "truncated")
OUTPUT_KIND = "predictions"  # what --force may replace (modernenc.utils.outputs)


# ---------------------------------------------------------------------------------------------------------
# inputs and outputs


def read_inputs(path: str | Path, text_column: str = "text") -> list[dict]:
    """Rows of a .txt (one text per non-blank line), JSONL, CSV or parquet file; each holds its text under
    ``text_column`` (``"text"`` and a 1-based ``"line"`` for .txt). Other columns are kept for the output."""
    path = Path(path)
    if path.suffix.lower() not in INPUT_FORMATS:
        raise ValueError(f"cannot read {path}: supported inputs are {', '.join(INPUT_FORMATS)}")
    if not path.is_file():
        raise FileNotFoundError(f"input file {path} does not exist")
    if path.suffix.lower() == ".txt":
        lines = read_lines(path)  # "\n" only: keeps form feeds etc. inside a text
        rows, text_column = [{"line": i, "text": s} for i, s in enumerate(lines, 1) if s.strip()], "text"
        if not rows:
            raise ValueError(f"{path} holds no rows (only blank lines)")
    else:
        rows = read_rows(path, [text_column], hint=" (choose one with --text-column)")
    for number, row in enumerate(rows, 1):
        if not isinstance(row.get(text_column), str):
            raise ValueError(
                f"{path}: row {number} has {text_column}={row.get(text_column)!r}; expected a string"
            )
    blank = [number for number, row in enumerate(rows, 1) if not row[text_column].strip()]
    if blank:  # a score for no text would look like a real decision downstream
        shown = ", ".join(map(str, blank[:5])) + (", ..." if len(blank) > 5 else "")
        raise ValueError(
            f"{path}: {len(blank)} row(s) have an empty {text_column!r} (rows {shown}); "
            "remove or fill them, there is nothing to classify"
        )
    return rows


def keep_input_columns(row: Mapping[str, object], ours: Sequence[str]) -> dict:
    """``row``'s columns, in order, with those named like one of ``ours`` renamed ``input_<name>`` (or
    ``input_input_<name>``, and so on, when the row has that too: a predictions file read back in holds
    both the gold ``input_label`` and the earlier ``label``), so no input value is overwritten."""
    taken = {*row, *ours}
    kept = {}
    for name, value in row.items():
        if name in ours:
            name = f"input_{name}"
            while name in taken:
                name = f"input_{name}"
            taken.add(name)
        kept[name] = value
    return kept


def check_output_path(
    out: str | Path,
    force: bool = False,
    input_path: str | Path | None = None,
    model_dir: str | Path | None = None,
) -> Path:
    """Fail before any work if OUT (or its provenance record beside it) has an unsupported extension,
    cannot be written, is or overlaps an input, or exists (without force, or when it is not earlier
    predictions; see modernenc.utils.outputs)."""
    out = Path(out)
    if out.suffix.lower() not in OUTPUT_FORMATS:
        raise ValueError(f"output {out} must end in {' or '.join(OUTPUT_FORMATS)}")
    out = check_output_file(out, kind=OUTPUT_KIND, force=force, inputs=[input_path, model_dir], what="--out")
    check_provenance_path(out, force)
    return out


def write_outputs(rows: Sequence[dict], out: str | Path) -> Path:
    """Write rows as JSONL or CSV (by extension), via a temporary file so a crash leaves no half output."""
    out = Path(out)
    with writing_file(out, kind=OUTPUT_KIND, tool="predict") as tmp:
        _write_rows(rows, out.suffix.lower(), tmp)
    return out


def json_value(value: object) -> object:
    """An input value as JSON holds it, so the columns a table brings along never stop the output: NaN
    and infinities (pandas' and parquet's missing numbers) as null, as pandas' to_json writes them; dates and
    times (a parquet timestamp column) in ISO 8601; other types JSON lacks (Decimal, bytes) as their str."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, (datetime.date, datetime.time)):  # datetime.datetime is a date
        return value.isoformat()
    return str(value)


def _write_rows(rows: Sequence[dict], suffix: str, tmp: Path) -> None:
    if suffix == ".csv":
        columns = list(dict.fromkeys(k for row in rows for k in row))
        with tmp.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            for row in rows:  # nested JSON values stay JSON in a CSV cell
                writer.writerow(
                    {
                        k: json.dumps(json_value(v), allow_nan=False) if isinstance(v, (dict, list)) else v
                        for k, v in row.items()
                    }
                )
    else:
        with tmp.open("w", encoding="utf-8") as f:
            for row in rows:  # allow_nan=False: strict JSON, which every reader (jq, Spark, JS) parses
                f.write(json.dumps(json_value(row), ensure_ascii=False, allow_nan=False) + "\n")


# ---------------------------------------------------------------------------------------------------------
# model and inference


def load_classifier(
    model_dir: str | Path, device: str | torch.device = "cpu", precision: str = "fp32"
) -> tuple[ModernEncoderForSequenceClassification, Tokenizer]:
    """(model in eval mode on ``device`` as its ``precision`` variant, ``tokenizers.Tokenizer``) from a
    Hugging Face folder. ``precision``: fp32, bf16 or int8 (CPU only); see ``modernenc.model.precision``."""
    from modernenc.data.masking import load_tokenizer
    from modernenc.model import ModernEncoderForSequenceClassification

    model_dir = check_model_folder(model_dir)
    tokenizer_file = model_dir / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise FileNotFoundError(
            f"{tokenizer_file} is missing; export the model with its tokenizer "
            "(save_pretrained(..., tokenizer_path=...) or export-hf --tokenizer)"
        )
    _check_is_fine_tuned_classifier(model_dir)
    model = ModernEncoderForSequenceClassification.from_pretrained(model_dir)
    if model.config.num_labels != 2:
        raise ValueError(
            f"predict handles binary classifiers (num_labels=2); {model_dir} has num_labels="
            f"{model.config.num_labels}"
        )
    tokenizer = load_tokenizer(tokenizer_file)
    # Every text is framed [CLS] ... [SEP] with the tokenizer's ids, as fine-tuning framed it.
    for name in ("cls_token_id", "sep_token_id"):
        token = SPECIAL_TOKEN_FIELDS[name]
        token_id = tokenizer.token_to_id(token)
        if token_id is None:
            raise ValueError(f"{tokenizer_file} has no {token} token; predict frames texts [CLS] ... [SEP]")
        if getattr(model.config, name) != token_id:
            logger.warning(
                "%s/config.json says %s=%s but its tokenizer's %s is %d; using the tokenizer's, as "
                "fine-tuning did",
                model_dir, name, getattr(model.config, name), token, token_id,
            )  # fmt: skip
            setattr(model.config, name, token_id)
    return model.to(device).for_inference(precision), tokenizer


def check_model_folder(model_dir: str | Path) -> Path:
    """``model_dir`` as a Path if it is a folder; a file (a training checkpoint, most likely) or a missing
    path fails saying what to pass instead."""
    model_dir = Path(model_dir)
    if model_dir.is_file():
        if model_dir.suffix == ".pt":
            raise ValueError(
                f"{model_dir} is a training checkpoint, not a model folder; export it first "
                f"(modernenc export-hf {model_dir} OUT_FOLDER --tokenizer TOKENIZER) and pass OUT_FOLDER"
            )
        raise ValueError(f"{model_dir} is a file; pass the Hugging Face model folder (config.json, ...)")
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model folder {model_dir} does not exist")
    return model_dir


def check_is_modernbert(model_dir: Path, config: Mapping[str, object]) -> None:
    """Refuse another architecture's folder (a BERT classifier, say) for what it is, before a message about
    task heads would send its user off to fine-tune it."""
    model_type = config.get("model_type")
    if model_type is not None and model_type != "modernbert":
        kind = "/".join(config.get("architectures") or []) or f"model_type {model_type!r}"
        raise ValueError(
            f"{model_dir} holds a {kind} model, not ModernBERT; modernenc runs ModernBERT checkpoints "
            "(model_type 'modernbert') only"
        )


def _check_is_fine_tuned_classifier(model_dir: Path) -> None:
    """Refuse other task heads: loading them would start a random classifier and predict noise."""
    from modernenc.model import ModernEncoderForSequenceClassification

    config_file = model_dir / "config.json"
    try:
        config = json.loads(config_file.read_text())
        architectures = config.get("architectures") or []
    except (OSError, ValueError, AttributeError):  # not JSON, not UTF-8, not an object
        return  # from_pretrained names the problem with the file
    check_is_modernbert(model_dir, config)
    wanted = ModernEncoderForSequenceClassification.hf_architecture
    if architectures and wanted not in architectures:  # none listed: strict loading decides
        found = "/".join(architectures)
        raise ValueError(
            f"{model_dir} holds a {found} checkpoint, not a fine-tuned {wanted}: its classifier would be "
            "random. Fine-tune it first (e.g. python train.py yamls/finetune_ade.yaml model.init_from=...)"
        )


def predict_probabilities(
    model: torch.nn.Module,
    token_ids: Sequence[Sequence[int]],
    batch_size: int = 64,
    positive_label: int = 1,
    progress: bool = True,
) -> np.ndarray:
    """Probability of ``positive_label`` for each sequence, in input order, from packed length-sorted batches.

    The model computes in the precision it was loaded for (``load_classifier(..., precision=...)``).
    Sorting puts similar lengths together, so attention's length buckets waste almost nothing; longest
    first, so a batch too big for memory fails at once rather than at the end.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    device = next(model.parameters()).device
    batches = length_sorted_batches([len(ids) for ids in token_ids], batch_size)
    probs = np.empty(len(token_ids), dtype=np.float64)
    bar = tqdm(total=len(token_ids), unit="text", desc="predict", disable=not progress)
    with torch.inference_mode(), bar:
        for chunk in batches:
            batch = collate_packed([(np.asarray(token_ids[i]), 0) for i in chunk])
            inputs = {k: batch[k].to(device) for k in ("input_ids", "cu_seqlens", "position_ids")}
            logits = model(**inputs, max_seqlen=batch["max_seqlen"]).logits
            probs[chunk] = logits.float().softmax(-1)[:, positive_label].cpu().numpy()
            bar.update(len(chunk))
    return probs


class NonFiniteScoresError(ValueError):
    """A model returned NaN or infinite probabilities. They are never turned into decisions: NaN is below
    every threshold and the argmax of NaN tag scores is the first tag, so either would read as "no event"."""


def refuse_non_finite(
    scores: np.ndarray | Sequence[np.ndarray],
    model: object,
    where: str = "texts",
    numbers: Sequence[int] | None = None,
) -> None:
    """Raise ``NonFiniteScoresError`` when any text's probabilities (one per text, or one array of tag
    probabilities per text) are not all finite, naming ``model`` and the texts: ``numbers`` (1-based,
    e.g. the input's line numbers; default their positions) in ``where``."""
    bad = [i for i, s in enumerate(scores) if not np.isfinite(s).all()]
    if bad:
        named = [numbers[i] if numbers is not None else i + 1 for i in bad]
        shown = ", ".join(map(str, named[:5])) + (", ..." if len(bad) > 5 else "")
        raise NonFiniteScoresError(
            f"{model} returned NaN or infinite probabilities for {len(bad)} of {len(scores)} texts ({where}: "
            f"{shown}), which would read as 'no event' (or 'no span'); nothing was written. Check its "
            "weights for NaN, or try another --dtype"
        )


# ---------------------------------------------------------------------------------------------------------
# the whole command


@dataclass
class PredictionSummary:
    out: Path
    examples: int
    seconds: float
    flagged: int
    needs_review: int
    truncated: int
    threshold: float
    review_band: tuple[float, float]
    threshold_source: str
    provenance: Path | None = None  # OUT.provenance.json: what the decisions were made from

    @property
    def examples_per_s(self) -> float:
        return self.examples / self.seconds if self.seconds > 0 else math.inf


def _label_names(
    rule: DecisionRule | None, id2label: Mapping[int, str] | None, num_labels: int
) -> list | None:
    if rule is not None and rule.label_names is not None:
        names = list(rule.label_names)
        if len(names) != num_labels:
            raise ValueError(
                f"{THRESHOLDS_FILE} lists {len(names)} label_names for a {num_labels}-label model"
            )
        return names
    if id2label and not all(id2label.get(i) == f"LABEL_{i}" for i in range(num_labels)):
        return [id2label[i] for i in range(num_labels)]
    return None  # only transformers' placeholder names: write the class index instead


def resolve_device(device: str | None, precision: str = "fp32") -> torch.device:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` as a device; checked, as torch fails late and cryptically.
    ``auto`` is the CPU for int8, which runs there only."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() and precision != "int8" else "cpu")
    kind, _, index = device.partition(":")
    if device != "cpu" and not (kind == "cuda" and (not index or index.isdigit())):
        raise ValueError(f"unknown device {device!r}; choose auto, cpu, cuda or cuda:N (e.g. cuda:1)")
    if precision == "int8" and device != "cpu":
        raise ValueError(f"--dtype int8 runs on the CPU only; use --device cpu, or --dtype bf16 on {device}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device is available; use --device cpu")
    if index and int(index) >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(device)


# What int8 calibrations record about the machine (`model.precision.int8_setup`), with the value a
# calibration made before the key existed had: every modernenc before the kernel was recorded used x86.
INT8_SETUP_BEFORE_IT_WAS_RECORDED = {"int8_kernel": "x86"}


def warn_if_calibrated_elsewhere(rule: DecisionRule | None) -> bool:
    """Warn (and return True) when int8 thresholds were chosen on probabilities of another int8 setup.

    int8 probabilities depend on the activation bits and the matmul kernel this machine uses; thresholds
    chosen under others still run, but their recall was not measured for these probabilities."""
    from modernenc.model.precision import int8_setup

    if rule is None or rule.precision != "int8" or not rule.calibration:
        return False
    recorded = {**INT8_SETUP_BEFORE_IT_WAS_RECORDED, **rule.calibration}
    changed = [
        f"{key} {recorded[key]} -> {value}"
        for key, value in int8_setup().items()
        if recorded.get(key) is not None and recorded[key] != value  # unrecorded: nothing to compare
    ]
    if changed:
        logger.warning(
            "the int8 thresholds were calibrated under another int8 setup than this machine's (%s): "
            "probabilities shift a little, so the recall they were chosen for is not guaranteed here; "
            "calibrate on this machine (modernenc calibrate ... --dtype int8 --force)",
            ", ".join(changed),
        )
    return bool(changed)


def predict_file(
    model_dir: str | Path,
    input_path: str | Path,
    out: str | Path,
    *,
    text_column: str = "text",
    threshold: float | None = None,
    review_band: Sequence[float] | None = None,
    batch_size: int = 64,
    dtype: str = "fp32",
    device: str | None = None,
    force: bool = False,
    progress: bool = True,
    annotate: Callable[[list[dict], list[str], list[bool]], object] | None = None,
    provenance_extra: dict | None = None,
) -> PredictionSummary:
    """Classify every text of ``input_path`` and write ``out`` with probability, label, needs_review and
    truncated.

    ``dtype`` (fp32, bf16, int8) is the precision of the model and of the thresholds: a bf16 or int8 run
    uses the thresholds recorded for it (``modernenc calibrate``), and refuses without them unless
    ``threshold`` is given. ``annotate(rows, texts, flagged)`` may add columns to the output rows before
    they are written (e.g. ``tasks.extract.add_spans``: the spans of the flagged texts), and
    ``provenance_extra`` adds what made those columns to OUT.provenance.json (``tasks.provenance``)."""
    if dtype not in PRECISIONS:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(PRECISIONS)}")
    out = check_output_path(out, force=force, input_path=input_path, model_dir=model_dir)
    check_model_folder(model_dir)
    rows = read_inputs(input_path, text_column)
    precision_rule = read_thresholds(model_dir, dtype)
    if precision_rule is None and dtype != "fp32" and threshold is None:
        raise ValueError(uncalibrated_message(model_dir, dtype))
    rule = precision_rule or read_thresholds(model_dir)  # labels and truncation: shared by every precision
    t, band, source = resolve_decision(precision_rule, threshold, review_band)
    model, tokenizer = load_classifier(model_dir, resolve_device(device, dtype), dtype)
    warn_if_calibrated_elsewhere(precision_rule)
    config = model.config
    positive = rule.positive_label if rule is not None else 1
    if not 0 <= positive < config.num_labels:
        raise ValueError(f"positive_label {positive} is not a class of this {config.num_labels}-label model")
    names = _label_names(rule, config.id2label, config.num_labels)

    start = time.perf_counter()  # throughput counts tokenizing and inference, not loading the model
    column = "text" if Path(input_path).suffix.lower() == ".txt" else text_column
    # Truncate as the validation that chose the threshold did; without a record, use the whole context.
    max_length = rule.max_length if rule is not None and rule.max_length else config.max_position_embeddings
    ids, was_cut = encode_texts(
        tokenizer, [r[column] for r in rows], max_length, config.cls_token_id, config.sep_token_id
    )
    truncated = sum(was_cut)
    if truncated:
        logger.warning(
            "%d of %d texts were longer than %d tokens and were truncated (as in the validation that "
            "chose the threshold, when thresholds.json records its max_length)",
            truncated,
            len(ids),
            max_length,
        )
    probs = predict_probabilities(model, ids, batch_size, positive, progress)
    seconds = time.perf_counter() - start
    txt = Path(input_path).suffix.lower() == ".txt"  # its rows are the non-blank lines: name them by line
    numbers = [r["line"] for r in rows] if txt else None
    refuse_non_finite(probs, model_dir, f"{'lines' if txt else 'rows'} of {input_path}", numbers)

    negative = 1 - positive
    results = []
    for row, p, cut in zip(rows, probs.tolist(), was_cut, strict=True):
        kept = keep_input_columns(row, OUTPUT_COLUMNS)  # e.g. a gold "label" becomes input_label
        cls = positive if p >= t else negative
        results.append(
            {
                **kept,
                "probability": p,
                "label": names[cls] if names else cls,
                "needs_review": band[0] <= p <= band[1],
                "truncated": cut,  # the model saw only the first max_length tokens
            }
        )
    if annotate is not None:
        annotate(results, [r[column] for r in rows], (probs >= t).tolist())
    write_outputs(results, out)
    summary = PredictionSummary(
        out=out,
        examples=len(results),
        seconds=seconds,
        flagged=int((probs >= t).sum()),
        needs_review=sum(r["needs_review"] for r in results),
        truncated=truncated,
        threshold=t,
        review_band=band,
        threshold_source=source,
    )
    summary.provenance = write_provenance(
        out,
        tool="predict",
        model_dir=model_dir,
        input_path=input_path,
        precision=dtype,
        counts={
            "rows": summary.examples,
            "flagged": summary.flagged,
            "needs_review": summary.needs_review,
            "truncated": truncated,
        },
        decision={
            "threshold": t,
            "threshold_source": source,
            "review_band": list(band),
            "positive_label": positive,
            "label_names": names,
            "max_length": max_length,
        },
        extra=provenance_extra,
    )
    return summary


def format_summary(s: PredictionSummary) -> str:
    return (
        f"{s.examples} texts in {s.seconds:.1f} s ({s.examples_per_s:,.0f} examples/s); "
        f"{s.flagged} flagged positive at threshold {s.threshold:.4g} from {s.threshold_source}; "
        f"{s.needs_review} need review (probability in [{s.review_band[0]:.4g}, {s.review_band[1]:.4g}]); "
        f"wrote {s.out}" + (f" and its provenance record {s.provenance.name}" if s.provenance else "")
    )
