"""Write the ADE corpus v2 sentence-classification splits (train/validation/test JSONL).

Follows the published protocol: unique DRUG-AE.rel sentences are positives, unique ADE-NEG.txt sentences
negatives, negatives sub-sampled to the positives, stratified 60/20/20 -> 2,562/855/854 per class.
The logic lives in ``modernenc.tasks.ade_data``.
"""

from __future__ import annotations

import argparse
import sys

from modernenc.tasks.ade_data import (
    HF_CONFIG,
    HF_NAME,
    PUBLISHED_UNIQUE,
    dedupe,
    format_counts,
    make_splits,
    prepare_output_dir,
    read_raw_ade,
    read_raw_hf,
    write_splits,
)

EXAMPLE = """example:
  python data_prep/ade.py --source ../shared/data/ade_corpus_v2 --out data/ade
  python data_prep/ade.py --source ../shared/data/ade_corpus_v2 --out data/ade_natural --natural
  python data_prep/ade.py --source hf --out data/ade      # needs the Hugging Face Hub (or its cache)
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Build leak-free ADE sentence-classification splits: {text, label} JSONL per split.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--source",
        required=True,
        help=f"ADE corpus v2 folder (DRUG-AE.rel, ADE-NEG.txt), or 'hf' for {HF_NAME}/{HF_CONFIG}",
    )
    p.add_argument("--out", required=True, help="output folder for {train,validation,test}.jsonl")
    p.add_argument("--seed", type=int, default=42, help="seed of the sub-sample and the split (default 42)")
    p.add_argument(
        "--natural",
        action="store_true",
        help="keep all negatives (natural class imbalance) instead of sub-sampling to the positives",
    )
    p.add_argument("--force", action="store_true", help="overwrite the split files in a non-empty --out")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rows = read_raw_hf() if args.source == "hf" else read_raw_ade(args.source)
        found = dedupe(rows)
        splits = make_splits(found.positives, found.negatives, seed=args.seed, natural=args.natural)
        out = prepare_output_dir(args.out, args.force)  # after loading, so a failed load leaves no folder
    except (FileExistsError, FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    unique = len(found.positives) + len(found.negatives)
    print(
        f"read {found.raw_rows['positive']:,} positive and {found.raw_rows['negative']:,} negative rows; "
        f"unique: {len(found.positives):,} positive + {len(found.negatives):,} negative = {unique:,} "
        f"sentences; {found.conflicts} labelled both ways (kept as positive)"
    )
    if unique != PUBLISHED_UNIQUE:
        print(
            f"warning: {unique:,} unique sentences, the published corpus has {PUBLISHED_UNIQUE:,}",
            file=sys.stderr,
        )
    info = {
        "seed": args.seed,
        "source": args.source,
        "distribution": "natural" if args.natural else "balanced",
        "raw_rows": found.raw_rows,
        "unique": {"positive": len(found.positives), "negative": len(found.negatives)},
        "conflicts": found.conflicts,
    }
    info = write_splits(splits, out, info)
    print(format_counts(splits))
    print(f"wrote {out} (split_info.json: seed {args.seed}, sha256 per file)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
