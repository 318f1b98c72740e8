"""Turn a validated `TrainConfig` into the objects composer's `Trainer` takes. Each builder is used once."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from composer import Trainer
from composer.algorithms import GradientClipping
from composer.callbacks import LRMonitor
from composer.core import Callback, DataSpec, State
from composer.loggers import Logger, LoggerDestination
from composer.models import ComposerModel
from composer.utils import dist, reproducibility
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, IterableDataset

from modernenc.model import ModernEncoderConfig, ModernEncoderForMaskedLM
from modernenc.model.config import PRESETS, SPECIAL_TOKEN_FIELDS
from modernenc.model.encoder import ModernEncoderPreTrainedModel
from modernenc.train.callbacks import BestCheckpoint, PackedStreamState, PackingMetrics, TrainingCurves
from modernenc.train.checkpointing import (
    CHECKPOINT_NAME,
    DAMAGED_NAME,
    LATEST_NAME,
    ResumePoint,
    SafeCheckpointSaver,
    find_resume_checkpoint,
)
from modernenc.train.composer_model import (
    CheckpointMismatchError,
    ModernEncoderComposerModel,
    packed_batch_spec,
)
from modernenc.train.config import DEFAULT_PRESET, ConfigError, trains_on_gpu
from modernenc.train.export import write_hf_folder
from modernenc.utils.outputs import (
    MANIFEST_NAME,
    check_writable,
    claim_folder,
    describe_kind,
    read_manifest,
    record,
    recorded_part,
    remove_recorded,
    writing_folder,
)
from modernenc.utils.precision import warn_if_bf16_is_slow


class _IterableStream(IterableDataset):
    """Lets torch's DataLoader pass a packed stream's ready-made micro-batches straight through."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def __iter__(self):
        return iter(self.stream)


@dataclass
class TaskParts:
    """What a task contributes to the Trainer; `finish` runs after training (e.g. a final evaluation)."""

    model: ComposerModel
    train_dataloader: DataSpec
    eval_dataloader: DataSpec | None
    callbacks: list[Callback] = field(default_factory=list)
    finish: Callable[[Trainer], None] | None = None
    spin_dataloaders: bool = True  # False when a callback restores the data position itself
    eval_subset_num_batches: int | None = None  # overrides the config's (-1: the whole split)
    earlier_run: Path | None = None  # force=true: the save folder whose earlier run ReplaceEarlierRun removes


def _init_model(cls: type[ModernEncoderPreTrainedModel], cfg: DictConfig, **overrides: Any):
    """`cls` from `model.init_from` (HF folder, hub id or train.py checkpoint), else from the preset.

    A random init takes its special ids and vocabulary size from `data.tokenizer`; a checkpoint must
    already agree with it, or the saved model would frame and pad texts unlike its training.
    """
    from modernenc.data.masking import load_tokenizer

    tokenizer = load_tokenizer(cfg.data.tokenizer)
    ids = {field: tokenizer.token_to_id(token) for field, token in SPECIAL_TOKEN_FIELDS.items()}
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    overrides = {**OmegaConf.to_container(cfg.model.overrides), **overrides}
    preset = cfg.model.preset  # checked against PRESETS by load_config
    if not cfg.model.init_from:
        config = ModernEncoderConfig.from_preset(
            preset or DEFAULT_PRESET, **{"vocab_size": vocab_size, **ids, **overrides}
        )
        return cls(config)
    from modernenc.train.export import load_weights_into

    model = load_weights_into(cls, cfg.model.init_from, **overrides)
    _check_checkpoint(model.config, cfg, ids, vocab_size)
    return model


