"""TF-IDF + logistic regression on the ADE sentence-classification split (the floor for fine-tuned encoders).

    python data_prep/ade.py --source ../shared/data/ade_corpus_v2 --out data/ade
    python benchmarks/ade_tfidf_baseline.py --split-dir data/ade

Trains on train.jsonl and reports F1/precision/recall/accuracy/AUROC for the ADE class on validation and
test, plus prediction throughput (vectorise + predict, one CPU process).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from modernenc.pv.ade_data import read_jsonl
from modernenc.pv.tfidf_baseline import evaluate, fit


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split-dir", required=True, help="folder written by data_prep/ade.py")
    p.add_argument("--c", type=float, default=4.0, help="inverse L2 regularisation strength")
    args = p.parse_args(argv)

    split_dir = Path(args.split_dir)
    missing = [f for f in ("train.jsonl", "validation.jsonl", "test.jsonl") if not (split_dir / f).is_file()]
    if missing:
        print(f"error: {split_dir} lacks {', '.join(missing)}; run data_prep/ade.py first", file=sys.stderr)
        return 1
    train = read_jsonl(split_dir / "train.jsonl")
    t0 = time.perf_counter()
    model = fit(train, c=args.c)
    print(f"fit on {len(train):,} train sentences in {time.perf_counter() - t0:.1f} s (C={args.c})")
    model.predict_proba([r["text"] for r in train[:64]])  # warm-up, so the first timed split is not penalised
    print(f"{'eval split':<12}{'n':>6}{'F1':>8}{'prec':>8}{'recall':>8}{'acc':>8}{'AUROC':>8}{'ex/s':>10}")
    for name in ("validation", "test"):
        m = evaluate(model, read_jsonl(split_dir / f"{name}.jsonl"))
        print(
            f"{name:<12}{m['examples']:>6}{m['f1']:>8.4f}{m['precision']:>8.4f}{m['recall']:>8.4f}"
            f"{m['accuracy']:>8.4f}{m['auroc']:>8.4f}{m['predict_examples_per_s']:>10,.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
