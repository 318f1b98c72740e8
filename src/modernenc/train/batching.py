"""Gradient accumulation and batch-size warmup for packed MLM training.

The train dataloader yields one *optimizer step* per item: a list of ``k`` packed micro-batches, where
``k = global_batch / (world_size * micro_batch_size)`` is this rank's number of accumulation steps at the
current point of the batch-size warmup. Composer's ``split_batch`` hands that list back as the
micro-batches, and with ``accumulate_train_batch_on_tokens=True`` each micro-batch's loss (a mean over its
labelled tokens) is weighted by its share of the labelled tokens of the whole step, over all ranks. The
step's loss and gradient are then exactly the mean over every labelled token of the global batch.

The warmup counts tokens as ``global_batch * max_seq_len`` per step (token *slots*, padding included), the
same on every rank without communication; `BatchSizeWarmupState` checkpoints that count so a resumed run
continues with the same batch sizes. Composer's own token clock (``time/token``, token durations of the
LR schedule and ``max_duration``) counts real tokens instead, i.e. slots x packing efficiency.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from composer.core import Callback, DataSpec, State
from composer.loggers import Logger
from torch.utils.data import IterableDataset

from modernenc.data.batch_size_warmup import BatchSizeWarmup
from modernenc.model.config import IGNORE_INDEX


def warmup_from_config(data_cfg: Any, world_size: int) -> BatchSizeWarmup:
    """The batch-size tracker for a config's `data` section; a constant global batch when warmup is off."""
    micro = int(data_cfg.micro_batch_size)
    global_batch = int(data_cfg.global_batch_size or micro * world_size)
    warm = data_cfg.batch_size_warmup
    if warm.min_batch_size is None:
        return BatchSizeWarmup(global_batch, global_batch, 0, micro, world_size)
    return BatchSizeWarmup(int(warm.min_batch_size), global_batch, int(warm.warmup_tokens), micro, world_size)


class GradAccumStream(IterableDataset):
    """Groups a stream of packed micro-batches into optimizer steps of ``k`` micro-batches each.

    A step the stream cannot fill (the end of an epoch) is dropped, as every rank must run the same ``k``.
    """

    def __init__(self, stream, warmup: BatchSizeWarmup, max_seq_len: int) -> None:
        self.stream = stream
        self.warmup = warmup
        self.max_seq_len = max_seq_len
        self.global_batch_size = warmup.global_batch_size  # of the step most recently yielded
        self.grad_accum_steps = warmup.grad_accum_steps

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        micro_batches = iter(self.stream)
        while True:
            global_batch, k = self.warmup.global_batch_size, self.warmup.grad_accum_steps
            step = list(itertools.islice(micro_batches, k))
            if len(step) < k:
                return
            self.warmup.step(global_batch * self.max_seq_len)
            self.global_batch_size, self.grad_accum_steps = global_batch, k
            yield step


def _micro_batches(batch) -> list[dict[str, Any]]:
    return batch if isinstance(batch, list) else [batch]


def _num_tokens(batch) -> dict[str, int]:
    # 'total' feeds composer's token clock; 'loss_generating' weights micro-batch losses when
    # accumulate_train_batch_on_tokens=True (the MLM loss is a mean over labelled tokens).
    micro = _micro_batches(batch)
    return {
        "total": sum(int(b["num_real_tokens"]) for b in micro),
        "loss_generating": sum(int((b["labels"] != IGNORE_INDEX).sum()) for b in micro if "labels" in b),
    }


def grad_accum_batch_spec(dataloader) -> DataSpec:
    """DataSpec for `GradAccumStream` steps (lists of micro-batches); a single micro-batch works too."""
    return DataSpec(
        dataloader,
        get_num_samples_in_batch=lambda batch: sum(int(b["num_sequences"]) for b in _micro_batches(batch)),
        get_num_tokens_in_batch=_num_tokens,
        split_batch=lambda batch, microbatch_size: _micro_batches(batch),
    )


class BatchSizeWarmupState(Callback):
    """Checkpoints the warmup's token count and logs the global batch size and accumulation steps."""

    def __init__(self, stream: GradAccumStream) -> None:
        self.stream = stream

    def state_dict(self) -> dict[str, Any]:
        return {"warmup": self.stream.warmup.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.warmup.load_state_dict(state["warmup"])

    def batch_end(self, state: State, logger: Logger) -> None:
        logger.log_metrics(
            {
                "trainer/global_batch_size": self.stream.global_batch_size,
                "trainer/grad_accum_steps": self.stream.grad_accum_steps,
            }
        )
