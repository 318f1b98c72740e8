"""`modernenc`: one command, a subcommand per step, all listed in `COMMANDS`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modernenc.model.config import PRESETS
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
    parser.add_argument(
        "--preset", default="mini", choices=sorted(PRESETS), help="model preset (default: %(default)s)"
    )
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
    from modernenc.train.export import auto_class_of, export_to_hf

    out = export_to_hf(args.checkpoint, args.out, tokenizer_path=args.tokenizer, overwrite=args.force)
    loader = f"transformers.{auto_class_of(out)}.from_pretrained"  # the class fits the exported task head
    print(f"exported {args.checkpoint} to {out}; load it with {loader}")


def _predict_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", type=Path, help="fine-tuned Hugging Face folder (with tokenizer.json)")
    parser.add_argument("input", type=Path, help="texts: .txt (one per line), .jsonl, .csv or .parquet")
    parser.add_argument("--out", type=Path, required=True, help="predictions file: .jsonl or .csv")
    parser.add_argument(
        "--text-column",
        default="text",
        help=".jsonl field or .csv column holding the text (default: %(default)s)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="decision threshold on the positive probability (default: the chosen one in thresholds.json, "
        "else 0.5)",
    )
    parser.add_argument(
        "--review-band",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        default=None,
        help="flag probabilities in [LO, HI] for human review (default: thresholds.json's band, else "
        "halfway from the threshold to 0 and to 1)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="texts per batch (default: %(default)s)")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="(default: %(default)s)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out")
    parser.epilog = (
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


def _plot_schedule_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("yaml", type=Path, help="training yaml, as given to train.py")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="overrides, as given to train.py")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument(
        "--packing-efficiency",
        type=float,
        default=1.0,
        help="real tokens per token slot, to map the batch-size warmup's slot count onto composer's "
        "real-token clock (default: %(default)s; prepared corpora pack at 0.994-0.9999)",
    )
    parser.add_argument(
        "--world-size", type=int, default=None, help="number of ranks (default: $WORLD_SIZE or 1)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out")
    parser.epilog = (
        "Example: modernenc plot-schedule yamls/pretrain.yaml --world-size 8 --out checkpoints/pretrain.png  "
        "(durations in 'ba', 'tok' or 'dur'; epochs cannot be converted for streaming data)"
    )


def _plot_schedule(args: argparse.Namespace) -> None:
    from modernenc.train.config import load_config
    from modernenc.train.schedule_plot import check_output, plot_schedule, simulate_schedule, summarize

    check_output(args.out, args.force)  # before the simulation, which takes seconds for a long run
    cfg = load_config(args.yaml, args.overrides)
    schedule = simulate_schedule(cfg, args.packing_efficiency, args.world_size)
    out = plot_schedule(schedule, args.out, title=f"{cfg.run_name}: {args.yaml}", overwrite=args.force)
    print(f"{summarize(schedule)}\nwrote {out}")


def _tile_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="Hugging Face folder or hub id, or a train.py checkpoint (*.pt)")
    parser.add_argument("out", type=Path, help="folder for the tiled Hugging Face model")
    parser.add_argument(
        "--preset", required=True, help="size to grow to: small, base, large, ... (vocab and tokens are kept)"
    )
    parser.add_argument(
        "--tokenizer", type=Path, default=None, help="tokenizer folder to copy (default: SOURCE's, if any)"
    )
    parser.add_argument(
        "--scale-inputs",
        action="store_true",
        help="divide each weight's repeated input columns by their repeat count, so the wider model starts "
        "out computing (nearly) what the small one did; plain tiling, the default, does not",
    )
    parser.add_argument("--force", action="store_true", help="replace an earlier model in OUT")
    parser.epilog = (
        "Example: modernenc tile checkpoints/quickstart-pretrain/hf checkpoints/tiled-small --preset small; "
        "then train it with `python train.py yamls/quickstart/pretrain.yaml run_name=tiled-small-pretrain "
        "model.preset=small model.init_from=checkpoints/tiled-small`"
    )


def _tile(args: argparse.Namespace) -> None:
    from modernenc.train.tiling import layer_map, tile_checkpoint

    small, big = tile_checkpoint(
        args.source, args.out, args.preset, args.tokenizer, args.force, scale_inputs=args.scale_inputs
    )
    s, b = small.config, big.config
    print(
        f"tiled {args.source} ({s.hidden_size} hidden, {s.num_hidden_layers} layers) to {args.out} "
        f"({b.hidden_size} hidden, {b.num_hidden_layers} layers); big layer i copies small layer "
        f"{layer_map(s, b)}"
    )


def _average_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("save_folder", type=Path, help="a train.py save folder (ep*-ba*-rank0.pt files)")
    parser.add_argument("out", type=Path, help="averaged composer checkpoint to write (*.pt)")
    choice = parser.add_mutually_exclusive_group(required=True)
    choice.add_argument("--last", type=int, metavar="K", help="average the K checkpoints of the latest steps")
    choice.add_argument("--best", type=int, metavar="K", help="average the K checkpoints best by --metric")
    parser.add_argument(
        "--metric",
        default="eval/LanguageCrossEntropy",
        help="logged metric for --best, evaluated at each checkpoint's step (default: %(default)s)",
    )
    parser.add_argument(
        "--mode",
        choices=["min", "max"],
        default=None,
        help="whether lower or higher --metric is better (default: min for loss/cross-entropy, else max)",
    )
    parser.add_argument("--hf-out", type=Path, default=None, help="also export as a Hugging Face folder")
    parser.add_argument("--tokenizer", type=Path, default=None, help="tokenizer folder to copy to --hf-out")
    parser.add_argument("--force", action="store_true", help="replace an earlier OUT / --hf-out")
    parser.epilog = (
        "Example: modernenc average-checkpoints checkpoints/quickstart-pretrain "
        "checkpoints/quickstart-pretrain/avg-last3.pt --last 3 "
        "--hf-out checkpoints/quickstart-pretrain/avg-hf --tokenizer ../shared/data/tokenizers/modernbert"
    )


def _average(args: argparse.Namespace) -> None:
    from modernenc.model.hf_interop import WEIGHTS_NAME, find_tokenizer_files
    from modernenc.train.averaging import (
        average_checkpoints,
        check_output_name,
        list_checkpoints,
        lower_is_better,
        select_best,
        select_last,
    )
    from modernenc.train.export import export_to_hf

    check_output_name(args.out)
    if args.tokenizer is not None:  # checked before averaging, which writes OUT and would need --force next
        if args.hf_out is None:
            raise ValueError("--tokenizer is copied to the --hf-out folder; give --hf-out too")
        find_tokenizer_files(args.tokenizer)
    for target in (args.out, args.hf_out / WEIGHTS_NAME if args.hf_out else None):
        if target is not None and target.exists() and not args.force:
            raise FileExistsError(f"{target} already exists; pass --force to replace it")
    found = list_checkpoints(args.save_folder)
    if args.last is not None:
        chosen = select_last(found, args.last)
    else:
        minimize = lower_is_better(args.metric) if args.mode is None else args.mode == "min"
        chosen = select_best(found, args.best, args.metric, minimize)
        print(f"ranked by {args.metric} ({'lower' if minimize else 'higher'} is better)")
    out = average_checkpoints([c.path for c in chosen], args.out, overwrite=args.force)
    print(f"averaged {', '.join(c.path.name for c in chosen)} into {out}")
    if args.hf_out is not None:
        export_to_hf(out, args.hf_out, tokenizer_path=args.tokenizer, overwrite=args.force)
        print(f"exported to {args.hf_out}")


def _quickstart_args(parser: argparse.ArgumentParser) -> None:
    from modernenc.chain import DEFAULT_RESULTS, stages

    names = [stage.name for stage in stages(Path("results.md"))]
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_RESULTS,
        help="results table, rewritten by each run (default: %(default)s)",
    )
    parser.add_argument(
        "--only", nargs="+", choices=names, metavar="STAGE", help=f"run only these stages: {', '.join(names)}"
    )
    parser.epilog = "Example: modernenc quickstart   (re-running reuses finished stages)"


def _quickstart(args: argparse.Namespace) -> None:
    from modernenc.chain import ChainError, run_chain

    try:
        run_chain(args.out, only=args.only)
    except ChainError as err:
        sys.exit(f"modernenc quickstart: error: {err}")


COMMANDS: dict[str, Command] = {
    "quickstart": Command(
        "the main job on CPU: pre-train -> anneal on PubMed -> fine-tune on ADE -> results table",
        _quickstart_args,
        _quickstart,
    ),
    "demo": Command(
        "tour the foundation: build, classify, export to Hugging Face format, reload", _demo_args, _demo
    ),
    "export-hf": Command(
        "export a train.py checkpoint as a Hugging Face ModernBERT folder", _export_args, _export
    ),
    "plot-schedule": Command(
        "plot the learning rate and global batch size a training yaml will use",
        _plot_schedule_args,
        _plot_schedule,
    ),
    "predict": Command(
        "classify texts (.txt .jsonl .csv .parquet) with a fine-tuned model: probability, label, review flag",
        _predict_args,
        _predict,
    ),
    "tile": Command(
        "grow a trained model to a bigger preset by centred weight tiling (ModernBERT-large's init)",
        _tile_args,
        _tile,
    ),
    "average-checkpoints": Command(
        "average the weights of the last or best K train.py checkpoints of a run",
        _average_args,
        _average,
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
    except (OSError, ValueError) as err:
        sys.exit(f"modernenc {args.command}: error: {err}")


if __name__ == "__main__":
    main()
