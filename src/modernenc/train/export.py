"""Export a composer training checkpoint as a Hugging Face ModernBERT folder."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch

from modernenc.model import (
    ModernEncoderConfig,
    ModernEncoderForMaskedLM,
    ModernEncoderForSequenceClassification,
    ModernEncoderForTokenClassification,
)
from modernenc.model.encoder import ModernEncoderPreTrainedModel
from modernenc.model.hf_interop import adapt_state_dict, find_tokenizer_files, load_state_strict, tied_keys
from modernenc.utils.outputs import check_output_folder, writing_folder

MODEL_CLASSES: dict[str, type[ModernEncoderPreTrainedModel]] = {
    cls.hf_architecture: cls
    for cls in (
        ModernEncoderForMaskedLM,
        ModernEncoderForSequenceClassification,
        ModernEncoderForTokenClassification,
    )
}
EXTRA_STATE_KEY = "_extra_state"  # ModernEncoderComposerModel.get_extra_state
# The `transformers` Auto class that loads each exported architecture.
AUTO_CLASSES = {
    ModernEncoderForMaskedLM.hf_architecture: "AutoModelForMaskedLM",
    ModernEncoderForSequenceClassification.hf_architecture: "AutoModelForSequenceClassification",
    ModernEncoderForTokenClassification.hf_architecture: "AutoModelForTokenClassification",
}
# What torch.load raises on a file that is not a pickle or torch zip (JSONL, safetensors, empty, truncated).
_UNREADABLE = (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, ImportError, AttributeError)


class UnreadableCheckpointError(ValueError):
    """A checkpoint file that cannot be read back (truncated by a kill, or not a checkpoint at all)."""


def check_checkpoint_path(path: str | Path) -> Path:
    """``path`` as a Path if it is a file; a folder or a missing path fails saying what to pass."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(
            f"checkpoint {path} is a folder; expected a .pt file written by train.py, "
            f"e.g. {path / 'latest-rank0.pt'}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return path


def load_checkpoint_file(path: str | Path, mmap: bool = False) -> dict:
    """The contents of a train.py checkpoint (composer's ``{"state": {"model": ...}, ...}``); a file that
    cannot be read fails naming it (torch's errors do not). ``mmap``: tensors stay on disk until used."""
    path = check_checkpoint_path(path)
    not_ours = f"{path} is not a composer checkpoint written by train.py"
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    except _UNREADABLE as err:
        detail = " ".join(str(err).split())
        raise UnreadableCheckpointError(
            f"{not_ours}, or it was cut short (torch.load cannot read it: {detail})"
        ) from None
    state = checkpoint.get("state") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise UnreadableCheckpointError(f"{not_ours} (it has no ['state']['model'] weights)")
    return checkpoint


