"""Train a modernenc model from a yaml recipe.

    composer train.py yamls/quickstart/pretrain.yaml [key=value ...]     # one process per device
    python train.py yamls/quickstart/pretrain.yaml max_duration=20ba     # a single process

Overrides use dotted keys (`optimizer.lr=3e-4`, `data.micro_batch_size=4`) and are checked against the
same typed schema as the yaml (`src/modernenc/train/config.py`).
"""

from __future__ import annotations

import sys

from modernenc.data.streaming_dataset import SampleTooLongError, ShardReadError
from modernenc.train.config import ConfigError, load_config


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    try:
        cfg = load_config(argv[0], argv[1:])
        from modernenc.train.builders import build_task, build_trainer

        parts = build_task(cfg)
        trainer = build_trainer(cfg, parts=parts)
    except (ConfigError, ValueError, OSError) as err:  # OSError: missing files, hub offline
        sys.exit(f"train.py: error: {err}")
    print(f"==> training {cfg.run_name} ({cfg.model.task}): checkpoints go to {cfg.save_folder}")
    try:
        trainer.fit()
    except (ShardReadError, SampleTooLongError) as err:  # bad data, found only when it is read
        trainer.close()
        sys.exit(f"train.py: error during training (checkpoints so far are in {cfg.save_folder}): {err}")
    try:
        if parts.finish is not None:
            parts.finish(trainer)
    except (ValueError, OSError) as err:
        sys.exit(f"train.py: error after training (the checkpoints are in {cfg.save_folder}): {err}")
    finally:
        trainer.close()


if __name__ == "__main__":
    main(sys.argv[1:])
