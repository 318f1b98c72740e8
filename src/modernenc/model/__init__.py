"""The ModernBERT-style encoder: config, layers, attention backends, heads and Hugging Face interop."""

from modernenc.utils.lazy import lazy_exports

# name -> the module that defines it; imported on first use (torch takes seconds to load)
_EXPORTS = {
    "PRESETS": "modernenc.model.config",
    "ModernEncoderConfig": "modernenc.model.config",
    "ModernEncoderModel": "modernenc.model.encoder",
    "ModernEncoderPreTrainedModel": "modernenc.model.encoder",
    "ModernEncoderForMaskedLM": "modernenc.model.heads",
    "ModernEncoderForSequenceClassification": "modernenc.model.heads",
    "ModernEncoderForTokenClassification": "modernenc.model.heads",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
