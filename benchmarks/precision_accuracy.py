"""What each inference precision does to a fine-tuned classifier's decisions, on the test split.

For every precision (fp32, bf16, int8) the model is scored on validation and test. Each precision's
thresholds are chosen on its own validation scores, exactly as `modernenc calibrate` chooses them
(`select_thresholds` at the target recall of the folder's thresholds.json), and applied unchanged on test.
Reported per precision, on test:

- F1, precision and recall at 0.5; AUROC;
- recall and precision at its own target-recall threshold, and (for bf16 and int8) the recall fp32's
  threshold would give, which is what skipping calibration risks;
- the max and mean |probability - fp32 probability|;
- batch dependence: the largest change of a test probability between its batch of 64 and scoring it
  alone (first `--alone` texts). int8 quantizes each linear layer's input with one scale per batch (as
  ONNX Runtime's dynamic int8 does), so its probabilities move with their batch neighbours; fp32 and
  bf16 only by float noise.

Gate (issue 19): int8's test recall at its own threshold reaches the target, and its F1 at 0.5 is no more
than 0.5 points below fp32's. Exit code 1 when the gate fails. The folder is only read.

    python benchmarks/precision_accuracy.py --model-dir checkpoints/quickstart-finetune-ade/best-hf \\
        --split-dir data/ade
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from modernenc.tasks.classification_data import tokenize_texts
from modernenc.tasks.decisions import read_thresholds
from modernenc.tasks.evaluation import DEFAULT_TARGET_RECALL, binary_metrics, select_thresholds
from modernenc.tasks.predict import load_classifier, predict_probabilities
from modernenc.utils.precision import PRECISIONS
from modernenc.utils.tables import read_rows

F1_TOLERANCE = 0.005  # int8's F1 at 0.5 may be at most 0.5 points below fp32's


def read_split(path: Path, text_column: str, label_column: str, names: list[str], positive: int):
    rows = read_rows(path, [text_column, label_column])
    labels = [str(r[label_column]) for r in rows]
    unknown = sorted(set(labels) - set(names))
    if unknown:
        raise SystemExit(
            f"error: {path} has {label_column} values {unknown} the model does not know: {names}"
        )
    return [r[text_column] for r in rows], np.array([names.index(x) == positive for x in labels], dtype=int)


def evaluate(model_dir: Path, splits: dict, precisions: list[str], batch_size: int, alone: int) -> dict:
    rule = read_thresholds(model_dir)
    target = (rule.target_recall if rule else None) or DEFAULT_TARGET_RECALL
    positive = rule.positive_label if rule else 1
    results, fp32 = {}, None
    for precision in precisions:
        model, tokenizer = load_classifier(model_dir, "cpu", precision)
        config = model.config
        max_length = (rule.max_length if rule else None) or config.max_position_embeddings
        ids, probs = {}, {}
        for split, (texts, _) in splits.items():
            ids[split], _ = tokenize_texts(
                tokenizer, texts, max_length, config.cls_token_id, config.sep_token_id
            )
            probs[split] = predict_probabilities(model, ids[split], batch_size, positive, progress=False)
        single = (
            predict_probabilities(model, ids["test"][:alone], 1, positive, progress=False) if alone else None
        )
        thresholds = select_thresholds(splits["validation"][1], probs["validation"], target)
        y = splits["test"][1]
        at_half = binary_metrics(y, probs["test"], 0.5)
        at_target = binary_metrics(y, probs["test"], thresholds["target_recall"])
        if precision == "fp32":
            fp32 = {"probs": probs["test"], "threshold": thresholds["target_recall"]}
        result = {
            "f1": at_half["f1"],
            "precision": at_half["precision"],
            "recall": at_half["recall"],
            "auroc": at_half["auroc"],
            "threshold": thresholds["target_recall"],
            "recall_at_threshold": at_target["recall"],
            "precision_at_threshold": at_target["precision"],
            "test_probabilities": probs["test"].tolist(),
            "batch_dependence": float(np.abs(single - probs["test"][:alone]).max()) if alone else None,
        }
        if fp32 is not None and precision != "fp32":
            diff = np.abs(probs["test"] - fp32["probs"])
            result["max_abs_diff"], result["mean_abs_diff"] = float(diff.max()), float(diff.mean())
            result["recall_at_fp32_threshold"] = binary_metrics(y, probs["test"], fp32["threshold"])["recall"]
        results[precision] = result
    return {"target_recall": target, "test_examples": len(splits["test"][1]), "precisions": results}


def gate(report: dict) -> tuple[bool, str]:
    found = report["precisions"]
    if "int8" not in found or "fp32" not in found:
        return True, "gate: not checked (needs fp32 and int8)"
    int8, fp32 = found["int8"], found["fp32"]
    recall_ok = int8["recall_at_threshold"] >= report["target_recall"]
    f1_ok = int8["f1"] >= fp32["f1"] - F1_TOLERANCE
    verdict = "PASS" if recall_ok and f1_ok else "FAIL"
    return recall_ok and f1_ok, (
        f"gate: {verdict}: int8 test recall at its own threshold {int8['recall_at_threshold']:.4f} "
        f"{'>=' if recall_ok else '<'} target {report['target_recall']}; int8 F1 {100 * int8['f1']:.2f} vs "
        f"fp32 {100 * fp32['f1']:.2f} ({100 * (int8['f1'] - fp32['f1']):+.2f} points, allowed "
        f"-{100 * F1_TOLERANCE:.1f})"
    )


def format_report(report: dict) -> str:
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    lines = [
        f"test: {report['test_examples']} texts; thresholds chosen on validation per precision for recall "
        f"{report['target_recall']}",
        "",
        "| precision | F1 @0.5 | AUROC | threshold | test recall @threshold | test precision @threshold "
        "| recall @fp32's threshold | max / mean abs prob diff vs fp32 | batch dependence |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report["precisions"].items():
        fp32_recall = pct(r["recall_at_fp32_threshold"]) if "recall_at_fp32_threshold" in r else "-"
        diff = f"{r['max_abs_diff']:.4f} / {r['mean_abs_diff']:.4f}" if "max_abs_diff" in r else "-"
        batch = f"{r['batch_dependence']:.2g}" if r["batch_dependence"] is not None else "-"
        lines.append(
            f"| {name} | {pct(r['f1'])} | {pct(r['auroc'])} | {r['threshold']:.4f} | "
            f"{pct(r['recall_at_threshold'])} | {pct(r['precision_at_threshold'])} | {fp32_recall} | {diff} "
            f"| {batch} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, required=True, help="fine-tuned binary classifier folder")
    p.add_argument(
        "--split-dir", type=Path, required=True, help="folder with validation.jsonl and test.jsonl"
    )
    p.add_argument("--dtypes", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--alone", type=int, default=256, help="test texts also scored one at a time (0: none)")
    p.add_argument("--json", type=Path, default=None, help="also write the report (with probabilities) here")
    args = p.parse_args(argv)

    precisions = ["fp32", *(d for d in args.dtypes if d != "fp32")]  # fp32 first: the others compare to it
    rule = read_thresholds(args.model_dir)
    config = json.loads((args.model_dir / "config.json").read_text())
    names = (
        list(rule.label_names) if rule and rule.label_names else [config["id2label"][str(i)] for i in (0, 1)]
    )
    positive = rule.positive_label if rule else 1
    splits = {
        split: read_split(
            args.split_dir / f"{split}.jsonl", args.text_column, args.label_column, names, positive
        )
        for split in ("validation", "test")
    }
    report = evaluate(args.model_dir, splits, precisions, args.batch_size, args.alone)
    passed, verdict = gate(report)
    print(format_report(report))
    print(verdict)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
