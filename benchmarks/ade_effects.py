"""ADE fine-tuning rows over several seeds: mean ± sd, and which differences exceed 2 sd.

By default the rows are the quickstart's (run `modernenc quickstart` first): its annealed checkpoint, its
pre-trained-only checkpoint, random init, and LoRA (r 8 on Wqkv, Wo, Wi) from the annealed checkpoint,
each fine-tuned with `quickstart/finetune_ade` and seeds 17, 18, 19 (17 is the quickstart's own seed;
LoRA's LR is chosen on validation from 5e-4, 1e-3, 2e-3), plus the strong TF-IDF baseline:

    python benchmarks/ade_effects.py --split-dir data/ade --out-dir checkpoints/ade-effects

Other encoders: one `--row LABEL INIT [KEY=VALUE ...]` each (INIT: a train.py *.pt, a Hugging Face
folder, or null for random init; KEY=VALUE are `modernenc train` overrides for that row only):

    python benchmarks/ade_effects.py --split-dir data/ade --recipe experiments/ade_finetune \\
        --row "annealed" checkpoints/exp-anneal/latest-rank0.pt \\
        --row "random init" null \\
        --row "annealed, LoRA r=8" checkpoints/exp-anneal/latest-rank0.pt "finetune.lora={}" \\
        --lr-grid 1e-4 2e-4 5e-4 --lora-lr-grid 5e-4 1e-3 2e-3 --seeds 1 2 3

Writes `effects.md` (the tables for docs/results.md) and `effects.json` (every run) into --out-dir; each
run's folder keeps its `train.log`. Finished runs are reused when the command runs again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from modernenc.pv.bundled_data import shared_data_dir
from modernenc.pv.effects import (
    Experiment,
    Row,
    all_differences,
    deterministic_row,
    format_markdown,
    run_row,
)
from modernenc.pv.quickstart import ANNEAL_CKPT, FINETUNE_RECIPE, PRETRAIN_CKPT

DEFAULT_ROWS = [
    Row("mini, pre-trained + annealed", ANNEAL_CKPT),
    Row("mini, pre-trained only", PRETRAIN_CKPT),
    Row("mini, random init", None),
    Row("mini, pre-trained + annealed, LoRA r=8", ANNEAL_CKPT, ("finetune.lora={}",)),
]


def parse_rows(specs: list[list[str]] | None, lr_grid: list[float], lora_lr_grid: list[float]) -> list[Row]:
    rows = DEFAULT_ROWS if not specs else []
    for spec in specs or []:
        if len(spec) < 2:
            raise SystemExit(f"error: --row needs a label and an encoder (or null); got {spec}")
        label, init, *overrides = spec
        malformed = [o for o in overrides if "=" not in o]
        if malformed:
            raise SystemExit(f"error: --row {label!r}: {malformed[0]!r} is not KEY=VALUE")
        rows.append(Row(label, None if init in ("null", "none", "") else init, tuple(overrides)))
    return [Row(r.label, r.init, r.overrides, tuple(lora_lr_grid if r.lora else lr_grid)) for r in rows]


def check_inputs(rows: list[Row], split_dir: Path) -> None:
    """Fail before the first run, not after an hour: the split and every local encoder must exist."""
    missing = [str(split_dir / f"{s}.jsonl") for s in ("train", "validation", "test")]
    missing = [m for m in missing if not Path(m).is_file()]
    missing += [r.init for r in rows if r.init and r.init.endswith(".pt") and not Path(r.init).is_file()]
    if missing:
        raise SystemExit(
            f"error: missing {', '.join(missing)} (prepare the split / train the encoders first)"
        )
    labels = [r.label for r in rows]
    if len(set(labels)) != len(labels) or len({r.slug for r in rows}) != len(rows):
        raise SystemExit(f"error: row labels must differ (also once lower-cased): {labels}")


def tfidf_row(split_dir: Path) -> dict:
    from modernenc.pv.ade_data import read_jsonl
    from modernenc.pv.effects import METRICS
    from modernenc.pv.tfidf_baseline import fit_strong, thresholded_results

    split = {s: read_jsonl(split_dir / f"{s}.jsonl") for s in ("train", "validation", "test")}
    strong = fit_strong(split["train"], split["validation"])
    results = thresholded_results(strong.model, split["validation"], split["test"])["results"]
    test = {name: results[threshold][metric] for name, (threshold, metric) in METRICS.items()}
    return deterministic_row(f"TF-IDF word + char n-grams (C={strong.c:g} on validation)", test)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split-dir", type=Path, default=Path("data/ade"), help="`modernenc prepare-ade` output")
    p.add_argument("--out-dir", type=Path, default=Path("checkpoints/ade-effects"), help="runs and tables")
    p.add_argument("--recipe", default=FINETUNE_RECIPE, help="fine-tuning yaml or packaged recipe name")
    p.add_argument("--tokenizer", default=str(shared_data_dir() / "tokenizers" / "modernbert"))
    p.add_argument("--seeds", type=int, nargs="+", default=[17, 18, 19], help="at least 3 for an sd")
    p.add_argument("--row", nargs="+", action="append", metavar="LABEL INIT [KEY=VALUE]", dest="rows")
    p.add_argument("--lr-grid", type=float, nargs="*", default=[], help="LRs tried on validation (full FT)")
    p.add_argument(
        "--lora-lr-grid",
        type=float,
        nargs="*",
        default=[5e-4, 1e-3, 2e-3],
        help="LRs tried for LoRA rows (default: %(default)s; adapters want ~10x full fine-tuning's LR)",
    )
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every run")
    p.add_argument("--no-tfidf", action="store_true", help="leave out the TF-IDF baseline row")
    args = p.parse_args(argv)

    if len(set(args.seeds)) != len(args.seeds) or len(args.seeds) < 2:
        raise SystemExit(
            f"error: --seeds must be distinct, at least 2 (3+ for a usable sd); got {args.seeds}"
        )
    rows = parse_rows(args.rows, args.lr_grid, args.lora_lr_grid)
    check_inputs(rows, args.split_dir)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    experiment = Experiment(
        recipe=args.recipe,
        split_dir=args.split_dir.absolute(),
        out_dir=args.out_dir.absolute(),
        seeds=args.seeds,
        common=[f"data.tokenizer={args.tokenizer}", "logging.progress_bar=false", *args.set],
        progress=tqdm.write,
    )
    total = sum(len(r.lr_grid) + len(args.seeds) - (1 if r.lr_grid else 0) for r in rows)
    results = []
    start = time.perf_counter()
    with tqdm(total=len(rows), desc=f"rows ({total} fine-tunes)", unit="row") as bar:
        for row in rows:
            results.append(run_row(experiment, row))
            s = results[-1]["summary"]["f1"]
            bar.write(f"{row.label}: test F1 at 0.5 {100 * s['mean']:.1f} ± {100 * s['sd']:.1f}")
            bar.update()
    if not args.no_tfidf:
        results.append(tfidf_row(args.split_dir))
    result = {
        "recipe": args.recipe,
        "seeds": args.seeds,
        "split_dir": str(args.split_dir),
        "rows": results,
        "differences": all_differences(results),
        "sd_of_difference": "sqrt(sd_a^2 / n_a + sd_b^2 / n_b) over independent seeds; TF-IDF has sd 0",
        "wall_s": time.perf_counter() - start,
    }
    (args.out_dir / "effects.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    table = format_markdown(result)
    (args.out_dir / "effects.md").write_text(table)
    print(table)
    print(f"wrote {args.out_dir / 'effects.md'} and {args.out_dir / 'effects.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
