"""Bad input to the real commands, as a new user would give it: each case runs `modernenc ...`, `train.py` or
`data_prep/*.py` as a subprocess and must end with a non-zero exit, one line naming the problem (the path or
key it is about), no traceback, and every file in the folder exactly as it was.

`benchmarks/bad_input_table.py` runs the same cases and prints what each prints (docs/bad-input.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # conftest, when this module is imported by the table script
from conftest import SHARED_DATA  # noqa: E402

TOKENIZER = SHARED_DATA / "tokenizers" / "modernbert"
PROGRAMS = {
    "modernenc": ["-m", "modernenc"],
    "train.py": [str(REPO / "train.py")],
    "data_prep/ade.py": [str(REPO / "data_prep" / "ade.py")],
    "data_prep/prepare_corpus.py": [str(REPO / "data_prep" / "prepare_corpus.py")],
    "data_prep/train_tokenizer.py": [str(REPO / "data_prep" / "train_tokenizer.py")],
}
UNWRITABLE = Path("/sys/modernenc-test")  # not even root may create files in /sys


@dataclass(frozen=True)
class Case:
    what: str  # the bad input, in a few words
    program: str  # a key of PROGRAMS
    args: str  # arguments; {d} is the case folder, {tok} the tokenizer, {unwritable} a read-only place
    expect: str  # a regex the error line must match; it names the path or key ({d} as in args)

    def argv(self, folder: Path) -> list[str]:
        return [self.fill(a, folder) for a in self.args.split()]

    def fill(self, text: str, folder: Path, regex: bool = False) -> str:
        values = {"d": str(folder), "tok": str(TOKENIZER), "unwritable": str(UNWRITABLE)}
        for key, value in values.items():
            text = text.replace("{" + key + "}", re.escape(value) if regex else value)
        return text


PREP = "prepare-data --tokenizer {tok} --no-progress"
TRAIN = "{d}/train.yaml"
CASES = [
    # --- lost data: --force replaces only what modernenc wrote; inputs and outputs never overlap
    Case(
        "--force on a folder that only looks like a corpus (report.json + the user's thesis)",
        "modernenc",
        f"{PREP} --input {{d}}/docs.txt --output {{d}}/thesis --force",
        r"--output folder {d}/thesis is not empty and is not a prepared corpus .* it holds draft.txt, "
        r"report.json, thesis.tex",
    ),
    Case(
        "--force on an earlier corpus that now holds the user's notes",
        "modernenc",
        f"{PREP} --input {{d}}/docs.txt --output {{d}}/corpus --force",
        r"{d}/corpus holds files modernenc did not write there .*: MY_NOTES.txt, extra/keep.txt",
    ),
    Case(
        "an --input file inside the --output folder",
        "modernenc",
        f"{PREP} --input {{d}}/thesis/draft.txt --output {{d}}/thesis --force",
        r"the input {d}/thesis/draft.txt lies inside the --output folder {d}/thesis",
    ),
    Case(
        "--input folder equal to --output folder",
        "data_prep/prepare_corpus.py",
        "--tokenizer {tok} --input {d}/corpus --output {d}/corpus --force",
        r"the --output folder {d}/corpus is also an input \({d}/corpus\)",
    ),
    Case(
        "--output folder inside the --input folder",
        "modernenc",
        f"{PREP} --input {{d}}/thesis --output {{d}}/thesis/mds",
        r"the --output folder {d}/thesis/mds lies inside the input folder {d}/thesis",
    ),
    Case(
        "train force=true on a folder with checkpoints no run recorded",
        "train.py",
        f"{TRAIN} save_folder={{d}}/old-run force=true",
        r"{d}/old-run holds ep0-ba2-rank0.pt, which modernenc has no record of writing",
    ),
    Case(
        "export-hf --force onto the user's own model folder",
        "modernenc",
        "export-hf {d}/ckpt.pt {d}/my-model --force",
        r"output folder {d}/my-model is not empty and is not a Hugging Face model folder modernenc wrote",
    ),
    Case(
        "average-checkpoints --hf-out onto the user's own model folder",
        "modernenc",
        "average-checkpoints {d}/run {d}/avg.pt --last 1 --hf-out {d}/my-model --force",
        r"--hf-out {d}/my-model is not empty and is not a Hugging Face model folder modernenc wrote",
    ),
    Case(
        "tile into its own source folder",
        "modernenc",
        "tile {d}/clf {d}/clf --preset small --force",
        r"the output folder {d}/clf is also an input \({d}/clf\)",
    ),
    Case(
        "predict --out --force onto a file predict did not write",
        "modernenc",
        "predict {d}/clf {d}/texts.jsonl --out {d}/notes.csv --force",
        r"refusing to replace {d}/notes.csv even with --force: modernenc has no record of writing it",
    ),
    Case(
        "predict --out is the input",
        "modernenc",
        "predict {d}/clf {d}/texts.jsonl --out {d}/texts.jsonl --force",
        r"the --out {d}/texts.jsonl is also an input",
    ),
    Case(
        "plot-schedule --out --force onto an image of the user's",
        "modernenc",
        "plot-schedule {d}/train.yaml --out {d}/photo.png --force",
        r"refusing to replace {d}/photo.png even with --force",
    ),
    Case(
        "recipes --out --force onto the user's own yaml",
        "modernenc",
        "recipes finetune_ade --out {d}/train.yaml --force",
        r"refusing to replace {d}/train.yaml even with --force",
    ),
    Case(
        "prepare-ade --force onto a folder of the user's",
        "data_prep/ade.py",
        "--source {d}/ade-tiny --out {d}/thesis --force",
        r"--out folder {d}/thesis is not empty and is not an ADE split folder",
    ),
    Case(
        "export-onnx --force onto the user's own model folder",
        "modernenc",
        "export-onnx {d}/clf {d}/my-model --force",
        r"output folder {d}/my-model is not empty and is not an ONNX export .*: it holds README.md, "
        r"model.safetensors",
    ),
    Case(
        "demo --force onto the user's own model folder",
        "modernenc",
        "demo --out {d}/my-model --force",
        r"--out folder {d}/my-model is not empty and is not a Hugging Face model folder modernenc wrote",
    ),
    # --- crashes: damaged files, empty inputs, yaml shapes
    Case(
        "average-checkpoints with a cut-short member",
        "modernenc",
        "average-checkpoints {d}/run {d}/avg.pt --last 2",
        r"{d}/run/ep0-ba4-rank0.pt is not a composer checkpoint written by train.py, or it was cut short",
    ),
    Case(
        "export-hf of a cut-short checkpoint",
        "modernenc",
        "export-hf {d}/run/ep0-ba4-rank0.pt {d}/hf",
        r"{d}/run/ep0-ba4-rank0.pt is not a composer checkpoint written by train.py, or it was cut short",
    ),
    Case(
        "ADE corpus files that are empty",
        "data_prep/ade.py",
        "--source {d}/ade-empty --out {d}/ade",
        r"ADE corpus file {d}/ade-empty/DRUG-AE.rel holds no sentences",
    ),
    Case(
        "an ADE corpus too small for three splits",
        "modernenc",
        "prepare-ade --source {d}/ade-tiny --out {d}/ade",
        r"only 2 unique positive sentence\(s\): the test split\(s\) would get none",
    ),
    Case(
        "a yaml whose top level is a list",
        "train.py",
        "{d}/list.yaml",
        r"{d}/list.yaml: the top level must be a mapping .* not a list",
    ),
    Case(
        "a yaml that is a bare string",
        "train.py",
        "{d}/string.yaml",
        r"{d}/string.yaml: the top level must be a mapping .* not a string",
    ),
    Case(
        "an empty yaml",
        "train.py",
        "{d}/empty.yaml",
        r"{d}/empty.yaml: required key\(s\) not set: data.tokenizer, data.train, run_name",
    ),
    Case(
        "a yaml without run_name",
        "train.py",
        "{d}/no-run-name.yaml",
        r"{d}/no-run-name.yaml: required key\(s\) not set: run_name",
    ),
    Case(
        "a yaml section given as a list", "train.py", f"{TRAIN} model=[1,2]", r"key 'model' must be a mapping"
    ),
    Case(
        "an override that cannot be parsed",
        "train.py",
        f"{TRAIN} data.train=[oops",
        r"override 'data.train=\[oops' cannot be parsed",
    ),
    Case(
        "train-tokenizer --output under a file",
        "data_prep/train_tokenizer.py",
        "--input {d}/docs.txt --vocab-size 300 --output {d}/afile/tok",
        r"cannot write the --output folder {d}/afile/tok: {d}/afile is a file, not a folder",
    ),
    Case(
        "train-tokenizer --output where no file can be created",
        "modernenc",
        "train-tokenizer --input {d}/docs.txt --vocab-size 300 --output {unwritable}/tok",
        r"cannot write the --output folder {unwritable}/tok: no file can be created in /sys",
    ),
    # --- unclear messages
    Case(
        "non-UTF-8 text to predict",
        "modernenc",
        "predict {d}/clf {d}/latin1.txt --out {d}/p.jsonl",
        r"{d}/latin1.txt:2 is not UTF-8 \(byte 0xe9 at column 4\); save the file as UTF-8",
    ),
    Case(
        "a non-UTF-8 training CSV",
        "train.py",
        f"{TRAIN} data.train={{d}}/latin1.csv",
        r"{d}/latin1.csv:3 is not UTF-8",
    ),
    Case("a non-UTF-8 yaml", "train.py", "{d}/latin1.yaml", r"{d}/latin1.yaml:1 is not UTF-8"),
    Case(
        "a non-UTF-8 decontamination set",
        "modernenc",
        f"{PREP} --input {{d}}/docs.txt --output {{d}}/mds --decontaminate {{d}}/latin1.txt",
        r"{d}/latin1.txt:2 is not UTF-8",
    ),
    Case(
        "a corpus of non-UTF-8 lines only",
        "modernenc",
        f"{PREP} --input {{d}}/latin1-only.txt --output {{d}}/mds",
        r"skipped 2 \(non-UTF-8 bytes: 2 at {d}/latin1-only.txt:1, {d}/latin1-only.txt:2\)",
    ),
    Case(
        "predict --out under a file",
        "modernenc",
        "predict {d}/clf {d}/texts.jsonl --out {d}/afile/p.jsonl",
        r"cannot write the --out {d}/afile/p.jsonl: {d}/afile is a file, not a folder",
    ),
    Case(
        "predict --out where no file can be created",
        "modernenc",
        "predict {d}/clf {d}/texts.jsonl --out {unwritable}/p.jsonl",
        r"cannot write the --out {unwritable}/p.jsonl: no file can be created in /sys",
    ),
    Case(
        "prepare-data --output where no file can be created",
        "modernenc",
        f"{PREP} --input {{d}}/docs.txt --output {{unwritable}}/mds",
        r"cannot write the --output folder {unwritable}/mds: no file can be created in /sys",
    ),
    Case(
        "a .pt checkpoint as predict's model folder",
        "modernenc",
        "predict {d}/ckpt.pt {d}/texts.jsonl --out {d}/p.jsonl",
        r"{d}/ckpt.pt is a training checkpoint, not a model folder; export it first \(modernenc export-hf",
    ),
    Case(
        "training data with a single label",
        "train.py",
        f"{TRAIN} data.train={{d}}/one-class.jsonl",
        r"{d}/one-class.jsonl has one class: every row's 'label' is 'pos'",
    ),
    Case(
        "save_folder under a file",
        "train.py",
        f"{TRAIN} save_folder={{d}}/afile/run",
        r"cannot write the save_folder {d}/afile/run: {d}/afile is a file, not a folder",
    ),
]


def make_fixtures(d: Path) -> None:
    """The folder every case runs against: the user's files, and outputs modernenc wrote."""
    import torch

    from modernenc.data.corpus import read_text
    from modernenc.data.masking import load_tokenizer
    from modernenc.data.mds import write_mds_corpus
    from modernenc.model import ModernEncoderConfig, ModernEncoderForSequenceClassification
    from modernenc.train.composer_model import ModernEncoderComposerModel
    from modernenc.utils.outputs import writing_folder

    d.mkdir(parents=True, exist_ok=True)
    lines = ["Aspirin may cause bleeding.", "The patient recovered.", "Rash after amoxicillin."]
    (d / "docs.txt").write_text("\n".join(lines) + "\n")
    (d / "latin1.txt").write_bytes(b"fine line\ncaf\xe9 au lait\n")
    (d / "latin1-only.txt").write_bytes(b"caf\xe9\nna\xefve\n")
    (d / "latin1.csv").write_bytes(b"text,label\nfine,neg\ncaf\xe9,pos\n")
    (d / "latin1.yaml").write_bytes(b"run_name: caf\xe9\n")
    rows = [{"text": t, "label": "pos" if i % 2 else "neg"} for i, t in enumerate(lines * 2)]
    (d / "texts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "one-class.jsonl").write_text("".join(json.dumps({"text": t, "label": "pos"}) + "\n" for t in lines))
    (d / "afile").write_text("a file, not a folder")
    (d / "notes.csv").write_text("the user's own notes\n")
    (d / "photo.png").write_bytes(b"\x89PNG the user's photo")
    (d / "list.yaml").write_text("- run_name: x\n")
    (d / "string.yaml").write_text("just a string\n")
    (d / "empty.yaml").write_text("")
    (d / "no-run-name.yaml").write_text(f"data: {{train: {d}/texts.jsonl, tokenizer: {TOKENIZER}}}\n")
    (d / "train.yaml").write_text(
        f"run_name: bad-input\nsave_folder: {d}/runs/bad-input\n"
        f"model: {{task: classification, preset: tiny}}\n"
        f"data: {{train: {d}/texts.jsonl, tokenizer: {TOKENIZER}, max_seq_len: 64}}\n"
        "evaluation: {positive_label: pos}\nmax_duration: 2ba\nlogging: {progress_bar: false}\n"
    )
    thesis = d / "thesis"
    thesis.mkdir()
    (thesis / "report.json").write_text("{}")
    (thesis / "thesis.tex").write_text("\\chapter{the user's thesis}")
    (thesis / "draft.txt").write_text("\n".join(lines) + "\n")
    docs = list(read_text(d / "docs.txt"))
    with writing_folder(d / "corpus", kind="mds-corpus", tool="prepare-data") as staging:
        write_mds_corpus(docs, load_tokenizer(TOKENIZER), staging, max_length=64, progress=False)
    (d / "corpus" / "MY_NOTES.txt").write_text("the user's notes")
    (d / "corpus" / "extra").mkdir()
    (d / "corpus" / "extra" / "keep.txt").write_text("keep")

    config = ModernEncoderConfig.from_preset("tiny", num_labels=2, id2label={0: "neg", 1: "pos"})
    model = ModernEncoderForSequenceClassification(config)
    model.save_pretrained(d / "clf", tokenizer_path=TOKENIZER)
    checkpoint = {"state": {"model": ModernEncoderComposerModel(model).state_dict()}}  # what export reads
    torch.save(checkpoint, d / "ckpt.pt")
    (d / "my-model").mkdir()
    (d / "my-model" / "model.safetensors").write_bytes(b"the user's downloaded weights")
    (d / "my-model" / "README.md").write_text("where these weights came from")
    (d / "run").mkdir()
    whole = (d / "ckpt.pt").read_bytes()
    (d / "run" / "ep0-ba2-rank0.pt").write_bytes(whole)
    (d / "run" / "ep0-ba4-rank0.pt").write_bytes(whole[: len(whole) // 2])  # killed mid-save
    (d / "old-run").mkdir()
    (d / "old-run" / "ep0-ba2-rank0.pt").write_bytes(whole)
    for name, positives in (
        ("ade-empty", []),
        ("ade-tiny", ["Rash after amoxicillin.", "Aspirin bleeding."]),
    ):
        (d / name).mkdir()
        (d / name / "DRUG-AE.rel").write_text(
            "".join(f"1|{s}|rash|0|4|amoxicillin|10|21\n" for s in positives)
        )
        (d / name / "ADE-NEG.txt").write_text(
            "".join(f"{i} NEG Sentence {i}.\n" for i in range(10 * bool(positives)))
        )


def checksums(folder: Path) -> dict[str, str]:
    """Every file and link under `folder` (hidden ones too) with its content digest."""
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            found[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_dir():
            found[rel] = "folder"
    return found


def run_case(case: Case, folder: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "TQDM_DISABLE": "1"}
    return subprocess.run(
        [sys.executable, *PROGRAMS[case.program], *case.argv(folder)],
        capture_output=True,
        text=True,
        cwd=folder,
        env=env,
        timeout=600,
    )


def error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if ": error: " in line]
    return lines[-1] if lines else ""


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bad-input")
    make_fixtures(d)
    return d


def can_create_files_in(folder: Path) -> bool:
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
def test_bad_input_is_refused_in_one_line_and_loses_nothing(case, folder):
    if "{unwritable}" in case.args and can_create_files_in(UNWRITABLE.parent):
        pytest.skip(f"{UNWRITABLE.parent} is writable here")
    before = checksums(folder)
    proc = run_case(case, folder)
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = error_line(proc)
    assert re.search(case.fill(case.expect, folder, regex=True), line), proc.stderr[-2000:]
    assert checksums(folder) == before  # nothing written, changed or removed
