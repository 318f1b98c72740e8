"""The `flex` backend: PyTorch's FlexAttention over the packed token stream, a GPU path without flash-attn.

The packed tokens are one "batch" of T tokens (padded to a multiple of the block size). A block mask keeps
each query inside its own sequence and, on local layers, inside its window, so the kernel skips every
`block_size`-square tile of the T x T score matrix that holds no visible pair: attention costs what the
real sequences (and, on local layers, their windows) cost, not T squared. On CUDA `flex_attention` is
compiled (its fused Triton kernel, fp32 or bf16); elsewhere it runs eagerly, which materialises the
whole score matrix: slow, correct, for tests.

FlexAttention has no attention dropout (neither has `transformers`' flex path): training with
`attention_dropout > 0` is refused with a message; `auto` takes another backend then.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from modernenc.model.attention_base import AttentionCache, PackedLayout
from modernenc.model.padding import sequence_ids_from_cu_seqlens

if TYPE_CHECKING:
    from torch.nn.attention.flex_attention import BlockMask

# flex_attention's own default tile; its compiled kernels are tuned for it.
FLEX_BLOCK_SIZE = 128
NO_DROPOUT = (
    "attn_backend='flex' has no attention dropout (FlexAttention has none); set attention_dropout=0.0, "
    "or train with attn_backend='bucketed' (or 'flash', or 'auto', which avoids flex then)"
)


class FlexAttention:
    """Packed attention with `torch.nn.attention.flex_attention` and a block mask built per forward pass.

    `compile`: run the compiled kernel (default: on CUDA only). The masks are built once per forward pass,
    one per kind of layer (global, and local with its window), and shared through the cache.
    """

    def __init__(self, block_size: int = FLEX_BLOCK_SIZE, compile: bool | None = None) -> None:
        self.block_size = block_size
        self.compile = compile

    def __repr__(self) -> str:
        return f"{type(self).__name__}(block_size={self.block_size}, compile={self.compile})"

    def __call__(
        self,
        qk: torch.Tensor,
        v: torch.Tensor,
        layout: PackedLayout,
        cache: AttentionCache,
        window: int | None = None,
        dropout_p: float = 0.0,
    ) -> torch.Tensor:
        if dropout_p:
            raise ValueError(NO_DROPOUT)
        num_tokens, heads, dim = v.shape
        if num_tokens == 0:
            return v.new_empty(0, heads, dim)
        if window is not None and layout.max_seqlen <= window + 1:
            window = None  # every sequence fits in the window: share the global layers' mask
        block_mask = cache.get(
            ("flex block mask", self.block_size, window),
            lambda: build_block_mask(layout, window, self.block_size),
        )
        padded = block_mask.kv_indices.shape[-1] * self.block_size
        compiled = self.compile if self.compile is not None else qk.device.type == "cuda"
        # The compiled kernel accumulates in fp32 whatever its input; the eager fallback computes scores
        # in the input dtype, so it gets fp32 (or fp64) inputs.
        dtype = v.dtype if compiled else torch.promote_types(v.dtype, torch.float32)

        def heads_first(t: torch.Tensor) -> torch.Tensor:  # [T, h, d] -> [1, h, padded, d]
            return F.pad(t.to(dtype), (0, 0, 0, 0, 0, padded - num_tokens)).transpose(0, 1)[None]

        q, k = qk.unbind(1)
        # Scaled here, and the kernel told scale=1: a scale that changes between calls (another head size)
        # becomes a symbolic float to torch.compile, which flex's tracing then fails on (torch 2.7). For the
        # power-of-two scales of ModernBERT's head sizes (64: 1/8) the product is exact.
        q = q * dim**-0.5
        attend = _compiled_flex_attention() if compiled else _flex_attention()
        with torch.autocast(qk.device.type, enabled=False):
            out = attend(heads_first(q), heads_first(k), heads_first(v), block_mask=block_mask, scale=1.0)
        return out[0, :, :num_tokens].transpose(0, 1).to(v.dtype)


def build_block_mask(
    layout: PackedLayout, window: int | None, block_size: int = FLEX_BLOCK_SIZE
) -> BlockMask:
    """The flex block mask of the packed stream, padded to a multiple of `block_size` tokens.

    Token pair (q, k) is visible when both belong to one sequence and, with a window, `|q - k| <= window`
    (the padding at the end is a sequence of its own, so its rows stay finite). `create_block_mask` would
    evaluate that on all T^2 pairs, or need torch.compile to avoid holding them; the tiles follow from the
    sequence boundaries directly, because sequence ids only grow along the stream: two tiles share a
    sequence when their id ranges overlap, and a tile is full (no mask needed inside it) when one sequence
    fills both its blocks and its farthest pair is inside the window. Cost: (T / block_size)^2 booleans.
    """
    from torch.nn.attention.flex_attention import BlockMask

    num_tokens, cu_seqlens = layout.num_tokens, layout.cu_seqlens
    blocks = -(-num_tokens // block_size)
    seq = sequence_ids_from_cu_seqlens(cu_seqlens, num_tokens)
    seq = F.pad(seq, (0, blocks * block_size - num_tokens), value=cu_seqlens.numel() - 1)

    def mask_mod(b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
        same = seq[q_idx] == seq[kv_idx]
        return same if window is None else same & ((q_idx - kv_idx).abs() <= window)

    first, last = seq.view(blocks, block_size)[:, 0], seq.view(blocks, block_size)[:, -1]
    any_visible = (first[:, None] <= last[None, :]) & (first[None, :] <= last[:, None])
    one_sequence = first == last
    full = one_sequence[:, None] & one_sequence[None, :] & (first[:, None] == first[None, :])
    if window is not None:
        apart = torch.arange(blocks, device=seq.device)
        apart = (apart[:, None] - apart[None, :]).abs()
        any_visible &= (apart * block_size - block_size + 1).clamp(min=0) <= window  # nearest pair
        full &= (apart + 1) * block_size - 1 <= window  # farthest pair
    partial = any_visible & ~full

    def ordered(tiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # counts, indices (visible first)
        tiles = tiles.to(torch.int32)
        indices = torch.argsort(tiles, dim=-1, descending=True, stable=True).to(torch.int32)
        return tiles.sum(-1, dtype=torch.int32)[None, None], indices[None, None]

    return BlockMask.from_kv_blocks(
        *ordered(partial), *ordered(full), BLOCK_SIZE=block_size, mask_mod=mask_mod
    )


def _flex_attention() -> Callable[..., torch.Tensor]:
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention


@functools.cache
def _compiled_flex_attention() -> Callable[..., torch.Tensor]:
    """One compiled kernel for the process: it recompiles per kind of mask, and goes dynamic in T."""
    return torch.compile(_flex_attention())
