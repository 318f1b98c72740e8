"""Attention over packed (unpadded) tokens, with interchangeable kernels.

All backends take `qk` of shape `[T, 2, heads, head_dim]` (rotary already applied) and `v` of shape
`[T, heads, head_dim]` (the real tokens of every sequence, back to back) plus a `PackedLayout`, and
return `[T, heads, head_dim]`. `window` is the number of tokens a local layer sees on each side (`None`
for global attention).

- `flash`: flash-attn's varlen kernel on CUDA; local layers use its sliding window.
- `sdpa`: pure PyTorch, for CPU and for GPUs without flash-attn, in two shapes:
  - *bucket grids*: sequences of similar length are gathered (one `index_select` for all of them) into
    padded `[n, length]` grids, each grid is one `scaled_dot_product_attention` call, and one more
    `index_select` puts the outputs back in packed order. Batches of equal lengths in order are a grid
    already: no gather at all. Used by global layers, and by local layers on short sequences.
  - *banded*: local layers on long sequences attend over the packed stream itself, in blocks of
    `BAND_BLOCK` queries that see the `BAND_BLOCK + 2 * window` keys around them through an
    overlapping view (no copy); a mask keeps each query inside its own sequence and window. No gather,
    no padding beyond `window` tokens at the two ends, and the cost grows linearly with length.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from modernenc.model.padding import sequence_ids_from_cu_seqlens

# Buckets hold sequences whose lengths are within this ratio of the bucket's longest one, which bounds
# the attention spent on padding at 1 / ratio**2 while keeping the number of kernel calls small.
BUCKET_LENGTH_RATIO = 0.9
# Short sequences may also join when within this many tokens of the longest: their attention is cheap,
# and fewer buckets means fewer kernel calls.
BUCKET_MIN_SLACK = 32
# Queries per block in banded attention. Each block reads BAND_BLOCK + 2 * window keys, so small blocks
# waste fewer keys outside the window and large ones use the kernel better; at window 64 on two cores,
# 32 measured ~10% faster than 16 or 64.
BAND_BLOCK = 32
# A local layer whose sequences outgrow its window goes banded when the bucket grids (band-masked) would
# compute more than this many times banded attention's query-key pairs. Measured crossovers: grids that
# are the packed tokens in place (equal lengths) stay faster up to ~5 windows per sequence, a ratio of 2;
# grids that need a gather and a scatter lose earlier (doc-like batches, ratio 1.7, run 1.5x faster
# banded), so they switch as soon as banded computes fewer pairs.
BANDED_PAIRS_RATIO_IN_PLACE = 2.0
BANDED_PAIRS_RATIO_GATHERED = 1.0


@dataclass
class Buckets:
    """Sequences grouped by length into padded grids, laid out one after another in a single slot range."""

    index: torch.Tensor  # [slots] packed-token index of every grid slot; padding repeats a real token
    inverse: torch.Tensor  # [T] the slot of every packed token
    shapes: list[tuple[int, int]]  # (sequences, length) of each grid, in slot order
    key_masks: list[torch.Tensor | None]  # [n, 1, 1, length], True on real tokens; None: nothing padded
    is_identity: bool  # one grid that is the packed tokens themselves, in order: no gather or scatter

    def query_key_pairs(self) -> int:
        """Query-key pairs the grids compute (padding included): their cost, roughly."""
        return sum(n * length * length for n, length in self.shapes)


@dataclass
class PackedLayout:
    """Where each sequence sits in the packed token stream, plus sdpa's helpers, built on first use and
    shared by every layer of the forward pass."""

    cu_seqlens: torch.Tensor  # int32 [num_sequences + 1], starts at 0, ends at T
    max_seqlen: int
    position_ids: torch.Tensor  # [T] position of each token within its sequence
    attend: Callable[..., torch.Tensor] = field(repr=False, default=None)  # type: ignore[assignment]
    _buckets: Buckets | None = field(default=None, repr=False)
    _band_masks: dict[tuple[int, torch.dtype], torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def num_tokens(self) -> int:
        return self.position_ids.shape[0]

    def buckets(self) -> Buckets:
        if self._buckets is None:
            self._buckets = build_buckets(self.cu_seqlens)
        return self._buckets

    def band_mask(self, window: int, dtype: torch.dtype) -> torch.Tensor:
        if (window, dtype) not in self._band_masks:
            self._band_masks[window, dtype] = build_band_mask(self.cu_seqlens, self.num_tokens, window, dtype)
        return self._band_masks[window, dtype]


def build_buckets(cu_seqlens: torch.Tensor) -> Buckets:
    """Group sequences by length, longest first; each grid's length is its longest sequence."""
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

    index, shapes, key_masks = [], [], []
    inverse = torch.empty(total, dtype=torch.long, device=device)
    first_slot = 0
    for group in groups:
        longest = group[0][0]
        lens = torch.tensor([n for n, _ in group], device=device)
        starts = torch.tensor([s for _, s in group], device=device)
        offsets = torch.arange(longest, device=device)
        real = offsets[None, :] < lens[:, None]
        # Padding slots point at the sequence's first token: finite values, masked out as keys.
        grid = starts[:, None] + torch.where(real, offsets[None, :], 0)
        slots = first_slot + torch.arange(grid.numel(), device=device).view_as(grid)
        inverse[grid[real]] = slots[real]
        index.append(grid.flatten())
        shapes.append((len(group), longest))
        key_masks.append(None if bool(real.all()) else real[:, None, None, :])
        first_slot += grid.numel()
    identity = (
        len(groups) == 1
        and key_masks[0] is None
        and [s for _, s in groups[0]] == list(range(0, total, shapes[0][1]))
    )
    flat_index = torch.cat(index) if index else torch.zeros(0, dtype=torch.long, device=device)
    return Buckets(flat_index, inverse, shapes, key_masks, identity)


