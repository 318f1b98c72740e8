"""Attention over packed (unpadded) tokens: what it computes, and the backends that compute it.

`eager_attention` below is the specification, written out plainly; every other backend must match it
(the tests hold them to it, and to `transformers`' ModernBert):

- `eager` (anywhere): the specification, one masked T x T softmax per head (memory grows with T^2);
- `bucketed`, alias `sdpa` (CPU, any device): length-bucketed grids and banded local attention
  (`bucketed_attention.py`);
- `flex` (CUDA; eager elsewhere, for tests): FlexAttention with a block mask (`flex_attention.py`);
- `flash` (CUDA with flash-attn): flash-attn's varlen kernel (`flash_attention.py`);
- `auto` (anywhere), per call: `flash` on CUDA when flash-attn imports, else `flex` on CUDA, else
  `bucketed`.

Every backend is called as `backend(qk, v, layout, cache, window=None, dropout_p=0.0)`
(see `attention_base.py`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from modernenc.model.attention_base import AttentionBackend, AttentionCache, PackedLayout
from modernenc.model.bucketed_attention import BucketedAttention
from modernenc.model.flash_attention import FlashAttention, flash_attn_importable
from modernenc.model.flex_attention import FlexAttention
from modernenc.model.padding import sequence_ids_from_cu_seqlens

__all__ = [
    "ATTENTION_BACKENDS",
    "AttentionBackend",
    "AttentionCache",
    "AutoAttention",
    "PackedLayout",
    "eager_attention",
    "resolve_backend",
]


def eager_attention(
    qk: torch.Tensor,
    v: torch.Tensor,
    layout: PackedLayout,
    cache: AttentionCache,
    window: int | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """ModernBERT's attention over the packed tokens, the way the paper defines it.

    For packed tokens i (query) and j (key), with q, k, v split into heads of size d:

        visible(i, j) = seq(i) == seq(j)  and  (window is None  or  |i - j| <= window)
        score(i, j)   = q_i . k_j / sqrt(d)                       where visible, else -inf
        out_i         = sum_j dropout(softmax_j(score(i, .))) v_j

    Each query sees the keys of its own sequence (global layers) or only those within `window` tokens on
    each side (local layers). Scores, softmax and the weighted sum run in fp32 (fp64 stays fp64) whatever
    the input dtype; the output has the input's dtype.
    """
    num_tokens, heads, dim = v.shape
    visible = cache.get(("eager mask", window), lambda: _visible_pairs(layout, window, v.device))
    work = torch.promote_types(v.dtype, torch.float32)
    q, k = (t.to(work).transpose(0, 1) for t in qk.unbind(1))  # [heads, T, d]
    with torch.autocast(v.device.type, enabled=False):
        scores = (q @ k.transpose(1, 2)) * dim**-0.5  # [heads, T, T]
        probs = scores.masked_fill(~visible, float("-inf")).softmax(-1)
        probs = F.dropout(probs, dropout_p) if dropout_p else probs
        out = probs @ v.to(work).transpose(0, 1)
    return out.transpose(0, 1).to(v.dtype)


def _visible_pairs(layout: PackedLayout, window: int | None, device: torch.device) -> torch.Tensor:
    """`[T, T]`: which keys each query sees (see `eager_attention`)."""
    seq = sequence_ids_from_cu_seqlens(layout.cu_seqlens, layout.num_tokens)
    visible = seq[:, None] == seq[None, :]
    if window is not None:
        token = torch.arange(layout.num_tokens, device=device)
        visible &= (token[:, None] - token[None, :]).abs() <= window
    return visible


class AutoAttention:
    """The best backend for the device, chosen per call (a model's device is known only when it runs):
    `flash` on CUDA when flash-attn imports, else `flex` on CUDA, except when training with attention
    dropout, which flex lacks (`bucketed` then); `bucketed` on every other device.

    `flash_importable` overrides the check that flash-attn imports (tests).
    """

    def __init__(
        self,
        bucketed: AttentionBackend,
        flex: AttentionBackend,
        flash: AttentionBackend,
        flash_importable: bool | None = None,
    ) -> None:
        self.bucketed, self.flex, self.flash = bucketed, flex, flash
        self.flash_importable = flash_importable

    def choose(self, device: torch.device, dropout_p: float = 0.0) -> AttentionBackend:
        if device.type != "cuda":
            return self.bucketed
        flash = self.flash_importable if self.flash_importable is not None else flash_attn_importable()
        if flash:
            return self.flash
        return self.bucketed if dropout_p else self.flex

    def __call__(
        self,
        qk: torch.Tensor,
        v: torch.Tensor,
        layout: PackedLayout,
        cache: AttentionCache,
        window: int | None = None,
        dropout_p: float = 0.0,
    ) -> torch.Tensor:
        return self.choose(qk.device, dropout_p)(qk, v, layout, cache, window=window, dropout_p=dropout_p)


_BUCKETED, _FLEX, _FLASH = BucketedAttention(), FlexAttention(), FlashAttention()

#: Backends by the name `ModernEncoderConfig.attn_backend` takes.
ATTENTION_BACKENDS: dict[str, AttentionBackend] = {
    "auto": AutoAttention(_BUCKETED, _FLEX, _FLASH),
    "eager": eager_attention,
    "bucketed": _BUCKETED,
    "sdpa": _BUCKETED,  # the bucketed backend's first name, kept so existing configs keep working
    "flex": _FLEX,
    "flash": _FLASH,
}


def resolve_backend(name: str) -> AttentionBackend:
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {list(ATTENTION_BACKENDS)}")
    return ATTENTION_BACKENDS[name]
