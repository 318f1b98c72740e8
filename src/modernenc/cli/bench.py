"""`modernenc bench`: CPU inference throughput of a classifier, modernenc (fp32, bf16, int8) against
`transformers` and ONNX Runtime (fp32, int8), on identical weights.

The options live here; the benchmark itself (which loads torch, `transformers` and onnxruntime) in
`bench_inference`, whose docstring says what is measured and how.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from modernenc.cli.command import Command
from modernenc.model.presets import PRESETS
from modernenc.utils.precision import PRECISIONS

WORKLOAD_NAMES = ("ade-file", "ade-sorted", "doc", "fixed512", "ade")
DEFAULT_WORKLOADS = ["ade-file", "ade-sorted", "doc", "fixed512"]
ENGINE_NAMES = ("transformers", "modernenc", "onnxruntime")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _bench_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shape", default="base", choices=sorted(PRESETS), help="model preset")
    parser.add_argument(
        "--workloads",
        nargs="+",
        default=DEFAULT_WORKLOADS,
        choices=WORKLOAD_NAMES,
        help="ade-file / ade-sorted: real ADE test sentences in batches of 64, in file order or longest "
        "first; doc: 16 x N(256,64); fixed512: 8 x 512; ade: 64 random sentences N(30,15) "
        "(default: %(default)s)",
    )
    parser.add_argument("--engines", nargs="+", default=list(ENGINE_NAMES), choices=ENGINE_NAMES)
    parser.add_argument(
        "--dtypes",
        nargs="+",
        default=list(PRECISIONS),
        choices=PRECISIONS,
        help="precisions to run where an engine has them: transformers fp32/bf16, modernenc fp32/bf16/int8, "
        "onnxruntime fp32/int8 (default: all)",
    )
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed runs per engine (median)")
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument(
        "--ade-texts", type=positive_int, default=512, help="ADE test sentences to use (default: %(default)s)"
    )
    parser.add_argument(
        "--ade-split",
        type=Path,
        default=None,
        help="a prepared ADE test.jsonl (default: built from the shared corpus as prepare-ade does)",
    )
    parser.add_argument(
        "--gemm-floor",
        action="store_true",
        help="add rows for the int8 variant's encoder GEMMs alone (x86 and oneDNN packing): the time no "
        "engine on torch's int8 kernel can beat",
    )
    parser.epilog = "Example: modernenc bench --shape base --workloads ade-sorted --repeats 5"


def _bench(args: argparse.Namespace) -> None:
    from modernenc.cli.bench_inference import run_benchmark

    run_benchmark(args)


COMMANDS = {
    "bench": Command(
        "CPU inference throughput vs transformers and ONNX Runtime, on identical weights",
        _bench_args,
        _bench,
        description=__doc__,
    ),
}
