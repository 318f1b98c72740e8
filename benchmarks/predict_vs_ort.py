"""Whole processes, start-up included: `modernenc predict --dtype int8` against a plain ONNX Runtime int8
script (benchmarks/ort_int8_predict.py: tokenize, sort, batch by 64) on the ADE test texts.

Both run as fresh processes on the same weights and the same texts, with the same number of threads, and
write the same JSONL (probability and label per text). Runs alternate between the two (who goes first
alternates too); the wall times' medians and the median of the per-run ratios are reported, plus how far
the two int8 engines' probabilities are apart. Target (issue 19): modernenc at most 1/1.3 of the ORT
script's time.

By default it builds a random classifier of `--shape` (base: the issue's comparison) as `modernenc bench`
does, exports it with `modernenc export-onnx --int8`, and writes the 1,708-text ADE test split as
`modernenc prepare-ade` does (none of that is timed). `--model-dir` uses a fine-tuned folder instead
(with `--onnx-dir`, its existing export); predict passes `--threshold 0.5` unless the folder records int8
thresholds (`modernenc calibrate`).

    python benchmarks/predict_vs_ort.py --shape base --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from modernenc.cli.bench import positive_int
from modernenc.cli.bench_inference import ade_test_texts, save_random_classifier
from modernenc.model.presets import PRESETS
from modernenc.pv.bundled_data import modernbert_tokenizer_dir
from modernenc.tasks.decisions import read_thresholds
from modernenc.tasks.onnx_export import INT8_FILE, export_onnx

ORT_SCRIPT = Path(__file__).with_name("ort_int8_predict.py")
ADE_TEST_SIZE = 1708


def timed(command: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def read_probabilities(path: Path) -> np.ndarray:
    return np.array([json.loads(line)["probability"] for line in path.read_text().splitlines()])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="base", choices=sorted(PRESETS), help="random classifier's preset")
    p.add_argument("--model-dir", type=Path, default=None, help="a fine-tuned folder instead of a random one")
    p.add_argument("--onnx-dir", type=Path, default=None, help="its `export-onnx --int8` folder, if made")
    p.add_argument("--input", type=Path, default=None, help="JSONL texts (default: the ADE test split)")
    p.add_argument("--repeats", type=positive_int, default=3)
    p.add_argument("--threads", type=positive_int, default=2)
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = args.model_dir
        if model_dir is None:
            model_dir = tmp / "classifier"
            save_random_classifier(args.shape, model_dir, modernbert_tokenizer_dir())
        onnx_dir = args.onnx_dir
        if onnx_dir is None:
            onnx_dir = tmp / "onnx"
            export_onnx(model_dir, onnx_dir, int8=True)
        if not (onnx_dir / INT8_FILE).is_file():
            raise SystemExit(f"error: {onnx_dir / INT8_FILE} is missing; export with `export-onnx --int8`")
        texts_file = args.input
        if texts_file is None:
            texts_file = tmp / "test.jsonl"
            rows = [{"text": t} for t in ade_test_texts(None, ADE_TEST_SIZE)]
            texts_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        calibrated = read_thresholds(model_dir, "int8") is not None
        ours_out, theirs_out = tmp / "modernenc.jsonl", tmp / "ort.jsonl"
        commands = {
            "modernenc predict --dtype int8": [
                sys.executable, "-m", "modernenc", "predict", str(model_dir), str(texts_file),
                "--out", str(ours_out), "--dtype", "int8", "--device", "cpu", "--force",
                *([] if calibrated else ["--threshold", "0.5"]),
            ],
            "onnxruntime int8 script": [
                sys.executable, str(ORT_SCRIPT), str(onnx_dir), str(texts_file), "--out", str(theirs_out),
                "--threads", str(args.threads),
            ],
        }  # fmt: skip
        times: dict[str, list[float]] = {name: [] for name in commands}
        for repeat in range(args.repeats):
            order = list(commands) if repeat % 2 == 0 else list(commands)[::-1]
            for name in order:
                times[name].append(timed(commands[name], args.threads))
                print(f"run {repeat + 1}: {name} {times[name][-1]:.1f} s", flush=True)
        ours, theirs = read_probabilities(ours_out), read_probabilities(theirs_out)

    texts = len(ours)
    ratio = statistics.median(a / b for a, b in zip(*times.values(), strict=True))
    print(f"\n{texts} texts from {texts_file}, {args.threads} threads, {args.repeats} runs each")
    print("| process | median wall s | texts/s | runs (s) |")
    print("|---|---|---|---|")
    for name, runs in times.items():
        median = statistics.median(runs)
        print(f"| {name} | {median:.1f} | {texts / median:,.0f} | {' '.join(f'{t:.1f}' for t in runs)} |")
    print(f"modernenc / onnxruntime time: {ratio:.2f} (target <= {1 / 1.3:.2f})")
    agree = np.mean((ours >= 0.5) == (theirs >= 0.5))
    print(
        "probabilities, modernenc int8 vs onnxruntime int8: max abs difference "
        f"{np.abs(ours - theirs).max():.3g}, labels at 0.5 agree on {agree:.1%}"
    )


if __name__ == "__main__":
    main()
