"""Building blocks of the encoder: activations, rotary embeddings, GeGLU MLP, attention, a pre-norm layer.

Every block works on packed tokens: a `[T, hidden]` tensor holding the real tokens of all sequences back
to back, described by a `PackedLayout` (with an `AttentionCache` for what attention derives from it once per
forward pass). Parameter names follow ModernBERT's (`Wqkv`, `Wi`, `Wo`, ...), so
checkpoints map one-to-one.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from modernenc.model.activations import ACTIVATIONS
from modernenc.model.attention import AttentionCache, PackedLayout, resolve_backend
from modernenc.model.config import ModernEncoderConfig


def layer_norm(config: ModernEncoderConfig) -> nn.LayerNorm:
    return nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=False)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding in the "rotate half" convention used by ModernBERT and flash-attn."""

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        self.head_dim, self.theta = head_dim, theta
        self.register_buffer("inv_freq", torch.empty(head_dim // 2), persistent=False)
        self.reset_buffers()

    def reset_buffers(self, device: torch.device | str | None = None) -> None:
        """Compute `inv_freq`, which no checkpoint stores (also after building on the meta device)."""
        device = self.inv_freq.device if device is None else device
        exponents = (
            torch.arange(0, self.head_dim, 2, dtype=torch.int64, device=device).float() / self.head_dim
        )
        self.inv_freq = 1.0 / (self.theta**exponents)

    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`cos` `[T, 1, 1, head_dim]` and `sin` `[T, 1, 1, head_dim / 2]`, in fp32 whatever the autocast."""
        with torch.autocast(position_ids.device.type, enabled=False):
            angles = position_ids.float()[:, None] * self.inv_freq[None, :]
            return torch.cat((angles.cos(), angles.cos()), -1)[:, None, None], angles.sin()[:, None, None]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the last dim of `x`: `x * cos + rotate_half(x) * sin`, with rotate_half(x1, x2) = (-x2, x1).

    One multiply, then the rotate_half term added into each half in place: no rotated copy of `x` is
    built (`cat` or `flip`), whose small inner loops cost more than the arithmetic (4x in bf16 on CPU).
    """
    half = x.shape[-1] // 2
    out = x * cos
    out[..., :half].addcmul_(x[..., half:], sin, value=-1)
    out[..., half:].addcmul_(x[..., :half], sin)
    return out


class Attention(nn.Module):
    """Multi-head self-attention with a fused, bias-free QKV projection and rotary positions.

    Local layers see `local_attention // 2` tokens on each side; global layers see the whole sequence.
    `backend` computes the attention itself: the one `config.attn_backend` names, resolved at construction.
    """

    def __init__(self, config: ModernEncoderConfig, layer_idx: int) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.is_global = config.is_global_layer(layer_idx)
        self.window = None if self.is_global else config.local_attention // 2
        self.dropout = config.attention_dropout
        self.Wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        self.Wo = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.out_drop = nn.Dropout(config.attention_dropout)
        self.backend = resolve_backend(config.attn_backend)

    def forward(
        self,
        x: torch.Tensor,
        layout: PackedLayout,
        cache: AttentionCache,
        rotary: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        qkv = self.Wqkv(x).view(-1, 3, self.num_heads, self.head_dim)
        cos, sin = (t.to(qkv.dtype) for t in rotary)
        qk = apply_rotary(qkv[:, :2], cos, sin)  # q and k rotated in one pass
        dropout = self.dropout if self.training else 0.0
        out = self.backend(qk, qkv[:, 2], layout, cache, window=self.window, dropout_p=dropout)
        return self.out_drop(self.Wo(out.reshape(x.shape[0], self.num_heads * self.head_dim)))


class GeGLU(nn.Module):
    """Gated MLP: `Wo(act(input) * gate)` with input and gate from one fused projection `Wi`."""

    def __init__(self, config: ModernEncoderConfig) -> None:
        super().__init__()
        self.Wi = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.act = ACTIVATIONS[config.hidden_activation]
        self.drop = nn.Dropout(config.mlp_dropout)
        self.Wo = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inp, gate = self.Wi(x).chunk(2, dim=-1)
        return self.Wo(self.drop(self.act(inp) * gate))


class EncoderLayer(nn.Module):
    """Pre-norm transformer layer. Layer 0 has no attention norm: the embedding norm precedes it."""

    def __init__(self, config: ModernEncoderConfig, layer_idx: int) -> None:
        super().__init__()
        self.attn_norm = nn.Identity() if layer_idx == 0 else layer_norm(config)
        self.attn = Attention(config, layer_idx)
        self.mlp_norm = layer_norm(config)
        self.mlp = GeGLU(config)

    def forward(
        self,
        x: torch.Tensor,
        layout: PackedLayout,
        cache: AttentionCache,
        rotary: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), layout, cache, rotary)
        return x + self.mlp(self.mlp_norm(x))


class Embeddings(nn.Module):
    """Token embeddings followed by a LayerNorm; positions enter later, through rotary attention."""

    def __init__(self, config: ModernEncoderConfig) -> None:
        super().__init__()
        self.tok_embeddings = nn.Embedding(
            config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.norm = layer_norm(config)
        self.drop = nn.Dropout(config.embedding_dropout)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.drop(self.norm(self.tok_embeddings(input_ids)))


def init_weights(module: nn.Module, config: ModernEncoderConfig, exclude: nn.Module | None = None) -> None:
    """ModernBERT's scaled truncated-normal init, with the per-module stds `transformers` uses.

    Submodules of `exclude` (an already initialised encoder) are left alone.
    """
    std_in = config.initializer_range
    std_out = config.initializer_range / math.sqrt(2.0 * config.num_hidden_layers)
    std_by_name = {
        "Wqkv": std_in,
        "Wi": std_in,
        "Wo": std_out,
        "dense": std_out,
        "decoder": std_out,
        "classifier": config.hidden_size**-0.5,
    }
    skipped = {id(m) for m in exclude.modules()} if exclude is not None else set()

    def trunc_normal(weight: torch.Tensor, std: float) -> None:
        cutoff = config.initializer_cutoff_factor * std
        nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-cutoff, b=cutoff)

    for name, sub in module.named_modules():
        if id(sub) in skipped:
            continue
        if isinstance(sub, nn.Embedding):
            trunc_normal(sub.weight, std_in)
        elif isinstance(sub, nn.Linear):
            trunc_normal(sub.weight, std_by_name[name.rsplit(".", 1)[-1]])
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.LayerNorm):
            nn.init.ones_(sub.weight)
