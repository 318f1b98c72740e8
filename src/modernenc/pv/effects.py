"""Effects of pre-training, annealing and LoRA on ADE, over fine-tuning seeds, with their noise.

Each row is one way to start (or run) the fine-tune: an encoder checkpoint, random init, LoRA. Every
row is fine-tuned with several seeds (the training seed and the data order both change) through the real
`modernenc train`, one process per run, and read back from the run's `eval/report.json`: thresholds
chosen on validation, metrics on test. A row may choose its learning rate on validation first: each LR
of its grid runs with the first seed, the best validation F1 at 0.5 wins, the other seeds run at it.

A difference between two rows counts as real when it exceeds 2 sd of the difference of their means,
sd = sqrt(sd_a^2 / n_a + sd_b^2 / n_b) over independent seeds (the TF-IDF baseline is deterministic: sd 0).
With 3 seeds per row that is a loose test (a t-test would ask for about 2.8 sd); more seeds tighten it.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# name -> (threshold, metric) in a report's test results; all are test-split numbers.
METRICS: dict[str, tuple[str, str]] = {
    "f1": ("default", "f1"),
    "recall_at_target": ("target_recall", "recall"),
    "precision_at_target": ("target_recall", "precision"),
    "auroc": ("default", "auroc"),
}
METRIC_TITLES = {
    "f1": "F1 at 0.5",
    "recall_at_target": "recall at target threshold",
    "precision_at_target": "precision at target threshold",
    "auroc": "AUROC",
}
RUN_RECORD = "effects-run.json"  # written when a run finished; a folder without it is re-run


@dataclass(frozen=True)
class Row:
    label: str
    init: str | None  # model.init_from: a checkpoint or HF folder; None is random init
    overrides: tuple[str, ...] = ()  # key=value for `modernenc train`, e.g. "finetune.lora={}"
    lr_grid: tuple[float, ...] = ()  # chosen on validation with the first seed; empty: the recipe's LR

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.label.lower()).strip("-")

    @property
    def lora(self) -> bool:
        return any(o.startswith("finetune.lora") and not o.endswith("=null") for o in self.overrides)


@dataclass
class Run:
    row: str
    seed: int
    lr: float | None
    folder: str
    test: dict[str, float]  # METRICS on test
    validation_f1: float  # at 0.5: what the LR is chosen on
    wall_s: float
    peak_rss_mb: float
    trainable_parameters: int


@dataclass
class Experiment:
    recipe: str
    split_dir: Path
    out_dir: Path
    seeds: list[int]
    common: list[str] = field(default_factory=list)  # overrides for every run (tokenizer, durations...)
    progress: Callable[[str], None] = print


def _test_metrics(report: dict) -> dict[str, float]:
    results = report["splits"]["test"]["results"]
    return {name: float(results[threshold][metric]) for name, (threshold, metric) in METRICS.items()}


def _run_command(experiment: Experiment, row: Row, seed: int, lr: float | None, folder: Path) -> list[str]:
    split = experiment.split_dir
    args = [
        "train",
        experiment.recipe,
        f"run_name={folder.name}",
        f"save_folder={folder}",
        f"seed={seed}",
        f"data.seed={seed}",
        f"model.init_from={row.init or 'null'}",
        f"data.train={split / 'train.jsonl'}",
        f"data.eval={split / 'validation.jsonl'}",
        f"data.test={split / 'test.jsonl'}",
        *experiment.common,
        *row.overrides,
    ]
    return args + ([f"optimizer.lr={lr:g}"] if lr is not None else [])


def trainable_parameters(folder: Path, recipe: str, overrides: Sequence[str]) -> int:
    """What the run trained: every parameter of its (plain, merged) best model, or with LoRA what
    `finetune.lora` wraps for training on that same architecture."""
    from modernenc.model import ModernEncoderForSequenceClassification
    from modernenc.train.config import load_config
    from modernenc.train.lora import apply_lora
    from modernenc.train.lora import trainable_parameters as count

    model = ModernEncoderForSequenceClassification.from_pretrained(folder / "best-hf")
    lora = load_config(recipe, list(overrides)).finetune.lora
    if lora is None:
        return count(model)
    from omegaconf import OmegaConf

    return count(apply_lora(model, OmegaConf.to_container(lora)))


def fine_tune(experiment: Experiment, row: Row, seed: int, lr: float | None) -> Run:
    """One `modernenc train` run (reused when it finished before); wall time and peak RSS are the child's."""
    name = f"seed{seed}" + (f"-lr{lr:g}" if lr is not None else "")
    folder = experiment.out_dir / row.slug / name
    record = folder / RUN_RECORD
    if record.is_file():
        return Run(**json.loads(record.read_text()))
    args = _run_command(experiment, row, seed, lr, folder)
    if folder.exists():  # a run of ours that did not finish: start it again, measured from the start
        args.append("force=true")
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "train.log"
    experiment.progress(
        f"  {row.label}, seed {seed}{f', lr {lr:g}' if lr is not None else ''}: modernenc {shlex.join(args)}"
    )
    start = time.perf_counter()
    with log.open("w") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "modernenc", *args], stdout=out, stderr=subprocess.STDOUT
        )
        _, status, usage = os.wait4(child.pid, 0)  # this child's own resource usage, unlike RUSAGE_CHILDREN
        child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if child.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"fine-tune {folder} failed (exit code {child.returncode}); log {log}:\n{tail}")
    report = json.loads((folder / "eval" / "report.json").read_text())
    run = Run(
        row=row.label,
        seed=seed,
        lr=lr,
        folder=str(folder),
        test=_test_metrics(report),
        validation_f1=float(report["splits"]["validation"]["results"]["default"]["f1"]),
        wall_s=wall,
        peak_rss_mb=usage.ru_maxrss / 1024,  # kilobytes on Linux
        trainable_parameters=trainable_parameters(
            folder, experiment.recipe, [*experiment.common, *row.overrides]
        ),
    )
    record.write_text(json.dumps(asdict(run), indent=2) + "\n")
    return run


