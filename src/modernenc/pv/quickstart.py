"""The quickstart chain on CPU: pre-train on Wikipedia -> anneal on PubMed -> fine-tune on ADE -> evaluate.

Every stage is the `modernenc` command a user would type (printed before it runs), so the chain doubles as
a worked example. It works in the current directory: shards go to `data/`, runs to `checkpoints/`, with
the recipes shipped in the package and the bundled data from `bundled_data.shared_data_dir()` (fetched
from the Hugging Face hub into the user's cache first when there is none: `ensure_bundled_data`). A stage
whose outputs are complete is skipped on a re-run; a killed training stage resumes from its last
checkpoint. Controls run on the same split: the same fine-tune from random init and from the
un-annealed checkpoint, and a TF-IDF + logistic-regression baseline. The annealed encoder is also
fine-tuned to tag the drug and adverse-effect mentions of the same split's sentences, beside a lexicon
baseline.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modernenc.pv.bundled_data import shared_data_dir
from modernenc.pv.fetch_data import ensure_bundled_data
from modernenc.utils.outputs import write_text

PRETRAIN_CKPT = "checkpoints/quickstart-pretrain/latest-rank0.pt"
ANNEAL_CKPT = "checkpoints/quickstart-anneal/latest-rank0.pt"
FINETUNE_RECIPE = "quickstart/finetune_ade"
# The fine-tunes compared in the results table: run name -> (row label, where the encoder comes from).
FINETUNES = {
    "quickstart-finetune-ade": ("mini, pre-trained + annealed (ours)", ANNEAL_CKPT),
    "quickstart-finetune-ade-pretrained-only": ("mini, pre-trained only (control)", PRETRAIN_CKPT),
    "quickstart-finetune-ade-random-init": ("mini, random init (control)", None),
}
ADE_SPLIT = Path("data/ade")
# ADE extraction: the same split's sentences with their drug and effect mentions, and the span tagger.
SPANS_SPLIT = Path("data/ade-spans")
SPANS_RUN = "quickstart-finetune-ade-spans"
SPANS_LABEL = "mini, pre-trained + annealed (ours)"
DEFAULT_RESULTS = Path("checkpoints/quickstart-results.md")


class ChainError(RuntimeError):
    """A stage failed; the message names it."""


@dataclass(frozen=True)
class Stage:
    name: str
    what: str  # one line for the user: what happens and where the outputs go
    done: Callable[[], bool]
    command: list[str] | None = None  # `modernenc` arguments, run in the working directory
    run: Callable[[], None] | None = None  # or a function, for steps that are not a command


def _finished(run_dir: str) -> Callable[[], bool]:
    return lambda: (Path(run_dir) / "DONE").is_file()


def _train(recipe: str, run_name: str, tokenizer: Path, *overrides: str) -> list[str]:
    # autoresume: a stage killed half-way continues from its last checkpoint on the next run.
    return [
        "train",
        recipe,
        f"run_name={run_name}",
        "autoresume=true",
        f"data.tokenizer={tokenizer}",
        *overrides,
    ]


def stages(out: Path, data: Path | None = None) -> list[Stage]:
    data = shared_data_dir() if data is None else data
    tokenizer = data / "tokenizers" / "modernbert"
    prepare = ["prepare-data", "--tokenizer", str(tokenizer), "--max-length", "512"]
    prepare += ["--validation-fraction", "0.01", "--force"]
    result = [
        Stage(
            "prepare-wikipedia",
            "tokenize Wikipedia into MDS shards -> data/wiki-512",
            lambda: Path("data/wiki-512/validation/index.json").is_file(),
            [*prepare, "--input", str(data / "wikipedia_en"), "--format", "wikiextractor"]
            + ["--output", "data/wiki-512"],
        ),
        Stage(
            "pretrain",
            "pre-train a `mini` encoder with 30% MLM -> checkpoints/quickstart-pretrain",
            _finished("checkpoints/quickstart-pretrain"),
            _train("quickstart/pretrain", "quickstart-pretrain", tokenizer),
        ),
        Stage(
            "prepare-pubmed",
            "tokenize PubMed, dropping abstracts that contain ADE sentences -> data/pubmed-512",
            lambda: Path("data/pubmed-512/validation/index.json").is_file(),
            [*prepare, "--input", str(data / "pubmed"), "--format", "jsonl", "--text-field", "text"]
            + ["--output", "data/pubmed-512", "--decontaminate", str(data / "ade_corpus_v2")],
        ),
        Stage(
            "anneal",
            "anneal on PubMed with 15% MLM and a 1-sqrt decay -> checkpoints/quickstart-anneal",
            _finished("checkpoints/quickstart-anneal"),
            _train("quickstart/anneal_biomed", "quickstart-anneal", tokenizer),
        ),
        Stage(
            "prepare-ade",
            f"write the published balanced ADE split (2,562/855/854 per class) -> {ADE_SPLIT}",
            lambda: (ADE_SPLIT / "test.jsonl").is_file(),
            ["prepare-ade", "--source", str(data / "ade_corpus_v2"), "--out", str(ADE_SPLIT), "--force"],
        ),
    ]
    result.append(
        Stage(
            "prepare-ade-spans",
            f"write the same split with each sentence's drug and adverse-effect mentions -> {SPANS_SPLIT}",
            lambda: (SPANS_SPLIT / "test.jsonl").is_file(),
            ["prepare-ade", "--task", "spans", "--source", str(data / "ade_corpus_v2")]
            + ["--out", str(SPANS_SPLIT), "--force"],
        )
    )
    for run_name, (_, init) in FINETUNES.items():
        result.append(
            Stage(
                f"finetune:{run_name}",
                f"fine-tune on ADE from {init or 'random init'} -> checkpoints/{run_name}",
                _finished(f"checkpoints/{run_name}"),
                _train(FINETUNE_RECIPE, run_name, tokenizer, f"model.init_from={init or 'null'}"),
            )
        )
    result.append(
        Stage(
            f"finetune:{SPANS_RUN}",
            f"fine-tune a drug/effect mention tagger from {ANNEAL_CKPT} -> checkpoints/{SPANS_RUN}",
            _finished(f"checkpoints/{SPANS_RUN}"),
            _train("quickstart/finetune_ade_spans", SPANS_RUN, tokenizer, f"model.init_from={ANNEAL_CKPT}"),
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
        print(f"    $ modernenc {shlex.join(stage.command)}", flush=True)
        subprocess.run([sys.executable, "-m", "modernenc", *stage.command], check=True)
    else:
        stage.run()


def run_chain(out: str | Path = DEFAULT_RESULTS, only: list[str] | None = None) -> None:
    """Run (or reuse) every stage in order; `only` restricts the chain to the named stages.

    `out` is the results table, rewritten by each run; it is checked before the first stage, not after
    half an hour of training.
    """
    from modernenc.utils.outputs import check_output_file

    out = Path(out).absolute()
    if not out.parent.is_dir():
        problem = f"is in a folder that does not exist ({out.parent})"
        raise ChainError(f"the results table {out} {problem}; pass --out FILE.md in an existing folder")
    # Rewritten by every run, so no --force; but only a table an earlier run wrote.
    check_output_file(out, kind="report", force=True, consent=None, what="results table (--out)")
    ensure_bundled_data()  # before any stage: fetched first when there is none, refused when changed
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
        if run_dir is not None:  # a part of the run: force=true removes it with the rest
            write_text(run_dir / "DONE", f"{time.perf_counter() - start:.0f} s\n", kind=None)
        print(f"    finished in {time.perf_counter() - start:.0f} s", flush=True)


def _stage_run_dir(stage: Stage) -> Path | None:
    if stage.command is None or stage.command[0] != "train":
        return None
    run_name = next(arg for arg in stage.command if arg.startswith("run_name=")).split("=", 1)[1]
    return Path("checkpoints") / run_name


def write_results(out: Path) -> None:
    """The results table: each model at the validation-chosen thresholds, plus the reference rows."""
    from modernenc.pv.data_manifest import describe
    from modernenc.pv.results import finetune_row, format_span_table, format_table, tfidf_rows

    rows = {
        label: finetune_row(Path("checkpoints") / run_name, ADE_SPLIT / "test.jsonl")
        for run_name, (label, _) in FINETUNES.items()
    }
    rows.update(tfidf_rows(ADE_SPLIT))
    text = format_table(rows, data=describe(shared_data_dir())) + "\n" + format_span_table(span_rows())
    write_text(out, text, kind="report", tool="quickstart")
    print(text)


def span_rows() -> dict[str, dict]:
    """The span tagger, the lexicon baseline and the gold mentions (the all-pairs rule's ceiling)."""
    from modernenc.pv.results import gold_mentions_row, lexicon_row, span_model_row

    return {
        SPANS_LABEL: span_model_row(Path("checkpoints") / SPANS_RUN, SPANS_SPLIT),
        "lexicon of training mentions (baseline)": lexicon_row(SPANS_SPLIT),
        "gold mentions (all-pairs relation ceiling)": gold_mentions_row(SPANS_SPLIT),
    }
