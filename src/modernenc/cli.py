"""`modernenc`: one command, a subcommand per step, all listed in `COMMANDS`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Command:
    help: str
    configure: Callable[[argparse.ArgumentParser], None]  # adds the subcommand's options
    run: Callable[[argparse.Namespace], None]


def _demo_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("checkpoints/demo-export"),
        help="folder for the exported Hugging Face model (default: %(default)s)",
    )
    parser.add_argument("--preset", default="mini", help="model preset (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="replace an earlier export in --out")


def _demo(args: argparse.Namespace) -> None:
    from modernenc.demo import run_demo

    run_demo(args.out, preset=args.preset, overwrite=args.force)


def _bench_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shape", default="base", help="model preset to benchmark (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per cell; the median is reported")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])


def _bench(args: argparse.Namespace) -> None:
    import runpy

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "inference_cpu.py"
    sys.argv = [str(script), "--shape", args.shape, "--repeats", str(args.repeats), "--dtypes", *args.dtypes]
    runpy.run_path(str(script), run_name="__main__")


COMMANDS: dict[str, Command] = {
    "demo": Command(
        "tour the foundation: build, classify, export to Hugging Face format, reload", _demo_args, _demo
    ),
    "bench": Command(
        "CPU inference throughput of modernenc vs transformers ModernBert on identical weights",
        _bench_args,
        _bench,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modernenc",
        description="Pre-train, domain-adapt and fine-tune ModernBERT-style encoders.",
        epilog="Example: modernenc demo --out checkpoints/demo-export",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        cmd.configure(sub.add_parser(name, help=cmd.help, description=cmd.help))
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command].run(args)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        sys.exit(f"modernenc {args.command}: error: {err}")


if __name__ == "__main__":
    main()
