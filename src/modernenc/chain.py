"""The quickstart chain on CPU: pre-train on Wikipedia -> anneal on PubMed -> fine-tune on ADE -> evaluate.

Every stage is the command a user would type (printed before it runs), so the chain doubles as a worked
example. A stage whose outputs are complete is skipped on a re-run; a killed training stage resumes from
its last checkpoint. Controls run on the same split: the same fine-tune from random init and from the
un-annealed checkpoint, and a TF-IDF + logistic-regression baseline. The results table compares them at
the thresholds chosen on validation, beside the brief's reference rows (labelled as such).
"""

from __future__ import annotations

import json
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modernenc.paths import REPO_ROOT

TOKENIZER = "../shared/data/tokenizers/modernbert"
PRETRAIN_CKPT = "checkpoints/quickstart-pretrain/latest-rank0.pt"
ANNEAL_CKPT = "checkpoints/quickstart-anneal/latest-rank0.pt"
FINETUNE_YAML = "yamls/quickstart/finetune_ade.yaml"
# The fine-tunes compared in the results table: run name -> where the encoder comes from.
FINETUNES = {
    "quickstart-finetune-ade": ANNEAL_CKPT,  # the main model: pre-trained, then annealed
    "quickstart-finetune-ade-pretrained-only": PRETRAIN_CKPT,  # control: no annealing
    "quickstart-finetune-ade-random-init": None,  # control: no pre-training at all
}
# ADE test split on an A10G GPU, as the project brief quotes them; no public source was found for these
# (docs/results.md says what is known).
REFERENCE_ROWS = [
    ("ModernBERT-base (brief's reference)", 86.0, 82.2, 90.3, 118),
    ("ModernBERT-large (brief's reference)", 89.2, 86.8, 91.8, 87),
    ("Llama-3.2-3B LoRA (brief's reference)", 93.1, 94.2, 92.0, 152),
]


class ChainError(RuntimeError):
    """A stage failed; the message names it."""


@dataclass(frozen=True)
class Stage:
    name: str
    what: str  # one line for the user: what happens and where the outputs go
    done: Callable[[], bool]
    command: list[str] | None = None  # a command run from the repository root
    run: Callable[[], None] | None = None  # or a function, for steps that are not a command


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


def _python_line(line: str) -> list[str]:
    """`python <line>`, split like a shell would."""
    return _python(*shlex.split(line))


def _finished(run_dir: str) -> Callable[[], bool]:
    return lambda: (REPO_ROOT / run_dir / "DONE").is_file()


def _train(yaml: str, run_name: str, *overrides: str) -> list[str]:
    # autoresume: a stage killed half-way continues from its last checkpoint on the next run.
    return _python("train.py", yaml, f"run_name={run_name}", "autoresume=true", *overrides)


def stages(out: Path) -> list[Stage]:
    prepare = f"data_prep/prepare_corpus.py --tokenizer {shlex.quote(TOKENIZER)} --max-length 512"
    prepare += " --validation-fraction 0.01 --force"
    result = [
        Stage(
            "prepare-wikipedia",
            "tokenize Wikipedia into MDS shards -> data/wiki-512",
            lambda: (REPO_ROOT / "data/wiki-512/validation/index.json").is_file(),
            _python_line(
                f"{prepare} --input ../shared/data/wikipedia_en --format wikiextractor --output data/wiki-512"
            ),
        ),
        Stage(
            "pretrain",
            "pre-train a `mini` encoder with 30% MLM -> checkpoints/quickstart-pretrain",
            _finished("checkpoints/quickstart-pretrain"),
            _train("yamls/quickstart/pretrain.yaml", "quickstart-pretrain"),
        ),
        Stage(
            "prepare-pubmed",
            "tokenize PubMed, dropping abstracts that contain ADE sentences -> data/pubmed-512",
            lambda: (REPO_ROOT / "data/pubmed-512/validation/index.json").is_file(),
            _python_line(
                f"{prepare} --input ../shared/data/pubmed --format jsonl --text-field text"
                " --output data/pubmed-512 --decontaminate ../shared/data/ade_corpus_v2"
            ),
        ),
        Stage(
            "anneal",
            "anneal on PubMed with 15% MLM and a 1-sqrt decay -> checkpoints/quickstart-anneal",
            _finished("checkpoints/quickstart-anneal"),
            _train("yamls/quickstart/anneal_biomed.yaml", "quickstart-anneal"),
        ),
        Stage(
            "prepare-ade",
            "write the published balanced ADE split (2,562/855/854 per class) -> data/ade",
            lambda: (REPO_ROOT / "data/ade/test.jsonl").is_file(),
            _python_line("data_prep/ade.py --source ../shared/data/ade_corpus_v2 --out data/ade --force"),
        ),
    ]
    for run_name, init in FINETUNES.items():
        result.append(
            Stage(
                f"finetune:{run_name}",
                f"fine-tune on ADE from {init or 'random init'} -> checkpoints/{run_name}",
                _finished(f"checkpoints/{run_name}"),
                _train(FINETUNE_YAML, run_name, f"model.init_from={init or 'null'}"),
            )
        )
    result.append(
        Stage(
            "results",
            f"evaluate on the ADE test split and write the results table -> {out}",
            lambda: False,
            run=lambda: write_results(out),
        )
    )
    return result