def build_band_mask(
    cu_seqlens: torch.Tensor, num_tokens: int, window: int, dtype: torch.dtype
) -> torch.Tensor:
    """Additive mask `[blocks, 1, BAND_BLOCK, BAND_BLOCK + 2 * window]` for `_banded_attention`.

    Key j of block i is packed token `i * BAND_BLOCK - window + j`; it is visible (0, else -inf) when it
    belongs to the query's sequence and lies within `window` of it. Slots beyond the packed tokens belong
    to no sequence (-1) and so are never visible to a real query; padded queries see each other, which
    keeps their softmax finite (their outputs are dropped). Additive rather than boolean because the CPU
    kernel converts a boolean mask on every call; this one is built once per forward and shared.
    """
    b = BAND_BLOCK
    num_blocks = -(-num_tokens // b)
    seq = sequence_ids_from_cu_seqlens(cu_seqlens, num_tokens)
    seq = F.pad(seq, (window, window + num_blocks * b - num_tokens), value=-1)
    key_seq = seq.unfold(0, b + 2 * window, b)  # [blocks, b + 2w]
    query_seq = seq[window : window + num_blocks * b].view(num_blocks, b)
    offset = torch.arange(b + 2 * window, device=seq.device)[None, :] - window
    distance = offset - torch.arange(b, device=seq.device)[:, None]  # key position - query position
    visible = (query_seq[:, :, None] == key_seq[:, None, :]) & (distance.abs() <= window)
    mask = torch.zeros(visible.shape, dtype=dtype, device=seq.device).masked_fill_(~visible, float("-inf"))
    return mask[:, None]


def _grid_attention(
    qk: torch.Tensor,
    v: torch.Tensor,
    n: int,
    length: int,
    key_mask: torch.Tensor | None,
    window: int | None,
    dropout_p: float,
) -> torch.Tensor:
    """Attention on one grid: `qk` `[n * length, 2, h, d]` and `v` `[n * length, h, d]` hold n rows of
    `length` tokens. Returns `[n * length, h, d]`."""
    heads, dim = v.shape[-2:]
    q, k = (t.transpose(1, 2) for t in qk.view(n, length, 2, heads, dim).unbind(2))
    mask = key_mask
    if window is not None and length > window + 1:
        pos = torch.arange(length, device=v.device)
        band = (pos[None, :] - pos[:, None]).abs() <= window
        mask = band if mask is None else mask & band
    v = v.view(n, length, heads, dim).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    return out.transpose(1, 2).reshape(n * length, heads, dim)  # a view: the kernel writes [n, L, h, d]


def _bucket_attention(
    qk: torch.Tensor, v: torch.Tensor, buckets: Buckets, window: int | None, dropout_p: float
) -> torch.Tensor:
    if buckets.is_identity:  # equal lengths, in order: the packed tokens are the grid
        ((n, length),) = buckets.shapes
        return _grid_attention(qk, v, n, length, None, window, dropout_p)
    grid_qk, grid_v = qk.index_select(0, buckets.index), v.index_select(0, buckets.index)
    outs, start = [], 0
    for (n, length), key_mask in zip(buckets.shapes, buckets.key_masks, strict=True):
        end = start + n * length
        outs.append(
            _grid_attention(grid_qk[start:end], grid_v[start:end], n, length, key_mask, window, dropout_p)
        )
        start = end
    out = outs[0] if len(outs) == 1 else torch.cat(outs)
    return out.index_select(0, buckets.inverse)


def _banded_attention(
    qk: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, window: int, dropout_p: float
) -> torch.Tensor:
    """Sliding-window attention over the packed stream, `BAND_BLOCK` queries at a time.

    Block i holds queries `[i * b, (i + 1) * b)`; every key they may see lies in
    `[i * b - w, (i + 1) * b + w)`, so k and v get `w` zero rows at each end (and the last block's
    remainder) and each block's keys are a window of that padded tensor: an overlapping view that the
    kernel reads in place. `mask` (from `build_band_mask`) keeps each query inside its sequence and window.
    """
    num_tokens, _, heads, dim = qk.shape
    b = BAND_BLOCK
    num_blocks = mask.shape[0]
    tail = num_blocks * b - num_tokens
    q, k = qk.unbind(1)
    if tail:
        q = torch.cat((q, q.new_zeros(tail, heads, dim)))
    queries = q.view(num_blocks, b, heads, dim).transpose(1, 2)

    edge = qk.new_zeros(window + tail, heads, dim)

    def key_windows(t: torch.Tensor) -> torch.Tensor:  # [T, h, d] -> [blocks, h, b + 2w, d], a view
        t = torch.cat((edge[:window], t, edge))
        return t.unfold(0, b + 2 * window, b).transpose(2, 3)

    out = F.scaled_dot_product_attention(
        queries, key_windows(k), key_windows(v), attn_mask=mask, dropout_p=dropout_p
    )
    return out.transpose(1, 2).reshape(num_blocks * b, heads, dim)[:num_tokens]


def sdpa_attention(
    qk: torch.Tensor, v: torch.Tensor, layout: PackedLayout, window: int | None = None, dropout_p: float = 0.0
) -> torch.Tensor:
    num_tokens, heads, dim = v.shape
    if num_tokens == 0:
        return v.new_empty(0, heads, dim)
    if window is not None and layout.max_seqlen <= window + 1:
        window = None  # every sequence fits in the window: local attention is global attention
    buckets = layout.buckets()
    if window is not None:
        banded_pairs = -(-num_tokens // BAND_BLOCK) * BAND_BLOCK * (BAND_BLOCK + 2 * window)
        ratio = BANDED_PAIRS_RATIO_IN_PLACE if buckets.is_identity else BANDED_PAIRS_RATIO_GATHERED
        if buckets.query_key_pairs() > ratio * banded_pairs:
            return _banded_attention(qk, v, layout.band_mask(window, qk.dtype), window, dropout_p)
    return _bucket_attention(qk, v, buckets, window, dropout_p)


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