def _check_checkpoint(
    config: ModernEncoderConfig, cfg: DictConfig, ids: dict[str, int | None], vocab_size: int
) -> None:
    """`model.init_from` must have the sizes of a `model.preset` given beside it, and the tokenizer's ids."""
    source, preset = f"model.init_from={cfg.model.init_from}", cfg.model.preset
    differ = [k for k, v in PRESETS.get(preset, {}).items() if getattr(config, k) != v]
    if differ:
        has = ", ".join(f"{k}={getattr(config, k)}" for k in differ)
        same = [
            name for name, sizes in PRESETS.items() if all(getattr(config, k) == v for k, v in sizes.items())
        ]
        raise ConfigError(
            f"{source} has {has}, not the sizes of model.preset={preset}; set "
            + (f"model.preset={same[0]} (its sizes)" if same else "model.preset to the checkpoint's size")
            + " or model.preset=null to take its sizes"
        )
    clash = {k: v for k, v in ids.items() if v is not None and getattr(config, k) not in (v, None)}
    described = [f"{k}={getattr(config, k)} (tokenizer: {v})" for k, v in clash.items()]
    if vocab_size > config.vocab_size:
        described.append(f"vocab_size={config.vocab_size} (tokenizer: {vocab_size})")
    if described:
        fix = ", ".join(f"{k}: {v}" for k, v in clash.items())
        earlier = (
            " (a checkpoint pre-trained from scratch on this tokenizer by an earlier modernenc kept "
            f"ModernBERT's ids in its config: pass 'model.overrides={{{fix}}}')"
        )
        raise ConfigError(
            f"data.tokenizer={cfg.data.tokenizer} does not match {source}: {', '.join(described)}; train "
            f"with the tokenizer the checkpoint was trained with" + (earlier if clash else "")
        )


def build_model(cfg: DictConfig) -> ModernEncoderComposerModel:
    overrides = {"sparse_prediction": True, **OmegaConf.to_container(cfg.model.overrides)}
    return ModernEncoderComposerModel(_init_model(ModernEncoderForMaskedLM, cfg, **overrides))


def check_local_shards(folder: Path, key: str, max_seq_len: int, tokenizer: str) -> None:
    """Fail before training on a folder with no shards, no samples, sequences longer than the run's, or
    ids of another tokenizer than `tokenizer` (the run's data.tokenizer)."""
    from modernenc.data.masking import load_tokenizer
    from modernenc.data.mds import REPORT_FILE, TokenizerMismatchError, check_prepared_with, read_report
    from modernenc.data.streaming_dataset import ShardReadError, read_index_shards

    index_file = folder / "index.json"
    if not index_file.is_file():
        raise ConfigError(
            f"{key}: no MDS shards at {folder} (expected {index_file}); "
            f"prepare them with data_prep/prepare_corpus.py"
        )
    try:
        shards = read_index_shards(folder)
    except ShardReadError as err:
        raise ConfigError(f"{key}: {err}") from None
    if not shards:
        raise ConfigError(
            f"{key}: {folder} holds no samples (its index.json lists no shards); prepare more documents, "
            f"or a larger --validation-fraction for a validation split"
        )
    corpus = folder.parent  # prepare_corpus writes its report beside the split folders
    prepared = read_report(corpus).get("max_length", 0) if (corpus / REPORT_FILE).is_file() else 0
    if prepared > max_seq_len:
        raise ConfigError(
            f"{key}: {folder} holds sequences of up to {prepared} tokens, longer than "
            f"data.max_seq_len={max_seq_len}; prepare shards with --max-length {max_seq_len} or raise "
            f"data.max_seq_len"
        )
    try:
        check_prepared_with(folder, load_tokenizer(tokenizer), f"data.tokenizer={tokenizer}")
    except TokenizerMismatchError as err:
        raise ConfigError(f"{key}: {err}") from None


# Held-out masks are the same in every run, so eval losses compare across runs, seeds and phases.
EVAL_MASK_SEED = 17


