"""`modernenc`: one command, a subcommand per step.

Each subcommand is a `Command` (help, options, what it runs) in one of the modules below, grouped by the
layer it drives; `COMMANDS` is the one registry. The scripts in the repository's `data_prep/`, `train.py`
and `benchmarks/inference_cpu.py` call the same commands through `run_as_script`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from modernenc.cli import bench, data, inference, pv, serve, training
from modernenc.cli.command import Command, CommandError

COMMANDS: dict[str, Command] = {**pv.COMMANDS, **data.COMMANDS, **training.COMMANDS, **inference.COMMANDS}
COMMANDS.update(bench.COMMANDS)
COMMANDS.update(serve.COMMANDS)

__all__ = ["COMMANDS", "Command", "CommandError", "build_parser", "main", "run_as_script"]


def build_parser(prog: str = "modernenc") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Pre-train, domain-adapt, fine-tune and deploy ModernBERT-style encoders.",
        epilog="Example: modernenc demo --out checkpoints/demo-export",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        command.add_to(sub, name)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Run `modernenc ARGV`; an error ends the process with one line naming the problem, and exit code 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    COMMANDS[args.command].invoke(args, f"modernenc {args.command}")


def run_as_script(name: str, prog: str, argv: Sequence[str] | None = None) -> None:
    """Run subcommand `name` as a stand-alone script (`python data_prep/ade.py ...`), usage named `prog`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = COMMANDS[name]
    parser = argparse.ArgumentParser(prog=prog)
    command.configure_parser(parser)
    command.invoke(parser.parse_args(argv), prog)


if __name__ == "__main__":
    main()
