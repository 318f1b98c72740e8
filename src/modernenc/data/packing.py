"""Greedy best-fit sequence packing into flat, unpadded micro-batches.

Each emitted micro-batch holds exactly ``capacity`` token slots. Documents are placed whole (never split)
and described by ``cu_seqlens`` so a varlen attention kernel keeps them apart. The unused tail is PAD and
forms one extra segment, so every slot belongs to some segment and ``cu_seqlens[-1] == capacity``.

Resume is exact: the state holds the number of source samples consumed plus the buffered (already
transformed) sequences, so a restored packer emits the same micro-batches as an uninterrupted one.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from modernenc.model.config import IGNORE_INDEX, MODERNBERT_SPECIAL_IDS

DEFAULT_PAD_ID = MODERNBERT_SPECIAL_IDS["pad"]

# A transform turns (input_ids, sample_index) into (input_ids, labels); used for per-sequence MLM masking.
Transform = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray | None]]


@runtime_checkable
class SkippableSource(Protocol):
    """A source that can start iterating after its first ``start`` samples without reading them."""

    def iter_from(self, start: int) -> Iterator[Any]: ...


def _as_sample(item: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """Accept a bare sequence, an ``(ids, labels)`` pair, or a dict with ``input_ids`` (+ ``labels``)."""
    if isinstance(item, dict):
        ids, labels = item["input_ids"], item.get("labels")
    elif isinstance(item, tuple) and len(item) == 2:
        ids, labels = item
    else:
        ids, labels = item, None
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if labels.shape != ids.shape:
            raise ValueError(f"labels shape {labels.shape} does not match input_ids shape {ids.shape}")
    return ids, labels


def pack_sequences(
    sequences: list[tuple[np.ndarray, np.ndarray | None]],
    capacity: int,
    pad_token_id: int = DEFAULT_PAD_ID,
    with_labels: bool | None = None,
) -> dict[str, Any]:
    """Concatenate ``sequences`` (which must fit in ``capacity``) into one flat micro-batch dict."""
    lengths = [len(ids) for ids, _ in sequences]
    num_real = sum(lengths)
    if num_real > capacity:
        raise ValueError(f"{num_real} tokens do not fit in a micro-batch of {capacity} slots")
    if with_labels is None:
        with_labels = any(labels is not None for _, labels in sequences)

    input_ids = torch.full((capacity,), pad_token_id, dtype=torch.long)
    labels = torch.full((capacity,), IGNORE_INDEX, dtype=torch.long) if with_labels else None
    position_ids = torch.empty(capacity, dtype=torch.long)
    seg_lengths = list(lengths)
    if num_real < capacity:
        seg_lengths.append(capacity - num_real)  # padding tail is its own segment

    offset = 0
    for (ids, lab), n in zip(sequences, lengths, strict=True):
        input_ids[offset : offset + n] = torch.from_numpy(ids)
        if labels is not None and lab is not None:
            labels[offset : offset + n] = torch.from_numpy(lab)
        offset += n
    offset = 0
    for n in seg_lengths:
        position_ids[offset : offset + n] = torch.arange(n)
        offset += n

    cu_seqlens = torch.zeros(len(seg_lengths) + 1, dtype=torch.int32)
    cu_seqlens[1:] = torch.tensor(seg_lengths, dtype=torch.int32).cumsum(0)
    batch: dict[str, Any] = {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "cu_seqlens": cu_seqlens,
        "max_seqlen": max(seg_lengths),
        "num_sequences": len(lengths),
        "num_real_tokens": num_real,
        "packing_efficiency": num_real / capacity,
    }
    if labels is not None:
        batch["labels"] = labels
    return batch


class SequencePacker:
    """Buffer up to ``buffer_size`` sequences and emit best-fit packed micro-batches of ``capacity`` tokens.

    Best fit: repeatedly take the longest buffered sequence that still fits the remaining room (oldest first
    among equal lengths, so nothing waits forever behind newer twins). A larger buffer gives more choice
    and thus higher efficiency; ~16x the sequences per micro-batch is plenty for 1024-token chunks.

    ``transform(ids, index)`` runs once per sequence when it enters the buffer, with ``index`` the sample's
    position in the source stream; deriving its randomness from ``index`` keeps resume exact.
    """

    def __init__(
        self,
        source: Iterable[Any],
        capacity: int,
        buffer_size: int = 128,
        pad_token_id: int = DEFAULT_PAD_ID,
        transform: Transform | None = None,
        drop_last: bool = False,
    ) -> None:
        if capacity <= 0 or buffer_size <= 0:
            raise ValueError("capacity and buffer_size must be positive")
        self.source = source
        self.capacity = capacity
        self.buffer_size = buffer_size
        self.pad_token_id = pad_token_id
        self.transform = transform
        self.drop_last = drop_last
        self._reset()

    def _reset(self) -> None:
        self.samples_consumed = 0  # source samples pulled into the buffer so far
        self.batches_emitted = 0
        self.real_tokens = 0
        self.total_slots = 0
        self._keys: list[
            tuple[int, int]
        ] = []  # sorted (length, -arrival): bisect finds best fit, oldest first
        self._items: dict[tuple[int, int], tuple[np.ndarray, np.ndarray | None]] = {}
        self._has_labels: bool | None = None

    # ------------------------------------------------------------------ metrics
    @property
    def efficiency(self) -> float:
        """Running packing efficiency: real tokens / slots over every micro-batch emitted so far."""
        return self.real_tokens / self.total_slots if self.total_slots else 0.0

    def __len__(self) -> int:  # number of buffered sequences; handy for tests and logging
        return len(self._keys)

    # ------------------------------------------------------------------ buffer
    def _add(self, item: Any) -> None:
        index = self.samples_consumed
        ids, labels = _as_sample(item)
        if self.transform is not None:
            ids, labels = self.transform(ids, index)
        self.samples_consumed += 1
        if len(ids) == 0:
            raise ValueError(f"source sample {index} is empty; drop empty documents upstream")
        if len(ids) > self.capacity:
            raise ValueError(
                f"source sample {index} has {len(ids)} tokens, more than the micro-batch capacity of "
                f"{self.capacity}; split long documents into chunks upstream (prepare_corpus --max-length)"
            )
        has_labels = labels is not None
        if self._has_labels is None:
            self._has_labels = has_labels
        elif self._has_labels != has_labels:
            raise ValueError("either every sample or no sample must carry labels")
        key = (len(ids), -index)
        bisect.insort(self._keys, key)
        self._items[key] = (ids, labels)

    def _take_best_fit(self, room: int) -> tuple[np.ndarray, np.ndarray | None] | None:
        # Keys sort by (length, -arrival); the last key below (room + 1, -inf) is the longest fitting
        # sequence and, among equal lengths, the one with the smallest arrival index.
        pos = bisect.bisect_right(self._keys, (room, 0)) - 1
        if pos < 0:
            return None
        return self._items.pop(self._keys.pop(pos))

    def _next_batch(self) -> dict[str, Any]:
        chosen = []
        room = self.capacity
        while room > 0 and (item := self._take_best_fit(room)) is not None:
            chosen.append(item)
            room -= len(item[0])
        batch = pack_sequences(chosen, self.capacity, self.pad_token_id, with_labels=bool(self._has_labels))
        self.batches_emitted += 1
        self.real_tokens += batch["num_real_tokens"]
        self.total_slots += self.capacity
        return batch

    # ------------------------------------------------------------------ iteration
    def _source_iter(self) -> Iterator[Any]:
        start = self.samples_consumed
        if isinstance(self.source, SkippableSource):
            return iter(self.source.iter_from(start))
        # Plain iterables cannot seek: re-read and discard what was consumed before the checkpoint.
        return itertools.islice(iter(self.source), start, None)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        source = self._source_iter()
        exhausted = False
        while True:
            while not exhausted and len(self._keys) < self.buffer_size:
                try:
                    self._add(next(source))
                except StopIteration:
                    exhausted = True
            if not self._keys:
                return
            if exhausted and self.drop_last and sum(k[0] for k in self._keys) < self.capacity:
                return  # the final, partly filled micro-batch is dropped on request
            yield self._next_batch()

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """State to continue exactly; call between micro-batches. Tensors only, so weights_only-safe."""
        items = [self._items[k] for k in self._keys]
        lengths = torch.tensor([len(ids) for ids, _ in items], dtype=torch.long)
        arrivals = torch.tensor([-a for _, a in self._keys], dtype=torch.long)
        cat = (lambda xs: torch.from_numpy(np.concatenate(xs))) if items else (lambda xs: torch.empty(0))
        state: dict[str, Any] = {
            "samples_consumed": self.samples_consumed,
            "batches_emitted": self.batches_emitted,
            "real_tokens": self.real_tokens,
            "total_slots": self.total_slots,
            "capacity": self.capacity,
            "buffer_lengths": lengths,
            "buffer_arrivals": arrivals,
            "buffer_input_ids": cat([ids for ids, _ in items]).long(),
            "has_labels": self._has_labels,
        }
        if self._has_labels:
            state["buffer_labels"] = cat([lab for _, lab in items]).long()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(
                f"checkpoint packed {state['capacity']} tokens per micro-batch, not {self.capacity}"
            )
        self._reset()
        self.samples_consumed = int(state["samples_consumed"])
        self.batches_emitted = int(state["batches_emitted"])
        self.real_tokens = int(state["real_tokens"])
        self.total_slots = int(state["total_slots"])
        self._has_labels = state["has_labels"]
        lengths = state["buffer_lengths"].tolist()
        ids_all = state["buffer_input_ids"].numpy()
        labels_all = state["buffer_labels"].numpy() if self._has_labels else None
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        for i, arrival in enumerate(state["buffer_arrivals"].tolist()):
            sl = slice(offsets[i], offsets[i + 1])
            key = (lengths[i], -arrival)
            self._keys.append(key)
            self._items[key] = (ids_all[sl].copy(), None if labels_all is None else labels_all[sl].copy())
        self._keys.sort()
