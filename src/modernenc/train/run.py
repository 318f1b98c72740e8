"""Run one training job from a yaml recipe: what `modernenc train`, `python train.py` and
`composer -n N -m modernenc.train` all do."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from modernenc.train.config import load_config


class TrainingError(RuntimeError):
    """Training could not finish; the message says where the checkpoints written so far are."""


def run_training(yaml: str | Path, overrides: Sequence[str] = ()) -> Path:
    """Validate the config, build everything, train, and run the task's final step; returns the save folder.

    Bad configs and inputs fail before training starts (`ConfigError`, `ValueError`, `OSError`); bad data
    found only when it is read stops training with `TrainingError`.
    """
    cfg = load_config(yaml, list(overrides))  # before composer is imported: a bad yaml fails in a second
    from modernenc.data.streaming_dataset import SampleTooLongError, ShardReadError, UnknownTokenIdError
    from modernenc.train.builders import build_task, build_trainer

    parts = build_task(cfg)
    trainer = build_trainer(cfg, parts=parts)
    print(f"==> training {cfg.run_name} ({cfg.model.task}): checkpoints go to {cfg.save_folder}")
    try:
        trainer.fit()
    except (ShardReadError, SampleTooLongError, UnknownTokenIdError) as err:  # bad data, found when read
        trainer.close()
        raise TrainingError(
            f"error during training (checkpoints so far are in {cfg.save_folder}): {err}"
        ) from None
    try:
        if parts.finish is not None:
            parts.finish(trainer)
    except (ValueError, OSError) as err:
        raise TrainingError(
            f"error after training (the checkpoints are in {cfg.save_folder}): {err}"
        ) from None
    finally:
        trainer.close()
    return Path(cfg.save_folder)