def build_stream(cfg: DictConfig, split: str):
    from modernenc.data.streaming_dataset import build_packed_mlm_stream

    data = cfg.data
    folder = data.train if split == "train" else data.eval
    is_remote = "://" in folder
    if not is_remote:
        check_local_shards(Path(folder), f"data.{split}", data.max_seq_len, data.tokenizer)
    return build_packed_mlm_stream(
        None if is_remote else folder,
        remote=folder if is_remote else None,
        tokenizer=data.tokenizer,
        capacity=data.micro_batch_size * data.max_seq_len,
        mlm_probability=data.mlm_probability if split == "train" else data.eval_mlm_probability,
        seed=data.seed if split == "train" else EVAL_MASK_SEED,
        buffer_size=data.buffer_size or max(128, 16 * data.micro_batch_size),
        num_workers=data.num_workers,
        shuffle=split == "train",
        max_seq_len=data.max_seq_len,
    )


def build_loggers(cfg: DictConfig) -> list[LoggerDestination]:
    loggers: list[LoggerDestination] = []
    if cfg.logging.wandb:
        from composer.loggers import WandBLogger

        if not os.environ.get("WANDB_API_KEY"):
            os.environ.setdefault("WANDB_MODE", "offline")  # never block on the network without a key
        loggers.append(WandBLogger(project=cfg.logging.wandb_project, name=cfg.run_name))
    return loggers


# What a run writes into its save folder, besides composer's checkpoints (checkpointing.py's names).
RUN_OUTPUTS = ("best-hf", "final-hf", "eval", "curves.png", "DONE")


def _is_run_output(path: Path) -> bool:
    name = path.name
    return name in RUN_OUTPUTS or any(p.match(name) for p in (CHECKPOINT_NAME, LATEST_NAME, DAMAGED_NAME))


def _is_local(folder: str) -> bool:
    return "://" not in folder


def check_save_folder(cfg: DictConfig) -> Path | None:
    """Refuse to write into another run's checkpoints unless resuming it or `force=true`.

    With `force`, returns the folder whose earlier run `ReplaceEarlierRun` removes once the new run has
    trained its first batch: nothing of it (a checkpoint to average, a best model, a report) may be left
    beside the new run's, and nothing may be lost to a run that then fails to start (a setting only the
    optimizer, scheduler or Trainer checks, no GPU, an unreadable shard). Only what the earlier run
    recorded in the folder's manifest goes (modernenc.utils.outputs); the user's own files stay.
    """
    if not _is_local(cfg.save_folder):
        return None
    folder = Path(cfg.save_folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"save_folder={folder} is a file; give a folder (default: checkpoints/<run_name>)")
    check_writable(folder, what="save_folder", files_inside=True)
    manifest = read_manifest(folder)
    if manifest.kind not in (None, "train-run"):
        raise ConfigError(
            f"save_folder={folder} holds {describe_kind(manifest.kind)}, not a training run; "
            "choose another run_name (or save_folder)"
        )
    outputs = sorted(p for p in folder.iterdir() if _is_run_output(p)) if folder.is_dir() else []
    if not outputs:
        return None
    checkpoints = [p for p in outputs if CHECKPOINT_NAME.match(p.name)]
    if cfg.autoresume:  # continues from the newest complete checkpoint, or starts again; removes nothing
        if checkpoints and cfg.model.init_from:  # the resume replaces them; a restart may have been meant
            print(
                f"autoresume=true: continuing the run in {folder} from its latest checkpoint (weights, "
                f"optimizer, schedule and data position); model.init_from applies to a fresh run only"
            )
        return None
    init_from = Path(cfg.model.init_from or "")
    if cfg.model.init_from and init_from.exists() and init_from.resolve().is_relative_to(folder.resolve()):
        raise ConfigError(
            f"model.init_from={init_from} lies in this run's folder {folder}, which already holds "
            f"checkpoints; give the new run another run_name (or save_folder)"
        )
    if not cfg.force:
        what = "checkpoints" if checkpoints else "a run's outputs"
        raise ConfigError(
            f"{folder} already holds {what} ({(checkpoints or outputs)[0].name}, ...); set autoresume=true "
            f"to continue that run, force=true to replace it, or choose another run_name"
        )
    unrecorded = [p.name for p in outputs if not recorded_part(p)]
    if unrecorded:
        shown = ", ".join(unrecorded[:5]) + (", ..." if len(unrecorded) > 5 else "")
        raise ConfigError(
            f"{folder} holds {shown}, which modernenc has no record of writing there (no entry in its "
            f"{MANIFEST_NAME}, or changed since); refusing to replace them even with force=true. "
            "Move them away or choose another run_name"
        )
    return folder if dist.get_local_rank() == 0 else None


