"""`modernenc`: one command, a subcommand per step, all listed in `COMMANDS`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modernenc.paths import REPO_ROOT


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
    parser.epilog = "Example: modernenc demo --out checkpoints/demo-export --preset mini"


def _demo(args: argparse.Namespace) -> None:
    from modernenc.demo import run_demo

    run_demo(args.out, preset=args.preset, overwrite=args.force)


def _export_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="composer checkpoint written by train.py (*.pt)")
    parser.add_argument("out", type=Path, help="folder for the Hugging Face model")
    parser.add_argument("--tokenizer", type=Path, default=None, help="tokenizer folder to copy alongside")
    parser.add_argument("--force", action="store_true", help="replace an earlier export in OUT")
    parser.epilog = (
        "Example: modernenc export-hf checkpoints/quickstart-pretrain/latest-rank0.pt "
        "checkpoints/quickstart-pretrain/hf --tokenizer ../shared/data/tokenizers/modernbert"
    )


def _export(args: argparse.Namespace) -> None:
    from modernenc.train.export import export_to_hf

    out = export_to_hf(args.checkpoint, args.out, tokenizer_path=args.tokenizer, overwrite=args.force)
    print(
        f"exported {args.checkpoint} to {out}; load it with transformers.AutoModelForMaskedLM.from_pretrained"
    )


COMMANDS: dict[str, Command] = {
    "demo": Command(
        "tour the foundation: build, classify, export to Hugging Face format, reload", _demo_args, _demo
    ),
    "export-hf": Command(
        "export a train.py checkpoint as a Hugging Face ModernBERT folder", _export_args, _export
    ),
}


# Subcommands that run a script of the repository with the arguments given; `--help` is the script's own.
SCRIPTS: dict[str, tuple[str, str]] = {
    "prepare-data": (
        "data_prep/prepare_corpus.py",
        "tokenize a corpus into MDS shards (text, JSONL, parquet, WikiExtractor, HF datasets)",
    ),
    "prepare-ade": (
        "data_prep/ade.py",
        "write the ADE corpus as leak-free train/validation/test JSONL splits",
    ),
    "train-tokenizer": (
        "data_prep/train_tokenizer.py",
        "train a BPE tokenizer with ModernBERT's special tokens",
    ),
    "train": ("train.py", "train from a yaml recipe (single process; use `composer train.py` for several)"),
    "bench": ("benchmarks/inference_cpu.py", "CPU inference throughput vs transformers ModernBert"),
}


def run_script(relative_path: str, argv: list[str]) -> None:
    import runpy

    script = REPO_ROOT / relative_path
    sys.argv = [str(script), *argv]
    runpy.run_path(str(script), run_name="__main__")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modernenc",
        description="Pre-train, domain-adapt and fine-tune ModernBERT-style encoders.",
        epilog="Example: modernenc demo --out checkpoints/demo-export",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        cmd.configure(sub.add_parser(name, help=cmd.help, description=cmd.help))
    for name, (_, help_text) in SCRIPTS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SCRIPTS:
        run_script(SCRIPTS[argv[0]][0], argv[1:])
        return
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command].run(args)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        sys.exit(f"modernenc {args.command}: error: {err}")


if __name__ == "__main__":
    main()
