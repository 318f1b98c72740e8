"""Pharmacovigilance commands: the ADE splits, the quickstart chain, the demo, the bundled data."""

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
    p.add_argument(
        "--force", action="store_true", help="replace the splits an earlier prepare-ade wrote in --out"
    )


def _ade(args: argparse.Namespace) -> None:
    from modernenc.pv.ade_data import (
        PUBLISHED_UNIQUE,
        dedupe,
        make_splits,
        read_raw_ade,
        read_raw_hf,
    )
    from modernenc.utils.outputs import check_output_folder, writing_folder

    source = None if args.source == "hf" else args.source
    out = check_output_folder(
        args.out, kind="ade-splits", force=args.force, inputs=[source], what="--out folder"
    )
    rows = read_raw_hf() if source is None else read_raw_ade(source)
    found = dedupe(rows)
    splits = make_splits(found.positives, found.negatives, seed=args.seed, natural=args.natural)
    write = ADE_TASKS[args.task](args, splits)  # reads what the task needs before anything is written
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
    with writing_folder(out, kind="ade-splits", tool="prepare-ade") as staging:
        write(staging, info)
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

    # Only the names: `--help` works before any data is there (a placeholder folder, never read).
    names = [stage.name for stage in stages(Path("results.md"), data=Path("DATA"))]
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


FETCH_EXAMPLE = """examples:
  modernenc fetch-data                       # into ~/.cache/modernenc/data, where the quickstart looks
  modernenc fetch-data --out data/bundled    # then: export MODERNENC_SHARED_DATA=data/bundled
  modernenc fetch-data --mirror /mnt/hub --out data/bundled   # from local copies: /mnt/hub/<owner>/<name>/
A second run checks every file against manifest.json and does nothing; a changed file is refused.
"""


def _fetch_args(p: argparse.ArgumentParser) -> None:
    p.epilog = FETCH_EXAMPLE
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder to build (default: $XDG_CACHE_HOME/modernenc/data, i.e. ~/.cache/modernenc/data)",
    )
    p.add_argument(
        "--mirror",
        type=Path,
        default=None,
        metavar="DIR",
        help="read each source from a local copy of its hub repository, DIR/<owner>/<name>/, not the hub",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="fetch again and replace an earlier fetch in --out (a folder without manifest.json is never "
        "touched)",
    )
    p.add_argument("--no-progress", action="store_true", help="disable progress bars")


def _fetch(args: argparse.Namespace) -> None:
    from modernenc.pv.fetch_data import fetch_data

    fetch_data(args.out, mirror=args.mirror, force=args.force, progress=not args.no_progress)


COMMANDS = {
    "quickstart": Command(
        "the main job on CPU: pre-train -> anneal on PubMed -> fine-tune on ADE -> results table",
        _quickstart_args,
        _quickstart,
    ),
    "fetch-data": Command(
        "build the bundled data (ADE, Wikipedia, PubMed, tokenizer) from pinned Hugging Face hub sources",
        _fetch_args,
        _fetch,
        description="Build the bundled data folder (the layout of ../shared/data) from Hugging Face hub "
        "sources pinned to revisions, streamed, with a manifest of SHA-256 per file.",
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