def remove_earlier_run(folder: Path | None) -> None:
    """Remove the earlier run `check_save_folder` found (force=true), and say what went and what stayed."""
    if folder is None:
        return
    removed, kept = remove_recorded(folder)
    if removed:
        print(f"force=true: removed the earlier run's {', '.join(removed)} from {folder}")
    if kept:
        print(f"kept {', '.join(kept)} in {folder} (not written by the earlier run)")


class ReplaceEarlierRun(Callback):
    """force=true: remove the earlier run in the save folder at the end of the new run's first batch.

    Not before: a run that cannot start (an optimizer or scheduler setting only they check, a device that
    is not there, a shard that cannot be read) must leave the earlier run whole. Not later: the first
    evaluation and checkpoint come after it, and nothing of the earlier run may be left beside them.
    """

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    def batch_end(self, state: State, logger: Logger) -> None:
        folder, self.folder = self.folder, None
        remove_earlier_run(folder)


def build_mlm_parts(cfg: DictConfig) -> TaskParts:
    """Masked-LM pre-training or annealing on packed MDS shards."""
    from modernenc.train.batching import (
        BatchSizeWarmupState,
        GradAccumStream,
        grad_accum_batch_spec,
        warmup_from_config,
    )

    train_stream = build_stream(cfg, "train")
    eval_stream = build_stream(cfg, "eval") if cfg.data.eval else None
    # One optimizer step per item: k packed micro-batches, k growing with the batch-size warmup.
    steps = GradAccumStream(
        train_stream, warmup_from_config(cfg.data, dist.get_world_size()), cfg.data.max_seq_len
    )

    def loader(stream):
        return packed_batch_spec(DataLoader(_IterableStream(stream), batch_size=None))

    model = build_model(cfg)
    return TaskParts(
        model=model,
        train_dataloader=grad_accum_batch_spec(DataLoader(steps, batch_size=None)),
        eval_dataloader=loader(eval_stream) if eval_stream is not None else None,
        callbacks=[
            PackedStreamState(train_stream),
            BatchSizeWarmupState(steps),
            PackingMetrics(model.model, cfg.logging.peak_flops),
        ],
        spin_dataloaders=False,  # PackedStreamState restores the data position exactly
    )


def _check_start_labels(
    cfg: DictConfig, model_class: type[ModernEncoderPreTrainedModel], names: list[str]
) -> None:
    """A classifier continued from `model.init_from` keeps its task layer row by row, so its classes must be
    the data's, in the data's order: else each class is scored as the one in its place (silently, when
    there are as many)."""
    from modernenc.train.export import checkpoint_task_labels

    if not cfg.model.init_from:
        return
    architecture, labels = checkpoint_task_labels(cfg.model.init_from)
    unnamed = labels is not None and labels == [f"LABEL_{i}" for i in range(len(labels))]
    if architecture != model_class.hf_architecture or labels is None or unnamed or labels == names:
        return  # another task's checkpoint starts a fresh task layer; unnamed classes have only positions
    source = f"model.init_from={cfg.model.init_from}"
    if sorted(labels) == sorted(names):
        raise ConfigError(
            f"{source} orders its classes {labels}, the data {names}, so its classifier would score each "
            f"class as another; set data.labels={labels} to keep its order"
        )
    misread = (
        ", so its classifier would score each class as the one in its place"
        if len(labels) == len(names)
        else ""
    )
    raise ConfigError(
        f"{source} is a classifier of {labels}, not of the data's labels {names}{misread}; give the data "
        "its labels, or start from the encoder it was fine-tuned from (its masked-LM checkpoint)"
    )


