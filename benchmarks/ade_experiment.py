"""The ADE CPU experiment: does pre-training + domain annealing pay off at 2 hours on 2 cores?

Stages, each a `modernenc` command or a step of this script, run in order in the working directory
(data/, checkpoints/), each timed; a finished stage is reused on a re-run, a killed training stage resumes
from its last checkpoint:

  prepare-ade      the balanced ADE split -> data/ade
  anneal-text      PubMed minus every abstract holding an ADE sentence, plus the ADE sentences in no
                   validation or test split, joined by abstract, x4 -> data/exp/anneal-text.jsonl
  tokenizer        a 16k BPE on Wikipedia + that text (no validation/test sentence) -> data/exp/tokenizer
  prepare-general  Wikipedia in 512-token chunks -> data/exp/wiki-512
  prepare-anneal   the anneal text in 512-token chunks -> data/exp/anneal-512
  check-leaks      no validation or test sentence in any shard (decoded text), or stop
  general          MLM on Wikipedia, WSD warmup + stable (yamls/experiments/ade_general.yaml)
  anneal           MLM on the anneal text, 1-sqrt decay (yamls/experiments/ade_anneal.yaml)
  heldout-mlm      held-out masked-token loss and accuracy of random init / general / annealed
  effects          fine-tunes x seeds (benchmarks/ade_effects.py): annealed, general only, random init,
                   annealed + LoRA; LR chosen on validation; plus the strong TF-IDF

    python benchmarks/ade_experiment.py --pilot     # 40 steps of each training stage: speed, falling loss
    python benchmarks/ade_experiment.py             # the whole experiment
    python benchmarks/ade_experiment.py --only effects --seeds 1 2 3 4 5
    python benchmarks/ade_experiment.py --only effects --rows annealed general random   # no LoRA row

Results go to --out (default checkpoints/exp-results): stages.json (wall time per stage), curves_*.json
and curves.md (MLM loss and held-out loss / masked accuracy per evaluation), heldout_mlm.md, effects/.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modernenc.pv.bundled_data import shared_data_dir

DATA = shared_data_dir()
ADE_SPLIT = Path("data/ade")
EXP = Path("data/exp")
ANNEAL_TEXT = EXP / "anneal-text.jsonl"
TOKENIZER = EXP / "tokenizer"
WIKI_SHARDS, ANNEAL_SHARDS = EXP / "wiki-512", EXP / "anneal-512"
HELD_OUT = [str(ADE_SPLIT / "validation.jsonl"), str(ADE_SPLIT / "test.jsonl")]
TRAINING = {"general": "experiments/ade_general", "anneal": "experiments/ade_anneal"}
PILOT = ["max_duration=40ba", "eval_interval=40ba", "save_interval=40ba", "eval_subset_num_batches=4"]
BUDGET_MIN = 120  # pre-training + annealing together
EFFECT_ROWS = ("annealed", "general", "random", "lora")  # the encoders the effects stage fine-tunes


@dataclass(frozen=True)
class Stage:
    name: str
    what: str
    done: Callable[[], bool]
    run: Callable[[], None]


def modernenc(*args: str) -> None:
    """Run a `modernenc` command as a user would type it (printed first); its output streams through."""
    argv = [str(a) for a in args]
    print(f"    $ modernenc {shlex.join(argv)}", flush=True)
    done = subprocess.run([sys.executable, "-m", "modernenc", *argv])
    if done.returncode != 0:
        raise SystemExit(f"error: `modernenc {argv[0]}` failed (exit code {done.returncode}); see above")


def run_name(stage: str, pilot: bool) -> str:
    return f"exp-{'pilot-' if pilot else ''}{stage}"


def checkpoint(stage: str, pilot: bool) -> Path:
    return Path("checkpoints") / run_name(stage, pilot) / "latest-rank0.pt"


def train_stage(args: argparse.Namespace, stage: str) -> None:
    overrides = [f"run_name={run_name(stage, args.pilot)}", "autoresume=true", *args.set_mlm]
    if stage == "anneal":
        overrides.append(f"model.init_from={checkpoint('general', args.pilot)}")
    if args.steps:
        overrides.append(f"max_duration={args.steps[list(TRAINING).index(stage)]}ba")
    if args.pilot:
        overrides += PILOT
    finished = checkpoint(stage, args.pilot).parent / "DONE"
    if not finished.is_file():  # a finished run would make composer refuse to train past its end
        modernenc("train", TRAINING[stage], *overrides)
        finished.write_text("trained\n")
    write_curves(args, stage)


def write_curves(args: argparse.Namespace, stage: str) -> None:
    """The run's loss and held-out curves and its time per step, read back from its last checkpoint."""
    import torch

    state = torch.load(checkpoint(stage, args.pilot), map_location="cpu", weights_only=False)["state"]
    history = state["callbacks"]["TrainingCurves"]["history"]
    clock = state["timestamp"].get("Timestamp", state["timestamp"])  # composer nests it under its class name
    steps, seconds = int(clock["batch"]), float(clock["total_wct"].total_seconds())
    record = {
        "stage": stage,
        "steps": steps,
        "train_seconds": seconds,
        "s_per_step": seconds / steps,
        **history,
    }
    (args.out / f"curves_{stage}.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"    {stage}: {steps} steps in {seconds:.0f} s of training, {seconds / steps:.2f} s/step")


def curves_markdown(out: Path) -> str:
    lines = []
    for stage in TRAINING:
        path = out / f"curves_{stage}.json"
        if not path.is_file():
            continue
        c = json.loads(path.read_text())
        lines += [
            f"### {stage}: {c['steps']} steps, {c['s_per_step']:.2f} s/step",
            "",
            "| step | training loss (mean of the steps since the last evaluation) | held-out loss | held-out "
            "masked accuracy |",
            "|---|---|---|---|",
        ]
        losses = c["loss"]
        previous = 0
        for (step, loss), (_, accuracy) in zip(
            c["eval/LanguageCrossEntropy"], c["eval/MaskedAccuracy"], strict=True
        ):
            window = [v for s, v in losses if previous < s <= step]
            mean = sum(window) / len(window) if window else float("nan")
            lines.append(f"| {step} | {mean:.3f} | {loss:.3f} | {100 * accuracy:.1f}% |")
            previous = step
        lines.append("")
    return "\n".join(lines)


def heldout_mlm(args: argparse.Namespace) -> None:
    """Held-out masked-token loss and accuracy of each encoder on both held-out sets, with the streams the
    training stages evaluate on (15% masked, the same masks in every run)."""
    import torch

    from modernenc.model import ModernEncoderForMaskedLM
    from modernenc.model.config import IGNORE_INDEX
    from modernenc.train.builders import build_stream
    from modernenc.train.composer_model import MODEL_INPUTS
    from modernenc.train.config import load_config
    from modernenc.train.export import load_composer_checkpoint

    general = load_composer_checkpoint(checkpoint("general", args.pilot))
    torch.manual_seed(17)
    models = {
        "random init": ModernEncoderForMaskedLM(general.config),  # same sizes and tokenizer, fresh weights
        "general (Wikipedia)": general,
        "annealed (+ PubMed + ADE task text)": load_composer_checkpoint(checkpoint("anneal", args.pilot)),
    }
    sets = {"Wikipedia held-out": WIKI_SHARDS, "PubMed + task text held-out": ANNEAL_SHARDS}
    batches = {}  # read once: every encoder sees the same tokens and the same masks
    for set_name, shards in sets.items():
        cfg = load_config(TRAINING["general"], [f"data.eval={shards / 'validation'}", *args.set_mlm])
        batches[set_name] = list(itertools.islice(build_stream(cfg, "eval"), args.heldout_batches))
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name, model in models.items():
        model.eval()
        results[name] = {}
        for set_name, held_out in batches.items():
            loss_sum = correct = count = 0.0
            with torch.no_grad():
                for batch in held_out:
                    out = model(**{k: batch[k] for k in MODEL_INPUTS if k in batch})
                    labels = batch["labels"].reshape(-1)
                    labels = labels[labels != IGNORE_INDEX]  # sparse prediction: one logit row per label
                    loss_sum += float(out.loss) * len(labels)
                    correct += float((out.logits.argmax(-1) == labels).sum())
                    count += len(labels)
            results[name][set_name] = {"loss": loss_sum / count, "accuracy": correct / count, "tokens": count}
    (args.out / "heldout_mlm.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "| encoder | " + " | ".join(f"{s}: loss / masked accuracy" for s in sets) + " |",
        "|---|---|---|",
    ]
    for name, per_set in results.items():
        cells = [f"{r['loss']:.3f} / {100 * r['accuracy']:.1f}%" for r in per_set.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    counts = ", ".join(f"{s} {int(r['tokens']):,}" for s, r in results["random init"].items())
    text = f"Masked tokens per set: {counts} (15%, fixed masks).\n\n" + "\n".join(lines) + "\n"
    (args.out / "heldout_mlm.md").write_text(text)
    print(text)


def anneal_text(args: argparse.Namespace) -> None:
    from modernenc.pv.task_text import task_adaptive_sentences, write_anneal_text

    task = task_adaptive_sentences(args.ade_corpus, ADE_SPLIT)
    made = write_anneal_text([args.pubmed], args.ade_corpus, task, ANNEAL_TEXT, repeats=args.task_repeats)
    print(
        f"    {made.documents:,} PubMed documents kept, {made.dropped:,} dropped (they hold an ADE corpus "
        f"sentence); task text: {len(task.sentences):,} sentences ({task.from_train:,} from the training "
        f"split, {task.unused:,} unused by the balanced split; {task.near_duplicates} near-duplicates of "
        f"validation/test sentences left out), joined into {made.task_documents:,} documents by abstract, "
        f"each x {args.task_repeats} -> {ANNEAL_TEXT}"
    )


def run_effects(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import ade_effects

    annealed, general = str(checkpoint("anneal", args.pilot)), str(checkpoint("general", args.pilot))
    argv = ["--split-dir", str(ADE_SPLIT), "--out-dir", str(args.out / "effects")]
    argv += ["--recipe", "experiments/ade_finetune", "--tokenizer", str(TOKENIZER)]
    argv += ["--seeds", *map(str, args.seeds), "--lr-grid", *map(str, args.lr_grid)]
    argv += ["--lora-lr-grid", *map(str, args.lora_lr_grid)]
    rows = {
        "annealed": ["mini, pre-trained + annealed", annealed],
        "general": ["mini, pre-trained only (Wikipedia)", general],
        "random": ["mini, random init", "null"],
        "lora": ["mini, pre-trained + annealed, LoRA r=8", annealed, "finetune.lora={}"],
    }
    for name in args.rows:
        argv += ["--row", *rows[name]]
    if args.set_finetune:
        argv += ["--set", *args.set_finetune]
    print(f"    $ python benchmarks/ade_effects.py {shlex.join(argv)}", flush=True)
    ade_effects.main(argv)


def stages(args: argparse.Namespace) -> list[Stage]:
    out = args.out
    prepare = [
        "prepare-data",
        "--tokenizer",
        TOKENIZER,
        "--max-length",
        "512",
        "--validation-fraction",
        "0.01",
    ]
    prepare += ["--force", "--no-progress"]
    return [
        Stage(
            "prepare-ade",
            f"the balanced ADE split -> {ADE_SPLIT}",
            lambda: (ADE_SPLIT / "test.jsonl").is_file(),
            lambda: modernenc("prepare-ade", "--source", args.ade_corpus, "--out", ADE_SPLIT, "--force"),
        ),
        Stage(
            "anneal-text",
            f"decontaminated PubMed + ADE task text x{args.task_repeats} -> {ANNEAL_TEXT}",
            ANNEAL_TEXT.is_file,
            lambda: anneal_text(args),
        ),
        Stage(
            "tokenizer",
            f"a {args.vocab_size:,}-token BPE on the pre-training text -> {TOKENIZER}",
            lambda: (TOKENIZER / "tokenizer.json").is_file(),
            lambda: modernenc(
                "train-tokenizer",
                "--input",
                args.wikipedia,
                ANNEAL_TEXT,
                "--vocab-size",
                args.vocab_size,
                "--output",
                TOKENIZER,
                "--force",
                "--decontaminate",
                *HELD_OUT,
            ),  # fmt: skip
        ),
        Stage(
            "prepare-general",
            f"Wikipedia in 512-token chunks -> {WIKI_SHARDS}",
            lambda: (WIKI_SHARDS / "validation" / "index.json").is_file(),
            lambda: modernenc(
                *prepare,
                "--input",
                args.wikipedia,
                "--format",
                "wikiextractor",
                "--output",
                WIKI_SHARDS,
                "--decontaminate",
                args.ade_corpus,
            ),  # fmt: skip
        ),
        Stage(
            "prepare-anneal",
            f"the anneal text in 512-token chunks -> {ANNEAL_SHARDS}",
            lambda: (ANNEAL_SHARDS / "validation" / "index.json").is_file(),
            # PubMed was decontaminated against every ADE sentence in anneal-text; here the whole mix is,
            # against validation and test only (the task text is ADE sentences).
            lambda: modernenc(
                *prepare,
                "--input",
                ANNEAL_TEXT,
                "--format",
                "jsonl",
                "--output",
                ANNEAL_SHARDS,
                "--decontaminate",
                *HELD_OUT,
            ),  # fmt: skip
        ),
        Stage(
            "check-leaks",
            "prove no validation or test sentence is in any shard",
            lambda: False,
            lambda: modernenc(
                "check-leaks",
                "--shards",
                WIKI_SHARDS,
                ANNEAL_SHARDS,
                "--held-out",
                *HELD_OUT,
                "--tokenizer",
                TOKENIZER,
            ),  # fmt: skip
        ),
        Stage(
            "general",
            f"MLM on Wikipedia (WSD: warmup, stable) -> checkpoints/{run_name('general', args.pilot)}",
            lambda: (out / "curves_general.json").is_file(),
            lambda: train_stage(args, "general"),
        ),
        Stage(
            "anneal",
            f"MLM on PubMed + ADE task text (1-sqrt decay) -> checkpoints/{run_name('anneal', args.pilot)}",
            lambda: (out / "curves_anneal.json").is_file(),
            lambda: train_stage(args, "anneal"),
        ),
        Stage(
            "heldout-mlm",
            "held-out MLM loss / accuracy per encoder",
            lambda: False,
            lambda: heldout_mlm(args),
        ),
        Stage(
            "effects",
            f"fine-tunes x {len(args.seeds)} seeds, LR on validation, + TF-IDF -> {out / 'effects'}",
            lambda: False,
            lambda: run_effects(args),
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help="results folder (default checkpoints/exp-results)")
    p.add_argument("--only", nargs="+", metavar="STAGE", help="run only these stages")
    p.add_argument(
        "--pilot", action="store_true", help="40 steps per training stage, then a speed projection"
    )
    p.add_argument("--wikipedia", default=str(DATA / "wikipedia_en"))
    p.add_argument("--pubmed", default=str(DATA / "pubmed"))
    p.add_argument("--ade-corpus", default=str(DATA / "ade_corpus_v2"))
    p.add_argument("--vocab-size", type=int, default=16384)
    p.add_argument(
        "--task-repeats", type=int, default=4, help="copies of each task sentence in the anneal mix"
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument(
        "--rows",
        nargs="+",
        choices=EFFECT_ROWS,
        default=list(EFFECT_ROWS),
        help="the effects stage's fine-tune rows (default: all four)",
    )
    p.add_argument("--lr-grid", type=float, nargs="+", default=[1e-4, 2e-4, 5e-4])
    p.add_argument("--lora-lr-grid", type=float, nargs="+", default=[5e-4, 1e-3, 2e-3])
    p.add_argument(
        "--steps",
        type=int,
        nargs=2,
        metavar=("GENERAL", "ANNEAL"),
        help="steps of the two MLM stages instead of the recipes' 1200 and 1500 (e.g. as --pilot suggests)",
    )
    p.add_argument("--heldout-batches", type=int, default=16, help="4,096-slot batches per held-out set")
    p.add_argument("--set-mlm", nargs="*", default=[], metavar="KEY=VALUE", help="overrides, both MLM stages")
    p.add_argument("--set-finetune", nargs="*", default=[], metavar="KEY=VALUE", help="overrides, fine-tunes")
    args = p.parse_args(argv)
    args.out = args.out or Path("checkpoints") / ("exp-pilot-results" if args.pilot else "exp-results")
    args.out.mkdir(parents=True, exist_ok=True)

    all_stages = stages(args)
    names = [s.name for s in all_stages]
    unknown = sorted(set(args.only or []) - set(names))
    if unknown:
        p.error(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    chosen = [s for s in all_stages if args.only is None or s.name in args.only]
    if args.pilot and args.only is None:
        chosen = [s for s in chosen if s.name != "effects"]
    times_file = args.out / "stages.json"
    times = json.loads(times_file.read_text()) if times_file.is_file() else {}
    for i, stage in enumerate(chosen, 1):
        header = f"[{i}/{len(chosen)}] {stage.name}: {stage.what}"
        if stage.done():
            print(f"{header}  (done, reusing)", flush=True)
            continue
        print(header, flush=True)
        start = time.perf_counter()
        stage.run()
        times[stage.name] = round(time.perf_counter() - start, 1)
        times_file.write_text(json.dumps(times, indent=2) + "\n")
        print(f"    {stage.name} finished in {times[stage.name]:.0f} s", flush=True)
    curves = curves_markdown(args.out)
    if curves:
        (args.out / "curves.md").write_text(curves)
    if args.pilot:
        print_projection(args)
    print(f"wall time per stage (s): {json.dumps(times)}")
    return 0


def print_projection(args: argparse.Namespace) -> None:
    """The full recipe's pre-training + annealing time at the pilot's measured seconds per step, and the
    step counts that would fit the budget if it does not."""
    from modernenc.train.config import load_config

    total, planned = 0.0, {}
    for i, (stage, recipe) in enumerate(TRAINING.items()):
        path = args.out / f"curves_{stage}.json"
        if not path.is_file():
            return
        per_step = json.loads(path.read_text())["s_per_step"]
        steps = args.steps[i] if args.steps else int(str(load_config(recipe).max_duration).removesuffix("ba"))
        planned[stage] = (steps, per_step)
        total += per_step * steps
        print(f"projection: {stage} {steps} steps x {per_step:.2f} s = {per_step * steps / 60:.0f} min")
    minutes = total / 60
    print(f"projection: pre-training + annealing {minutes:.0f} min for a budget of {BUDGET_MIN} min")
    if minutes > BUDGET_MIN:
        scale = 0.9 * BUDGET_MIN / minutes  # a tenth in reserve: the host's speed drifts
        fit = [int(steps * scale) for steps, _ in planned.values()]
        print(f"projection: over budget; to fit with a tenth in reserve, run with --steps {fit[0]} {fit[1]}")


if __name__ == "__main__":
    sys.exit(main())
