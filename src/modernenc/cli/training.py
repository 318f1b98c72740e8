"""Training commands: train from a recipe, list recipes, export, average, tile, plot a schedule."""

from __future__ import annotations

import argparse
from pathlib import Path

from modernenc.cli.command import Command, CommandError


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("yaml", help="training yaml, or the name of a packaged recipe (`modernenc recipes`)")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. optimizer.lr=3e-4"
    )
    p.epilog = (
        "Example: modernenc train quickstart/pretrain max_duration=20ba\n"
        "Several processes: composer -n 2 -m modernenc.train quickstart/pretrain (or composer -n 2 train.py "
        "yamls/quickstart/pretrain.yaml from a checkout)"
    )


def _train(args: argparse.Namespace) -> None:
    from modernenc.train.run import run_training

    run_training(args.yaml, args.overrides)


def _recipes_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="recipe to write out (default: list them all)")
    p.add_argument("--out", type=Path, help="where to write the recipe (default: print it)")
    p.add_argument("--force", action="store_true", help="replace a recipe written to --out earlier")
    p.epilog = (
        "Example: modernenc recipes finetune_classification --out my_task.yaml; then edit it and run "
        "modernenc train my_task.yaml"
    )


def _recipes(args: argparse.Namespace) -> None:
    from modernenc.train.recipes import list_recipes, recipe_path, summary

    if args.name is None:
        if args.out is not None:
            raise CommandError("--out needs a recipe name; `modernenc recipes` lists them")
        recipes = list_recipes()
        width = max(map(len, recipes))
        for name, path in recipes.items():
            print(f"{name:<{width}}  {summary(path)}")
        return
    text = recipe_path(args.name).read_text(encoding="utf-8")
    if args.out is None:
        print(text, end="")
        return
    from modernenc.utils.outputs import check_output_file, write_text

    check_output_file(args.out, kind="recipe", force=args.force, what="--out")
    write_text(args.out, text, kind="recipe", tool="recipes")
    print(f"wrote {args.out}; train with: modernenc train {args.out}")


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path, help="composer checkpoint written by train.py (*.pt)")
    p.add_argument("out", type=Path, help="folder for the Hugging Face model")
    p.add_argument("--tokenizer", type=Path, default=None, help="tokenizer folder to copy alongside")
    p.add_argument("--force", action="store_true", help="replace an earlier export in OUT")
    p.epilog = (
        "Example: modernenc export-hf checkpoints/quickstart-pretrain/latest-rank0.pt "
        "checkpoints/quickstart-pretrain/hf --tokenizer ../shared/data/tokenizers/modernbert"
    )


def _export(args: argparse.Namespace) -> None:
    from modernenc.train.export import auto_class_of, export_to_hf

    out = export_to_hf(args.checkpoint, args.out, tokenizer_path=args.tokenizer, overwrite=args.force)
    loader = f"transformers.{auto_class_of(out)}.from_pretrained"  # the class fits the exported task head
    print(f"exported {args.checkpoint} to {out}; load it with {loader}")


def _plot_schedule_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("yaml", type=Path, help="training yaml, as given to train.py")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides, as given to train.py")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    p.add_argument(
        "--packing-efficiency",
        type=float,
        default=1.0,
        help="real tokens per token slot, to map the batch-size warmup's slot count onto composer's "
        "real-token clock (default: %(default)s; prepared corpora pack at 0.994-0.9999)",
    )
    p.add_argument("--world-size", type=int, default=None, help="number of ranks (default: $WORLD_SIZE or 1)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out")
    p.epilog = (
        "Example: modernenc plot-schedule yamls/pretrain.yaml --world-size 8 --out checkpoints/pretrain.png  "
        "(durations in 'ba', 'tok' or 'dur'; epochs cannot be converted for streaming data)"
    )


def _plot_schedule(args: argparse.Namespace) -> None:
    from modernenc.utils.outputs import check_output_file

    check_output_file(args.out, kind="plot", force=args.force, what="--out")  # before composer loads (s)
    from modernenc.train.config import load_config
    from modernenc.train.schedule_plot import check_output, plot_schedule, simulate_schedule, summarize

    check_output(args.out, args.force)  # and its image format, before the simulation (seconds, for long runs)
    cfg = load_config(args.yaml, args.overrides)
    schedule = simulate_schedule(cfg, args.packing_efficiency, args.world_size)
    out = plot_schedule(schedule, args.out, title=f"{cfg.run_name}: {args.yaml}", overwrite=args.force)
    print(f"{summarize(schedule)}\nwrote {out}")


