"""`modernenc plot-schedule`: the learning rate and global batch size a training yaml will use, per step.

The yaml goes through `load_config`, the LR through the scheduler object training builds
(`modernenc.train.schedulers.build_scheduler`) evaluated on a composer `Timestamp`, and the batch size
through the same `BatchSizeWarmup` tracker the train dataloader advances, step by step, so the plot shows
what `train.py` will do.

Two clocks. The batch-size warmup counts token *slots* (`global_batch * max_seq_len` per step, padding
included, identical on every rank). Composer's clock, which token durations of the LR schedule and
`max_duration` refer to, counts *real* tokens: slots x packing efficiency. `packing_efficiency` (default 1)
converts one into the other; greedy packing reaches 0.994-0.9999 on prepared corpora (docs/data.md), so
token-based schedules stretch by well under 1%. Batch durations need no conversion.

Epoch durations (`ep`) cannot be drawn: a packed stream has no length until it has been packed (the
number of micro-batches depends on the document lengths), so give `max_duration` and the scheduler's
durations in `ba`, `tok` or `dur`. The same goes for samples (`sp`: documents, whose count per step
depends on packing).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

from composer.core import Time, Timestamp, TimeUnit
from omegaconf import DictConfig, OmegaConf

from modernenc.train.batching import warmup_from_config
from modernenc.train.schedulers import build_scheduler
from modernenc.utils.outputs import check_output_file, writing_file

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SUPPORTED_UNITS = (TimeUnit.BATCH, TimeUnit.TOKEN, TimeUnit.DURATION)


@dataclass
class Schedule:
    """Optimizer steps as training will run them: every step, or every `stride`-th of a long run."""

    steps: list[int]  # step index i (0-based); the last step of the run is always included
    slots_before: list[int]  # batch-size warmup clock (token slots) when step i starts
    tokens_before: list[int]  # composer's token clock (real tokens) when step i starts
    lr: list[float]  # learning rate step i trains with
    global_batch_size: list[int]  # sequences in step i, over all ranks
    num_steps: int = 0  # optimizer steps of the whole run
    tokens_at_end: int = 0  # composer's token clock when training stops
    full_batch_from: tuple[int, int] | None = None  # (step, token slots) where the full global batch starts


def _check_unit(name: str, value: str | None) -> None:
    if value is None:
        return
    unit = Time.from_timestring(str(value)).unit
    if unit not in SUPPORTED_UNITS:
        raise ValueError(
            f"{name}={value!r}: plot-schedule handles durations in 'ba', 'tok' and 'dur' only; a packed "
            f"streaming dataset has no length before packing, so epochs and samples cannot be converted to "
            f"steps (give it in tokens or batches)"
        )


def simulate_schedule(
    cfg: DictConfig, packing_efficiency: float = 1.0, world_size: int | None = None, max_points: int = 5000
) -> Schedule:
    """LR and global batch size of the optimizer steps of `cfg` (a config from `load_config`).

    Every step is kept up to `2 * max_points` steps; longer runs keep every `stride`-th (a power of 2).
    """
    if not 0 < packing_efficiency <= 1:
        raise ValueError(f"packing_efficiency must be in (0, 1], got {packing_efficiency}")
    if world_size is not None and world_size < 1:  # 0 would silently fall back to $WORLD_SIZE
        raise ValueError(f"world_size (the number of ranks) must be at least 1, got {world_size}")
    _check_unit("max_duration", cfg.max_duration)
    _check_unit("scheduler.t_warmup", cfg.scheduler.t_warmup)
    _check_unit("scheduler.t_decay", cfg.scheduler.t_decay)
    world = world_size or int(os.environ.get("WORLD_SIZE", 1))
    warmup = warmup_from_config(cfg.data, world)
    args = {k: v for k, v in OmegaConf.to_container(cfg.scheduler).items() if k != "name" and v is not None}
    scheduler = build_scheduler(cfg.scheduler.name, **args)
    max_duration = Time.from_timestring(str(cfg.max_duration))
    state = SimpleNamespace(max_duration=max_duration, dataloader_len=None, timestamp=Timestamp())
    seq_len = int(cfg.data.max_seq_len)

    lr = float(cfg.optimizer.lr)

    def multiplier(batches: int, tokens: int) -> float:
        state.timestamp = Timestamp(
            batch=batches, token=tokens, batch_in_epoch=batches, token_in_epoch=tokens
        )
        return scheduler(state)

    out = Schedule([], [], [], [], [])

    def record(step: int, tokens: int, previous_tokens: int, global_batch: int, slots: int) -> None:
        out.steps.append(step)
        out.slots_before.append(slots)
        out.tokens_before.append(tokens)
        out.global_batch_size.append(global_batch)
        # Step i trains with the multiplier composer evaluated at the end of step i - 1, before advancing
        # its timestamp past it (see modernenc.train.schedulers): i - 1 steps and their tokens done.
        out.lr.append(lr * multiplier(max(step - 1, 0), previous_tokens))

    step = tokens = previous_tokens = 0
    stride, pending = 1, None
    while (step if max_duration.unit == TimeUnit.BATCH else tokens) < max_duration.value:
        global_batch = warmup.global_batch_size
        if global_batch == warmup.max_batch_size and out.full_batch_from is None:
            out.full_batch_from = (step, warmup.tokens_seen)
        row = (step, tokens, previous_tokens, global_batch, warmup.tokens_seen)
        pending = row
        if step % stride == 0:
            record(*row)
            pending = None
            if len(out.steps) > 2 * max_points:  # keep every other sample from now on
                keep = [k for k, s in enumerate(out.steps) if s % (2 * stride) == 0]
                for values in (out.steps, out.slots_before, out.tokens_before, out.lr, out.global_batch_size):
                    values[:] = [values[k] for k in keep]
                stride *= 2
        warmup.step(global_batch * seq_len)
        previous_tokens = tokens
        tokens += round(global_batch * seq_len * packing_efficiency)
        step += 1
    if pending is not None:
        record(*pending)
    out.num_steps, out.tokens_at_end = step, tokens
    return out


def check_output(path: str | Path, overwrite: bool = False) -> Path:
    """`path` as a Path; an existing file is refused unless `overwrite` (--force), and so is a name
    matplotlib cannot write (checked before the simulation, which takes seconds for a long run)."""
    from matplotlib.figure import Figure

    path = Path(path)
    formats = Figure().canvas.get_supported_filetypes()
    if path.suffix.lower().lstrip(".") not in formats:
        raise ValueError(f"{path}: give an image file name ending in one of .{', .'.join(sorted(formats))}")
    return check_output_file(path, kind="plot", force=overwrite, what="--out")


def step_axis_functions(schedule: Schedule) -> tuple[Callable, Callable]:
    """(tokens -> step, step -> tokens) for the plot's step axis: piecewise linear through every recorded
    step start and the end of training, continued beyond both ends at the run's mean tokens per step. The
    axes' margins lie outside the run; clamping there (plain `np.interp`) skews every tick of the step axis,
    and the first step's slope would stretch a batch-size warmup's margin into negative step ticks."""
    import numpy as np

    tokens = np.asarray([*schedule.tokens_before, schedule.tokens_at_end], dtype=float)
    steps = np.asarray([*schedule.steps, schedule.num_steps], dtype=float)

    def mapping(xp, fp):
        slope = (fp[-1] - fp[0]) / (xp[-1] - xp[0])

        def apply(values):
            values = np.asarray(values, dtype=float)
            inside = np.interp(values, xp, fp)
            below = fp[0] + (values - xp[0]) * slope
            above = fp[-1] + (values - xp[-1]) * slope
            return np.where(values < xp[0], below, np.where(values > xp[-1], above, inside))

        return apply

    return mapping(tokens, steps), mapping(steps, tokens)


def draw_schedule(schedule: Schedule, title: str = "") -> Figure:
    """The figure: two panels over training tokens (learning rate; global batch size in sequences), with
    the optimizer step on the top axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_lr, ax_bs) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    # steps-post draws each step up to the next one's start; repeat the last value to the end of training
    x_end = [*schedule.tokens_before, schedule.tokens_at_end]
    ax_lr.plot(x_end, [*schedule.lr, schedule.lr[-1]], drawstyle="steps-post")
    ax_lr.set(ylabel="learning rate", title=title or "schedule")
    bs = schedule.global_batch_size
    ax_bs.plot(x_end, [*bs, bs[-1]], drawstyle="steps-post", color="tab:orange")
    ax_bs.set(ylabel="global batch (sequences)", xlabel="training tokens (composer clock) at step start")
    secondary = ax_lr.secondary_xaxis("top", functions=step_axis_functions(schedule))
    secondary.set_xlabel("optimizer step")
    fig.tight_layout()
    return fig


def plot_schedule(schedule: Schedule, path: str | Path, title: str = "", overwrite: bool = False) -> Path:
    """Draw the schedule (`draw_schedule`) into the image file `path`."""
    path = check_output(path, overwrite)
    import matplotlib.pyplot as plt

    fig = draw_schedule(schedule, title)
    with writing_file(path, kind="plot", tool="plot-schedule") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path


def summarize(schedule: Schedule) -> str:
    lr, bs = schedule.lr, schedule.global_batch_size
    return (
        f"{schedule.num_steps} steps, {schedule.tokens_before[-1]:,} tokens before the last step; "
        f"peak LR {max(lr):.3g}, final LR {lr[-1]:.3g}; global batch {bs[0]} -> {bs[-1]} "
        f""
        + (
            f"(full from step {schedule.full_batch_from[0]}, {schedule.full_batch_from[1]:,} token slots)"
            if schedule.full_batch_from
            else "(the warmup outlasts the run)"
        )
    )
