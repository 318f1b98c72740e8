"""Unpadding at the input and re-padding at the output: the only places the encoder sees padding."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Unpadded:
    input_ids: torch.Tensor  # [T] real tokens, row by row
    indices: torch.Tensor  # [T] position of each real token in the flattened [B * S] batch
    cu_seqlens: torch.Tensor  # int32 [B + 1]; empty rows give empty sequences
    max_seqlen: int
    position_ids: torch.Tensor  # [T] column of each token, so left padding works too (RoPE is relative)
    batch_size: int
    seq_len: int


def unpad(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Unpadded:
    """Drop the padding of a `[B, S]` batch. Each row's real tokens must be contiguous (left or right
    padding): local windows are counted over the packed tokens, so a gap inside a row would shift them."""
    batch_size, seq_len = input_ids.shape
    mask = attention_mask.bool()
    runs = mask[:, :1].sum(1) + (mask[:, 1:] & ~mask[:, :-1]).sum(1)  # starts of runs of real tokens
    gapped = (runs > 1).nonzero().flatten().tolist()
    if gapped:
        raise ValueError(
            f"attention_mask rows {gapped[:8]} have padding between real tokens; each row's tokens must be "
            "contiguous (padding on the left or the right only)"
        )
    seqlens = mask.sum(dim=1, dtype=torch.int32)
    indices = mask.flatten().nonzero().squeeze(1)
    cu_seqlens = F.pad(torch.cumsum(seqlens, dim=0, dtype=torch.int32), (1, 0))
    columns = torch.arange(seq_len, device=input_ids.device).expand(batch_size, seq_len)
    return Unpadded(
        input_ids=input_ids.flatten()[indices],
        indices=indices,
        cu_seqlens=cu_seqlens,
        max_seqlen=int(seqlens.max()) if batch_size else 0,
        position_ids=columns.flatten()[indices],
        batch_size=batch_size,
        seq_len=seq_len,
    )


def repad(packed: torch.Tensor, indices: torch.Tensor, batch_size: int, seq_len: int) -> torch.Tensor:
    """Scatter `[T, ...]` back into a zero-filled `[B, S, ...]`."""
    out = packed.new_zeros(batch_size * seq_len, *packed.shape[1:])
    out[indices] = packed
    return out.view(batch_size, seq_len, *packed.shape[1:])


def positions_from_cu_seqlens(cu_seqlens: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Position of every packed token inside its own sequence: 0, 1, ... restarting at each boundary."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    starts = torch.repeat_interleave(cu_seqlens[:-1].long(), lengths, output_size=num_tokens)
    return torch.arange(num_tokens, device=cu_seqlens.device) - starts


def sequence_ids_from_cu_seqlens(cu_seqlens: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Index of the sequence each packed token belongs to."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    return torch.repeat_interleave(
        torch.arange(lengths.shape[0], device=cu_seqlens.device), lengths, output_size=num_tokens
    )


def check_packed_layout(cu_seqlens: torch.Tensor, num_tokens: int, max_seqlen: int | None) -> int:
    """Check packed input's boundaries against its tokens; returns the longest sequence's length.

    A wrong `max_seqlen` would not fail anywhere: too small a value silently turns local layers global.
    """
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 1:
        raise ValueError(
            f"cu_seqlens must be a 1-D tensor [num_seqs + 1]; got shape {tuple(cu_seqlens.shape)}"
        )
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    ends = [cu_seqlens[0], cu_seqlens[-1]]
    extremes = [lengths.min(), lengths.max()] if lengths.numel() else [ends[0], ends[0]]
    first, last, shortest, longest = torch.stack([*ends, *extremes]).tolist()  # one device sync
    if first != 0 or last != num_tokens:
        raise ValueError(
            f"cu_seqlens must run from 0 to the number of packed tokens ({num_tokens}); got {first}..{last}"
        )
    if shortest < 0:
        raise ValueError("cu_seqlens must not decrease")
    if max_seqlen is not None and max_seqlen < longest:
        raise ValueError(f"max_seqlen={max_seqlen} is shorter than the longest packed sequence ({longest})")
    return longest if max_seqlen is None else int(max_seqlen)
