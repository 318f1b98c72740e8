"""The typed schema behind every training yaml, and loading with command-line overrides.

A yaml is merged onto `TrainConfig` with OmegaConf, so a misspelled key or a wrong type fails before
anything is built, with the key's full path and the nearest valid key.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

TASKS = ("mlm",)  # classification fine-tuning arrives with the adaptation work


@dataclass
class ModelConfig:
    task: str = "mlm"
    preset: str = "mini"  # architecture when starting from random init
    init_from: str | None = None  # a Hugging Face folder / hub id to start from instead
    overrides: dict[str, Any] = field(default_factory=dict)  # ModernEncoderConfig fields


@dataclass
class DataConfig:
    train: str = "???"  # MDS folder (or remote URI) of the training split
    eval: str | None = None
    tokenizer: str = "???"
    max_seq_len: int = 1024
    micro_batch_size: int = 8  # sequences of max_seq_len per packed micro-batch
    mlm_probability: float = 0.3
    eval_mlm_probability: float = 0.15
    buffer_size: int = 128
    num_workers: int = 0
    seed: int = 17


@dataclass
class OptimizerConfig:
    name: str = "stableadamw"
    lr: float = 8e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    weight_decay: float = 1e-5
    decay_embeddings: bool = False


@dataclass
class SchedulerConfig:
    """Arguments of a scheduler in `modernenc.train.schedulers.SCHEDULERS`; unset ones keep its defaults."""

    name: str = "warmup_stable_decay"
    t_warmup: str = "0.1dur"
    t_decay: str | None = None
    decay_shape: str | None = None
    alpha_f: float | None = None
    alpha_i: float | None = None


@dataclass
class LoggingConfig:
    progress_bar: bool = True
    log_interval: str = "1ba"
    wandb: bool = False
    wandb_project: str = "modernenc"


@dataclass
class TrainConfig:
    run_name: str = "???"
    save_folder: str = "checkpoints/${run_name}"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    max_duration: str = "100ba"
    eval_interval: str = "50ba"
    eval_subset_num_batches: int = 8
    save_interval: str = "50ba"
    save_num_checkpoints_to_keep: int = 2
    autoresume: bool = False
    force: bool = False  # consent to replace the checkpoints of an earlier run in save_folder
    precision: str = "fp32"  # or amp_bf16
    device: str = "cpu"
    seed: int = 17
    grad_clip_norm: float = 1.0


class ConfigError(ValueError):
    """A training config that cannot run: names the key and what is wrong."""


def _nearest_key(schema: Any, dotted: str) -> str:
    """The closest valid key to a misspelled dotted path, searched at its own level."""
    *parents, leaf = dotted.split(".")
    node = schema
    for part in parents:
        node = getattr(node, part, None)
    candidates = [f.name for f in fields(node)] if node is not None and is_dataclass(node) else []
    match = difflib.get_close_matches(leaf, candidates, n=1)
    return ".".join([*parents, match[0]]) if match else ""


def load_config(yaml_path: str | Path, overrides: list[str] | None = None) -> DictConfig:
    """Merge `yaml_path` and `key=value` overrides onto the schema; raise `ConfigError` on bad input."""
    path = Path(yaml_path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    schema = OmegaConf.structured(TrainConfig)
    try:
        merged = OmegaConf.merge(schema, OmegaConf.load(path), OmegaConf.from_dotlist(overrides or []))
        missing = sorted(
            k for k in OmegaConf.missing_keys(merged) if not OmegaConf.is_interpolation(merged, k)
        )
        if not missing:
            OmegaConf.resolve(merged)
    except (ConfigKeyError, ConfigAttributeError) as err:
        key = err.full_key or str(err.key)
        hint = _nearest_key(TrainConfig(), key)
        raise ConfigError(
            f"{path}: unknown key '{key}'" + (f" (did you mean '{hint}'?)" if hint else "")
        ) from None
    except ValidationError as err:
        reason = str(err.msg).splitlines()[0]
        raise ConfigError(f"{path}: key '{err.full_key}' has a wrong type: {reason}") from None
    if missing:
        raise ConfigError(f"{path}: required key(s) not set: {', '.join(missing)}")
    _check_values(merged, path)
    return merged


def _check_values(cfg: DictConfig, path: Path) -> None:
    from composer.core import Time

    if cfg.model.task not in TASKS:
        raise ConfigError(f"{path}: model.task={cfg.model.task!r}; choose one of {TASKS}")
    for key in ("max_duration", "eval_interval", "save_interval", "scheduler.t_warmup", "scheduler.t_decay"):
        value = OmegaConf.select(cfg, key)
        if value is None:
            continue
        try:
            parsed = Time.from_timestring(str(value))
        except ValueError:
            raise ConfigError(
                f"{path}: {key}={value!r} is not a duration like '100ba', '2ep' or '0.1dur'"
            ) from None
        if parsed.value < 0 or (key == "max_duration" and parsed.value == 0):
            raise ConfigError(
                f"{path}: {key}={value!r} must be {'positive' if key == 'max_duration' else '>= 0'}"
            )
    if cfg.precision not in ("fp32", "amp_bf16"):
        raise ConfigError(f"{path}: precision={cfg.precision!r}; choose 'fp32' or 'amp_bf16'")
