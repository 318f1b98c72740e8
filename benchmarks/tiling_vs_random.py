"""Does a tiled start train faster than a random one? MLM loss curves of a big model started both ways.

1. pre-train a small preset (default `tiny`) for --small-batches on the quickstart Wikipedia shards;
2. tile its last checkpoint to the big preset (default `mini`) and save it as a Hugging Face folder;
3. train the big model from the tiled weights (`model.init_from=...`) and from random init (`model.preset`)
   with the same recipe, data order and seed for --big-batches each, and print both training-loss curves
   side by side, then the held-out MLM cross-entropy of each at the end.

Every run is the quickstart recipe (yamls/quickstart/pretrain.yaml) with smaller micro-batches. Prepare the
shards first (see the README), then:

    python benchmarks/tiling_vs_random.py --small-batches 150 --big-batches 40
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from composer.loggers import InMemoryLogger

from modernenc.paths import REPO_ROOT
from modernenc.train.builders import build_trainer
from modernenc.train.config import load_config
from modernenc.train.export import load_composer_checkpoint
from modernenc.train.tiling import config_for_preset, layer_map, tile_model

YAML = REPO_ROOT / "yamls" / "quickstart" / "pretrain.yaml"


def train(run: str, out: Path, batches: int, args: argparse.Namespace, *overrides: str) -> dict[str, dict]:
    """Train one run; its logged training loss and final evaluation metrics, by batch."""
    cfg = load_config(
        YAML,
        [
            f"run_name={run}",
            f"save_folder={out / run}",
            f"max_duration={batches}ba",
            f"save_interval={batches}ba",
            f"eval_interval={batches}ba",  # one held-out evaluation, at the end
            f"eval_subset_num_batches={args.eval_batches}",
            f"data.micro_batch_size={args.micro_batch_size}",
            f"optimizer.lr={args.lr}",
            "force=true",
            "logging.progress_bar=false",
            f"logging.log_interval={batches}ba",
            "logging.plots=false",
            *overrides,
        ],
    )
    memory = InMemoryLogger()
    trainer = build_trainer(cfg, loggers=[memory])
    start = time.perf_counter()
    trainer.fit()
    trainer.close()
    print(f"  {run}: {batches} batches in {time.perf_counter() - start:.0f}s")
    logs = {key: {int(ts.batch): float(v) for ts, v in values} for key, values in memory.data.items()}
    # A batch's training loss is logged at the timestamp before it counts; key it by batch number (1-based).
    logs["loss/train/total"] = {t + 1: v for t, v in logs["loss/train/total"].items()}
    return logs


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
    parser.add_argument("--eval-batches", type=int, default=4)
    parser.add_argument("--every", type=int, default=5, help="print the loss every this many batches")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "checkpoints" / "tiling-vs-random")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"1. pre-training {args.small_preset} for {args.small_batches} batches")
    small_logs = train("small", args.out, args.small_batches, args, f"model.preset={args.small_preset}")
    small_loss = small_logs["loss/train/total"]

    small = load_composer_checkpoint(args.out / "small" / "latest-rank0.pt")
    big_config = config_for_preset(small.config, args.big_preset)
    tiled_dir = args.out / "tiled-hf"
    tile_model(small, big_config).save_pretrained(tiled_dir, overwrite=True)
    mapping = layer_map(small.config, big_config)
    print(f"2. tiled {args.small_preset} -> {args.big_preset} into {tiled_dir}; big layer i <- {mapping}")

    print(f"3. training {args.big_preset} for {args.big_batches} batches from each start")
    tiled = train("tiled", args.out, args.big_batches, args, f"model.init_from={tiled_dir}")
    random = train("random", args.out, args.big_batches, args, f"model.preset={args.big_preset}")

    t_loss, r_loss = tiled["loss/train/total"], random["loss/train/total"]
    last = small_loss[max(small_loss)]
    print(f"\n{args.small_preset} after {args.small_batches} batches: training loss {last:.3f}")
    print(f"{args.big_preset}: training MLM loss (30% masked), batch: tiled / random")
    steps = sorted(set(t_loss) & set(r_loss))
    for step in steps:
        if step == 1 or step % args.every == 0 or step == steps[-1]:
            print(f"  {step:4d}: {t_loss[step]:.3f} / {r_loss[step]:.3f}")
    key = "metrics/eval/LanguageCrossEntropy"
    if key in tiled and key in random:
        print(
            f"held-out MLM cross-entropy (15% masked) after {args.big_batches} batches: "
            f"tiled {tiled[key][args.big_batches]:.3f} / random {random[key][args.big_batches]:.3f}"
        )


if __name__ == "__main__":
    main()
