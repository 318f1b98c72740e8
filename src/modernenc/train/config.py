"""The typed schema behind every training yaml, and loading with command-line overrides.

A yaml is merged onto `TrainConfig` with OmegaConf, so a misspelled key or a wrong type fails before
anything is built, with the key's full path and the nearest valid key.
"""

from __future__ import annotations

import difflib
import os
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    InterpolationResolutionError,
    OmegaConfBaseException,
    ValidationError,
)

from modernenc.data.masking import DEFAULT_EVAL_MLM_PROBABILITY, DEFAULT_TRAIN_MLM_PROBABILITY
from modernenc.model.config import PRESETS, ModernEncoderConfig
from modernenc.utils.suggest import did_you_mean
from modernenc.utils.tables import read_text

TASKS = ("mlm", "classification", "token_classification")
DEFAULT_PRESET = "mini"  # a random init's sizes when model.preset is null


@dataclass
class ModelConfig:
    task: str = "mlm"  # mlm (pre-training, annealing), classification or token_classification
    # Sizes for a random init (null: DEFAULT_PRESET). With init_from the checkpoint's sizes are used; a
    # preset given too must match them, so a wrong checkpoint cannot train under another size's recipe.
    preset: str | None = None
    # Start from these weights instead: a Hugging Face folder or hub id, or a `*.pt` checkpoint written by
    # train.py. Only the weights are taken; the clock, optimizer and schedule start fresh.
    init_from: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # ModernEncoderConfig fields


@dataclass
class BatchSizeWarmupConfig:
    """The global batch grows from `min_batch_size` to `data.global_batch_size` over `warmup_tokens`."""

    min_batch_size: int | None = None  # sequences of max_seq_len; None turns the warmup off
    warmup_tokens: int = 0


@dataclass
class DataConfig:
    # mlm: MDS folders (or remote URIs). classification: JSONL/CSV/parquet files, or split names of
    # `dataset` when that names a Hugging Face dataset.
    train: str = "???"
    eval: str | None = None
    test: str | None = None  # classification only: evaluated once, with the thresholds chosen on `eval`
    dataset: str | None = None
    dataset_config: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    labels: list[str] | None = None  # label values in class-id order; default: sorted training values
    tokenizer: str = "???"
    max_seq_len: int = 1024
    # mlm: sequences of max_seq_len per packed micro-batch; classification: examples per micro-batch.
    micro_batch_size: int = 8
    global_batch_size: int | None = None  # per optimizer step over all ranks; default: one micro-batch each
    batch_size_warmup: BatchSizeWarmupConfig = field(default_factory=BatchSizeWarmupConfig)
    mlm_probability: float = DEFAULT_TRAIN_MLM_PROBABILITY
    eval_mlm_probability: float = DEFAULT_EVAL_MLM_PROBABILITY
    # Sequences held for best-fit packing; null: max(128, 16 x micro_batch_size). On the Wikipedia sample
    # at ModernBERT's 96 x 1024 slots that packs 99.8% full, against 98.4% with a fixed 128.
    buffer_size: int | None = None
    num_workers: int = 0
    seed: int = 17  # the training stream's order and masks; held-out masks never change (EVAL_MASK_SEED)


@dataclass
class OptimizerConfig:
    name: str = "stableadamw"
    lr: float = 8e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    weight_decay: float = 1e-5
    decay_embeddings: bool = True  # as ModernBERT, which exempts only norms and biases


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
class EvaluationConfig:
    """Classification only: how the best checkpoint and the decision thresholds are chosen."""

    positive_label: str | None = None  # the event to detect; default: of two labels, the one not 0/false/no/O
    target_recall: float = 0.95  # a threshold is chosen on `data.eval` to reach this sensitivity
    early_stopping_patience: int = 3  # evaluations without a better validation F1; 0 turns it off


@dataclass
class LoraConfig:
    """Low-rank adapters (peft) on the named linear layers; everything else is frozen except
    `modules_to_save`, which train in full. Merged into the weights whenever a model is saved."""

    r: int = 8  # rank: a good default for small encoders (Taylor et al. 2024)
    alpha: float = 16.0  # the update is scaled by alpha / r
    dropout: float = 0.05  # on the adapter's input
    # Matched by module-name suffix, as peft does: a bare `Wo` is both the attention and the MLP output.
    target_modules: list[str] = field(default_factory=lambda: ["Wqkv", "Wo", "Wi"])
    modules_to_save: list[str] = field(default_factory=lambda: ["head", "classifier"])