def _run_stage(stage: Stage) -> None:
    if stage.command is not None:
        shown = [Path(stage.command[0]).name, *stage.command[1:]]
        print(f"    $ {shlex.join(shown)}", flush=True)
        subprocess.run(stage.command, cwd=REPO_ROOT, check=True)
    else:
        stage.run()


DEFAULT_RESULTS = REPO_ROOT / "checkpoints" / "quickstart-results.md"


def run_chain(out: str | Path = DEFAULT_RESULTS, only: list[str] | None = None) -> None:
    """Run (or reuse) every stage in order; `only` restricts the chain to the named stages.

    `out` (relative to the working directory) is the results table, rewritten by each run; it is checked
    before the first stage, not after half an hour of training.
    """
    out = Path(out).absolute()
    if out.is_dir() or not out.parent.is_dir():
        problem = "is a folder" if out.is_dir() else f"is in a folder that does not exist ({out.parent})"
        raise ChainError(f"the results table {out} {problem}; pass --out FILE.md in an existing folder")
    all_stages = stages(out)
    chosen = [s for s in all_stages if only is None or s.name in only]
    for i, stage in enumerate(chosen, 1):
        header = f"[{i}/{len(chosen)}] {stage.name}: {stage.what}"
        if stage.done():
            print(f"{header}  (done, reusing)", flush=True)
            continue
        print(header, flush=True)
        start = time.perf_counter()
        try:
            _run_stage(stage)
        except subprocess.CalledProcessError as err:
            raise ChainError(
                f"stage {stage.name} failed (exit code {err.returncode}); its error is above. Re-running "
                "reuses the stages that finished."
            ) from None
        run_dir = _stage_run_dir(stage)
        if run_dir is not None:
            (REPO_ROOT / run_dir / "DONE").write_text(f"{time.perf_counter() - start:.0f} s\n")
        print(f"    finished in {time.perf_counter() - start:.0f} s", flush=True)


def _stage_run_dir(stage: Stage) -> str | None:
    if stage.command is None or "train.py" not in stage.command:
        return None
    run_name = next(arg for arg in stage.command if arg.startswith("run_name=")).split("=", 1)[1]
    return f"checkpoints/{run_name}"


def _tfidf_row() -> tuple[str, dict]:
    from modernenc.tasks.ade_data import read_jsonl
    from modernenc.tasks.evaluation import binary_metrics, select_thresholds
    from modernenc.tasks.tfidf_baseline import fit

    split = {s: read_jsonl(REPO_ROOT / "data/ade" / f"{s}.jsonl") for s in ("train", "validation", "test")}
    model = fit(split["train"])
    val = model.predict_proba([r["text"] for r in split["validation"]])[:, 1]
    thresholds = select_thresholds([r["label"] for r in split["validation"]], val)
    start = time.perf_counter()
    test = model.predict_proba([r["text"] for r in split["test"]])[:, 1]
    per_s = len(test) / (time.perf_counter() - start)
    labels = [r["label"] for r in split["test"]]
    return "TF-IDF + logistic regression", {
        "results": {name: binary_metrics(labels, test, t) for name, t in thresholds.items()},
        "examples_per_s": per_s,
    }


def _finetune_row(run_name: str) -> dict:
    from modernenc.tasks.predict import predict_file

    run = REPO_ROOT / "checkpoints" / run_name
    report = json.loads((run / "eval" / "report.json").read_text())
    print(f"    timing modernenc predict on the test split: {run_name}/best-hf", flush=True)
    summary = predict_file(
        run / "best-hf",
        REPO_ROOT / "data/ade/test.jsonl",
        run / "eval" / "test_predictions.jsonl",
        force=True,
        progress=False,
    )
    return {"results": report["splits"]["test"]["results"], "examples_per_s": summary.examples_per_s}


def write_results(out: Path) -> None:
    """The results table: each model at the validation-chosen thresholds, plus the reference rows."""
    rows = {
        "mini, pre-trained + annealed (ours)": _finetune_row("quickstart-finetune-ade"),
        "mini, pre-trained only (control)": _finetune_row("quickstart-finetune-ade-pretrained-only"),
        "mini, random init (control)": _finetune_row("quickstart-finetune-ade-random-init"),
    }
    name, tfidf = _tfidf_row()
    rows[name] = tfidf
    lines = [
        "# Quickstart results: ADE sentence classification, test split (1,708 sentences)",
        "",
        f"Hardware: {platform.processor() or platform.machine()}, CPU only; ex/s is `modernenc predict` "
        "(batch 64, fp32) on the test file, TF-IDF is vectorise + predict.",
        "Thresholds are chosen on validation and applied unchanged to test. Recall is the primary metric.",
        "",
        "| model | threshold | F1 | precision | recall | AUROC | ex/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, row in rows.items():
        for threshold in ("default", "max_f1", "target_recall"):
            m = row["results"][threshold]
            lines.append(
                f"| {model} | {threshold} ({m['threshold']:.3f}) | {100 * m['f1']:.1f} | "
                f"{100 * m['precision']:.1f} | {100 * m['recall']:.1f} | {100 * m['auroc']:.1f} | "
                f"{row['examples_per_s']:.0f} |"
            )
    for model, f1, precision, recall, per_s in REFERENCE_ROWS:
        lines.append(f"| {model} | - | {f1} | {precision} | {recall} | - | {per_s} (A10G GPU) |")
    text = "\n".join(lines) + "\n"
    out.write_text(text)
    print(text)