def _with_lora(model: ModernEncoderPreTrainedModel, settings: DictConfig):
    """`model` with LoRA adapters (peft); says how many parameters train."""
    from modernenc.train.lora import apply_lora, trainable_parameters

    total = model.num_parameters()
    model = apply_lora(model, OmegaConf.to_container(settings))
    trained = trainable_parameters(model)
    print(
        f"LoRA r={settings.r} alpha={settings.alpha:g} on {', '.join(settings.target_modules)}, "
        f"{', '.join(settings.modules_to_save) or 'nothing'} in full: training {trained:,} of {total:,} "
        f"parameters ({trained / total:.2%})"
    )
    return model


def build_classification_parts(cfg: DictConfig) -> TaskParts:
    """Sequence or token classification fine-tuning; keeps the best model by validation F1 (strict entity
    F1 for a BIO tagger, with an entity report on validation and test after training), and for a
    binary sequence task chooses the decision thresholds and reports them on test."""
    import torch

    from modernenc.model import ModernEncoderForSequenceClassification, ModernEncoderForTokenClassification
    from modernenc.tasks.classification import evaluate_classifier, load_classification_data
    from modernenc.tasks.classification_data import RankBatches, collate_packed, length_sorted_batches
    from modernenc.train.composer_model import ClassifierComposerModel
    from modernenc.train.lora import plain_model

    data = load_classification_data(cfg)
    names = data.label_names
    token_level = cfg.model.task == "token_classification"
    model_class = (
        ModernEncoderForTokenClassification if token_level else ModernEncoderForSequenceClassification
    )
    _check_start_labels(cfg, model_class, names)
    model = _init_model(model_class, cfg, num_labels=len(names), id2label=dict(enumerate(names)))
    if cfg.finetune.lora is not None:
        model = _with_lora(model, cfg.finetune.lora)
    world, rank = dist.get_world_size(), dist.get_global_rank()
    if world > 1:  # each rank trains on its own shard, reshuffled every epoch (composer calls set_epoch)
        order = {"sampler": dist.get_sampler(data.splits["train"], shuffle=True, seed=cfg.data.seed)}
    else:
        order = {"shuffle": True, "generator": torch.Generator().manual_seed(cfg.data.seed)}
    train = DataLoader(
        data.splits["train"], batch_size=cfg.data.micro_batch_size, collate_fn=collate_packed, **order
    )
    evaluation = None
    if "validation" in data.splits:
        val = data.splits["validation"]
        lengths, micro = [len(x) for x in val.input_ids], cfg.data.micro_batch_size
        sampler = (
            RankBatches(lengths, micro, world, rank) if world > 1 else length_sorted_batches(lengths, micro)
        )
        evaluation = packed_batch_spec(DataLoader(val, batch_sampler=sampler, collate_fn=collate_packed))
    best_dir = Path(cfg.save_folder) / "best-hf"
    composer_model = ClassifierComposerModel(model, data.positive_index, token_level)
    # A BIO tagger is judged by its entities; the token F1 would reward getting the many O tokens right.
    monitor = "EntityF1" if "EntityF1" in composer_model.eval_metrics else "F1"
    callbacks: list[Callback] = []
    if evaluation is not None:
        patience = cfg.evaluation.early_stopping_patience
        callbacks.append(BestCheckpoint(best_dir, monitor, patience, tokenizer=cfg.data.tokenizer))

    if evaluation is None:
        print(
            f"note: no data.eval, so no best-model selection, early stopping or decision thresholds; "
            f"the final model goes to {Path(cfg.save_folder) / 'final-hf'}"
        )

    def finish(trainer: Trainer) -> None:
        if dist.get_global_rank() != 0:
            return
        if evaluation is None:
            final_dir = Path(cfg.save_folder) / "final-hf"
            write_hf_folder(plain_model(model), final_dir, cfg.data.tokenizer, tool="train")
            record(final_dir)  # a part of the run
            print(f"==> final model in {final_dir} (no thresholds.json: predict uses 0.5 unless told)")
            return
        best = model_class.from_pretrained(best_dir)
        if monitor == "EntityF1":
            from modernenc.tasks.span_evaluation import evaluate_tagger

            out = Path(cfg.save_folder) / "eval"
            with writing_folder(out, kind="report", tool="train") as staging:
                evaluate_tagger(best, names, data.splits, staging, cfg.data.micro_batch_size)
            record(out)  # a part of the run
            print((out / "report.md").read_text())
            best_f1 = callbacks[0].best
            print(f"==> best model (validation entity F1 {best_f1:.4f}) in {best_dir}; report in {out}")
            return
        if len(names) != 2 or token_level:
            print(f"==> best model (validation F1 {callbacks[0].best:.4f}) is in {best_dir}")
            return
        out = Path(cfg.save_folder) / "eval"
        with writing_folder(out, kind="report", tool="train") as staging:
            report = evaluate_classifier(
                best, data, staging, cfg.evaluation.target_recall, cfg.data.micro_batch_size
            )
        record(out)  # a part of the run
        from modernenc.tasks.decisions import write_thresholds

        write_thresholds(  # recorded as a part of best-hf, replaced with it
            best_dir,
            report["thresholds"],
            target_recall=cfg.evaluation.target_recall,
            label_names=names,
            positive_label=data.positive_index,
            max_length=cfg.data.max_seq_len,
        )
        print((out / "report.md").read_text())
        print(f"==> best model in {best_dir}; report and PR curves in {out}")

    return TaskParts(
        model=composer_model,
        train_dataloader=packed_batch_spec(train),
        eval_dataloader=evaluation,
        callbacks=callbacks,
        finish=finish,
        eval_subset_num_batches=-1,  # early stopping and the best model need the whole validation split
    )


