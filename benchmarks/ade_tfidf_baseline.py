"""TF-IDF + logistic regression on the ADE sentence-classification split: the bar for fine-tuned encoders.

    modernenc prepare-ade --source ../shared/data/ade_corpus_v2 --out data/ade
    python benchmarks/ade_tfidf_baseline.py --split-dir data/ade

The strong baseline (word 1-2 grams + char_wb 3-5 grams, sublinear tf, liblinear) is fitted on train for
each C of the grid; the C with the best validation F1 at 0.5 is kept. Thresholds (0.5, max F1, target
recall) are chosen on validation and applied unchanged to test, as for the encoders. The weak word-only
model of earlier tables is reported below it for comparison. Speed is vectorise + predict, one process.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from modernenc.pv.ade_data import read_jsonl
from modernenc.pv.tfidf_baseline import C_GRID, WEAK_LABEL, fit, fit_strong, thresholded_results
from modernenc.tasks.evaluation import format_table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split-dir", required=True, help="folder written by `modernenc prepare-ade`")
    p.add_argument("--target-recall", type=float, default=0.95, help="recall the review threshold must reach")
    args = p.parse_args(argv)

    split_dir = Path(args.split_dir)
    missing = [f for f in ("train.jsonl", "validation.jsonl", "test.jsonl") if not (split_dir / f).is_file()]
    if missing:
        print(
            f"error: {split_dir} lacks {', '.join(missing)}; run `modernenc prepare-ade` first",
            file=sys.stderr,
        )
        return 1
    split = {s: read_jsonl(split_dir / f"{s}.jsonl") for s in ("train", "validation", "test")}
    start = time.perf_counter()
    strong = fit_strong(split["train"], split["validation"])
    print(
        f"strong baseline: {len(C_GRID)} fits on {len(split['train']):,} sentences in "
        f"{time.perf_counter() - start:.1f} s; validation F1 at 0.5 per C:"
    )
    print(
        "  "
        + "  ".join(f"C={c:g}: {f1:.4f}" for c, f1 in strong.validation_f1.items())
        + f"  -> C={strong.c:g}"
    )
    for title, model in (
        (f"strong baseline, C={strong.c:g}", strong.model),
        (WEAK_LABEL, fit(split["train"])),
    ):
        row = thresholded_results(model, split["validation"], split["test"], args.target_recall)
        print(f"\n{title}: test split, thresholds chosen on validation ({row['examples_per_s']:,.0f} ex/s)")
        print(format_table(row["results"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