@dataclass
class FinetuneConfig:
    """Classification tasks only: how the encoder is adapted."""

    lora: LoraConfig | None = None  # null: full fine-tuning; `finetune.lora={}` takes LoraConfig's defaults


@dataclass
class LoggingConfig:
    progress_bar: bool = True
    log_interval: str = "1ba"
    wandb: bool = False
    wandb_project: str = "modernenc"
    plots: bool = True  # loss and LR curves as a PNG next to the checkpoints
    # FLOP/s of one device, for the logged MFU (`throughput/mfu`); null turns MFU off. The default is the
    # fp32 matmul rate of this project's 2-core AVX2 dev box when quiet (156.6 GFLOP/s at 2048², see
    # docs/benchmarks.md; 108-114 on a busier day); an H100's dense bf16 peak is 989e12. How to measure
    # yours: docs/recipes.md.
    peak_flops: float | None = 1.5e11


@dataclass
class TrainConfig:
    run_name: str = "???"
    save_folder: str = "checkpoints/${run_name}"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    max_duration: str = "100ba"
    eval_interval: str = "50ba"
    eval_subset_num_batches: int = 8
    save_interval: str = "50ba"
    save_num_checkpoints_to_keep: int = 2
    autoresume: bool = False
    force: bool = False  # consent to replace the checkpoints of an earlier run in save_folder
    precision: str = "fp32"  # or amp_bf16
    device: str | None = None  # cpu or gpu; default: gpu when one is available
    seed: int = 17
    grad_clip_norm: float | None = 1.0  # clip the global gradient norm to this; 0 or null turns it off
    # Fully sharded data parallel over the ranks: composer's FSDP options, e.g. {sharding_strategy:
    # FULL_SHARD}; {} takes its defaults. null: plain DDP (every rank holds the whole model).
    fsdp: dict[str, Any] | None = None


class ConfigError(ValueError):
    """A training config that cannot run: names the key and what is wrong."""


def _nearest_key(schema: Any, dotted: str) -> str:
    """The closest valid key to a misspelled dotted path, searched at its own level."""
    *parents, leaf = dotted.split(".")
    node = schema
    for part in parents:
        child = getattr(node, part, None)
        if child is None and is_dataclass(node):  # an optional section left at null: its declared type
            hint = typing.get_type_hints(type(node)).get(part)
            child = next((t() for t in typing.get_args(hint) if is_dataclass(t)), None)
        node = child
    candidates = [f.name for f in fields(node)] if node is not None and is_dataclass(node) else []
    match = difflib.get_close_matches(leaf, candidates, n=1)
    return ".".join([*parents, match[0]]) if match else ""


_YAML_TYPES = {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}


def _unresolvable_key(node: DictConfig, prefix: str = "") -> str | None:
    """The first key whose interpolation fails (OmegaConf.resolve's error does not name it)."""
    for key in node:
        dotted = f"{prefix}{key}"
        try:
            value = node[key]
        except InterpolationResolutionError:
            return dotted
        if isinstance(value, DictConfig):
            found = _unresolvable_key(value, dotted + ".")
            if found:
                return found
    return None


def _parse_overrides(overrides: list[str]) -> DictConfig:
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override {override!r} is not key=value (e.g. optimizer.lr=3e-4)")
        try:
            OmegaConf.from_dotlist([override])
        except (OmegaConfBaseException, yaml.YAMLError) as err:  # e.g. an unclosed bracket in the value
            reason = getattr(err, "problem", None) or " ".join(str(err).splitlines()[0].split())
            raise ConfigError(f"override {override!r} cannot be parsed: {reason}") from None
    return OmegaConf.from_dotlist(overrides)


