"""What every attention backend takes: the packed layout of a batch and a per-forward memo.

A backend is a callable `backend(qk, v, layout, cache, window=None, dropout_p=0.0)`: `qk` is
`[T, 2, heads, head_dim]` (rotary applied), `v` is `[T, heads, head_dim]`, the real tokens of every sequence
back to back as `layout` describes them; it returns `[T, heads, head_dim]`. `window` is how many tokens a
local layer sees on each side (`None`: global). What a backend derives from the layout (length buckets,
row routes, masks) it builds once per forward pass through `cache` and every layer reuses it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

import torch

Built = TypeVar("Built")


@dataclass(frozen=True)
class PackedLayout:
    """Where each sequence sits in the packed token stream."""

    cu_seqlens: torch.Tensor  # int32 [num_sequences + 1], starts at 0, ends at T
    max_seqlen: int
    position_ids: torch.Tensor  # [T] position of each token within its sequence

    @property
    def num_tokens(self) -> int:
        return self.position_ids.shape[0]


class AttentionCache:
    """What backends build from one forward pass's layout, each thing built once and shared by the layers.

    A memo keyed by what was built and with which settings (a backend's knobs, a window, a dtype), so two
    backends or two kinds of layer never read each other's entries. Created by `encode()` per forward.
    """

    def __init__(self) -> None:
        self._built: dict[Hashable, object] = {}

    def get(self, key: Hashable, build: Callable[[], Built]) -> Built:
        if key not in self._built:
            self._built[key] = build()
        return self._built[key]  # type: ignore[return-value]

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._built)

    def __len__(self) -> int:
        return len(self._built)


class AttentionBackend(Protocol):
    def __call__(
        self,
        qk: torch.Tensor,
        v: torch.Tensor,
        layout: PackedLayout,
        cache: AttentionCache,
        window: int | None = None,
        dropout_p: float = 0.0,
    ) -> torch.Tensor: ...