def _tile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="Hugging Face folder or hub id, or a train.py checkpoint (*.pt)")
    p.add_argument("out", type=Path, help="folder for the tiled Hugging Face model")
    p.add_argument(
        "--preset", required=True, help="size to grow to: small, base, large, ... (vocab and tokens are kept)"
    )
    p.add_argument(
        "--tokenizer", type=Path, default=None, help="tokenizer folder to copy (default: SOURCE's, if any)"
    )
    p.add_argument(
        "--scale-inputs",
        action="store_true",
        help="divide each weight's repeated input columns by their repeat count, so the wider model starts "
        "out computing (nearly) what the small one did; plain tiling, the default, does not",
    )
    p.add_argument("--force", action="store_true", help="replace an earlier model in OUT")
    p.epilog = (
        "Example: modernenc tile checkpoints/quickstart-pretrain/hf checkpoints/tiled-small --preset small; "
        "then train it with `modernenc train quickstart/pretrain run_name=tiled-small-pretrain "
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


def _average_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("save_folder", type=Path, help="a train.py save folder (ep*-ba*-rank0.pt files)")
    p.add_argument("out", type=Path, help="averaged composer checkpoint to write (*.pt)")
    choice = p.add_mutually_exclusive_group(required=True)
    choice.add_argument("--last", type=int, metavar="K", help="average the K checkpoints of the latest steps")
    choice.add_argument("--best", type=int, metavar="K", help="average the K checkpoints best by --metric")
    p.add_argument(
        "--metric",
        default="eval/LanguageCrossEntropy",
        help="logged metric for --best, evaluated at each checkpoint's step (default: %(default)s)",
    )
    p.add_argument(
        "--mode",
        choices=["min", "max"],
        default=None,
        help="whether lower or higher --metric is better (default: min for loss/cross-entropy, else max)",
    )
    p.add_argument("--hf-out", type=Path, default=None, help="also export as a Hugging Face folder")
    p.add_argument("--tokenizer", type=Path, default=None, help="tokenizer folder to copy to --hf-out")
    p.add_argument("--force", action="store_true", help="replace an earlier OUT / --hf-out")
    p.epilog = (
        "Example: modernenc average-checkpoints checkpoints/quickstart-pretrain "
        "checkpoints/quickstart-pretrain/avg-last3.pt --last 3 "
        "--hf-out checkpoints/quickstart-pretrain/avg-hf --tokenizer ../shared/data/tokenizers/modernbert"
    )


def _average(args: argparse.Namespace) -> None:
    from modernenc.model.hf_interop import find_tokenizer_files
    from modernenc.train.averaging import (
        average_checkpoints,
        check_output_name,
        list_checkpoints,
        lower_is_better,
        select_best,
        select_last,
    )
    from modernenc.train.export import export_to_hf
    from modernenc.utils.outputs import check_output_file, check_output_folder

    check_output_name(args.out)
    if args.tokenizer is not None:  # checked before averaging, which writes OUT and would need --force next
        if args.hf_out is None:
            raise CommandError("--tokenizer is copied to the --hf-out folder; give --hf-out too")
        find_tokenizer_files(args.tokenizer)
    found = list_checkpoints(args.save_folder)
    if args.last is not None:
        chosen = select_last(found, args.last)
    else:
        minimize = lower_is_better(args.metric) if args.mode is None else args.mode == "min"
        chosen = select_best(found, args.best, args.metric, minimize)
        print(f"ranked by {args.metric} ({'lower' if minimize else 'higher'} is better)")
    members = [c.path for c in chosen]
    check_output_file(args.out, kind="checkpoint", force=args.force, inputs=members, what="OUT")
    if args.hf_out is not None:  # both outputs are checked before either is written
        check_output_folder(args.hf_out, kind="hf-model", force=args.force, inputs=members, what="--hf-out")
    out = average_checkpoints(members, args.out, overwrite=args.force)
    print(f"averaged {', '.join(c.path.name for c in chosen)} into {out}")
    if args.hf_out is not None:
        export_to_hf(out, args.hf_out, args.tokenizer, overwrite=args.force, tool="average-checkpoints")
        print(f"exported to {args.hf_out}")


COMMANDS = {
    "train": Command(
        "train from a yaml recipe (one process; `composer -n N -m modernenc.train` for several)",
        _train_args,
        _train,
    ),
    "recipes": Command(
        "list the recipe yamls shipped with modernenc, or write one out to start from",
        _recipes_args,
        _recipes,
    ),
    "export-hf": Command(
        "export a train.py checkpoint as a Hugging Face ModernBERT folder", _export_args, _export
    ),
    "average-checkpoints": Command(
        "average the weights of the last or best K train.py checkpoints of a run", _average_args, _average
    ),
    "tile": Command(
        "grow a trained model to a bigger preset by centred weight tiling (ModernBERT-large's init)",
        _tile_args,
        _tile,
    ),
    "plot-schedule": Command(
        "plot the learning rate and global batch size a training yaml will use",
        _plot_schedule_args,
        _plot_schedule,
    ),
}
