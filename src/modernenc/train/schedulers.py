"""Warmup-stable-decay learning-rate schedules as stateless composer schedulers.

The math lives in pure functions (`warmup_multiplier`, `decay_multiplier`, `wsd_multiplier`) over plain
numbers, so a plotting tool can draw a schedule without a composer `State`. The scheduler classes only
turn durations ("3000ba", "0.1dur", "3e9tok") into numbers and call those functions.

Units. Warmup is measured from the start of training, so it may use any unit the trainer counts (batches,
samples, tokens) independently of `max_duration`. Decay is anchored to the *end* of training, so `t_decay`
must resolve to the unit of `max_duration` (fractions of "dur" always do). Token counts come from composer's
`state.timestamp.token`, i.e. from the dataloader's `DataSpec.get_num_tokens_in_batch`.

Timing. Composer evaluates schedulers at the end of batch k before advancing the timestamp, so batch
k >= 1 trains with the multiplier of timestamp k - 1 (as for composer's own schedulers): with alpha_i=0
the first two batches get LR 0, and the last batch of the run trains at the multiplier of two batches
before the end: just above alpha_f over thousands of decay steps, but e.g. 0.18x the peak LR over 6.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

from composer.core import State, Time, TimeUnit
from composer.optim import ComposerScheduler

from modernenc.utils.suggest import did_you_mean

__all__ = [
    "DECAY_SHAPES",
    "SCHEDULERS",
    "ConstantWithWarmupScheduler",
    "WarmupStableDecayScheduler",
    "build_scheduler",
    "decay_multiplier",
    "resolve_duration",
    "warmup_multiplier",
    "wsd_multiplier",
]

DECAY_SHAPES = ("linear", "1-sqrt", "cosine")
# ModernBERT's yaml spells the 1-sqrt schedule `one_minus_sqrt`; accept it so recipes port verbatim.
_SHAPE_ALIASES = {"one_minus_sqrt": "1-sqrt", "1_sqrt": "1-sqrt"}


# --------------------------------------------------------------------------------------- pure functions


def _check_alpha(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def _normalize_shape(shape: str) -> str:
    shape = _SHAPE_ALIASES.get(shape, shape)
    if shape not in DECAY_SHAPES:
        hint = did_you_mean(shape, DECAY_SHAPES)
        raise ValueError(f"decay_shape must be one of {DECAY_SHAPES}, got {shape!r}{hint}")
    return shape


def warmup_multiplier(elapsed: float, warmup: float, alpha_i: float = 0.0) -> float:
    """Linear ramp from `alpha_i` at 0 to 1.0 at `warmup`; 1.0 afterwards (and when `warmup` is 0)."""
    if warmup <= 0 or elapsed >= warmup:
        return 1.0
    return alpha_i + (1.0 - alpha_i) * max(elapsed, 0.0) / warmup


def decay_multiplier(elapsed: float, total: float, decay: float, shape: str, alpha_f: float) -> float:
    """1.0 until `total - decay`, then `shape` down to `alpha_f` at `total` (held there past the end)."""
    if decay <= 0:
        return 1.0
    progress = (elapsed - (total - decay)) / decay
    if progress <= 0:
        return 1.0
    progress = min(progress, 1.0)
    shape = _normalize_shape(shape)
    if shape == "linear":
        remaining = 1.0 - progress
    elif shape == "1-sqrt":
        remaining = 1.0 - math.sqrt(progress)
    else:  # cosine
        remaining = 0.5 * (1.0 + math.cos(math.pi * progress))
    # The floor guards against float round-off pushing the tail a hair below alpha_f.
    return max(alpha_f, alpha_f + (1.0 - alpha_f) * remaining)


def wsd_multiplier(
    step: float,
    total: float,
    warmup: float,
    decay: float,
    shape: str = "1-sqrt",
    alpha_f: float = 0.0,
    alpha_i: float = 0.0,
) -> float:
    """LR multiplier at `step` of a warmup-stable-decay schedule; all four times share one unit.

    `[0, warmup)`: linear `alpha_i -> 1`; then 1.0; over the final `decay` of `total`: `shape` `1 -> alpha_f`.
    """
    if total <= 0:
        raise ValueError(f"total must be positive, got {total}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if decay < 0:
        raise ValueError(f"decay must be >= 0, got {decay}")
    if warmup + decay > total:
        raise ValueError(f"warmup ({warmup}) + decay ({decay}) exceeds the run length total ({total})")
    _check_alpha("alpha_i", alpha_i)
    _check_alpha("alpha_f", alpha_f)
    shape = _normalize_shape(shape)
    if step < warmup:
        return warmup_multiplier(step, warmup, alpha_i)
    return decay_multiplier(step, total, decay, shape, alpha_f)


# --------------------------------------------------------------------------------------- durations


def _parse_duration(name: str, value: str | Time) -> Time:
    """Parse and sanity-check a duration at construction time, naming the offending argument."""
    if isinstance(value, str):
        try:
            value = Time.from_timestring(value)
        except ValueError as err:
            raise ValueError(f"{name}: cannot parse duration {value!r} ({err})") from None
    if not isinstance(value, Time):
        raise ValueError(f"{name} must be a duration string like '3000ba' or a composer Time, got {value!r}")
    if value.unit == TimeUnit.SECOND:
        raise ValueError(f"{name}: wall-clock durations are not supported, got {value}")
    if value.value < 0:
        raise ValueError(f"{name} must be non-negative, got {value}")
    if value.unit == TimeUnit.DURATION and value.value > 1:
        raise ValueError(f"{name} is a fraction of the run and must be <= 1dur, got {value}")
    return value


def resolve_duration(time: str | Time, state: State, ssr: float = 1.0) -> Time[int]:
    """Resolve `time` to an integer count in a unit the trainer's timestamp tracks.

    Same contract as composer's private `_convert_time` ("dur" -> unit of `max_duration`, epochs ->
    batches, others scaled by `ssr`), but rounds instead of truncating: `int(0.29 * 100)` is 28.
    `max_duration` is already multiplied by the scale-schedule ratio by the trainer, so "dur" is not.
    """
    time = Time.from_timestring(time) if isinstance(time, str) else time
    max_duration = state.max_duration
    if max_duration is None:
        raise ValueError("schedulers need state.max_duration to be set")

    def batches_per_epoch() -> int:
        if state.dataloader_len is None:
            raise ValueError(f"cannot convert {time} to batches: the train dataloader has no length")
        return int(state.dataloader_len)

    if time.unit == TimeUnit.DURATION:
        if max_duration.unit == TimeUnit.EPOCH:
            return Time(round(time.value * max_duration.value * batches_per_epoch()), TimeUnit.BATCH)
        return Time(round(time.value * max_duration.value), max_duration.unit)
    if time.unit == TimeUnit.EPOCH:  # epochs are too coarse to scale by ssr
        time = Time(time.value * batches_per_epoch(), TimeUnit.BATCH)
    return Time(round(time.value * ssr), time.unit)


# --------------------------------------------------------------------------------------- schedulers


class WarmupStableDecayScheduler(ComposerScheduler):
    r"""Linear warmup, constant plateau, and a final decay ("trapezoidal"/WSD schedule).

    .. math::
        \alpha(t) = \begin{cases}
            \alpha_i + (1 - \alpha_i)\, t / t_w & t < t_w \\
            1 & t < T - t_d \\
            \alpha_f + (1 - \alpha_f)\, s(p),\quad p = (t - T + t_d) / t_d & \text{otherwise}
        \end{cases}

    with :math:`s(p) = 1 - p`, :math:`1 - \sqrt{p}` (ModernBERT) or :math:`(1 + \cos \pi p) / 2`, and
    :math:`T` = ``max_duration``. ModernBERT's three phases map to: pretraining
    ``(t_warmup="3000000000tok", t_decay="0ba")``, context extension
    ``ConstantWithWarmupScheduler("0ba")``, and annealing
    ``(t_warmup="0ba", t_decay="1dur", decay_shape="1-sqrt", alpha_f=0.001)``.

    Args:
        t_warmup: Warmup length from the start of training, in any trainer unit.
        t_decay: Length of the final decay; must resolve to the unit of ``max_duration``. ``"0ba"`` for none.
        decay_shape: One of ``"linear"``, ``"1-sqrt"``, ``"cosine"``.
        alpha_f: Final multiplier at the end of the decay.
        alpha_i: Multiplier at the first step of warmup.
        scale_warmup: Also stretch the warmup by the scale-schedule ratio (composer's default is not to).
    """

    def __init__(
        self,
        t_warmup: str | Time,
        t_decay: str | Time,
        decay_shape: str = "1-sqrt",
        alpha_f: float = 0.0,
        alpha_i: float = 0.0,
        scale_warmup: bool = False,
    ) -> None:
        self.t_warmup = _parse_duration("t_warmup", t_warmup)
        self.t_decay = _parse_duration("t_decay", t_decay)
        self.decay_shape = _normalize_shape(decay_shape)
        _check_alpha("alpha_f", alpha_f)
        _check_alpha("alpha_i", alpha_i)
        self.alpha_f = alpha_f
        self.alpha_i = alpha_i
        self.scale_warmup = scale_warmup
        w, d = self.t_warmup, self.t_decay
        if w.unit == d.unit == TimeUnit.DURATION and w.value + d.value > 1:
            raise ValueError(f"t_warmup ({w}) + t_decay ({d}) is longer than the run (1dur)")

    def __call__(self, state: State, ssr: float = 1.0) -> float:
        total = resolve_duration("1dur", state)
        warmup = resolve_duration(self.t_warmup, state, ssr if self.scale_warmup else 1.0)
        decay = resolve_duration(self.t_decay, state, ssr)
        self._check_resolved(total, warmup, decay)
        if TimeUnit.TOKEN in (warmup.unit, total.unit) and state.timestamp.batch.value > 0:
            if state.timestamp.token.value == 0:  # else a token warmup would never end
                raise ValueError(
                    "the schedule counts tokens but the train dataloader reports none; give its DataSpec a "
                    "get_num_tokens_in_batch (composer only counts dict batches with 'input_ids')"
                )

        warmup_elapsed = state.timestamp.get(warmup.unit).value
        if warmup_elapsed < warmup.value:
            return warmup_multiplier(warmup_elapsed, warmup.value, self.alpha_i)
        elapsed = state.timestamp.get(total.unit).value
        return decay_multiplier(elapsed, total.value, decay.value, self.decay_shape, self.alpha_f)

    def _check_resolved(self, total: Time, warmup: Time, decay: Time) -> None:
        if decay.value > 0 and decay.unit != total.unit:
            raise ValueError(
                f"t_decay ({self.t_decay}) must be in the unit of max_duration ({total.unit.value}) or a "
                f"fraction like '0.1dur', because the decay is anchored to the end of training"
            )
        # With mixed units (e.g. tokens vs batches) overlap cannot be checked; warmup then takes precedence.
        if warmup.unit == total.unit and warmup.value + decay.value > total.value:
            raise ValueError(
                f"t_warmup ({self.t_warmup} = {warmup}) + t_decay ({self.t_decay} = {decay}) is longer "
                f"than the run ({total})"
            )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(t_warmup={self.t_warmup}, t_decay={self.t_decay}, "
            f"decay_shape={self.decay_shape!r}, alpha_f={self.alpha_f}, alpha_i={self.alpha_i})"
        )


class ConstantWithWarmupScheduler(WarmupStableDecayScheduler):
    """Linear warmup from `alpha_i` to 1, then constant. Unlike composer's scheduler of the same name,
    the warmup may be counted in a different unit (e.g. tokens) than `max_duration`."""

    def __init__(self, t_warmup: str | Time, alpha_i: float = 0.0, scale_warmup: bool = False) -> None:
        super().__init__(t_warmup, "0ba", "linear", alpha_f=1.0, alpha_i=alpha_i, scale_warmup=scale_warmup)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(t_warmup={self.t_warmup}, alpha_i={self.alpha_i})"


# --------------------------------------------------------------------------------------- registry

SCHEDULERS: dict[str, type[ComposerScheduler]] = {
    "warmup_stable_decay": WarmupStableDecayScheduler,
    "constant_with_warmup": ConstantWithWarmupScheduler,
}


def build_scheduler(name: str, **kwargs: Any) -> ComposerScheduler:
    """Build a scheduler from the registry by name, rejecting unknown names and arguments up front."""
    if name not in SCHEDULERS:
        raise ValueError(
            f"unknown scheduler {name!r}{did_you_mean(name, SCHEDULERS)}; choose from {sorted(SCHEDULERS)}"
        )
    cls = SCHEDULERS[name]
    params = inspect.signature(cls).parameters
    for key in kwargs:
        if key not in params:
            raise ValueError(
                f"unknown argument {key!r} for scheduler {name!r}{did_you_mean(key, params)}; "
                f"accepted: {list(params)}"
            )
    missing = [k for k, p in params.items() if p.default is inspect.Parameter.empty and k not in kwargs]
    if missing:
        raise ValueError(f"scheduler {name!r} is missing required argument(s) {missing}")
    return cls(**kwargs)
