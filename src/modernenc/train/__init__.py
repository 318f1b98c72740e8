"""Training components: learning-rate schedules and optimizers for composer."""

from modernenc.train.optimizers import (
    NO_DECAY_MODULES,
    OPTIMIZERS,
    build_optimizer,
    param_groups,
    param_groups_summary,
)
from modernenc.train.schedulers import (
    DECAY_SHAPES,
    SCHEDULERS,
    ConstantWithWarmupScheduler,
    WarmupStableDecayScheduler,
    build_scheduler,
    decay_multiplier,
    resolve_duration,
    warmup_multiplier,
    wsd_multiplier,
)

__all__ = [
    "DECAY_SHAPES",
    "NO_DECAY_MODULES",
    "OPTIMIZERS",
    "SCHEDULERS",
    "ConstantWithWarmupScheduler",
    "WarmupStableDecayScheduler",
    "build_optimizer",
    "build_scheduler",
    "decay_multiplier",
    "param_groups",
    "param_groups_summary",
    "resolve_duration",
    "warmup_multiplier",
    "wsd_multiplier",
]
