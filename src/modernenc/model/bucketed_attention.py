"""Attention over packed tokens tuned for the CPU (and any device without a better kernel): the `bucketed`
backend (formerly `sdpa`, a name configs still use).

It computes what `eager_attention` (in `attention.py`) specifies, in two shapes:

- *bucket grids*: sequences of similar length are gathered (one `index_select` for all of them) into padded
  `[n, length]` grids, and one more `index_select` puts the outputs back in packed order. Each grid is one
  `scaled_dot_product_attention` call, except on the CPU up to `matmul_max_length` tokens, where two
  batched matmuls and a softmax over head-major rows run faster. Batches of equal lengths in order are a
  grid already: no gather at all. Used by global layers, and by local layers on short sequences.
- *banded*: local layers on long sequences attend over the packed stream itself, in blocks of `band_block`
  queries that see the `band_block + 2 * window` keys around them through an overlapping view (no copy);
  a mask keeps each query inside its own sequence and window. No gather, no padding beyond `window`
  tokens at the two ends, and the cost grows linearly with length.

A cost model picks between the two for local layers; every knob is a constructor argument whose default
was measured on the CPU (docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from modernenc.model.attention_base import AttentionCache, PackedLayout
from modernenc.model.padding import sequence_ids_from_cu_seqlens

# Buckets hold sequences whose lengths are within this ratio of the bucket's longest one, which bounds
# the attention spent on padding at 1 / ratio**2 while keeping the number of kernel calls small.
BUCKET_LENGTH_RATIO = 0.9
# Short sequences may also join when within this many tokens of the longest: their attention is cheap,
# and fewer buckets means fewer kernel calls. 16 measured best on ADE-like batches with matmul grids
# (32 padded them more, 8 or 4 added calls).
BUCKET_MIN_SLACK = 16
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
# On the CPU, grids up to this length run as explicit matmuls and softmax instead of the fused kernel:
# faster in bf16 at every length up to 384 measured here, as fast in fp32, and as fast for a training
# step (docs/benchmarks.md). Longer sequences keep the fused kernel, which never holds all
# the scores.
MATMUL_MAX_LENGTH = 384
# Matmul grids are split into calls of at most this many scores (64 MB in fp32) to bound the scores held
# at once in inference. Training keeps each call's probabilities for backward, as any explicit attention
# does: a training step on 300-384-token sequences saved 10% (fp32) to 35% (bf16) more than the fused kernel.
MATMUL_MAX_SCORES = 2**24

Route = Literal["grids", "banded"]


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
class GridRoutes:
    """Row indices that take one layer's heads into the grids and back, built once per forward pass.

    The longest grids run on the fused kernel and are gathered token-major, whole tokens at a time.
    Grids of at most `matmul_max_length` tokens run as batched matmuls (`_matmul_grid_attention`), which
    want each head's rows contiguous: their q, k and v rows are gathered head-major (`[n, heads, L]`)
    straight from the packed tensors viewed as `[T * parts * heads, head_dim]` rows, with no transposed
    copy. Every grid's output, in its own order, is concatenated and one gather puts it back per token.
    """

    fused_slots: int  # grid slots [0, fused_slots) belong to fused-kernel grids
    matmul_grids: int  # the last this many grids run as matmuls
    qk_rows: torch.Tensor  # rows of `qk` `[T * 2 * heads, d]`: per matmul grid `[2, n, heads, L]`
    v_rows: torch.Tensor  # rows of `v` `[T * heads, d]`: per matmul grid `[n, heads, L]`
    out_rows: torch.Tensor  # [T * heads] row of each (token, head) in the concatenated grid outputs


class BucketedAttention:
    """The CPU-tuned attention backend. Its knobs (module constants above say why each default) are:

    - `matmul_max_length`: on the CPU, grids up to this length run as matmuls (0: always the fused kernel);
    - `matmul_max_scores`: matmul grids are split into calls of at most this many scores;
    - `bucket_length_ratio`, `bucket_min_slack`: which sequences share a grid;
    - `band_block`: queries per block of banded attention;
    - `banded_pairs_ratio_in_place`, `banded_pairs_ratio_gathered`: the cost model's crossovers;
    - `route`: force `"grids"` or `"banded"` for local layers whose sequences outgrow the window
      (`None`: the cost model decides).
    """

    def __init__(
        self,
        *,
        matmul_max_length: int = MATMUL_MAX_LENGTH,
        matmul_max_scores: int = MATMUL_MAX_SCORES,
        bucket_length_ratio: float = BUCKET_LENGTH_RATIO,
        bucket_min_slack: int = BUCKET_MIN_SLACK,
        band_block: int = BAND_BLOCK,
        banded_pairs_ratio_in_place: float = BANDED_PAIRS_RATIO_IN_PLACE,
        banded_pairs_ratio_gathered: float = BANDED_PAIRS_RATIO_GATHERED,
        route: Route | None = None,
    ) -> None:
        if route not in (None, "grids", "banded"):
            raise ValueError(f"route must be None, 'grids' or 'banded'; got {route!r}")
        self.matmul_max_length = matmul_max_length
        self.matmul_max_scores = matmul_max_scores
        self.bucket_length_ratio = bucket_length_ratio
        self.bucket_min_slack = bucket_min_slack
        self.band_block = band_block
        self.banded_pairs_ratio_in_place = banded_pairs_ratio_in_place
        self.banded_pairs_ratio_gathered = banded_pairs_ratio_gathered
        self.route = route

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"

    def __call__(
        self,
        qk: torch.Tensor,
        v: torch.Tensor,
        layout: PackedLayout,
        cache: AttentionCache,
        window: int | None = None,
        dropout_p: float = 0.0,
    ) -> torch.Tensor:
        num_tokens, heads, dim = v.shape
        if num_tokens == 0:
            return v.new_empty(0, heads, dim)
        if window is not None and layout.max_seqlen <= window + 1:
            window = None  # every sequence fits in the window: local attention is global attention
        if window is not None and self.local_route(layout, cache, window) == "banded":
            mask = cache.get(
                ("bucketed band mask", self.band_block, window, qk.dtype),
                lambda: build_band_mask(layout.cu_seqlens, num_tokens, window, qk.dtype, self.band_block),
            )
            return _banded_attention(qk, v, mask, window, self.band_block, dropout_p)
        return self._bucket_attention(qk, v, layout, cache, window, dropout_p)

    def buckets(self, layout: PackedLayout, cache: AttentionCache) -> Buckets:
        """The forward pass's length buckets (built on first use)."""
        return cache.get(
            ("bucketed buckets", self.bucket_length_ratio, self.bucket_min_slack),
            lambda: build_buckets(layout.cu_seqlens, self.bucket_length_ratio, self.bucket_min_slack),
        )

    def grid_routes(
        self, layout: PackedLayout, cache: AttentionCache, heads: int, matmul_max_length: int
    ) -> GridRoutes:
        """Which grids run as matmuls and the rows that take `heads` heads into them and back."""
        key = (
            "bucketed grid routes",
            self.bucket_length_ratio,
            self.bucket_min_slack,
            heads,
            matmul_max_length,
        )
        return cache.get(
            key, lambda: build_grid_routes(self.buckets(layout, cache), heads, matmul_max_length)
        )

    def local_route(self, layout: PackedLayout, cache: AttentionCache, window: int) -> Route:
        """Banded attention or band-masked grids for a local layer whose sequences outgrow its window."""
        if self.route is not None:
            return self.route
        buckets = self.buckets(layout, cache)
        b = self.band_block
        banded_pairs = -(-layout.num_tokens // b) * b * (b + 2 * window)
        ratio = self.banded_pairs_ratio_in_place if buckets.is_identity else self.banded_pairs_ratio_gathered
        return "banded" if buckets.query_key_pairs() > ratio * banded_pairs else "grids"

    def _bucket_attention(
        self,
        qk: torch.Tensor,
        v: torch.Tensor,
        layout: PackedLayout,
        cache: AttentionCache,
        window: int | None,
        dropout_p: float,
    ) -> torch.Tensor:
        num_tokens, heads, dim = v.shape
        buckets = self.buckets(layout, cache)
        matmul_max_length = self.matmul_max_length if qk.device.type == "cpu" else 0
        if buckets.is_identity and buckets.shapes[0][1] > matmul_max_length:
            ((n, length),) = buckets.shapes  # equal lengths, in order: the packed tokens are the grid
            return _grid_attention(qk, v, n, length, None, window, dropout_p)
        routes = self.grid_routes(layout, cache, heads, matmul_max_length)
        grids = list(zip(buckets.shapes, buckets.key_masks, strict=True))
        fused, matmul = grids[: len(grids) - routes.matmul_grids], grids[len(grids) - routes.matmul_grids :]
        outs = []
        if fused:
            index = buckets.index[: routes.fused_slots]
            grid_qk, grid_v = qk.index_select(0, index), v.index_select(0, index)
            start = 0
            for (n, length), key_mask in fused:
                end = start + n * length
                grid = (grid_qk[start:end], grid_v[start:end], n, length, key_mask, window, dropout_p)
                outs.append(_grid_attention(*grid).reshape(-1, dim))
                start = end
        if matmul:
            grid_qk = qk.reshape(-1, dim).index_select(0, routes.qk_rows)
            grid_v = v.reshape(-1, dim).index_select(0, routes.v_rows)
            start = 0
            for (n, length), key_mask in matmul:
                size = n * heads * length
                q, k = grid_qk[2 * start : 2 * (start + size)].view(2, n * heads, length, dim)
                grid_v_rows = grid_v[start : start + size].view(n * heads, length, dim)
                out = _matmul_grid_attention(
                    q, k, grid_v_rows, n, key_mask, window, dropout_p, self.matmul_max_scores
                )
                outs.append(out.view(-1, dim))
                start += size
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        return out.index_select(0, routes.out_rows).view(num_tokens, heads, dim)


def build_buckets(cu_seqlens: torch.Tensor, length_ratio: float, min_slack: int) -> Buckets:
    """Group sequences by length, longest first; each grid's length is its longest sequence."""
    device = cu_seqlens.device
    bounds = cu_seqlens.tolist()
    total = bounds[-1]
    by_length = sorted((-(e - s), s) for s, e in zip(bounds[:-1], bounds[1:], strict=True) if e > s)
    groups: list[list[tuple[int, int]]] = []
    for neg_len, start in by_length:
        length, longest = -neg_len, (groups[-1][0][0] if groups else 0)
        if groups and (length >= length_ratio * longest or longest - length <= min_slack):
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


def build_grid_routes(buckets: Buckets, heads: int, matmul_max_length: int) -> GridRoutes:
    """See `GridRoutes`. Grids come longest first, so the matmul grids are the last ones."""
    device = buckets.index.device
    head = torch.arange(heads, device=device)
    matmul_grids = sum(1 for _, length in buckets.shapes if length <= matmul_max_length)
    fused = len(buckets.shapes) - matmul_grids
    fused_slots = sum(n * length for n, length in buckets.shapes[:fused])
    slot_rows = torch.empty(buckets.index.numel(), heads, dtype=torch.long, device=device)
    # Fused grids return `[slots, heads, d]`: the row of (slot, head) is slot * heads + head.
    slot_rows[:fused_slots] = torch.arange(fused_slots, device=device)[:, None] * heads + head
    qk_part = torch.arange(2, device=device)[:, None, None, None]  # q, k
    qk_rows, v_rows, start = [], [], fused_slots
    for n, length in buckets.shapes[fused:]:
        end = start + n * length
        tokens = buckets.index[start:end].view(n, 1, length)
        qk_rows.append(((tokens * 2 + qk_part) * heads + head[:, None]).flatten())
        v_rows.append((tokens * heads + head[:, None]).flatten())
        # Matmul grids return `[n * heads, L, d]`: the row of (sequence i, position l, head) is below.
        i, pos = torch.arange(n, device=device), torch.arange(length, device=device)
        rows = start * heads + (i[:, None, None] * heads + head[None, None, :]) * length + pos[None, :, None]
        slot_rows[start:end] = rows.view(n * length, heads)
        start = end
    empty = torch.zeros(0, dtype=torch.long, device=device)
    return GridRoutes(
        fused_slots=fused_slots,
        matmul_grids=matmul_grids,
        qk_rows=torch.cat(qk_rows) if qk_rows else empty,
        v_rows=torch.cat(v_rows) if v_rows else empty,
        out_rows=slot_rows[buckets.inverse].flatten(),
    )


def build_band_mask(
    cu_seqlens: torch.Tensor, num_tokens: int, window: int, dtype: torch.dtype, block: int
) -> torch.Tensor:
    """Additive mask `[blocks, 1, block, block + 2 * window]` for `_banded_attention`.

    Key j of block i is packed token `i * block - window + j`; it is visible (0, else -inf) when it
    belongs to the query's sequence and lies within `window` of it. Slots beyond the packed tokens belong
    to no sequence (-1) and so are never visible to a real query; padded queries see each other, which
    keeps their softmax finite (their outputs are dropped). Additive rather than boolean because the CPU
    kernel converts a boolean mask on every call; this one is built once per forward and shared.
    """
    b = block
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


def _grid_mask(
    length: int, key_mask: torch.Tensor | None, window: int | None, device: torch.device
) -> torch.Tensor | None:
    """Which keys each query of a grid sees: `[n or 1, 1, length, length]`, or None for all of them."""
    if window is None or length <= window + 1:
        return key_mask
    pos = torch.arange(length, device=device)
    band = (pos[None, :] - pos[:, None]).abs() <= window
    return band if key_mask is None else key_mask & band


def _grid_attention(
    qk: torch.Tensor,
    v: torch.Tensor,
    n: int,
    length: int,
    key_mask: torch.Tensor | None,
    window: int | None,
    dropout_p: float,
) -> torch.Tensor:
    """Fused-kernel attention on one grid: `qk` `[n * length, 2, h, d]` and `v` `[n * length, h, d]` hold
    n rows of `length` tokens. Returns `[n * length, h, d]`."""
    heads, dim = v.shape[-2:]
    q, k = (t.transpose(1, 2) for t in qk.view(n, length, 2, heads, dim).unbind(2))
    v = v.view(n, length, heads, dim).transpose(1, 2)
    mask = _grid_mask(length, key_mask, window, v.device)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    return out.transpose(1, 2).reshape(n * length, heads, dim)  # a view: the kernel writes [n, L, h, d]


def _matmul_grid_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    n: int,
    key_mask: torch.Tensor | None,
    window: int | None,
    dropout_p: float,
    max_scores: int,
) -> torch.Tensor:
    """Attention on one grid written out: two batched matmuls and a softmax over `[n * heads, L, L]`.

    `q`, `k`, `v` are head-major `[n * heads, L, d]`; returns the same shape. On the CPU the fused kernel
    pays a fixed cost per query row that dominates short grids (docs/benchmarks.md). Scores and softmax
    are at least fp32 whatever the input dtype, as in the fused kernels: bf16 scores would double the
    error of bf16 attention, for 2% of its speed; fp64 stays fp64.
    """
    rows, length, dim = q.shape
    heads = rows // n
    per_call = max(1, max_scores // (heads * length * length))
    if n > per_call:  # bound the scores held at once: split the grid by sequences
        return torch.cat(
            [
                _matmul_grid_attention(
                    *(t[i * heads : (i + per_call) * heads] for t in (q, k, v)),
                    min(per_call, n - i),
                    None if key_mask is None else key_mask[i : i + per_call],
                    window,
                    dropout_p,
                    max_scores,
                )
                for i in range(0, n, per_call)
            ]
        )
    score_dtype = torch.promote_types(q.dtype, torch.float32)
    with torch.autocast(q.device.type, enabled=False):
        scores = torch.bmm(q.to(score_dtype), k.to(score_dtype).transpose(1, 2)).mul_(dim**-0.5)
    visible = _grid_mask(length, key_mask, window, q.device)
    if visible is not None:
        if visible is not key_mask and key_mask is not None:
            # A padding query far from its row's last token would see no key; let it see all of them,
            # or its all -inf softmax row gives NaN gradients (its output is dropped anyway).
            visible = visible | ~key_mask.transpose(-1, -2)
        scores.view(n, heads, length, length).masked_fill_(~visible, float("-inf"))
    probs = scores.softmax(-1).to(v.dtype)
    if dropout_p:
        probs = F.dropout(probs, dropout_p)
    return torch.bmm(probs, v)


def _banded_attention(
    qk: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, window: int, block: int, dropout_p: float
) -> torch.Tensor:
    """Sliding-window attention over the packed stream, `block` queries at a time.

    Block i holds queries `[i * b, (i + 1) * b)`; every key they may see lies in
    `[i * b - w, (i + 1) * b + w)`, so k and v get `w` zero rows at each end (and the last block's
    remainder) and each block's keys are a window of that padded tensor: an overlapping view that the
    kernel reads in place. `mask` (from `build_band_mask`) keeps each query inside its sequence and window.
    """
    num_tokens, _, heads, dim = qk.shape
    b = block
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
