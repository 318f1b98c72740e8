"""Attention over packed (unpadded) tokens, with interchangeable kernels.

All backends take `qk` of shape `[T, 2, heads, head_dim]` (rotary already applied) and `v` of shape
`[T, heads, head_dim]` (the real tokens of every sequence, back to back) plus a `PackedLayout`, and
return `[T, heads, head_dim]`. `window` is the
number of tokens a local layer sees on each side (`None` for global attention).

- `flash`: flash-attn's varlen kernel on CUDA; local layers use its sliding window.
- `sdpa`: pure PyTorch, for CPU and for GPUs without flash-attn. Sequences are grouped into buckets of
  similar length and each bucket goes through `scaled_dot_product_attention`, so attention pays for
  little padding. Local layers on long sequences use blocked attention: each block of `window` queries
  sees only its own block and the two neighbours, so their cost grows linearly with length.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

# Buckets hold sequences whose lengths are within this ratio of the bucket's longest one, which bounds
# the attention spent on padding at 1 / ratio**2 while keeping the number of kernel calls small.
BUCKET_LENGTH_RATIO = 0.9
# Short sequences may also join when within this many tokens of the longest: their attention is cheap,
# and fewer buckets means fewer kernel calls and gathers.
BUCKET_MIN_SLACK = 32
# Local layers switch from a dense band mask to blocked attention from this many windows per sequence.
BLOCKED_LOCAL_MIN_WINDOWS = 4


@dataclass
class Bucket:
    """Sequences of similar length, laid out as a padded `[n, length]` grid of packed-token indices."""

    token_index: torch.Tensor  # [n, length] index into the packed tokens; padding repeats a real token
    key_mask: torch.Tensor | None  # [n, length] True on real tokens; None when nothing is padded
    real_slots: torch.Tensor | None  # flat grid positions of real tokens; None when nothing is padded
    real_index: torch.Tensor  # packed-token index of each real slot, in grid order
    length: int
    is_identity: bool  # the grid is the packed tokens themselves, in order: no gather or scatter needed


@dataclass
class PackedLayout:
    """Where each sequence sits in the packed token stream, plus the sdpa buckets, built on first use."""

    cu_seqlens: torch.Tensor  # int32 [num_sequences + 1], starts at 0, ends at T
    max_seqlen: int
    position_ids: torch.Tensor  # [T] position of each token within its sequence
    attend: Callable[..., torch.Tensor] = field(repr=False, default=None)  # type: ignore[assignment]
    _buckets: list[Bucket] | None = field(default=None, repr=False)

    def buckets(self) -> list[Bucket]:
        if self._buckets is None:
            self._buckets = build_buckets(self.cu_seqlens)
        return self._buckets


def build_buckets(cu_seqlens: torch.Tensor) -> list[Bucket]:
    """Group sequences by length, longest first; each bucket's padded length is its longest sequence."""
    device = cu_seqlens.device
    bounds = cu_seqlens.tolist()
    total = bounds[-1]
    by_length = sorted((-(e - s), s) for s, e in zip(bounds[:-1], bounds[1:], strict=True) if e > s)
    groups: list[list[tuple[int, int]]] = []
    for neg_len, start in by_length:
        length, longest = -neg_len, (groups[-1][0][0] if groups else 0)
        if groups and (length >= BUCKET_LENGTH_RATIO * longest or longest - length <= BUCKET_MIN_SLACK):
            groups[-1].append((length, start))
        else:
            groups.append([(length, start)])

    buckets = []
    for group in groups:
        longest = group[0][0]
        lens = torch.tensor([n for n, _ in group], device=device)
        starts = [s for _, s in group]
        offsets = torch.arange(longest, device=device)
        real = offsets[None, :] < lens[:, None]
        # Padding slots point at the sequence's first token: finite values, masked out as keys.
        index = torch.tensor(starts, device=device)[:, None] + torch.where(real, offsets[None, :], 0)
        padded = bool((lens < longest).any())
        real_slots = real.flatten().nonzero().squeeze(1) if padded else None
        real_index = index.flatten() if real_slots is None else index.flatten()[real_slots]
        identity = not padded and len(group) * longest == total and starts == list(range(0, total, longest))
        buckets.append(Bucket(index, real if padded else None, real_slots, real_index, longest, identity))
    return buckets


def _band_mask(length: int, window: int, device: torch.device) -> torch.Tensor:
    pos = torch.arange(length, device=device)
    return (pos[None, :] - pos[:, None]).abs() <= window


def _dense_attention(q, k, v, key_mask, window, dropout_p) -> torch.Tensor:
    """q, k, v: [n, L, h, d] (any strides). key_mask: [n, L] or None. Returns [n, L, h, d]."""
    length = q.shape[1]
    mask = None if key_mask is None else key_mask[:, None, None, :]
    if window is not None and length > window + 1:
        band = _band_mask(length, window, q.device)[None, None]
        mask = band if mask is None else mask & band
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p).transpose(1, 2)