def run_row(experiment: Experiment, row: Row) -> dict[str, Any]:
    """Choose the row's LR on validation (if it has a grid), then fine-tune every seed at it."""
    first, *rest = experiment.seeds
    selection: dict[str, float] = {}
    lr = None
    if row.lr_grid:
        tried = {candidate: fine_tune(experiment, row, first, candidate) for candidate in sorted(row.lr_grid)}
        selection = {f"{c:g}": r.validation_f1 for c, r in tried.items()}
        lr = max(
            tried, key=lambda c: tried[c].validation_f1
        )  # ties: the smaller LR (sorted, max keeps first)
        runs = [tried[lr]]
        experiment.progress(f"  {row.label}: lr {lr:g} chosen on validation F1 at 0.5 ({selection})")
    else:
        runs = [fine_tune(experiment, row, first, None)]
    runs += [fine_tune(experiment, row, seed, lr) for seed in rest]
    return {
        "label": row.label,
        "init": row.init,
        "overrides": list(row.overrides),
        "lr": lr,
        "lr_validation_f1": selection,
        "runs": [asdict(r) for r in runs],
        "summary": summarise([r.test for r in runs]),
        "trainable_parameters": runs[0].trainable_parameters,
        "wall_s": statistics.mean(r.wall_s for r in runs),
        "peak_rss_mb": max(r.peak_rss_mb for r in runs),
    }


def summarise(values: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean, sample sd (n - 1; NaN for a single run) and n of each metric."""
    out = {}
    for name in METRICS:
        xs = [v[name] for v in values]
        sd = statistics.stdev(xs) if len(xs) > 1 else float("nan")
        out[name] = {"mean": statistics.fmean(xs), "sd": sd, "n": len(xs)}
    return out


def deterministic_row(label: str, test: dict[str, float]) -> dict[str, Any]:
    """A row without seed noise (the TF-IDF baseline): sd 0."""
    return {
        "label": label,
        "summary": {name: {"mean": test[name], "sd": 0.0, "n": 1} for name in METRICS},
        "deterministic": True,
    }


def difference(a: dict[str, float], b: dict[str, float]) -> dict[str, Any]:
    """mean_a - mean_b, its sd sqrt(sd_a^2/n_a + sd_b^2/n_b), and whether it exceeds 2 sd."""
    sd = math.sqrt(a["sd"] ** 2 / a["n"] + b["sd"] ** 2 / b["n"])
    diff = a["mean"] - b["mean"]
    exceeds = None if math.isnan(sd) else abs(diff) > 2 * sd and sd > 0
    return {"difference": diff, "sd": sd, "exceeds_2sd": exceeds}


def all_differences(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every pair of rows (in order), every metric."""
    out = []
    for i, a in enumerate(rows):
        for b in rows[i + 1 :]:
            if a.get("deterministic") and b.get("deterministic"):
                continue
            metrics = {m: difference(a["summary"][m], b["summary"][m]) for m in METRICS}
            out.append({"a": a["label"], "b": b["label"], "metrics": metrics})
    return out


def _pm(stat: dict[str, float]) -> str:
    if stat["n"] == 1 and stat["sd"] == 0:
        return f"{100 * stat['mean']:.1f}"
    sd = "n/a" if math.isnan(stat["sd"]) else f"{100 * stat['sd']:.1f}"
    return f"{100 * stat['mean']:.1f} ± {sd}"


def format_markdown(result: dict[str, Any]) -> str:
    """The rows (mean ± sd over seeds), the LoRA-vs-full costs, and every pairwise difference."""
    rows, seeds = result["rows"], result["seeds"]
    lines = [
        f"ADE test split, {len(seeds)} fine-tuning seeds per row ({', '.join(map(str, seeds))}; the training "
        f"seed and the data order both change), recipe `{result['recipe']}`. Thresholds chosen on "
        "validation. Mean ± sample sd over seeds, in %.",
        "",
        "| row | " + " | ".join(METRIC_TITLES.values()) + " | LR (chosen on validation) |",
        "|---|" + "---|" * (len(METRICS) + 1),
    ]
    for row in rows:
        cells = [_pm(row["summary"][m]) for m in METRICS]
        lr = (
            "-"
            if row.get("deterministic")
            else (f"{row['lr']:g}" if row.get("lr") is not None else "recipe's")
        )
        lines.append(f"| {row['label']} | " + " | ".join(cells) + f" | {lr} |")
    trained = [r for r in rows if not r.get("deterministic")]
    lines += [
        "",
        "| row | trainable parameters | wall time per run (s, mean) | peak RSS (MB, max) |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['label']} | {r['trainable_parameters']:,} | {r['wall_s']:.0f} | {r['peak_rss_mb']:,.0f} |"
        for r in trained
    ]
    lines += [
        "",
        "Differences (row A − row B, points) ± sd of the difference of means, "
        "sd = sqrt(sd_A²/n_A + sd_B²/n_B); **bold** where |difference| > 2 sd.",
        "",
        "| A | B | " + " | ".join(METRIC_TITLES.values()) + " |",
        "|---|---|" + "---|" * len(METRICS),
    ]
    for pair in result["differences"]:
        cells = []
        for m in METRICS:
            d = pair["metrics"][m]
            text = f"{100 * d['difference']:+.1f} ± {100 * d['sd']:.1f}"
            cells.append(f"**{text}**" if d["exceeds_2sd"] else text)
        lines.append(f"| {pair['a']} | {pair['b']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
