"""Model configuration: one dataclass, named presets, validation at construction.

Field names follow `transformers.ModernBertConfig` so a config round-trips through `config.json`
without a translation table.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from modernenc.suggest import did_you_mean

# ModernBERT's tokenizer (a modified OLMo tokenizer): 50,368 ids, the last 83 unused.
MODERNBERT_VOCAB_SIZE = 50368
MODERNBERT_SPECIAL_IDS = {"unk": 50280, "cls": 50281, "sep": 50282, "pad": 50283, "mask": 50284}
# Config fields that hold a tokenizer's special token ids, and the tokens (ModernBERT's names).
SPECIAL_TOKEN_FIELDS = {
    "pad_token_id": "[PAD]",
    "cls_token_id": "[CLS]",
    "sep_token_id": "[SEP]",
    "mask_token_id": "[MASK]",
}

ATTENTION_BACKENDS = ("auto", "flash", "sdpa")
POOLING_MODES = ("cls", "mean")


@dataclass
class ModernEncoderConfig:
    """Architecture of a ModernBERT-style encoder.

    Defaults are ModernBERT-base. Every layer whose index is a multiple of `global_attn_every_n_layers`
    attends globally; the others attend within `local_attention` tokens (half on each side).
    """

    vocab_size: int = MODERNBERT_VOCAB_SIZE
    hidden_size: int = 768
    intermediate_size: int = 1152
    num_hidden_layers: int = 22
    num_attention_heads: int = 12
    hidden_activation: str = "gelu"
    max_position_embeddings: int = 8192
    norm_eps: float = 1e-5
    global_attn_every_n_layers: int = 3
    local_attention: int = 128
    global_rope_theta: float = 160_000.0
    local_rope_theta: float = 10_000.0
    embedding_dropout: float = 0.0
    attention_dropout: float = 0.0
    mlp_dropout: float = 0.0
    # Heads.
    classifier_pooling: str = "mean"
    classifier_dropout: float = 0.0
    classifier_activation: str = "gelu"
    decoder_bias: bool = True
    tie_word_embeddings: bool = True  # the MLM decoder shares the token-embedding matrix (ModernBERT)
    num_labels: int = 2
    id2label: dict[int, str] | None = None
    problem_type: str | None = None
    # Special tokens; None where the vocabulary has no such token.
    pad_token_id: int | None = MODERNBERT_SPECIAL_IDS["pad"]
    cls_token_id: int | None = MODERNBERT_SPECIAL_IDS["cls"]
    sep_token_id: int | None = MODERNBERT_SPECIAL_IDS["sep"]
    mask_token_id: int | None = MODERNBERT_SPECIAL_IDS["mask"]
    # Initialisation: truncated normal, std `initializer_range`, cut at `initializer_cutoff_factor` std.
    initializer_range: float = 0.02
    initializer_cutoff_factor: float = 2.0
    # Runtime choices; not part of the architecture, so not written to config.json.
    attn_backend: str = "auto"
    compile: bool = False
    # MLM: with labels, run the head only where a label is set (ModernBERT's recipe; saves most of the
    # vocab projection). Logits then have one row per labelled token instead of the input's shape.
    # Pre-training turns it on; exported folders leave it off, so their logits keep the input's shape.
    sparse_prediction: bool = False

    def __post_init__(self) -> None:
        def require(ok: bool, name: str, why: str) -> None:
            if not ok:
                raise ValueError(f"ModernEncoderConfig.{name}={getattr(self, name)!r}: {why}")

        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "max_position_embeddings",
            "global_attn_every_n_layers",
            "num_labels",
        ):
            require(int(getattr(self, name)) > 0, name, "must be a positive integer")
        require(
            self.hidden_size % self.num_attention_heads == 0,
            "hidden_size",
            f"must be divisible by num_attention_heads={self.num_attention_heads}",
        )
        require(
            (self.hidden_size // self.num_attention_heads) % 2 == 0,
            "num_attention_heads",
            "must leave an even head dimension for rotary embeddings",
        )
        require(
            self.local_attention > 0 and self.local_attention % 2 == 0,
            "local_attention",
            "must be a positive even window (half of it on each side)",
        )
        require(self.norm_eps > 0, "norm_eps", "must be positive")
        require(self.global_rope_theta > 0, "global_rope_theta", "must be positive")
        require(self.local_rope_theta > 0, "local_rope_theta", "must be positive")
        for name in ("embedding_dropout", "attention_dropout", "mlp_dropout", "classifier_dropout"):
            require(0.0 <= getattr(self, name) < 1.0, name, "must be in [0, 1)")
        require(
            self.attn_backend in ATTENTION_BACKENDS, "attn_backend", f"must be one of {ATTENTION_BACKENDS}"
        )
        require(
            self.classifier_pooling in POOLING_MODES, "classifier_pooling", f"must be one of {POOLING_MODES}"
        )
        from modernenc.model.layers import ACTIVATIONS

        for name in ("hidden_activation", "classifier_activation"):
            require(getattr(self, name) in ACTIVATIONS, name, f"must be one of {sorted(ACTIVATIONS)}")
        for name in ("pad_token_id", "cls_token_id", "sep_token_id", "mask_token_id"):
            if getattr(self, name) is None:
                continue
            require(
                0 <= getattr(self, name) < self.vocab_size,
                name,
                f"must be a token id below vocab_size={self.vocab_size}",
            )
        if self.id2label is not None:
            self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
            require(
                len(self.id2label) == self.num_labels,
                "id2label",
                f"has {len(self.id2label)} labels but num_labels={self.num_labels}",
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def is_global_layer(self, layer_idx: int) -> bool:
        return layer_idx % self.global_attn_every_n_layers == 0

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> ModernEncoderConfig:
        if name not in PRESETS:
            raise KeyError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModernEncoderConfig:
        """Build from a plain dict, rejecting keys this config does not have."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            hints = [f"{k!r}{did_you_mean(k, known)}" for k in unknown]
            raise ValueError(f"unknown model config key(s): {', '.join(hints)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Presets. `base` and `large` are exactly ModernBERT-base / -large (paper Table 4). The small ones keep
# the shape rules (head dim 64, GLU, local/global pattern) at sizes that train on two CPU cores.
PRESETS: dict[str, dict[str, Any]] = {
    "base": dict(hidden_size=768, intermediate_size=1152, num_hidden_layers=22, num_attention_heads=12),
    "large": dict(hidden_size=1024, intermediate_size=2624, num_hidden_layers=28, num_attention_heads=16),
    "small": dict(hidden_size=384, intermediate_size=576, num_hidden_layers=12, num_attention_heads=6),
    "mini": dict(hidden_size=256, intermediate_size=384, num_hidden_layers=6, num_attention_heads=4),
    "tiny": dict(hidden_size=128, intermediate_size=192, num_hidden_layers=3, num_attention_heads=2),
}
