"""`modernenc bench`: CPU inference throughput against `transformers` on identical weights.

The options live here; the benchmark itself (which loads torch and `transformers`) in `bench_inference`.
"""

from __future__ import annotations

import argparse

from modernenc.cli.command import Command
from modernenc.model.presets import PRESETS

WORKLOAD_NAMES = ("ade", "doc", "fixed512")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _bench_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shape", default="base", choices=sorted(PRESETS), help="model preset")
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOAD_NAMES), choices=WORKLOAD_NAMES)
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.epilog = "Example: modernenc bench --shape base --workloads ade --repeats 5"


def _bench(args: argparse.Namespace) -> None:
    from modernenc.cli.bench_inference import run_benchmark

    run_benchmark(args)


COMMANDS = {
    "bench": Command(
        "CPU inference throughput vs transformers ModernBert, on identical weights",
        _bench_args,
        _bench,
        description=__doc__,
    ),
}
