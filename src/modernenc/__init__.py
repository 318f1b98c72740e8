"""modernenc: pre-train, domain-adapt and fine-tune ModernBERT-style encoders."""

from modernenc.model import (
    PRESETS,
    ModernEncoderConfig,
    ModernEncoderForMaskedLM,
    ModernEncoderForSequenceClassification,
    ModernEncoderForTokenClassification,
    ModernEncoderModel,
)

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "ModernEncoderConfig",
    "ModernEncoderForMaskedLM",
    "ModernEncoderForSequenceClassification",
    "ModernEncoderForTokenClassification",
    "ModernEncoderModel",
    "__version__",
]