TASK_BUILDERS: dict[str, Callable[[DictConfig], TaskParts]] = {
    "mlm": build_mlm_parts,
    "classification": build_classification_parts,
    "token_classification": build_classification_parts,
}


def build_trainer(
    cfg: DictConfig, loggers: list[LoggerDestination] | None = None, parts: TaskParts | None = None
) -> Trainer:
    """The composer Trainer for `cfg`; `loggers` are added to those the config asks for."""
    from modernenc.train.optimizers import build_optimizer
    from modernenc.train.schedulers import build_scheduler

    if parts is None:
        parts = build_task(cfg)
    opt = cfg.optimizer
    optimizer = build_optimizer(
        parts.model.model,
        opt.name,
        lr=opt.lr,
        betas=tuple(opt.betas),
        eps=opt.eps,
        weight_decay=opt.weight_decay,
        decay_embeddings=opt.decay_embeddings,
    )
    sched = {k: v for k, v in OmegaConf.to_container(cfg.scheduler).items() if k != "name" and v is not None}
    scheduler = build_scheduler(cfg.scheduler.name, **sched)
    callbacks = [ReplaceEarlierRun(parts.earlier_run), *parts.callbacks, LRMonitor()]
    if cfg.logging.plots:
        callbacks.append(TrainingCurves(Path(cfg.save_folder) / "curves.png"))
    saving, resume = _checkpointing(cfg)
    callbacks += saving

    if cfg.precision == "amp_bf16":
        warn_if_bf16_is_slow("cuda" if trains_on_gpu(cfg) else "cpu")
    with _named_resume_point(resume):
        trainer = Trainer(
            model=parts.model,
            run_name=cfg.run_name,
            train_dataloader=parts.train_dataloader,
            eval_dataloader=parts.eval_dataloader,
            eval_interval=cfg.eval_interval,
            eval_subset_num_batches=parts.eval_subset_num_batches or cfg.eval_subset_num_batches,
            max_duration=cfg.max_duration,
            optimizers=optimizer,
            schedulers=scheduler,
            step_schedulers_every_batch=True,
            algorithms=[GradientClipping("norm", cfg.grad_clip_norm)] if cfg.grad_clip_norm else [],
            # Weight each micro-batch's mean loss by its labelled tokens: the step's loss is the global mean.
            accumulate_train_batch_on_tokens=cfg.model.task == "mlm",
            spin_dataloaders=parts.spin_dataloaders,
            callbacks=callbacks,
            loggers=build_loggers(cfg) + list(loggers or []),
            progress_bar=cfg.logging.progress_bar,
            log_to_console=not cfg.logging.progress_bar,
            console_log_interval=cfg.logging.log_interval,
            save_folder=cfg.save_folder,
            save_interval=cfg.save_interval,
            save_num_checkpoints_to_keep=cfg.save_num_checkpoints_to_keep,
            save_overwrite=bool(cfg.force),
            autoresume=cfg.autoresume and resume is None,
            load_path=str(resume.path) if resume is not None and resume.path is not None else None,
            precision=cfg.precision,
            device=cfg.device,
            parallelism_config={"fsdp": OmegaConf.to_container(cfg.fsdp)} if cfg.fsdp is not None else None,
            device_train_microbatch_size=cfg.data.micro_batch_size,  # each packed batch is one micro-batch
            seed=cfg.seed,
        )
    if resume is not None and resume.path is not None:
        print(
            f"autoresume=true: resumed from {resume.path} at step {int(trainer.state.timestamp.batch)} "
            f"(epoch {int(trainer.state.timestamp.epoch)})"
        )
    return trainer


