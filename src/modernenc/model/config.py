"""Model configuration: one dataclass, named presets, validation at construction.

Field names follow `transformers.ModernBertConfig` so a config round-trips through `config.json`
without a translation table. What each field is, beyond its value, is declared once, on the field:

- `hf`: `ModernBertConfig` has a field of that name and meaning (written to and read from config.json);
- `runtime`: a choice of the run, not of the weights (a checkpoint loads under another value);
- `tiling`: `GROWS` under weight tiling to a bigger preset, or `KEPT` (must agree, as the tokenizer does).

`HF_FIELDS`, `RUNTIME_FIELDS`, `TILING_GROWS` and `TILING_KEPT` below are read off these declarations.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from modernenc.model.activations import ACTIVATIONS
from modernenc.model.attention import ATTENTION_BACKENDS
from modernenc.model.presets import PRESETS
from modernenc.utils.suggest import did_you_mean

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

# The label every loss and metric skips (as in `transformers`): MLM positions that are not masked,
# sub-tokens after a word's first, [CLS] and [SEP].
IGNORE_INDEX = -100

POOLING_MODES = ("cls", "mean")
GROWS, KEPT = "grows", "kept"


def _field(default: Any, *, hf: bool = True, runtime: bool = False, tiling: str | None = None) -> Any:
    """A config field with its roles (see the module docstring)."""
    return field(default=default, metadata={"hf": hf, "runtime": runtime, "tiling": tiling})


@dataclass
class ModernEncoderConfig:
    """Architecture of a ModernBERT-style encoder.

    Defaults are ModernBERT-base. Every layer whose index is a multiple of `global_attn_every_n_layers`
    attends globally; the others attend within `local_attention` tokens (half on each side).
    """

    vocab_size: int = _field(MODERNBERT_VOCAB_SIZE, tiling=KEPT)
    hidden_size: int = _field(768, tiling=GROWS)
    intermediate_size: int = _field(1152, tiling=GROWS)
    num_hidden_layers: int = _field(22, tiling=GROWS)
    num_attention_heads: int = _field(12, tiling=GROWS)
    hidden_activation: str = _field("gelu")
    max_position_embeddings: int = _field(8192)
    norm_eps: float = _field(1e-5)
    global_attn_every_n_layers: int = _field(3)
    local_attention: int = _field(128)
    global_rope_theta: float = _field(160_000.0)
    local_rope_theta: float = _field(10_000.0)
    embedding_dropout: float = _field(0.0, runtime=True)
    attention_dropout: float = _field(0.0, runtime=True)
    mlp_dropout: float = _field(0.0, runtime=True)
    # Heads.
    classifier_pooling: str = _field("mean")
    classifier_dropout: float = _field(0.0, runtime=True)
    classifier_activation: str = _field("gelu")
    decoder_bias: bool = _field(True)
    # The MLM decoder shares the token-embedding matrix (ModernBERT).
    tie_word_embeddings: bool = _field(True, tiling=KEPT)
    num_labels: int = _field(2)
    id2label: dict[int, str] | None = _field(None, hf=False)  # written as id2label and label2id
    problem_type: str | None = _field(None)
    # Special tokens; None where the vocabulary has no such token. ModernBertConfig has no mask_token_id;
    # ours is written beside the others.
    pad_token_id: int | None = _field(MODERNBERT_SPECIAL_IDS["pad"], tiling=KEPT)
    cls_token_id: int | None = _field(MODERNBERT_SPECIAL_IDS["cls"], tiling=KEPT)
    sep_token_id: int | None = _field(MODERNBERT_SPECIAL_IDS["sep"], tiling=KEPT)
    mask_token_id: int | None = _field(MODERNBERT_SPECIAL_IDS["mask"], hf=False, tiling=KEPT)
    # Initialisation: truncated normal, std `initializer_range`, cut at `initializer_cutoff_factor` std.
    initializer_range: float = _field(0.02)
    initializer_cutoff_factor: float = _field(2.0)
    # Runtime choices; not part of the architecture, so not written to config.json.
    attn_backend: str = _field("auto", hf=False, runtime=True)
    compile: bool = _field(False, hf=False, runtime=True)
    # MLM: with labels, run the head only where a label is set (ModernBERT's recipe; saves most of the
    # vocab projection). Logits then have one row per labelled token instead of the input's shape.
    # Pre-training turns it on; exported folders leave it off, so their logits keep the input's shape.
    sparse_prediction: bool = _field(False, hf=False)

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
        backends = tuple(ATTENTION_BACKENDS)
        require(self.attn_backend in backends, "attn_backend", f"must be one of {backends}")
        require(
            self.classifier_pooling in POOLING_MODES, "classifier_pooling", f"must be one of {POOLING_MODES}"
        )
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


def _fields_where(key: str, value: object = True) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(ModernEncoderConfig) if f.metadata.get(key) == value)


HF_FIELDS = _fields_where("hf")  # shared with transformers' ModernBertConfig, under the same name
RUNTIME_FIELDS = _fields_where("runtime")  # may differ between a checkpoint and the run loading it
TILING_GROWS = _fields_where("tiling", GROWS)  # may grow when tiling to a bigger preset
TILING_KEPT = _fields_where("tiling", KEPT)  # must agree between the small and the big model
