"""The ModernBERT-style encoder: config, layers, attention backends, heads and Hugging Face interop."""

from modernenc.model.config import PRESETS, ModernEncoderConfig
from modernenc.model.encoder import ModernEncoderModel, ModernEncoderPreTrainedModel
from modernenc.model.heads import (
    ModernEncoderForMaskedLM,
    ModernEncoderForSequenceClassification,
    ModernEncoderForTokenClassification,
)

__all__ = [
    "PRESETS",
    "ModernEncoderConfig",
    "ModernEncoderForMaskedLM",
    "ModernEncoderForSequenceClassification",
    "ModernEncoderForTokenClassification",
    "ModernEncoderModel",
    "ModernEncoderPreTrainedModel",
]
