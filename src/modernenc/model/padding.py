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
    """Drop the padding of a `[B, S]` batch. Each row's real tokens must be contiguous."""
    batch_size, seq_len = input_ids.shape
    mask = attention_mask.bool()
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