def _check_sections(values: dict, schema: type, where: object, prefix: str = "") -> None:
    """A section of the schema (model, data, ...) must be given as a mapping; omegaconf's own error for
    another value names no key."""
    for f in fields(schema):
        value = values.get(f.name) if isinstance(values, dict) else None
        section = f.default_factory if is_dataclass(f.default_factory) else None  # type: ignore[misc]
        if section is None or value is None:
            continue
        key = f"{prefix}{f.name}"
        if not isinstance(value, dict):
            kind = _YAML_TYPES.get(type(value), type(value).__name__)
            raise ConfigError(
                f"{where}: key '{key}' must be a mapping of its keys (e.g. {key}: {{...}}), not a {kind}"
            )
        _check_sections(value, section, where, key + ".")


def _missing_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """Required keys left at '???', dotted. Interpolations (save_folder: checkpoints/${run_name}) are not
    resolved here: their error would name the interpolating key, not the missing one."""
    found = []
    for key in node:
        dotted = f"{prefix}{key}"
        if OmegaConf.is_missing(node, key):
            found.append(dotted)
        elif not OmegaConf.is_interpolation(node, key) and isinstance(node[key], DictConfig):
            found += _missing_keys(node[key], dotted + ".")
    return sorted(found)


def _packaged_recipe(path: Path) -> Path:
    """A yaml that is not a file here may name a recipe shipped with the package (`quickstart/pretrain`)."""
    from modernenc.train.recipes import list_recipes, recipe_path

    if path.suffix in ("", ".yaml") and not path.is_absolute() and ".." not in path.parts:
        try:
            return recipe_path(str(path))
        except FileNotFoundError:
            pass
    hint = did_you_mean(path.with_suffix("").as_posix().removeprefix("yamls/"), list_recipes())
    raise ConfigError(
        f"config file {path} does not exist, nor is it a packaged recipe{hint}; `modernenc recipes` "
        "lists them"
    )


