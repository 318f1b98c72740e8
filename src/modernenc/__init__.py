"""modernenc: pre-train, domain-adapt and fine-tune ModernBERT-style encoders."""

from modernenc.utils.lazy import lazy_exports

# name -> the module that defines it; imported on first use (torch takes seconds to load)
_EXPORTS = {
    "PRESETS": "modernenc.model",
    "ModernEncoderConfig": "modernenc.model",
    "ModernEncoderForMaskedLM": "modernenc.model",
    "ModernEncoderForSequenceClassification": "modernenc.model",
    "ModernEncoderForTokenClassification": "modernenc.model",
    "ModernEncoderModel": "modernenc.model",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)

__version__ = "0.1.0"
