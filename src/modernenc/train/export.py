"""Export a composer training checkpoint as a Hugging Face ModernBERT folder."""

from __future__ import annotations

from pathlib import Path

import torch

from modernenc.model import (
    ModernEncoderConfig,
    ModernEncoderForMaskedLM,
    ModernEncoderForSequenceClassification,
    ModernEncoderForTokenClassification,
)
from modernenc.model.encoder import ModernEncoderPreTrainedModel

MODEL_CLASSES: dict[str, type[ModernEncoderPreTrainedModel]] = {
    cls.hf_architecture: cls
    for cls in (
        ModernEncoderForMaskedLM,
        ModernEncoderForSequenceClassification,
        ModernEncoderForTokenClassification,
    )
}
EXTRA_STATE_KEY = "_extra_state"  # ModernEncoderComposerModel.get_extra_state


def load_composer_checkpoint(path: str | Path) -> ModernEncoderPreTrainedModel:
    """The task model stored in a composer checkpoint written by `train.py`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)["state"]["model"]
    except (KeyError, TypeError, RuntimeError) as err:
        raise ValueError(f"{path} is not a composer checkpoint ({err})") from None
    extra = state.pop(EXTRA_STATE_KEY, None)
    if not isinstance(extra, dict) or extra.get("architecture") not in MODEL_CLASSES:
        raise ValueError(f"{path} was not written by modernenc's train.py (no model config inside)")
    model = MODEL_CLASSES[extra["architecture"]](ModernEncoderConfig.from_dict(extra["model_config"]))
    weights = {k.removeprefix("model."): v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if k != "decoder.weight"]  # tied to the embeddings
    if missing or unexpected:
        raise ValueError(f"{path}: missing {missing or 'nothing'}, unexpected {unexpected or 'nothing'}")
    return model


def export_to_hf(
    checkpoint: str | Path,
    out_dir: str | Path,
    tokenizer_path: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    model = load_composer_checkpoint(checkpoint)
    return model.save_pretrained(out_dir, tokenizer_path=tokenizer_path, overwrite=overwrite)
