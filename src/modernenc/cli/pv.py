"""Pharmacovigilance commands: the ADE splits, the quickstart chain, the demo."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from modernenc.cli.command import Command
from modernenc.model.presets import PRESETS

ADE_EXAMPLE = """example:
  modernenc prepare-ade --source ../shared/data/ade_corpus_v2 --out data/ade
  modernenc prepare-ade --source ../shared/data/ade_corpus_v2 --out data/ade_natural --natural
  modernenc prepare-ade --source hf --out data/ade      # needs the Hugging Face Hub (or its cache)
  modernenc prepare-ade --task spans --source ../shared/data/ade_corpus_v2 --out data/ade-spans
  (also `python data_prep/ade.py ...` from a checkout)
"""


def _ade_args(p: argparse.ArgumentParser) -> None:
    from modernenc.pv.ade_data import HF_CONFIG, HF_NAME

    p.epilog = ADE_EXAMPLE
    p.add_argument(
        "--source",
        required=True,
        help=f"ADE corpus v2 folder (DRUG-AE.rel, ADE-NEG.txt), or 'hf' for {HF_NAME}/{HF_CONFIG} (with "
        "--task spans also its drug-ADE relation config, which has no document offsets)",
    )
    p.add_argument("--out", required=True, help="output folder for {train,validation,test}.jsonl")
    p.add_argument(
        "--task",
        choices=sorted(ADE_TASKS),
        default="classification",
        help="classification: {text, label} per sentence; spans: {text, spans, relations} with the drug "
        "and adverse-effect mentions, on the same split (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=42, help="seed of the sub-sample and the split (default 42)")
    p.add_argument(
        "--natural",
        action="store_true",
        help="keep all negatives (natural class imbalance) instead of sub-sampling to the positives",
    )
    p.add_argument("--force", action="store_true", help="overwrite the split files in a non-empty --out")


def _ade(args: argparse.Namespace) -> None:
    from modernenc.pv.ade_data import (
        PUBLISHED_UNIQUE,
        dedupe,
        make_splits,
        prepare_output_dir,
        read_raw_ade,
        read_raw_hf,
    )

    rows = read_raw_hf() if args.source == "hf" else read_raw_ade(args.source)
    found = dedupe(rows)
    splits = make_splits(found.positives, found.negatives, seed=args.seed, natural=args.natural)
    write = ADE_TASKS[args.task](args, splits)  # reads what the task needs before any folder is made
    out = prepare_output_dir(args.out, args.force)  # after loading, so a failed load leaves no folder
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
    write(out, info)
    print(f"wrote {out} (split_info.json: seed {args.seed}, sha256 per file)")


def _classification_splits(args: argparse.Namespace, splits: dict):
    from modernenc.pv.ade_data import format_counts, write_splits

    def write(out: Path, info: dict) -> None:
        write_splits(splits, out, {**info, "task": "classification"})
        print(format_counts(splits))

    return write


def _span_splits(args: argparse.Namespace, splits: dict):
    """The same split with each positive sentence's drug and effect mentions (pv/ade_spans.py)."""
    from modernenc.pv.ade_data import HF_NAME
    from modernenc.pv.ade_spans import (
        HF_RELATION_CONFIG,
        build_span_rows,
        format_span_counts,
        format_stats,
        read_relation_lines,
        read_relation_lines_hf,
        span_splits,
        write_span_splits,
    )

    if args.source == "hf":
        lines = read_relation_lines_hf(HF_NAME, HF_RELATION_CONFIG)
    else:
        lines = read_relation_lines(args.source)
    rows, stats = build_span_rows(lines)
    span_rows = span_splits(splits, rows)

    def write(out: Path, info: dict) -> None:
        print(format_stats(stats))
        if stats.unplaced >= 0.01 * stats.mentions:
            print(
                f"warning: {stats.unplaced:,} of {stats.mentions:,} mentions could not be placed",
                file=sys.stderr,
            )
        write_span_splits(span_rows, out, {**info, "task": "spans", "spans": stats.as_dict()})
        print(format_span_counts(span_rows))

    return write


ADE_TASKS = {"classification": _classification_splits, "spans": _span_splits}


def _quickstart_args(p: argparse.ArgumentParser) -> None:
    from modernenc.pv.quickstart import DEFAULT_RESULTS, stages

    names = [stage.name for stage in stages(Path("results.md"))]
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_RESULTS,
        help="results table, rewritten by each run (default: %(default)s)",
    )
    p.add_argument(
        "--only", nargs="+", choices=names, metavar="STAGE", help=f"run only these stages: {', '.join(names)}"
    )
    p.epilog = (
        "Example: modernenc quickstart   (re-running reuses finished stages; data/ and checkpoints/ go in "
        "the working directory)"
    )


def _quickstart(args: argparse.Namespace) -> None:
    from modernenc.pv.quickstart import run_chain

    run_chain(args.out, only=args.only)


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out",
        type=Path,
        default=Path("checkpoints/demo-export"),
        help="folder for the exported Hugging Face model (default: %(default)s)",
    )
    p.add_argument(
        "--preset", default="mini", choices=sorted(PRESETS), help="model preset (default: %(default)s)"
    )
    p.add_argument("--force", action="store_true", help="replace an earlier export in --out")
    p.epilog = "Example: modernenc demo --out checkpoints/demo-export --preset mini"


def _demo(args: argparse.Namespace) -> None:
    from modernenc.pv.demo import run_demo

    run_demo(args.out, preset=args.preset, overwrite=args.force)


COMMANDS = {
    "quickstart": Command(
        "the main job on CPU: pre-train -> anneal on PubMed -> fine-tune on ADE -> results table",
        _quickstart_args,
        _quickstart,
    ),
    "demo": Command(
        "tour the foundation: build, classify, export to Hugging Face format, reload", _demo_args, _demo
    ),
    "prepare-ade": Command(
        "write the ADE corpus as leak-free train/validation/test JSONL splits",
        _ade_args,
        _ade,
        description="Build leak-free ADE splits: {text, label} JSONL per split, or with --task spans the "
        "same sentences with their drug and adverse-effect mentions {text, spans, relations}.",
    ),
}
