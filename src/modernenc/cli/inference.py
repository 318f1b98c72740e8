"""Inference commands: classify texts with a fine-tuned model."""

from __future__ import annotations

import argparse
from pathlib import Path

from modernenc.cli.command import Command


def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", type=Path, help="fine-tuned Hugging Face folder (with tokenizer.json)")
    p.add_argument("input", type=Path, help="texts: .txt (one per line), .jsonl, .csv or .parquet")
    p.add_argument("--out", type=Path, required=True, help="predictions file: .jsonl or .csv")
    p.add_argument(
        "--text-column",
        default="text",
        help=".jsonl field or .csv column holding the text (default: %(default)s)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="decision threshold on the positive probability (default: the chosen one in thresholds.json, "
        "else 0.5)",
    )
    p.add_argument(
        "--review-band",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        default=None,
        help="flag probabilities in [LO, HI] for human review (default: thresholds.json's band, else "
        "halfway from the threshold to 0 and to 1)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="texts per batch (default: %(default)s)")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="(default: %(default)s)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out")
    p.epilog = (
        "Example: modernenc predict checkpoints/quickstart-finetune-ade/best-hf data/ade/test.jsonl "
        "--out predictions.jsonl"
    )


def _predict(args: argparse.Namespace) -> None:
    from modernenc.tasks.predict import format_summary, predict_file

    summary = predict_file(
        args.model_dir,
        args.input,
        args.out,
        text_column=args.text_column,
        threshold=args.threshold,
        review_band=args.review_band,
        batch_size=args.batch_size,
        dtype=args.dtype,
        device=args.device,
        force=args.force,
    )
    print(format_summary(summary))


COMMANDS = {
    "predict": Command(
        "classify texts (.txt .jsonl .csv .parquet) with a fine-tuned model: probability, label, review flag",
        _predict_args,
        _predict,
    ),
}