def _blocked_local_attention(q, k, v, key_mask, window, dropout_p) -> torch.Tensor:
    """Sliding-window attention in blocks of `window` queries, each seeing three key blocks.

    q, k, v: [n, L, heads, d]. Returns [n, L, heads, d]. A query at position p in block i needs keys in
    [p - window, p + window], which lies inside blocks i-1, i and i+1.
    """
    n, length, heads, dim = q.shape
    b = window
    num_blocks = -(-length // b)
    pad = num_blocks * b - length
    real = key_mask if key_mask is not None else q.new_ones(n, length, dtype=torch.bool)
    real = F.pad(real, (b, b + pad), value=False)

    def neighbourhood(t: torch.Tensor) -> torch.Tensor:  # [n, L, h, d] -> [n * blocks, h, 3b, d]
        t = F.pad(t, (0, 0, 0, 0, b, b + pad)).unfold(1, 3 * b, b)  # [n, blocks, h, d, 3b]
        return t.permute(0, 1, 2, 4, 3).reshape(n * num_blocks, heads, 3 * b, dim)

    qb = F.pad(q, (0, 0, 0, 0, 0, pad)).view(n, num_blocks, b, heads, dim).transpose(2, 3)
    qb = qb.reshape(n * num_blocks, heads, b, dim)
    key_real = real.unfold(1, 3 * b, b).reshape(n * num_blocks, 1, 1, 3 * b)
    rel = torch.arange(3 * b, device=q.device)[None, :] - (torch.arange(b, device=q.device)[:, None] + b)
    mask = key_real & (rel.abs() <= window)[None, None]
    out = F.scaled_dot_product_attention(
        qb, neighbourhood(k), neighbourhood(v), attn_mask=mask, dropout_p=dropout_p
    )
    out = out.view(n, num_blocks, heads, b, dim).transpose(2, 3).reshape(n, num_blocks * b, heads, dim)
    return out[:, :length]


def _bucket_attention(
    qk: torch.Tensor, v: torch.Tensor, bucket: Bucket, window: int | None, dropout_p: float
) -> torch.Tensor:
    """Attention within one bucket. qk: [n, L, 2, h, d], v: [n, L, h, d]; returns [n, L, h, d]."""
    q, k = qk.unbind(2)
    if window is not None and bucket.length >= BLOCKED_LOCAL_MIN_WINDOWS * window:
        return _blocked_local_attention(q, k, v, bucket.key_mask, window, dropout_p)
    return _dense_attention(q, k, v, bucket.key_mask, window, dropout_p)


def sdpa_attention(
    qk: torch.Tensor, v: torch.Tensor, layout: PackedLayout, window: int | None = None, dropout_p: float = 0.0
) -> torch.Tensor:
    num_tokens, heads, dim = v.shape
    buckets = layout.buckets()
    if len(buckets) == 1 and buckets[0].is_identity:  # equal lengths, in order: a plain reshape
        n, length = buckets[0].token_index.shape
        out = _bucket_attention(
            qk.view(n, length, 2, heads, dim), v.view(n, length, heads, dim), buckets[0], window, dropout_p
        )
        return out.reshape(num_tokens, heads, dim)
    result = v.new_empty(num_tokens, heads, dim)
    for bucket in buckets:
        idx = bucket.token_index
        out = _bucket_attention(qk[idx], v[idx], bucket, window, dropout_p).reshape(-1, heads, dim)
        result.index_copy_(0, bucket.real_index, out if bucket.real_slots is None else out[bucket.real_slots])
    return result


def flash_attention(
    qk: torch.Tensor, v: torch.Tensor, layout: PackedLayout, window: int | None = None, dropout_p: float = 0.0
) -> torch.Tensor:
    from flash_attn import flash_attn_varlen_func  # optional dependency: GPU only

    dtype = v.dtype
    q, k = qk.unbind(1)
    if dtype not in (torch.float16, torch.bfloat16):  # the kernel takes half precision only
        q, k, v = (t.to(torch.bfloat16) for t in (q, k, v))
    out = flash_attn_varlen_func(
        q,
        k,
        v,
        cu_seqlens_q=layout.cu_seqlens,
        cu_seqlens_k=layout.cu_seqlens,
        max_seqlen_q=layout.max_seqlen,
        max_seqlen_k=layout.max_seqlen,
        dropout_p=dropout_p,
        window_size=(-1, -1) if window is None else (window, window),
    )
    return out.to(dtype)


ATTENTION_BACKENDS: dict[str, Callable[..., torch.Tensor]] = {
    "sdpa": sdpa_attention,
    "flash": flash_attention,
}


def flash_attn_available() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None


def resolve_backend(name: str, device: torch.device) -> Callable[..., torch.Tensor]:
    """Pick the kernel for `device`: `auto` means flash-attn on CUDA when installed, else sdpa."""
    if name == "auto":
        name = "flash" if device.type == "cuda" and flash_attn_available() else "sdpa"
    if name == "flash" and (device.type != "cuda" or not flash_attn_available()):
        raise RuntimeError(
            "attn_backend='flash' needs a CUDA device and the flash-attn package "
            "(pip install 'modernenc[gpu]'); use attn_backend='sdpa' or 'auto' elsewhere."
        )
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {['auto', *ATTENTION_BACKENDS]}")
    return ATTENTION_BACKENDS[name]
