"""Composer callbacks: exact resume of the packed data stream, and packing/throughput logging."""

from __future__ import annotations

import time
from typing import Any

from composer.core import Callback, State
from composer.loggers import Logger


class PackedStreamState(Callback):
    """Saves the packer's position in every checkpoint and restores it on resume.

    Composer checkpoints callback state, so a resumed run continues from exactly the next micro-batch
    without replaying the data it already consumed (the trainer's own dataloader spin is turned off).
    """

    def __init__(self, stream) -> None:
        self.stream = stream

    def state_dict(self) -> dict[str, Any]:
        return {"stream": self.stream.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state["stream"])


class PackingMetrics(Callback):
    """Logs packing efficiency, real tokens/s and sequences per micro-batch for each training batch."""

    def __init__(self) -> None:
        self._start = 0.0

    def batch_start(self, state: State, logger: Logger) -> None:
        self._start = time.perf_counter()

    def batch_end(self, state: State, logger: Logger) -> None:
        batch = state.batch
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        logger.log_metrics(
            {
                "data/packing_efficiency": float(batch["packing_efficiency"]),
                "data/sequences_per_batch": int(batch["num_sequences"]),
                "throughput/real_tokens_per_sec": int(batch["num_real_tokens"]) / elapsed,
            }
        )
