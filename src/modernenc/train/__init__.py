"""Training components: learning-rate schedules and optimizers for composer."""

from modernenc.utils.lazy import lazy_exports

# name -> the module that defines it; imported on first use (torch takes seconds to load)
_EXPORTS = {
    "NO_DECAY_MODULES": "modernenc.train.optimizers",
    "OPTIMIZERS": "modernenc.train.optimizers",
    "build_optimizer": "modernenc.train.optimizers",
    "param_groups": "modernenc.train.optimizers",
    "param_groups_summary": "modernenc.train.optimizers",
    "DECAY_SHAPES": "modernenc.train.schedulers",
    "SCHEDULERS": "modernenc.train.schedulers",
    "ConstantWithWarmupScheduler": "modernenc.train.schedulers",
    "WarmupStableDecayScheduler": "modernenc.train.schedulers",
    "build_scheduler": "modernenc.train.schedulers",
    "decay_multiplier": "modernenc.train.schedulers",
    "resolve_duration": "modernenc.train.schedulers",
    "warmup_multiplier": "modernenc.train.schedulers",
    "wsd_multiplier": "modernenc.train.schedulers",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