@contextmanager
def _named_resume_point(resume: ResumePoint | None) -> Iterator[None]:
    """A checkpoint autoresume cannot load into this run's model is named, with the ways out."""
    try:
        yield
    except CheckpointMismatchError as err:
        if resume is None or resume.path is None:
            raise
        raise CheckpointMismatchError(
            f"autoresume=true cannot continue from {resume.path}: {err}; resume it with the settings it was "
            "trained with, or start a new run (another run_name, or force=true to replace that one)"
        ) from None


def _checkpointing(cfg: DictConfig) -> tuple[list[Callback], ResumePoint | None]:
    """The checkpoint saver for a local save folder (checkpointing.py) and, with autoresume, the newest
    checkpoint there that reads back. A remote or sharded (FSDP) save folder is left to composer."""
    sharded = cfg.fsdp is not None and cfg.fsdp.get("state_dict_type") == "sharded"
    if not _is_local(cfg.save_folder) or sharded:
        return [], None
    saver = SafeCheckpointSaver(
        cfg.save_folder,
        save_interval=cfg.save_interval,
        num_checkpoints_to_keep=cfg.save_num_checkpoints_to_keep,
        overwrite=bool(cfg.force),
    )
    if not cfg.autoresume:
        return [saver], None
    resume = find_resume_checkpoint(cfg.save_folder, may_modify=dist.get_local_rank() == 0)
    for damaged, moved_to, why in resume.set_aside:
        print(f"autoresume=true: set aside {damaged} as {moved_to.name}: {why}")
    if resume.path is None and resume.set_aside:
        print(f"autoresume=true: no complete checkpoint left in {cfg.save_folder}; training starts at step 0")
    return [saver], resume


def build_task(cfg: DictConfig) -> TaskParts:
    """Check the save folder, seed everything, and build the task's model and data. With force=true, the
    earlier run's outputs are removed only once the new run has trained a batch (`ReplaceEarlierRun`)."""
    earlier_run = check_save_folder(cfg)
    reproducibility.seed_all(cfg.seed)  # before the model exists, so its init is the seed's too
    parts = TASK_BUILDERS[cfg.model.task](cfg)
    parts.earlier_run = earlier_run
    if _is_local(cfg.save_folder) and dist.get_local_rank() == 0:
        claim_folder(cfg.save_folder, "train-run", "train")  # what the run writes here is recorded in it
    return parts
