"""Inference and deployment commands: classify texts or extract their spans, calibrate a precision's
thresholds, export to ONNX."""

from __future__ import annotations

import argparse
from pathlib import Path

from modernenc.cli.command import Command
from modernenc.utils.precision import PRECISIONS


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
    p.add_argument(
        "--dtype",
        choices=PRECISIONS,
        default="fp32",
        help="model precision: bf16 and int8 (CPU only) are faster, and use the thresholds `modernenc "
        "calibrate` recorded for them (default: %(default)s)",
    )
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

    annotate, spans_model = None, None
    if args.with_spans is not None:  # the tagger is checked and loaded before any work
        from functools import partial

        from modernenc.tasks.extract import SpanTagger, add_spans
        from modernenc.tasks.predict import resolve_device
        from modernenc.tasks.provenance import model_record

        check_output_path(args.out, force=args.force, input_path=args.input, model_dir=args.model_dir)
        tagger = SpanTagger.from_folder(args.with_spans, resolve_device(args.device, args.dtype), args.dtype)
        annotate = partial(add_spans, tagger=tagger, batch_size=args.batch_size)
        spans_model = {"spans_model": model_record(args.with_spans, args.dtype, max_length=tagger.max_length)}
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
        provenance_extra=spans_model,
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


def _calibrate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", type=Path, help="fine-tuned binary classifier folder (with tokenizer.json)")
    p.add_argument(
        "--dtype", choices=PRECISIONS, required=True, help="the precision to choose thresholds for"
    )
    p.add_argument(
        "--validation", type=Path, required=True, help="labelled validation texts: .jsonl, .csv or .parquet"
    )
    p.add_argument("--text-column", default="text", help="column holding the text (default: %(default)s)")
    p.add_argument("--label-column", default="label", help="column holding the label (default: %(default)s)")
    p.add_argument(
        "--target-recall",
        type=float,
        default=None,
        help="recall the chosen threshold must reach on validation; only when no thresholds.json exists yet "
        "(default: 0.95); otherwise the file's, shared by every precision",
    )
    p.add_argument(
        "--positive-label",
        default=None,
        help="the label of the event to detect; only when no thresholds.json exists yet (default: the label "
        "that is not 0/false/no)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="texts per batch (default: %(default)s)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--force", action="store_true", help="replace thresholds already recorded for --dtype")
    p.epilog = (
        "Example: modernenc calibrate checkpoints/quickstart-finetune-ade/best-hf --dtype int8 "
        "--validation data/ade/validation.jsonl"
    )


def _calibrate(args: argparse.Namespace) -> None:
    from modernenc.tasks.calibration import calibrate, format_calibration

    result = calibrate(
        args.model_dir,
        args.validation,
        args.dtype,
        text_column=args.text_column,
        label_column=args.label_column,
        target_recall=args.target_recall,
        positive_label=args.positive_label,
        batch_size=args.batch_size,
        device=args.device,
        force=args.force,
    )
    print(format_calibration(result))


def _export_onnx_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", type=Path, help="fine-tuned sequence or token classifier folder")
    p.add_argument("out_dir", type=Path, help="new folder for model.onnx, the tokenizer and thresholds.json")
    p.add_argument(
        "--int8", action="store_true", help="also write model_quantized.onnx (onnxruntime dynamic int8)"
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 14-20 (default: %(default)s)")
    p.add_argument(
        "--check-texts",
        type=Path,
        default=None,
        help="texts (.txt .jsonl .csv .parquet) to check the graph on (default: a few built-in sentences)",
    )
    p.add_argument("--text-column", default="text", help="column of --check-texts (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace an earlier export in OUT_DIR")
    p.epilog = (
        "Example: modernenc export-onnx checkpoints/quickstart-finetune-ade/best-hf "
        "checkpoints/quickstart-finetune-ade/onnx --int8\n"
        "Needs the extra: pip install 'modernenc[onnx]'"
    )


def _export_onnx(args: argparse.Namespace) -> None:
    from modernenc.tasks.onnx_export import export_onnx, format_export

    texts = None
    if args.check_texts is not None:
        from modernenc.tasks.predict import read_inputs

        column = "text" if args.check_texts.suffix.lower() == ".txt" else args.text_column
        texts = [row[column] for row in read_inputs(args.check_texts, args.text_column)]
    result = export_onnx(
        args.model_dir, args.out_dir, int8=args.int8, opset=args.opset, force=args.force, check_texts=texts
    )
    print(format_export(result))


COMMANDS = {
    "predict": Command(
        "classify texts (.txt .jsonl .csv .parquet) with a fine-tuned model: probability, label, review "
        "flag; or extract their spans with a span tagger",
        _predict_args,
        _predict,
    ),
    "calibrate": Command(
        "choose a precision's (fp32, bf16, int8) decision thresholds on validation, in thresholds.json",
        _calibrate_args,
        _calibrate,
    ),
    "export-onnx": Command(
        "export a fine-tuned classifier to ONNX (+ int8), checked against modernenc with onnxruntime",
        _export_onnx_args,
        _export_onnx,
    ),
}
