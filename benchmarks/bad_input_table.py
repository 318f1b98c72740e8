"""Run the bad-input cases against the real commands and print what each prints, as a markdown table.

    PYTHONPATH=src python benchmarks/bad_input_table.py            # tests/test_bad_input.py's cases
    PYTHONPATH=src python benchmarks/bad_input_table.py --all      # and the further ones below
    PYTHONPATH=src python benchmarks/bad_input_table.py --only 3   # the first 3 (a quick check)

Each row: the command, the bad input, the exit code, whether every file in the folder was left as it was,
and the error line (paths shortened to the case folder, `D/`). A row that fails the rules of
tests/test_bad_input.py (non-zero exit, no traceback, the expected words, nothing changed) is marked FAIL.
The output is what docs/bad-input.md shows. No timings: this is not a speed benchmark.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_bad_input import (  # noqa: E402
    CASES,
    PREP,
    TRAIN,
    UNWRITABLE,
    Case,
    can_create_files_in,
    checksums,
    error_line,
    make_fixtures,
    run_case,
)

# Tried as well, kept out of the test suite to keep it fast (each case is a process that loads torch).
MORE_CASES = [
    Case(
        "an input file that does not exist",
        "modernenc",
        "predict {d}/clf {d}/nope.jsonl --out {d}/p.jsonl",
        r"input file {d}/nope.jsonl does not exist",
    ),
    Case(
        "an input format predict cannot read",
        "modernenc",
        "predict {d}/clf {d}/afile --out {d}/p.jsonl",
        r"cannot read {d}/afile: supported inputs are",
    ),
    Case(
        "a JSONL line that is not JSON",
        "modernenc",
        "predict {d}/clf {d}/broken.jsonl --out {d}/p.jsonl",
        r"{d}/broken.jsonl:2 is not valid JSON",
    ),
    Case(
        "a CSV row with more fields than the header",
        "modernenc",
        "predict {d}/clf {d}/ragged.csv --out {d}/p.jsonl",
        r"{d}/ragged.csv:3 has more fields than the header's 1",
    ),
    Case(
        "a CSV quote that is never closed (it would swallow the rows after it)",
        "modernenc",
        "predict {d}/clf {d}/open-quote.csv --out {d}/p.jsonl",
        r"{d}/open-quote.csv:3 is not valid CSV \(a quoted field in it is never closed\)",
    ),
    Case(
        "a UTF-16 CSV (Excel's Unicode text)",
        "modernenc",
        "predict {d}/clf {d}/utf16.csv --out {d}/p.jsonl",
        r"{d}/utf16.csv is UTF-16 \(it starts with a UTF-16 byte-order mark\), not UTF-8; save the file as "
        r"UTF-8, e.g. iconv -f utf-16 -t utf-8 utf16.csv > utf16-utf8.csv",
    ),
    Case(
        "a parquet file that is not parquet",
        "modernenc",
        "predict {d}/clf {d}/fake.parquet --out {d}/p.jsonl",
        r"{d}/fake.parquet is not a readable parquet file",
    ),
    Case(
        "--text-column that the input lacks",
        "modernenc",
        "predict {d}/clf {d}/texts.jsonl --out {d}/p.jsonl --text-column body",
        r"{d}/texts.jsonl:1 has no column 'body'; its columns are: 'text', 'label'",
    ),
    Case(
        "--out with an extension predict cannot write",
        "modernenc",
        "predict {d}/clf {d}/texts.jsonl --out {d}/p.txt",
        r"output {d}/p.txt must end in .jsonl or .csv",
    ),
    Case(
        "a model folder without a tokenizer",
        "modernenc",
        "predict {d}/my-model {d}/texts.jsonl --out {d}/p.jsonl",
        r"{d}/my-model/tokenizer.json is missing",
    ),
    Case(
        "a model folder that does not exist",
        "modernenc",
        "predict {d}/nope {d}/texts.jsonl --out {d}/p.jsonl",
        r"model folder {d}/nope does not exist",
    ),
    Case(
        "a non-UTF-8 thresholds.json",
        "modernenc",
        "predict {d}/clf-latin1 {d}/texts.jsonl --out {d}/p.jsonl",
        r"{d}/clf-latin1/thresholds.json:1 is not UTF-8",
    ),
    Case(
        "--threshold outside [0, 1]",
        "modernenc",
        "predict {d}/clf {d}/texts.jsonl --out {d}/p.jsonl --threshold 2",
        r"--threshold must be a number in",
    ),
    Case(
        "--device with no such device",
        "modernenc",
        "predict {d}/clf {d}/texts.jsonl --out {d}/p.jsonl --device tpu",
        r"unknown device 'tpu'",
    ),
    Case(
        "--batch-size 0",
        "modernenc",
        "predict {d}/clf {d}/texts.jsonl --out {d}/p.jsonl --batch-size 0",
        r"batch_size must be >= 1",
    ),
    Case(
        "a --tokenizer that does not exist",
        "modernenc",
        "prepare-data --tokenizer {d}/nope --input {d}/docs.txt --output {d}/mds --no-progress",
        r"no tokenizer.json at {d}/nope",
    ),
    Case(
        "an --input that does not exist",
        "modernenc",
        "prepare-data --tokenizer {tok} --input {d}/nope --output {d}/mds",
        r"input {d}/nope does not exist",
    ),
    Case(
        "JSONL without the --text-field",
        "modernenc",
        f"{PREP} --input {{d}}/texts.jsonl --output {{d}}/mds --text-field body",
        r"missing string field 'body': 6 at {d}/texts.jsonl:1",
    ),
    Case(
        "a gzip-compressed input",
        "modernenc",
        f"{PREP} --input {{d}}/docs.txt.gz --output {{d}}/mds",
        r"{d}/docs.txt.gz is compressed; decompress it first",
    ),
    Case(
        "a --shard-size that is no size",
        "modernenc",
        f"{PREP} --input {{d}}/docs.txt --output {{d}}/mds --shard-size big",
        r"--shard-size 'big' is not a size",
    ),
    Case(
        "--validation-fraction 1.5",
        "modernenc",
        f"{PREP} --input {{d}}/docs.txt --output {{d}}/mds --validation-fraction 1.5",
        r"--validation-fraction must be in \[0, 1\)",
    ),
    Case(
        "--output is a file",
        "modernenc",
        f"{PREP} --input {{d}}/docs.txt --output {{d}}/afile",
        r"the --output folder {d}/afile is a file",
    ),
    Case(
        "a decontamination set that does not exist",
        "modernenc",
        f"{PREP} --input {{d}}/docs.txt --output {{d}}/mds --decontaminate {{d}}/nope.jsonl",
        r"decontamination set {d}/nope.jsonl does not exist",
    ),
    Case(
        "train-tokenizer on non-UTF-8 text only",
        "modernenc",
        "train-tokenizer --input {d}/latin1-only.txt --vocab-size 300 --output {d}/tok",
        r"no document had text to train on \(non-UTF-8 bytes: 2 at {d}/latin1-only.txt:1",
    ),
    Case(
        "train-tokenizer --output is a file",
        "modernenc",
        "train-tokenizer --input {d}/docs.txt --vocab-size 300 --output {d}/afile",
        r"{d}/afile is a file",
    ),
    Case(
        "a --vocab-size too small",
        "modernenc",
        "train-tokenizer --input {d}/docs.txt --vocab-size 10 --output {d}/tok",
        r"--vocab-size must exceed",
    ),
    Case(
        "a yaml that does not exist", "train.py", "{d}/nope.yaml", r"config file {d}/nope.yaml does not exist"
    ),
    Case("a folder as the yaml", "train.py", "{d}/thesis", r"{d}/thesis is a folder; give a training yaml"),
    Case("a yaml with a tab", "train.py", "{d}/tab.yaml", r"{d}/tab.yaml:2 is not valid YAML"),
    Case(
        "a yaml with a duplicate key",
        "train.py",
        "{d}/duplicate.yaml",
        r"{d}/duplicate.yaml:2 is not valid YAML: found duplicate key",
    ),
    Case(
        "an interpolation to nowhere",
        "train.py",
        f"{TRAIN} save_folder=${{nowhere}}",
        r"key 'save_folder' \(\$\{nowhere\}\) cannot be resolved",
    ),
    Case(
        "data.train that does not exist",
        "train.py",
        f"{TRAIN} data.train={{d}}/nope.jsonl",
        r"data file {d}/nope.jsonl does not exist",
    ),
    Case(
        "data.label_column that the data lacks",
        "train.py",
        f"{TRAIN} data.label_column=category",
        r"{d}/texts.jsonl:1 has no column 'category'",
    ),
    Case(
        "model.init_from that does not exist", "train.py", f"{TRAIN} model.init_from={{d}}/nope", r"{d}/nope"
    ),
    Case(
        "model.init_from a cut-short checkpoint",
        "train.py",
        f"{TRAIN} model.init_from={{d}}/run/ep0-ba4-rank0.pt",
        r"{d}/run/ep0-ba4-rank0.pt is not a composer checkpoint written by train.py, or it was cut short",
    ),
    Case(
        "a tokenizer that does not exist",
        "train.py",
        f"{TRAIN} data.tokenizer={{d}}/nope",
        r"no tokenizer.json at {d}/nope",
    ),
    Case(
        "data.micro_batch_size=0",
        "train.py",
        f"{TRAIN} data.micro_batch_size=0",
        r"data.micro_batch_size=0 must be positive",
    ),
    Case(
        "save_folder is a file",
        "train.py",
        f"{TRAIN} save_folder={{d}}/afile",
        r"save_folder={d}/afile is a file",
    ),
    Case(
        "save_folder is a prepared corpus",
        "train.py",
        f"{TRAIN} save_folder={{d}}/corpus force=true",
        r"save_folder={d}/corpus holds a prepared corpus \(prepare-data\), not a training run",
    ),
    Case(
        "evaluation.positive_label not among the labels",
        "train.py",
        f"{TRAIN} evaluation.positive_label=ade",
        r"evaluation.positive_label='ade' is not one of the labels",
    ),
    Case(
        "a checkpoint that does not exist",
        "modernenc",
        "export-hf {d}/nope.pt {d}/hf",
        r"checkpoint {d}/nope.pt does not exist",
    ),
    Case(
        "export-hf --tokenizer without tokenizer files",
        "modernenc",
        "export-hf {d}/ckpt.pt {d}/hf --tokenizer {d}/thesis",
        r"no tokenizer files .* in {d}/thesis",
    ),
    Case("export-hf OUT is a file", "modernenc", "export-hf {d}/ckpt.pt {d}/afile", r"{d}/afile is a file"),
    Case(
        "average-checkpoints of a folder without checkpoints",
        "modernenc",
        "average-checkpoints {d}/thesis {d}/avg.pt --last 1",
        r"no train.py checkpoints \(ep\*-ba\*-rank0.pt\) in {d}/thesis",
    ),
    Case(
        "average-checkpoints --last 5 of 2",
        "modernenc",
        "average-checkpoints {d}/run {d}/avg.pt --last 5",
        r"asked for 5 checkpoints but the folder holds 2",
    ),
    Case(
        "average-checkpoints OUT not .pt",
        "modernenc",
        "average-checkpoints {d}/run {d}/avg.bin --last 1",
        r"output {d}/avg.bin must end in .pt",
    ),
    Case(
        "tile a source that does not exist", "modernenc", "tile {d}/nope {d}/big --preset small", r"{d}/nope"
    ),
    Case(
        "tile to a preset that does not exist",
        "modernenc",
        "tile {d}/clf {d}/big --preset huge",
        r"unknown model preset 'huge'",
    ),
    Case("tile OUT is a file", "modernenc", "tile {d}/clf {d}/afile --preset small", r"{d}/afile is a file"),
    Case(
        "plot-schedule --out with no image suffix",
        "modernenc",
        "plot-schedule {d}/train.yaml --out {d}/plot.xyz",
        r"{d}/plot.xyz: give an image file name",
    ),
    Case(
        "plot-schedule --out under a file",
        "modernenc",
        "plot-schedule {d}/train.yaml --out {d}/afile/plot.png",
        r"cannot write the --out {d}/afile/plot.png: {d}/afile is a file",
    ),
    Case("recipes: a recipe that does not exist", "modernenc", "recipes finetune_adee", r"finetune_adee"),
    Case(
        "prepare-ade --source that does not exist",
        "modernenc",
        "prepare-ade --source {d}/nope --out {d}/ade",
        r"ADE corpus folder {d}/nope does not exist",
    ),
    Case(
        "prepare-ade --out is a file",
        "modernenc",
        "prepare-ade --source {d}/ade-tiny --out {d}/afile",
        r"{d}/afile is a file",
    ),
    Case(
        "an ADE line without 8 columns",
        "modernenc",
        "prepare-ade --source {d}/ade-broken --out {d}/ade",
        r"{d}/ade-broken/DRUG-AE.rel:1: expected 8 '\|' columns",
    ),
    Case(
        "export-onnx into a folder inside the model folder",
        "modernenc",
        "export-onnx {d}/clf {d}/clf/onnx",
        r"the output folder {d}/clf/onnx lies inside the input folder {d}/clf",
    ),
    Case(
        "export-onnx of a training checkpoint",
        "modernenc",
        "export-onnx {d}/ckpt.pt {d}/onnx",
        r"{d}/ckpt.pt",
    ),
    Case(
        "calibrate on a non-UTF-8 validation file",
        "modernenc",
        "calibrate {d}/clf --dtype fp32 --validation {d}/latin1.csv --positive-label pos",
        r"{d}/latin1.csv:3 is not UTF-8",
    ),
    Case(
        "calibrate on validation data of one class",
        "modernenc",
        "calibrate {d}/clf --dtype fp32 --validation {d}/one-class.jsonl --positive-label pos",
        r"{d}/one-class.jsonl",
    ),
    Case(
        "audit export --force onto a file of the user's",
        "modernenc",
        "audit export {d}/audit.db --out {d}/notes.csv --force",
        r"refusing to replace {d}/notes.csv even with --force",
    ),
    Case(
        "fetch-data --force onto a folder that is not a fetch",
        "modernenc",
        "fetch-data --out {d}/thesis --force --no-progress",
        r"{d}/thesis is not empty and holds no manifest.json",
    ),
    Case("demo --out is a file", "modernenc", "demo --out {d}/afile", r"{d}/afile is a file"),
    Case(
        "demo --out where no file can be created",
        "modernenc",
        "demo --out {unwritable}/demo",
        r"no file can be created in /sys",
    ),
]


def make_more_fixtures(d: Path) -> None:
    import gzip
    import shutil

    (d / "broken.jsonl").write_text('{"text": "fine"}\n{not json}\n')
    (d / "ragged.csv").write_text("text\nfine\nfine,extra\n")
    (d / "open-quote.csv").write_text('text\nfine\n"Rash after amoxicillin\nNausea\nHeadache\n')
    (d / "utf16.csv").write_text("text\nRash after amoxicillin.\n", encoding="utf-16")
    (d / "fake.parquet").write_text("not parquet")
    (d / "docs.txt.gz").write_bytes(gzip.compress((d / "docs.txt").read_bytes()))
    (d / "tab.yaml").write_text("run_name: x\n\tdata: 1\n")
    (d / "duplicate.yaml").write_text("run_name: a\nrun_name: b\n")
    shutil.copytree(d / "clf", d / "clf-latin1")
    (d / "clf-latin1" / "thresholds.json").write_bytes(b'{"thresholds": {"d\xe9fault": 0.5}}')
    (d / "ade-broken").mkdir()
    (d / "ade-broken" / "DRUG-AE.rel").write_text("123|only three|columns\n")
    (d / "ade-broken" / "ADE-NEG.txt").write_text("1 NEG A sentence.\n")


def shorten(text: str, folder: Path) -> str:
    return text.replace(str(folder), "D").replace("|", "\\|")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--all", action="store_true", help="also the cases kept out of the test suite")
    parser.add_argument("--only", type=int, default=None, help="run only the first N cases")
    parser.add_argument("--match", default=None, help="only the cases whose description matches")
    args = parser.parse_args()
    cases = CASES + (MORE_CASES if args.all else [])
    cases = cases[: args.only] if args.only else cases
    cases = [c for c in cases if args.match is None or re.search(args.match, c.what)]
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "D"
        make_fixtures(folder)
        make_more_fixtures(folder)
        print("| command | bad input | exit | files kept | what it prints |")
        print("| --- | --- | --- | --- | --- |")
        for case in cases:
            if "{unwritable}" in case.args and can_create_files_in(UNWRITABLE.parent):
                continue
            before = checksums(folder)
            proc = run_case(case, folder)
            line = error_line(proc)
            kept = checksums(folder) == before
            ok = (
                proc.returncode != 0
                and "Traceback" not in proc.stderr
                and kept
                and re.search(case.fill(case.expect, folder, regex=True), line) is not None
            )
            failed += not ok
            command = case.program if case.program != "modernenc" else "modernenc " + case.args.split()[0]
            message = (
                line.split(": error: ", 1)[-1] if line else (proc.stderr.strip().splitlines() or [""])[-1]
            )
            print(
                f"| {command} | {case.what} | {proc.returncode} | {'yes' if kept else 'NO'} | "
                f"{'' if ok else '**FAIL** '}{shorten(message, folder)} |"
            )
    print(f"\n{len(cases)} cases, {failed} failing", file=sys.stderr)
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
