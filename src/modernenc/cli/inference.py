"""Inference commands: classify texts with a fine-tuned model, or extract their spans."""

from __future__ import annotations

import argparse
from pathlib import Path

from modernenc.cli.command import Command


def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model_dir",
        type=Path,
        help="fine-tuned Hugging Face folder (with tokenizer.json): a sentence classifier, or a span tagger "
        "(token classification with BIO tags), which writes each text's spans",
    )
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
    p.add_argument(
        "--with-spans",
        type=Path,
        metavar="SPAN_MODEL_DIR",
        default=None,
        help="a span tagger folder: rows the classifier flags also get their spans (the others spans: null)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing --out")
    p.epilog = (
        "Example: modernenc predict checkpoints/quickstart-finetune-ade/best-hf data/ade/test.jsonl "
        "--out predictions.jsonl\n"
        "Spans:   modernenc predict checkpoints/quickstart-finetune-ade-spans/best-hf data/ade/test.jsonl "
        "--out spans.jsonl\n"
        "Both:    modernenc predict checkpoints/quickstart-finetune-ade/best-hf data/ade/test.jsonl "
        "--with-spans checkpoints/quickstart-finetune-ade-spans/best-hf --out flagged.jsonl"
    )


def _predict(args: argparse.Namespace) -> None:
    from modernenc.tasks.extract import is_token_classifier

    if args.model_dir.is_dir() and (args.model_dir / "config.json").is_file():
        if is_token_classifier(args.model_dir):
            _predict_spans(args)
            return
    from modernenc.tasks.predict import check_output_path, format_summary, predict_file

    annotate = None
    if args.with_spans is not None:  # the tagger is checked and loaded before any work
        from functools import partial

        from modernenc.tasks.extract import SpanTagger, add_spans
        from modernenc.tasks.predict import _resolve_device

        check_output_path(args.out, force=args.force, input_path=args.input)
        tagger = SpanTagger.from_folder(args.with_spans, _resolve_device(args.device))
        annotate = partial(add_spans, tagger=tagger, batch_size=args.batch_size, dtype=args.dtype)
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
        annotate=annotate,
    )
    print(format_summary(summary))


def _predict_spans(args: argparse.Namespace) -> None:
    """MODEL_DIR is a span tagger: write each text's spans; the sentence-decision options do not apply."""
    from modernenc.tasks.extract import predict_spans_file

    if args.with_spans is not None:
        raise ValueError(
            f"{args.model_dir} is a span tagger; --with-spans takes the span tagger and MODEL_DIR a sentence "
            f"classifier (modernenc predict CLASSIFIER_DIR INPUT --with-spans {args.model_dir} ...)"
        )
    for option, value in (("--threshold", args.threshold), ("--review-band", args.review_band)):
        if value is not None:
            raise ValueError(f"{option} applies to sentence classifiers; {args.model_dir} is a span tagger")
    summary = predict_spans_file(
        args.model_dir,
        args.input,
        args.out,
        text_column=args.text_column,
        batch_size=args.batch_size,
        dtype=args.dtype,
        device=args.device,
        force=args.force,
    )
    print(summary)


COMMANDS = {
    "predict": Command(
        "classify texts (.txt .jsonl .csv .parquet) with a fine-tuned model: probability, label, review "
        "flag; or extract their spans with a span tagger",
        _predict_args,
        _predict,
    ),
}