def _read_composer_checkpoint(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The model description (config, architecture) and weights inside a train.py checkpoint."""
    path = Path(path)
    state = load_checkpoint_file(path)["state"]["model"]
    extra = state.pop(EXTRA_STATE_KEY, None)
    if not isinstance(extra, dict) or extra.get("architecture") not in MODEL_CLASSES:
        raise ValueError(f"{path} was not written by modernenc's train.py (no model config inside)")
    weights = {k.removeprefix("model."): v for k, v in state.items()}
    if extra.get("lora"):
        weights = _merged_lora_weights(extra, weights, path)
    return extra, weights


def _merged_lora_weights(
    extra: dict, weights: dict[str, torch.Tensor], path: Path
) -> dict[str, torch.Tensor]:
    """A LoRA run's checkpoint holds peft's wrapped model: rebuild it, load, and merge the adapters, so every
    reader of checkpoints gets plain weights."""
    from modernenc.train.lora import apply_lora

    model = MODEL_CLASSES[extra["architecture"]](ModernEncoderConfig.from_dict(extra["model_config"]))
    wrapped = apply_lora(model, extra["lora"])
    missing, unexpected = wrapped.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path}: its LoRA weights do not fit the model it describes: missing {missing or 'nothing'}, "
            f"unexpected {unexpected or 'nothing'}"
        )
    return wrapped.merge_and_unload().state_dict()


def load_composer_checkpoint(path: str | Path) -> ModernEncoderPreTrainedModel:
    """The task model stored in a composer checkpoint written by `train.py`."""
    extra, weights = _read_composer_checkpoint(path)
    model = MODEL_CLASSES[extra["architecture"]](ModernEncoderConfig.from_dict(extra["model_config"]))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if k not in tied_keys(model)]  # tied to the embeddings
    if missing or unexpected:
        raise ValueError(f"{path}: missing {missing or 'nothing'}, unexpected {unexpected or 'nothing'}")
    return model


def load_weights_into(
    cls: type[ModernEncoderPreTrainedModel], source: str | Path, **config_overrides: Any
) -> ModernEncoderPreTrainedModel:
    """A `cls` model initialised from `source`: a Hugging Face folder / hub id, or a train.py `*.pt`.

    As with `from_pretrained`, a checkpoint of another task gives its encoder (and head block) and the new
    task layer starts fresh, so an MLM checkpoint starts a classifier.
    """
    if not str(source).endswith(".pt"):
        return cls.from_pretrained(source, **config_overrides)
    extra, weights = _read_composer_checkpoint(source)
    model = cls(ModernEncoderConfig.from_dict({**extra["model_config"], **config_overrides}))
    weights = adapt_state_dict(weights, model, [extra["architecture"]])
    load_state_strict(model, weights, source=Path(source))
    model.name_or_path = str(source)
    return model


def checkpoint_task_labels(source: str | Path) -> tuple[str | None, list[str] | None]:
    """The architecture and class names (in id order) of a model to start from: a train.py `*.pt` (read
    without loading its tensors) or a Hugging Face folder / hub id. Names are None when it has none."""
    if str(source).endswith(".pt"):
        extra = load_checkpoint_file(source, mmap=True)["state"]["model"].get(EXTRA_STATE_KEY) or {}
        architecture, id2label = extra.get("architecture"), (extra.get("model_config") or {}).get("id2label")
    else:
        from modernenc.model.hf_interop import CONFIG_NAME, resolve_checkpoint_dir

        try:
            config = json.loads((resolve_checkpoint_dir(source) / CONFIG_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):  # loading the model names what is wrong with the folder
            return None, None
        architecture = (config.get("architectures") or [None])[0]
        id2label = config.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        return architecture, None
    return architecture, [str(id2label[k]) for k in sorted(id2label, key=int)]


def export_to_hf(
    checkpoint: str | Path,
    out_dir: str | Path,
    tokenizer_path: str | Path | None = None,
    overwrite: bool = False,
    tool: str = "export-hf",
) -> Path:
    """Write the model in a train.py checkpoint as a Hugging Face folder. An existing ``out_dir`` is
    replaced only with ``overwrite``, and only if it is an earlier export (see ``modernenc.utils.outputs``).
    """
    check_checkpoint_path(checkpoint)
    out = check_output_folder(out_dir, kind="hf-model", force=overwrite, inputs=[checkpoint])
    if tokenizer_path is not None:
        find_tokenizer_files(tokenizer_path)  # before the load, which takes a while for a big model
    return write_hf_folder(load_composer_checkpoint(checkpoint), out, tokenizer_path, tool=tool)


def write_hf_folder(
    model: ModernEncoderPreTrainedModel,
    out_dir: str | Path,
    tokenizer_path: str | Path | None = None,
    *,
    tool: str,
) -> Path:
    """``model.save_pretrained`` through a staging folder that replaces ``out_dir`` once complete, with a
    manifest; check ``out_dir`` with ``check_output_folder`` before the work that makes the model. The
    tokenizer is copied before the swap, so it may come from ``out_dir`` itself."""
    with writing_folder(out_dir, kind="hf-model", tool=tool) as staging:
        model.save_pretrained(staging, tokenizer_path=tokenizer_path)
    return Path(out_dir)


def auto_class_of(hf_dir: str | Path) -> str:
    """The `transformers` Auto class that loads an exported folder, from its config.json architecture."""
    architectures = json.loads((Path(hf_dir) / "config.json").read_text())["architectures"]
    return AUTO_CLASSES.get(architectures[0], "AutoModel")
