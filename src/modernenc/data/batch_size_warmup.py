"""Batch-size warmup: the global batch grows from a minimum to the full size over a token budget.

The sizes ``min, min + inc, ..., max - inc`` are each held for ``warmup_tokens / num_stages`` tokens, then
the full ``max`` size is used for the rest of training (ModernBERT-base: 768 -> 4608 over 50B tokens).

How the global batch is split (units are sequences; for packed data one "sequence" is one packed row of
``max_seq_len`` slots, i.e. a micro-batch of ``micro_batch_size`` sequences is ``micro_batch_size *
max_seq_len`` tokens)::

    per_rank_batch   = global_batch / world_size
    grad_accum_steps = per_rank_batch / micro_batch_size

Both divisions must be exact, which is why sizes step in multiples of ``increment = micro_batch_size *
world_size`` and ``min``/``max`` must themselves be multiples of it. Tokens must be counted globally and
identically on every rank (e.g. ``global_batch * max_seq_len`` per step, which needs no communication),
otherwise ranks would disagree on the batch size and deadlock.
"""

from __future__ import annotations

from dataclasses import dataclass


def batch_size_at(
    tokens_seen: int, *, min_batch_size: int, max_batch_size: int, warmup_tokens: int, increment: int
) -> int:
    """Global batch size (sequences) after ``tokens_seen`` training tokens."""
    _check(min_batch_size, max_batch_size, warmup_tokens, increment)
    if tokens_seen < 0:
        raise ValueError(f"tokens_seen must be >= 0, got {tokens_seen}")
    num_stages = (max_batch_size - min_batch_size) // increment
    if num_stages == 0 or tokens_seen >= warmup_tokens:
        return max_batch_size
    # Integer arithmetic: stage k covers tokens [k * W / S, (k + 1) * W / S), without float rounding drift.
    stage = tokens_seen * num_stages // warmup_tokens
    return min_batch_size + stage * increment


def split_global_batch(global_batch_size: int, world_size: int, micro_batch_size: int) -> tuple[int, int]:
    """Return ``(per_rank_batch_size, grad_accum_steps)`` for a global batch; raises if not exact."""
    if global_batch_size % (world_size * micro_batch_size):
        raise ValueError(
            f"global batch {global_batch_size} is not a multiple of world_size * micro_batch_size "
            f"= {world_size} * {micro_batch_size}"
        )
    per_rank = global_batch_size // world_size
    return per_rank, per_rank // micro_batch_size


def _check(min_batch_size: int, max_batch_size: int, warmup_tokens: int, increment: int) -> None:
    if increment <= 0 or min_batch_size <= 0 or warmup_tokens < 0:
        raise ValueError("increment and min_batch_size must be positive, warmup_tokens non-negative")
    if min_batch_size > max_batch_size:
        raise ValueError(f"min_batch_size {min_batch_size} exceeds max_batch_size {max_batch_size}")
    if min_batch_size % increment or max_batch_size % increment:
        raise ValueError(
            f"min ({min_batch_size}) and max ({max_batch_size}) batch sizes must be multiples of the "
            f"increment {increment} (micro_batch_size * world_size)"
        )


@dataclass
class BatchSizeWarmup:
    """Tracks global tokens seen and answers the current global / per-rank batch and accumulation steps."""

    min_batch_size: int
    max_batch_size: int
    warmup_tokens: int
    micro_batch_size: int
    world_size: int = 1
    tokens_seen: int = 0

    def __post_init__(self) -> None:
        _check(self.min_batch_size, self.max_batch_size, self.warmup_tokens, self.increment)

    @property
    def increment(self) -> int:
        return self.micro_batch_size * self.world_size

    @property
    def global_batch_size(self) -> int:
        return batch_size_at(
            self.tokens_seen,
            min_batch_size=self.min_batch_size,
            max_batch_size=self.max_batch_size,
            warmup_tokens=self.warmup_tokens,
            increment=self.increment,
        )

    @property
    def per_rank_batch_size(self) -> int:
        return split_global_batch(self.global_batch_size, self.world_size, self.micro_batch_size)[0]

    @property
    def grad_accum_steps(self) -> int:
        return split_global_batch(self.global_batch_size, self.world_size, self.micro_batch_size)[1]

    def step(self, global_tokens: int) -> None:
        """Record one optimizer step that consumed ``global_tokens`` tokens summed over all ranks."""
        if global_tokens < 0:
            raise ValueError("global_tokens must be non-negative")
        self.tokens_seen += global_tokens

    def state_dict(self) -> dict[str, int]:
        return {"tokens_seen": self.tokens_seen}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.tokens_seen = int(state["tokens_seen"])
