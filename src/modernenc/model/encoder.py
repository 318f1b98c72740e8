"""The encoder: embeddings, a stack of pre-norm layers and a final norm, all on packed tokens.

Padding is removed once, before the embeddings, and put back only at the output and only when the caller
passed a padded batch. Callers that already hold packed tokens (the sequence packer) pass `cu_seqlens`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput

from modernenc.model.attention import AttentionCache, PackedLayout
from modernenc.model.config import ModernEncoderConfig
from modernenc.model.hf_interop import load_pretrained, save_pretrained
from modernenc.model.layers import Embeddings, EncoderLayer, RotaryEmbedding, init_weights, layer_norm
from modernenc.model.padding import Unpadded, check_packed_layout, positions_from_cu_seqlens, repad, unpad


@dataclass
class PackedEncoding:
    """The encoder's output on packed tokens, with what is needed to pool or re-pad it."""

    hidden: torch.Tensor  # [T, hidden]
    layout: PackedLayout
    unpadded: Unpadded | None  # set when the input was a padded batch

    def to_padded(self, packed: torch.Tensor) -> torch.Tensor:
        """`[T, ...]` -> `[B, S, ...]` for padded input; packed input stays packed."""
        if self.unpadded is None:
            return packed
        u = self.unpadded
        return repad(packed, u.indices, u.batch_size, u.seq_len)

    def pack_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Per-token labels in the packed order (accepts `[B, S]` for padded input or `[T]`)."""
        u = self.unpadded
        expected = (u.batch_size, u.seq_len) if u is not None else (self.hidden.shape[0],)
        fits = tuple(labels.shape) == expected if u is not None else labels.numel() == expected[0]
        if not fits:  # a shifted label column would still give a finite, wrong loss
            raise ValueError(
                f"per-token labels must be shaped like input_ids {expected}; got {tuple(labels.shape)}"
            )
        return labels.reshape(-1) if u is None else labels.reshape(-1)[u.indices]


class ModernEncoderPreTrainedModel(nn.Module):
    """Shared plumbing: config, initialisation and Hugging Face checkpoint interop."""

    #: The `transformers` class whose checkpoints this class reads and writes.
    hf_architecture: ClassVar[str] = "ModernBertModel"

    def __init__(self, config: ModernEncoderConfig) -> None:
        super().__init__()
        self.config = config

    def post_init(self, exclude: nn.Module | None = None) -> None:
        """Initialise every weight not inside `exclude` (an encoder that initialised itself)."""
        init_weights(self, self.config, exclude=exclude)

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | Path, **config_overrides: Any):
        """Load a `transformers` ModernBERT checkpoint folder (or hub id) into this class."""
        return load_pretrained(cls, path_or_hub_id, **config_overrides)

    def save_pretrained(
        self, out_dir: str | Path, tokenizer_path: str | Path | None = None, overwrite: bool = False
    ) -> Path:
        """Write a folder that `transformers`' Auto classes load with no custom code."""
        return save_pretrained(self, out_dir, tokenizer_path=tokenizer_path, overwrite=overwrite)

    def for_inference(self, precision: str = "fp32"):
        """This model, in eval mode, as its `fp32`, `bf16` or `int8` inference variant (converted in place).

        `int8` quantizes the linear layers dynamically (CPU only); `bf16` computes them in bf16; norms,
        embeddings, attention's softmax and the classifier stay fp32. See `modernenc.model.precision`.
        """
        from modernenc.model.precision import for_inference

        return for_inference(self, precision)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        params = {id(p): p for p in self.parameters()}  # tied weights count once
        if exclude_embeddings:
            for module in self.modules():
                if isinstance(module, nn.Embedding):
                    params.pop(id(module.weight), None)
        return sum(p.numel() for p in params.values())


class ModernEncoderModel(ModernEncoderPreTrainedModel):
    """The bare encoder. `forward` returns hidden states shaped like the input."""

    hf_architecture = "ModernBertModel"

    def __init__(self, config: ModernEncoderConfig) -> None:
        super().__init__(config)
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(EncoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.final_norm = layer_norm(config)
        self.rotary_global = RotaryEmbedding(config.head_dim, config.global_rope_theta)
        self.rotary_local = RotaryEmbedding(config.head_dim, config.local_rope_theta)
        self.post_init()
        if config.compile:
            # Attention stays eager (its bucketing is data dependent); the MLP is most of the FLOPs.
            for layer in self.layers:
                layer.mlp.compile(dynamic=True)

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> PackedEncoding:
        """Run the encoder on a padded batch (`[B, S]` + mask) or on packed tokens (`[T]` + `cu_seqlens`)."""
        self._check_token_ids(input_ids)
        unpadded = None
        if cu_seqlens is None:
            if input_ids.dim() != 2:
                raise ValueError(
                    f"input_ids must be [batch, seq_len] (or packed [T] with cu_seqlens); "
                    f"got shape {tuple(input_ids.shape)}"
                )
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
            elif attention_mask.shape != input_ids.shape:
                raise ValueError(
                    f"attention_mask shape {tuple(attention_mask.shape)} does not match "
                    f"input_ids shape {tuple(input_ids.shape)}"
                )
            if position_ids is not None and position_ids.shape != input_ids.shape:
                raise ValueError(
                    f"position_ids shape {tuple(position_ids.shape)} does not match "
                    f"input_ids shape {tuple(input_ids.shape)}"
                )
            unpadded = unpad(input_ids, attention_mask)
            input_ids, cu_seqlens, max_seqlen = unpadded.input_ids, unpadded.cu_seqlens, unpadded.max_seqlen
            if position_ids is None:
                position_ids = unpadded.position_ids
            else:
                position_ids = position_ids.reshape(-1)[unpadded.indices]
        else:
            input_ids = input_ids.reshape(-1)  # the packer may emit [1, T]
            cu_seqlens = cu_seqlens.to(torch.int32)
            max_seqlen = check_packed_layout(cu_seqlens, input_ids.shape[0], max_seqlen)
            if position_ids is None:
                position_ids = positions_from_cu_seqlens(cu_seqlens, input_ids.shape[0])
            position_ids = position_ids.reshape(-1)

        layout = PackedLayout(cu_seqlens, int(max_seqlen), position_ids)
        cache = AttentionCache()  # what the attention backends build from the layout, shared by the layers

        hidden = self.embeddings(input_ids)
        rotary = {True: self.rotary_global(position_ids), False: self.rotary_local(position_ids)}
        for layer in self.layers:
            hidden = layer(hidden, layout, cache, rotary[layer.attn.is_global])
        hidden = self.final_norm(hidden)
        return PackedEncoding(hidden, layout, unpadded)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> BaseModelOutput:
        enc = self.encode(input_ids, attention_mask, cu_seqlens, max_seqlen, position_ids)
        return BaseModelOutput(last_hidden_state=enc.to_padded(enc.hidden))

    def _check_token_ids(self, input_ids: torch.Tensor) -> None:
        if input_ids.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"input_ids must be an integer tensor; got {input_ids.dtype}")
        if input_ids.numel() == 0:
            return
        low, high = int(input_ids.min()), int(input_ids.max())
        if low < 0 or high >= self.config.vocab_size:
            raise ValueError(
                f"input_ids contain token ids outside [0, {self.config.vocab_size}) "
                f"(min {low}, max {high}); does the tokenizer match the model's vocab_size?"
            )