def load_config(yaml_path: str | Path, overrides: list[str] | None = None) -> DictConfig:
    """Merge `yaml_path` (a file, or the name of a packaged recipe) and `key=value` overrides onto the
    schema; raise `ConfigError` on bad input."""
    path = Path(yaml_path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give a training yaml (or a recipe name, `modernenc recipes`)")
    if not path.is_file():
        path = _packaged_recipe(path)
    schema = OmegaConf.structured(TrainConfig)
    text = read_text(path)  # a non-UTF-8 yaml fails naming its line
    try:
        top = yaml.safe_load(text)
        loaded = OmegaConf.create(text) if top is not None else OmegaConf.create({})
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or " ".join(str(err).split())
        raise ConfigError(f"{where} is not valid YAML: {problem}") from None
    if not isinstance(top, dict | None):
        raise ConfigError(
            f"{path}: the top level must be a mapping of keys to values (run_name: ..., data: ...), not a "
            f"{_YAML_TYPES.get(type(top), type(top).__name__)}"
        )
    _check_sections(top or {}, TrainConfig, path)
    command_line = _parse_overrides(overrides or [])
    _check_sections(OmegaConf.to_container(command_line), TrainConfig, "the command line")
    try:
        merged = OmegaConf.merge(schema, loaded, command_line)
        missing = _missing_keys(merged)
        if not missing:
            OmegaConf.resolve(merged)
    except InterpolationResolutionError as err:
        key = err.full_key or _unresolvable_key(merged) or "?"
        raw = OmegaConf.to_container(merged, resolve=False)
        for part in key.split("."):
            raw = raw.get(part) if isinstance(raw, dict) else None
        reason = str(err).splitlines()[0]
        raise ConfigError(f"{path}: key '{key}' ({raw}) cannot be resolved: {reason}") from None
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
    if cfg.model.preset is not None and cfg.model.preset not in PRESETS:
        raise ConfigError(
            f"{path}: model.preset={cfg.model.preset!r}{did_you_mean(cfg.model.preset, PRESETS)}; "
            f"choose one of {sorted(PRESETS)}"
        )
    model_keys = [f.name for f in fields(ModernEncoderConfig)]
    unknown = [str(key) for key in cfg.model.overrides if key not in model_keys]
    if unknown:  # else ModernEncoderConfig's own TypeError, after the data is loaded
        raise ConfigError(
            f"{path}: unknown key 'model.overrides.{unknown[0]}'{did_you_mean(unknown[0], model_keys)}; "
            "the keys are ModernEncoderConfig's fields (src/modernenc/model/config.py)"
        )
    if cfg.data.max_seq_len < 1:
        raise ConfigError(f"{path}: data.max_seq_len={cfg.data.max_seq_len} must be positive")
    if cfg.data.num_workers < 0:  # else torch's DataLoader refuses it, at the first batch
        raise ConfigError(
            f"{path}: data.num_workers={cfg.data.num_workers} must be >= 0 (0: read in-process)"
        )
    if cfg.eval_subset_num_batches == 0 or cfg.eval_subset_num_batches < -1:  # 0 evaluates nothing
        raise ConfigError(
            f"{path}: eval_subset_num_batches={cfg.eval_subset_num_batches} must be positive, or -1 for "
            "the whole eval split"
        )
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
        must_be_positive = key in ("max_duration", "eval_interval", "save_interval")
        if parsed.value < 0 or (must_be_positive and parsed.value == 0):
            raise ConfigError(f"{path}: {key}={value!r} must be {'positive' if must_be_positive else '>= 0'}")
    if cfg.model.task == "mlm" and str(cfg.max_duration).endswith("ep"):
        uses_dur = [k for k in ("t_warmup", "t_decay") if str(cfg.scheduler[k] or "").endswith("dur")]
        if uses_dur:  # composer converts 'dur' with the dataloader's length, which a stream does not have
            raise ConfigError(
                f"{path}: max_duration={cfg.max_duration} with scheduler.{uses_dur[0]} in 'dur': streamed "
                "MLM data has no length, so give max_duration in 'ba' or 'tok'"
            )
    if cfg.precision not in ("fp32", "amp_bf16"):
        raise ConfigError(f"{path}: precision={cfg.precision!r}; choose 'fp32' or 'amp_bf16'")
    if cfg.grad_clip_norm is not None and cfg.grad_clip_norm < 0:
        raise ConfigError(f"{path}: grad_clip_norm={cfg.grad_clip_norm} must be >= 0 (0 or null: off)")
    if cfg.device not in (None, "cpu", "gpu"):
        raise ConfigError(f"{path}: device={cfg.device!r}; choose 'cpu', 'gpu' or null (gpu when available)")
    betas = list(cfg.optimizer.betas)
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ConfigError(f"{path}: optimizer.betas={betas} must be two numbers in [0, 1), e.g. [0.9, 0.98]")
    if not 0 < cfg.evaluation.target_recall <= 1:
        raise ConfigError(
            f"{path}: evaluation.target_recall={cfg.evaluation.target_recall} must be in (0, 1]"
        )
    if cfg.evaluation.early_stopping_patience < 0:
        raise ConfigError(
            f"{path}: evaluation.early_stopping_patience={cfg.evaluation.early_stopping_patience} must be "
            ">= 0 (0: never stop early)"
        )
    _check_lora(cfg, path)
    _check_fsdp(cfg, path)
    _check_batch_sizes(cfg, path)
    _check_token_warmup_fits(cfg, path)


def _check_token_warmup_fits(cfg: DictConfig, path: Path) -> None:
    """A warmup in tokens longer than a run in batches can hold, even with every slot filled, keeps the
    learning rate below its peak for the whole run (`yamls/pretrain.yaml max_duration=100ba`). Other mixes
    of units cannot be compared before training; the scheduler checks those it can when the Trainer starts."""
    from composer.core import Time, TimeUnit

    total, warmup = (
        Time.from_timestring(str(cfg.max_duration)),
        Time.from_timestring(str(cfg.scheduler.t_warmup)),
    )
    if cfg.model.task != "mlm" or total.unit != TimeUnit.BATCH or warmup.unit != TimeUnit.TOKEN:
        return
    sequences = cfg.data.global_batch_size or cfg.data.micro_batch_size * int(os.environ.get("WORLD_SIZE", 1))
    most = total.value * sequences * cfg.data.max_seq_len
    if warmup.value > most:
        raise ConfigError(
            f"{path}: scheduler.t_warmup={cfg.scheduler.t_warmup} is more tokens than max_duration="
            f"{cfg.max_duration} can hold ({total.value:,} steps x {sequences} sequences x "
            f"{cfg.data.max_seq_len} tokens = {most:,} at most), so the learning rate would never reach "
            "optimizer.lr; shorten scheduler.t_warmup or lengthen max_duration"
        )


def _check_lora(cfg: DictConfig, path: Path) -> None:
    lora = cfg.finetune.lora
    if lora is None:
        return
    if cfg.model.task == "mlm":
        raise ConfigError(
            f"{path}: finetune.lora applies to classification and token_classification, not model.task=mlm"
        )
    if lora.r < 1:
        raise ConfigError(f"{path}: finetune.lora.r={lora.r} must be a positive rank (8 is a good default)")
    if lora.alpha <= 0:
        raise ConfigError(f"{path}: finetune.lora.alpha={lora.alpha} must be positive")
    if not 0 <= lora.dropout < 1:
        raise ConfigError(f"{path}: finetune.lora.dropout={lora.dropout} must be in [0, 1)")
    if not lora.target_modules:
        raise ConfigError(f"{path}: finetune.lora.target_modules is empty; name layers such as Wqkv, Wo, Wi")


def trains_on_gpu(cfg: DictConfig) -> bool:
    """composer's device rule: `device` if set, else the GPU when one is available."""
    import torch

    return cfg.device == "gpu" or (cfg.device is None and torch.cuda.is_available())


def _check_fsdp(cfg: DictConfig, path: Path) -> None:
    """composer's FSDPConfig accepts any key silently, so a misspelled option would be ignored."""
    if cfg.fsdp is None:
        return
    from composer.utils.parallelism import FSDPConfig

    if not trains_on_gpu(cfg):
        raise ConfigError(
            f"{path}: fsdp needs GPUs (composer's FSDP runs on CUDA); on CPU set fsdp=null to train "
            "with DDP, which `composer -n N` gives by default"
        )

    known = [f.name for f in fields(FSDPConfig) if not f.name.startswith("_")]
    for key in cfg.fsdp:
        if key not in known:
            hint = difflib.get_close_matches(str(key), known, n=1)
            raise ConfigError(
                f"{path}: unknown key 'fsdp.{key}'" + (f" (did you mean 'fsdp.{hint[0]}'?)" if hint else "")
            )


def _check_batch_sizes(cfg: DictConfig, path: Path) -> None:
    """Global batch sizes must split exactly into micro-batches on every rank (sizes in sequences)."""
    data, warmup = cfg.data, cfg.data.batch_size_warmup
    if cfg.model.task != "mlm" and (data.global_batch_size is not None or warmup.min_batch_size is not None):
        raise ConfigError(
            f"{path}: data.global_batch_size and data.batch_size_warmup apply to model.task=mlm only"
        )
    if data.micro_batch_size <= 0:
        raise ConfigError(f"{path}: data.micro_batch_size={data.micro_batch_size} must be positive")
    world = int(os.environ.get("WORLD_SIZE", 1))
    step = data.micro_batch_size * world
    unit = f"micro_batch_size * world_size = {data.micro_batch_size} * {world} = {step}"
    global_batch = data.global_batch_size if data.global_batch_size is not None else step
    if global_batch <= 0 or global_batch % step:
        raise ConfigError(
            f"{path}: data.global_batch_size={global_batch} must be a positive multiple of {unit}"
        )
    if warmup.min_batch_size is None:
        return
    if warmup.min_batch_size <= 0 or warmup.min_batch_size % step:
        raise ConfigError(
            f"{path}: data.batch_size_warmup.min_batch_size={warmup.min_batch_size} must be a positive "
            f"multiple of {unit}"
        )
    if warmup.min_batch_size > global_batch:
        raise ConfigError(
            f"{path}: data.batch_size_warmup.min_batch_size={warmup.min_batch_size} exceeds "
            f"data.global_batch_size={global_batch}"
        )
    if warmup.warmup_tokens <= 0:
        raise ConfigError(
            f"{path}: data.batch_size_warmup.warmup_tokens={warmup.warmup_tokens} must be positive when "
            f"min_batch_size is set (null min_batch_size turns the warmup off)"
        )
