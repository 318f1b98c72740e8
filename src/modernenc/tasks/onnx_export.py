"""Export a fine-tuned classifier folder to ONNX, for teams that serve with ONNX Runtime or Triton.

What is exported is the padded-input graph: ``input_ids`` and ``attention_mask`` ``[batch, sequence]``
(int64) -> ``logits`` (``[batch, labels]``, or ``[batch, sequence, labels]`` for token classification),
with dynamic batch and sequence axes. The graph is traced from `transformers`' own ModernBert class loaded
from the folder (modernenc folders are plain `transformers` checkpoints), as optimum does: modernenc's
packed path chooses its attention kernels from the lengths at run time, so it cannot be traced into one
graph. The TorchScript exporter (``torch.onnx.export(..., dynamo=False)``) is used: the dynamo exporter
has been reported to give much slower ModernBERT graphs. The local-attention window is masked inside the
graph, so ONNX Runtime runs padded batches; pad on the right, as `transformers` tokenizers do.

The export is checked before anything is written: ONNX Runtime runs the graph on real texts, padded into
one batch, and its logits must match modernenc's fp32 model (on packed input) within ``FP32_TOLERANCE``.
``int8=True`` adds ``model_quantized.onnx``, from ``onnxruntime.quantization.quantize_dynamic`` (int8
weights, activations quantized per call), and reports how far its logits are from fp32's: thresholds
chosen on fp32 probabilities do not carry over to it.

The folder gets the tokenizer files, ``config.json`` (label names), ``thresholds.json`` (its fp32 rule,
which applies to ``model.onnx``; the bf16 and int8 rules of modernenc's own precisions are left out) and
``onnx_export.json`` (what was exported from what, and the differences measured). ``onnx`` and
``onnxruntime`` are the optional extra ``modernenc[onnx]``, imported here only.

It sits in the tasks layer, beside ``predict``: it exports fine-tuned task folders and checks them with
what prediction uses (tokenization, the decision file), and needs nothing from training.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from modernenc.model.hf_interop import CONFIG_NAME, TOKENIZER_FILES, WEIGHTS_NAME
from modernenc.tasks.decisions import THRESHOLDS_FILE, read_thresholds
from modernenc.utils.files import sha256_file
from modernenc.utils.outputs import check_output_folder, writing_folder
from modernenc.utils.tables import read_text

ONNX_FILE = "model.onnx"
INT8_FILE = "model_quantized.onnx"  # optimum's name for a quantized export
RECORD_FILE = "onnx_export.json"
OUTPUT_KIND = "onnx-model"  # what --force may replace (modernenc.utils.outputs)
DEFAULT_OPSET = 17
FP32_TOLERANCE = 1e-4  # max abs logit difference allowed between the graph and modernenc's fp32 model
CHECK_MAX_LENGTH = 512  # tokens per check text: longer than the 128-token local window, short enough
INPUT_NAMES = ("input_ids", "attention_mask")

# Real sentences of varied length for the check (one longer than the local attention window), unless the
# caller passes its own (`--check-texts`): a check on the texts the model will see is stronger.
CHECK_TEXTS = (
    "The committee approved the budget after a short debate.",
    "Rain is expected tomorrow.",
    "?",
    "She moved to Lisbon in 2019 and has worked there as a translator ever since.",
    "Patients were randomised to receive either the study drug or placebo for twelve weeks.",
    "Le patient a été hospitalisé pour une pneumonie — naïve, déjà traitée 😷.",
    "Results: median follow-up was 18 months (IQR 12-24); 41 of 310 participants withdrew.",
    "OK.",
    " ".join(
        [
            "The report describes how the bridge was designed, built and maintained over forty years.",
            "Engineers inspected the cables every spring and replaced the worn anchors in 1998.",
            "Traffic grew faster than planned, so a second deck was added a decade later.",
            "The city published the inspection records, the repair costs and the load tests online.",
            "Residents were consulted before each closure, and the works were scheduled at night.",
        ]
        * 3
    ),
)

# The `transformers` class that reads each exportable task folder, by the architecture config.json names.
EXPORTABLE = {
    "ModernBertForSequenceClassification": "AutoModelForSequenceClassification",
    "ModernBertForTokenClassification": "AutoModelForTokenClassification",
}


@dataclass
class OnnxExport:
    """What `export_onnx` wrote and measured."""

    out_dir: Path
    architecture: str
    opset: int
    check_texts: int
    fp32_max_abs_diff: float
    int8_max_abs_diff: float | None = None
    files: list[str] = field(default_factory=list)


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise RuntimeError(
            f"export-onnx needs onnx and onnxruntime ({err.name} is missing): pip install 'modernenc[onnx]'"
        ) from None


def _architecture(model_dir: Path) -> str:
    """The folder's exportable architecture; one sentence when the folder is not a fine-tuned classifier."""
    from modernenc.tasks.predict import check_is_modernbert, check_model_folder

    config_file = check_model_folder(model_dir) / CONFIG_NAME  # a .pt file: says to export-hf it first
    if not config_file.is_file() or not (model_dir / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(
            f"{model_dir} is not a model folder: it needs {CONFIG_NAME} and {WEIGHTS_NAME}"
        )
    if not (model_dir / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"{model_dir / 'tokenizer.json'} is missing; export the model with its tokenizer "
            "(save_pretrained(..., tokenizer_path=...) or export-hf --tokenizer)"
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        architectures = config.get("architectures") or []
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise ValueError(f"{config_file} is not a JSON object (a ModernBERT config)") from None
    check_is_modernbert(model_dir, config)
    found = [a for a in architectures if a in EXPORTABLE]
    if not found:
        raise ValueError(
            f"{model_dir} is not a fine-tuned classifier (its config.json names "
            f"{'/'.join(architectures) or 'no architecture'}); export-onnx exports "
            f"{' and '.join(EXPORTABLE)} folders"
        )
    return found[0]


def _padded(ids: list[list[int]], pad_id: int) -> dict[str, np.ndarray]:
    """Right-padded int64 ``input_ids`` and ``attention_mask`` for the graph."""
    longest = max(map(len, ids))
    input_ids = np.full((len(ids), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), longest), dtype=np.int64)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def _max_abs_diff(graph_logits: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    """Largest |difference| over sequences, or over real tokens for per-token logits (padding is ignored)."""
    diff = np.abs(graph_logits.astype(np.float64) - reference.astype(np.float64))
    return float(diff[mask.astype(bool)].max() if diff.ndim == 3 else diff.max())


def _run_graph(path: Path, batch: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], batch)[0]


def _trace(
    hf_model: torch.nn.Module, batch: dict[str, np.ndarray], path: Path, opset: int, token: bool
) -> None:
    logits_axes = {0: "batch", 1: "sequence"} if token else {0: "batch"}
    example = tuple(torch.from_numpy(batch[name][:2]) for name in INPUT_NAMES)
    with warnings.catch_warnings(), torch.no_grad():
        # The tracer warns about every Python bool and int it records; none of them varies between inputs
        # here (the check below runs other batch and sequence sizes than the example).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            hf_model,
            example,
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=["logits"],
            dynamic_axes={
                **{name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES},
                "logits": logits_axes,
            },
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def export_onnx(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    int8: bool = False,
    opset: int = DEFAULT_OPSET,
    force: bool = False,
    check_texts: list[str] | None = None,
) -> OnnxExport:
    """Export ``model_dir`` to ``out_dir/model.onnx`` (and ``model_quantized.onnx`` with ``int8``), checked
    against modernenc's fp32 model on ``check_texts`` (default: `CHECK_TEXTS`); see the module docstring.

    Nothing is written unless the export passes its check; an existing ``out_dir`` is replaced only with
    ``force``.
    """
    import transformers

    from modernenc.data.masking import load_tokenizer
    from modernenc.model import ModernEncoderForSequenceClassification, ModernEncoderForTokenClassification
    from modernenc.tasks.classification_data import tokenize_texts

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    architecture = _architecture(model_dir)
    # --force replaces only an earlier export that holds nothing else (modernenc.utils.outputs)
    check_output_folder(out_dir, kind=OUTPUT_KIND, force=force, inputs=[model_dir])
    if not 14 <= opset <= 20:  # 14: the first with the ops ModernBert needs; 20: the newest torch 2.7 writes
        raise ValueError(f"--opset must be between 14 and 20; got {opset}")
    _require_onnx()
    texts = list(CHECK_TEXTS if check_texts is None else check_texts)
    if not texts:
        raise ValueError("the check needs at least one text")

    token = architecture == "ModernBertForTokenClassification"
    ours_class = ModernEncoderForTokenClassification if token else ModernEncoderForSequenceClassification
    ours = ours_class.from_pretrained(model_dir)
    config = ours.config
    tokenizer = load_tokenizer(model_dir / "tokenizer.json")
    rule = read_thresholds(model_dir) if not token else None
    max_length = min(config.max_position_embeddings, (rule.max_length if rule else None) or CHECK_MAX_LENGTH)
    ids, _ = tokenize_texts(tokenizer, texts, max_length, config.cls_token_id, config.sep_token_id)
    batch = _padded(ids, config.pad_token_id or 0)
    with torch.inference_mode():  # the reference: modernenc's fp32 model, which unpads the batch
        reference = ours(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.numpy()

    hf_class = getattr(transformers, EXPORTABLE[architecture])
    hf_model = hf_class.from_pretrained(
        model_dir, attn_implementation="sdpa", reference_compile=False, dtype=torch.float32
    ).eval()
    with writing_folder(out_dir, kind=OUTPUT_KIND, tool="export-onnx") as staging:
        _trace(hf_model, batch, staging / ONNX_FILE, opset, token)
        fp32_diff = _max_abs_diff(_run_graph(staging / ONNX_FILE, batch), reference, batch["attention_mask"])
        if not fp32_diff <= FP32_TOLERANCE:
            raise RuntimeError(
                f"the exported graph's logits differ from modernenc's fp32 model by up to {fp32_diff:.3g} "
                f"(allowed {FP32_TOLERANCE:g}) on {len(texts)} texts; nothing was written"
            )
        int8_diff = None
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            with _quiet_root_logger():  # it logs advice and skipped tensors at WARNING on the root logger
                quantize_dynamic(staging / ONNX_FILE, staging / INT8_FILE, weight_type=QuantType.QInt8)
            int8_diff = _max_abs_diff(
                _run_graph(staging / INT8_FILE, batch), reference, batch["attention_mask"]
            )
        for name in (*TOKENIZER_FILES, CONFIG_NAME):
            if (model_dir / name).is_file():
                shutil.copyfile(model_dir / name, staging / name)
        dropped = _copy_fp32_rule(model_dir, staging) if rule is not None else []
        result = OnnxExport(out_dir, architecture, opset, len(texts), fp32_diff, int8_diff)
        record = {
            "source": str(model_dir),
            "source_weights_sha256": sha256_file(model_dir / WEIGHTS_NAME),
            "architecture": architecture,
            "opset": opset,
            "exporter": "torch.onnx.export (TorchScript, dynamo=False)",
            "inputs": {name: "int64 [batch, sequence], right-padded" for name in INPUT_NAMES},
            "check": {
                "texts": len(texts),
                "max_length": max_length,
                "fp32_max_abs_logit_diff": fp32_diff,
                "int8_max_abs_logit_diff": int8_diff,
            },
            "versions": _versions(),
        }
        if dropped:
            record["thresholds"] = (
                f"the fp32 rule of {model_dir / THRESHOLDS_FILE}, for model.onnx; its {', '.join(dropped)} "
                "rules were left out: they were calibrated for modernenc's own precisions, not these graphs"
            )
        (staging / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
        result.files = sorted(p.name for p in staging.iterdir() if not p.name.startswith("."))
    return result


def _copy_fp32_rule(model_dir: Path, out_dir: Path) -> list[str]:
    """Copy thresholds.json with its fp32 rule only; returns the precisions whose rules were left out.

    Its bf16 and int8 rules were chosen on the probabilities of modernenc's own bf16 and int8 models. No
    graph here computes those: model_quantized.onnx is ONNX Runtime's int8, whose probabilities differ
    again, and a deployment that read ``variants.int8`` for it would use thresholds nobody validated."""
    data = json.loads(read_text(model_dir / THRESHOLDS_FILE))
    dropped = sorted(data.pop("variants", {}))
    (out_dir / THRESHOLDS_FILE).write_text(json.dumps(data, indent=2) + "\n")
    return dropped


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def format_export(e: OnnxExport) -> str:
    lines = [
        f"exported {e.architecture} to {e.out_dir / ONNX_FILE} (opset {e.opset}, dynamic batch and sequence "
        "axes, right-padded int64 input_ids and attention_mask)",
        f"check on {e.check_texts} texts against modernenc fp32: max abs logit difference "
        f"{e.fp32_max_abs_diff:.3g} (allowed {FP32_TOLERANCE:g})",
    ]
    if e.int8_max_abs_diff is not None:
        lines.append(
            f"{INT8_FILE} (onnxruntime dynamic int8): max abs logit difference {e.int8_max_abs_diff:.3g} "
            "from fp32; thresholds.json's rule was chosen on fp32 probabilities, so choose the int8 graph's "
            "threshold on validation before relying on it"
        )
    lines.append(f"files: {', '.join(e.files)}")
    return "\n".join(lines)
