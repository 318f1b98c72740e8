"""Turn a validated `TrainConfig` into the objects composer's `Trainer` takes. Each builder is used once."""

from __future__ import annotations

import os
from pathlib import Path

from composer import Trainer
from composer.loggers import LoggerDestination
from composer.utils import reproducibility
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, IterableDataset

from modernenc.model import ModernEncoderConfig, ModernEncoderForMaskedLM
from modernenc.train.callbacks import PackedStreamState, PackingMetrics
from modernenc.train.composer_model import ModernEncoderComposerModel, packed_batch_spec
from modernenc.train.config import ConfigError


class _IterableStream(IterableDataset):
    """Lets torch's DataLoader pass a packed stream's ready-made micro-batches straight through."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def __iter__(self):
        return iter(self.stream)


def build_model(cfg: DictConfig) -> ModernEncoderComposerModel:
    overrides = dict(OmegaConf.to_container(cfg.model.overrides))
    overrides.setdefault("sparse_prediction", True)  # MLM trains on labelled positions only
    if cfg.model.init_from:
        model = ModernEncoderForMaskedLM.from_pretrained(cfg.model.init_from, **overrides)
    else:
        model = ModernEncoderForMaskedLM(ModernEncoderConfig.from_preset(cfg.model.preset, **overrides))
    return ModernEncoderComposerModel(model)


def build_stream(cfg: DictConfig, split: str):
    from modernenc.data.streaming_dataset import build_packed_mlm_stream

    data = cfg.data
    folder = data.train if split == "train" else data.eval
    is_remote = "://" in folder
    if not is_remote and not Path(folder, "index.json").is_file():
        raise ConfigError(
            f"data.{split}: no MDS shards at {folder} (expected {folder}/index.json); "
            f"prepare them with data_prep/prepare_corpus.py"
        )
    return build_packed_mlm_stream(
        None if is_remote else folder,
        remote=folder if is_remote else None,
        tokenizer=data.tokenizer,
        capacity=data.micro_batch_size * data.max_seq_len,
        mlm_probability=data.mlm_probability if split == "train" else data.eval_mlm_probability,
        seed=data.seed,
        buffer_size=data.buffer_size,
        num_workers=data.num_workers,
        shuffle=split == "train",
    )


def build_loggers(cfg: DictConfig) -> list[LoggerDestination]:
    loggers: list[LoggerDestination] = []
    if cfg.logging.wandb:
        from composer.loggers import WandBLogger

        if not os.environ.get("WANDB_API_KEY"):
            os.environ.setdefault("WANDB_MODE", "offline")  # never block on the network without a key
        loggers.append(WandBLogger(project=cfg.logging.wandb_project, name=cfg.run_name))
    return loggers


def check_save_folder(cfg: DictConfig) -> None:
    """Refuse to write into another run's checkpoints unless resuming it or `force=true`."""
    folder = Path(cfg.save_folder)
    existing = sorted(folder.glob("*.pt")) if folder.is_dir() else []
    if existing and not (cfg.autoresume or cfg.force):
        raise ConfigError(
            f"{folder} already holds checkpoints ({existing[0].name}, ...); set autoresume=true to "
            f"continue that run, force=true to replace it, or choose another run_name"
        )


def build_trainer(cfg: DictConfig, loggers: list[LoggerDestination] | None = None) -> Trainer:
    """The composer Trainer for `cfg`; `loggers` are added to those the config asks for."""
    from modernenc.train.optimizers import build_optimizer
    from modernenc.train.schedulers import build_scheduler

    check_save_folder(cfg)
    reproducibility.seed_all(cfg.seed)  # before the model exists, so its init is the seed's too
    train_stream = build_stream(cfg, "train")
    eval_stream = build_stream(cfg, "eval") if cfg.data.eval else None
    model = build_model(cfg)
    opt = cfg.optimizer
    optimizer = build_optimizer(
        model.model,
        opt.name,
        lr=opt.lr,
        betas=tuple(opt.betas),
        eps=opt.eps,
        weight_decay=opt.weight_decay,
        decay_embeddings=opt.decay_embeddings,
    )
    sched = {k: v for k, v in OmegaConf.to_container(cfg.scheduler).items() if k != "name" and v is not None}
    scheduler = build_scheduler(cfg.scheduler.name, **sched)

    def loader(stream):
        return packed_batch_spec(DataLoader(_IterableStream(stream), batch_size=None))

    return Trainer(
        model=model,
        run_name=cfg.run_name,
        train_dataloader=loader(train_stream),
        eval_dataloader=loader(eval_stream) if eval_stream is not None else None,
        eval_interval=cfg.eval_interval,
        eval_subset_num_batches=cfg.eval_subset_num_batches,
        max_duration=cfg.max_duration,
        optimizers=optimizer,
        schedulers=scheduler,
        step_schedulers_every_batch=True,
        spin_dataloaders=False,  # PackedStreamState restores the data position exactly
        callbacks=[PackedStreamState(train_stream), PackingMetrics()],
        loggers=build_loggers(cfg) + list(loggers or []),
        progress_bar=cfg.logging.progress_bar,
        log_to_console=not cfg.logging.progress_bar,
        console_log_interval=cfg.logging.log_interval,
        save_folder=cfg.save_folder,
        save_interval=cfg.save_interval,
        save_num_checkpoints_to_keep=cfg.save_num_checkpoints_to_keep,
        save_overwrite=bool(cfg.force),
        autoresume=cfg.autoresume,
        precision=cfg.precision,
        device=cfg.device,
        device_train_microbatch_size=cfg.data.micro_batch_size,  # each packed batch is one micro-batch
        seed=cfg.seed,
    )
