"""Does a tiled start train faster than a random one? MLM loss curves of a big model started both ways.

1. pre-train a small preset (default `tiny`) for --small-batches on the quickstart Wikipedia shards;
2. tile its last checkpoint to the big preset (default `mini`) and save it as a Hugging Face folder;
3. train the big model from the tiled weights (`model.init_from=...`), from the tiled weights with scaled
   inputs (`tile_model(..., scale_inputs=True)`) and from random init (`model.preset`) with the same recipe,
   data order and seed for --big-batches each, and print the training-loss curves side by side;
4. score every model on the same held-out masked batches (15% masked, validation split): the small model,
   each big start before training, and each after.

The big runs read the corpus in another order (data.seed) than the small pre-training, so their training
loss is not measured on batches the small model has already learned from. Every run is the quickstart recipe
(yamls/quickstart/pretrain.yaml) with smaller micro-batches. Prepare the shards first (see the README), then,
from the repository root (the yaml's data paths are relative):

    python benchmarks/tiling_vs_random.py --small-batches 150 --big-batches 40

Each run's folder under --out is replaced on every invocation (its checkpoints are this script's own),
except the small run's with --reuse-small.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import torch
from composer.loggers import InMemoryLogger
from composer.utils import reproducibility
from omegaconf import DictConfig

from modernenc.model import ModernEncoderForMaskedLM
from modernenc.train.builders import build_model, build_stream, build_trainer
from modernenc.train.composer_model import MODEL_INPUTS
from modernenc.train.config import load_config
from modernenc.train.export import load_composer_checkpoint
from modernenc.train.recipes import recipe_path
from modernenc.train.tiling import config_for_preset, layer_map, tile_model

YAML = recipe_path("quickstart/pretrain")


def run_config(run: str, out: Path, batches: int, args: argparse.Namespace, *overrides: str) -> DictConfig:
    return load_config(
        YAML,
        [
            f"run_name={run}",
            f"save_folder={out / run}",
            f"max_duration={batches}ba",
            f"save_interval={batches}ba",
            f"data.micro_batch_size={args.micro_batch_size}",
            f"optimizer.lr={args.lr}",
            "force=true",
            "logging.progress_bar=false",
            f"logging.log_interval={batches}ba",
            "logging.plots=false",
            *overrides,
        ],
    )


def train(cfg: DictConfig) -> dict[int, float]:
    """Train one run; its training loss by batch number (1-based)."""
    memory = InMemoryLogger()
    cfg = cfg.copy()
    cfg.data.eval = None  # held-out scoring is done afterwards, on identical batches for every model
    trainer = build_trainer(cfg, loggers=[memory])
    start = time.perf_counter()
    trainer.fit()
    trainer.close()
    print(f"  {cfg.run_name}: {cfg.max_duration} in {time.perf_counter() - start:.0f}s")
    # A batch's loss is logged at the timestamp before that batch counts.
    return {int(ts.batch) + 1: float(v) for ts, v in memory.data["loss/train/total"]}


@torch.no_grad()
def heldout_loss(model: ModernEncoderForMaskedLM, batches: list[dict]) -> float:
    """Mean MLM cross-entropy over every masked token of `batches`."""
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        n = int((batch["labels"] != -100).sum())
        total += float(model(**{k: batch[k] for k in MODEL_INPUTS if k in batch}).loss) * n
        count += n
    return total / count


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small-preset", default="tiny")
    parser.add_argument("--big-preset", default="mini")
    parser.add_argument("--small-batches", type=int, default=150)
    parser.add_argument("--big-batches", type=int, default=40)
    parser.add_argument("--micro-batch-size", type=int, default=4, help="sequences of 512 tokens per batch")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-batches", type=int, default=10, help="held-out micro-batches to score")
    parser.add_argument("--every", type=int, default=5, help="print the loss every this many batches")
    parser.add_argument("--out", type=Path, default=Path("checkpoints/tiling-vs-random"))
    parser.add_argument(
        "--reuse-small", action="store_true", help="skip step 1 when OUT/small already holds its checkpoint"
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    small_cfg = run_config(
        "small", args.out, args.small_batches, args, f"model.preset={args.small_preset}", "data.seed=17"
    )
    small_ckpt = args.out / "small" / "latest-rank0.pt"
    if args.reuse_small and small_ckpt.is_file():
        print(f"1. reusing {small_ckpt}")
    else:
        print(f"1. pre-training {args.small_preset} for {args.small_batches} batches")
        train(small_cfg)

    small = load_composer_checkpoint(small_ckpt)
    big_config = config_for_preset(small.config, args.big_preset)
    starts = {
        "tiled": tile_model(small, big_config),
        "scaled": tile_model(small, big_config, scale_inputs=True),
    }
    for name, model in starts.items():
        model.save_pretrained(args.out / f"{name}-hf", overwrite=True)
    mapping = layer_map(small.config, big_config)
    print(
        f"2. tiled {args.small_preset} -> {args.big_preset} (plain, scaled inputs); big layer i <- {mapping}"
    )

    print(f"3. training {args.big_preset} for {args.big_batches} batches from each start")
    other_order = "data.seed=18"  # not step 1's order
    inits = {name: f"model.init_from={args.out / f'{name}-hf'}" for name in starts}
    inits["random"] = "model.init_from=null"
    big = f"model.preset={args.big_preset}"  # the tiled folders have its sizes too
    cfgs = {
        name: run_config(name, args.out, args.big_batches, args, init, big, other_order)
        for name, init in inits.items()
    }
    losses = {name: train(cfg) for name, cfg in cfgs.items()}

    print(f"4. scoring on {args.eval_batches} held-out micro-batches")
    batches = list(itertools.islice(iter(build_stream(small_cfg, "eval")), args.eval_batches))
    reproducibility.seed_all(cfgs["random"].seed)  # the random start train.py built, yaml overrides included
    starts["random"] = build_model(cfgs["random"]).model
    before = {name: heldout_loss(model, batches) for name, model in starts.items()}
    after = {
        name: heldout_loss(load_composer_checkpoint(args.out / name / "latest-rank0.pt"), batches)
        for name in cfgs
    }

    names = list(cfgs)  # tiled, scaled, random
    print(f"\n{args.big_preset}: training MLM loss (30% masked) by batch: {' / '.join(names)}")
    steps = sorted(set.intersection(*(set(v) for v in losses.values())))
    for step in steps:
        if step == 1 or step % args.every == 0 or step == steps[-1]:
            print(f"  {step:4d}: " + " / ".join(f"{losses[n][step]:.3f}" for n in names))
    masked = sum(int((b["labels"] != -100).sum()) for b in batches)
    print(f"held-out MLM cross-entropy ({masked} masked tokens), before / after {args.big_batches} batches:")
    print(f"  {args.small_preset} (the source): {heldout_loss(small, batches):.3f}")
    for name in names:
        print(f"  {args.big_preset} {name:7s}: {before[name]:.3f} / {after[name]:.3f}")


if __name__ == "__main__":
    main()
