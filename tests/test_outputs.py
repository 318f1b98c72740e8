"""utils/outputs.py: what --force may replace, overlapping inputs and outputs, writes that a failure or a kill
cannot tear. The truth is the file system: which files exist afterwards, with which bytes."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from modernenc.utils.outputs import (
    MANIFEST_NAME,
    OutputError,
    check_output_file,
    check_output_folder,
    claim_folder,
    record,
    remove_recorded,
    write_text,
    writing_file,
    writing_folder,
)


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` but the manifests, with its bytes."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME
    }


def write_corpus(folder: Path, files: dict[str, str]) -> None:
    with writing_folder(folder, kind="mds-corpus", tool="prepare-data") as staging:
        for name, text in files.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_text(text)


def test_a_folder_output_is_replaced_only_when_all_of_it_is_the_same_kind_of_output(tmp_path):
    out = tmp_path / "corpus"
    check_output_folder(out, kind="mds-corpus")  # new: fine
    write_corpus(out, {"report.json": "{}", "train/index.json": "1", "train/shard.0": "old"})
    with pytest.raises(FileExistsError, match=r"already holds a prepared corpus .*; pass --force"):
        check_output_folder(out, kind="mds-corpus")
    assert check_output_folder(out, kind="mds-corpus", force=True) == out
    with pytest.raises(OutputError, match=r"holds a prepared corpus \(prepare-data\), not a tokenizer"):
        check_output_folder(out, kind="tokenizer", force=True)

    (out / "train" / "MY_NOTES.txt").write_text("the user's")
    with pytest.raises(OutputError, match=r"files modernenc did not write there .*: train/MY_NOTES.txt\."):
        check_output_folder(out, kind="mds-corpus", force=True)
    (out / "train" / "MY_NOTES.txt").unlink()
    (out / "train" / "shard.0").write_text("edited by hand")  # another size than recorded
    with pytest.raises(OutputError, match=r"\(or that changed since\): train/shard.0\."):
        check_output_folder(out, kind="mds-corpus", force=True)


def test_a_folder_modernenc_did_not_write_is_refused_even_with_force_naming_its_contents(tmp_path):
    out = tmp_path / "thesis"
    out.mkdir()
    for name in ("report.json", "thesis.tex"):  # a report.json does not make it a corpus
        (out / name).write_text("the user's")
    (out / "figures").mkdir()
    for force in (False, True):
        with pytest.raises(
            OutputError,
            match=r"is not empty and is not a prepared corpus .*: it holds "
            r"figures/, report.json, thesis.tex\. Refusing to replace it even with --force",
        ):
            check_output_folder(out, kind="mds-corpus", force=force)
    (out / MANIFEST_NAME).write_text("{not json")  # a damaged record proves nothing
    with pytest.raises(OutputError, match=r"cannot be read"):
        check_output_folder(out, kind="mds-corpus", force=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check_output_folder(empty, kind="mds-corpus") == empty


@pytest.mark.parametrize(
    "output, inputs, message",
    [
        ("data", ["data"], r"the output folder .*data is also an input"),
        ("data", ["data/a.txt"], r"the input .*data/a.txt lies inside the output folder .*data, which"),
        ("data/out", ["data"], r"the output folder .*data/out lies inside the input folder .*data;"),
    ],
)
def test_inputs_and_outputs_may_not_overlap(tmp_path, output, inputs, message):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("input")
    with pytest.raises(OutputError, match=message):
        check_output_folder(
            tmp_path / output, kind="mds-corpus", force=True, inputs=[tmp_path / i for i in inputs]
        )
    check_output_folder(
        tmp_path / "elsewhere", kind="mds-corpus", inputs=[tmp_path / "data", None, "s3://b/x"]
    )


def test_paths_that_cannot_be_written_are_refused_naming_the_path_given(tmp_path):
    (tmp_path / "afile").write_text("a file")
    for check in (check_output_file, check_output_folder):
        with pytest.raises(
            OutputError, match=f"cannot write the .* {tmp_path}/afile/x/y: {tmp_path}/afile is a file"
        ):
            check(tmp_path / "afile" / "x" / "y", kind="plot")
    try:  # /sys refuses new files even to root; elsewhere the check cannot be shown
        with tempfile.TemporaryFile(dir="/sys"):
            pytest.skip("/sys is writable here")
    except OSError:
        pass
    with pytest.raises(
        OutputError, match=r"cannot write the output /sys/modernenc/p.png: no file can be created in /sys"
    ):
        check_output_file("/sys/modernenc/p.png", kind="plot")


def test_a_failed_or_killed_folder_write_leaves_the_earlier_output_and_no_staging(tmp_path):
    out = tmp_path / "corpus"
    write_corpus(out, {"report.json": "old", "train/shard.0": "old"})
    before = tree(out)
    with pytest.raises(RuntimeError, match="tokenizing failed"):
        with writing_folder(out, kind="mds-corpus", tool="prepare-data") as staging:
            (staging / "report.json").write_text("half")
            raise RuntimeError("tokenizing failed")
    assert tree(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]
    # A kill leaves a staging folder (marked as such); the next write of that output clears it.
    killed = tmp_path / ".corpus.k1ll3d.partial"
    killed.mkdir()
    (killed / MANIFEST_NAME).write_text(json.dumps({"owner": {"kind": "partial"}, "entries": {}}))
    (killed / "shard.0").write_text("torn")
    write_corpus(out, {"report.json": "new"})
    assert tree(out) == {"report.json": b"new"}  # the earlier shard went with the earlier corpus
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]
    assert oct(out.stat().st_mode & 0o777) == oct(0o777 & ~_umask())  # as mkdir would make it


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_folder_that_gains_the_users_files_during_the_work_is_not_replaced(tmp_path):
    out = tmp_path / "hf"
    with writing_folder(out, kind="hf-model", tool="export-hf") as staging:
        (staging / "model.safetensors").write_text("old")
    with pytest.raises(OutputError, match=r"changed while this command ran .*notes.md.*new output is in"):
        with writing_folder(out, kind="hf-model", tool="export-hf") as staging:
            (staging / "model.safetensors").write_text("new")
            (out / "notes.md").write_text("written meanwhile")
    assert tree(out) == {"model.safetensors": b"old", "notes.md": b"written meanwhile"}
    assert tree(tmp_path / "hf.new") == {"model.safetensors": b"new"}


def test_a_file_output_is_replaced_only_if_modernenc_wrote_it_and_nobody_changed_it(tmp_path):
    mine, theirs = tmp_path / "p.jsonl", tmp_path / "notes.jsonl"
    theirs.write_text("the user's")
    with pytest.raises(FileExistsError, match=r"already exists; pass --force"):
        check_output_file(theirs, kind="predictions")
    with pytest.raises(
        OutputError, match=r"refusing to replace .*notes.jsonl even with --force: modernenc has no"
    ):
        check_output_file(theirs, kind="predictions", force=True)
    write_text(mine, "rows\n", kind="predictions", tool="predict")
    assert check_output_file(mine, kind="predictions", force=True) == mine
    with pytest.raises(OutputError, match=r"it is a predictions file, not a plot"):
        check_output_file(mine, kind="plot", force=True)
    mine.write_text("rows, edited in a spreadsheet\n")
    with pytest.raises(OutputError, match=r"it was changed after modernenc wrote it"):
        check_output_file(mine, kind="predictions", force=True)
    assert theirs.read_text() == "the user's"


def test_a_failed_file_write_keeps_the_earlier_file_and_no_temporary(tmp_path):
    out = tmp_path / "avg.pt"
    write_text(out, "earlier", kind="checkpoint")
    with pytest.raises(OSError, match=f"could not write {out}: No space left"):
        with writing_file(out, kind="checkpoint") as tmp:
            tmp.write_text("half")
            raise OSError(28, "No space left on device", str(tmp))  # named after the output, not tmp
    assert out.read_text() == "earlier" and sorted(p.name for p in tmp_path.iterdir()) == [
        MANIFEST_NAME,
        "avg.pt",
    ]


def test_remove_recorded_takes_the_runs_parts_and_keeps_everything_else(tmp_path):
    run = tmp_path / "run"
    claim_folder(run, "train-run", "train")
    for name in ("ep0-ba2-rank0.pt", "curves.png"):
        write_text(run / name, name, kind=None)
    with writing_folder(run / "best-hf", kind="hf-model", tool="train") as staging:
        (staging / "model.safetensors").write_text("w")
    record(run / "best-hf")
    with writing_folder(run / "eval", kind="report", tool="train") as staging:
        (staging / "report.md").write_text("r")
    record(run / "eval")
    (run / "eval" / "my-notes.md").write_text("the user's, inside a recorded folder")
    write_text(run / "avg.pt", "an output of its own", kind="checkpoint", tool="average-checkpoints")
    (run / "notes.txt").write_text("the user's")
    (run / "curves.png").write_text("replaced by the user")  # changed since: no longer provably the run's
    removed, kept = remove_recorded(run)
    assert sorted(removed) == ["best-hf", "ep0-ba2-rank0.pt", "eval/report.md"]
    assert kept == ["avg.pt", "curves.png", "eval", "notes.txt"]
    assert tree(run) == {
        "avg.pt": b"an output of its own",
        "curves.png": b"replaced by the user",
        "eval/my-notes.md": b"the user's, inside a recorded folder",
        "notes.txt": b"the user's",
    }


def test_a_linked_output_folder_is_replaced_where_it_really_is(tmp_path):
    """checkpoints -> /scratch/...: the new output goes to the link's target, and the link stays."""
    real = tmp_path / "scratch" / "hf"
    with writing_folder(real, kind="hf-model", tool="export-hf") as staging:
        (staging / "model.safetensors").write_text("old")
    link = tmp_path / "hf"
    link.symlink_to(real, target_is_directory=True)
    check_output_folder(link, kind="hf-model", force=True)
    with writing_folder(link, kind="hf-model", tool="export-hf") as staging:
        (staging / "model.safetensors").write_text("new")
    assert link.is_symlink() and tree(real) == {"model.safetensors": b"new"}
    assert sorted(p.name for p in (tmp_path / "scratch").iterdir()) == ["hf"]


def test_a_file_rewritten_inside_a_recorded_folder_stays_part_of_it(tmp_path):
    """calibrate rewrites thresholds.json beside the weights: the export stays replaceable as a whole, and a
    folder modernenc never recorded (a downloaded model) gets no record from it."""
    from modernenc.tasks.decisions import write_thresholds

    ours, theirs = tmp_path / "best-hf", tmp_path / "downloaded"
    with writing_folder(ours, kind="hf-model", tool="train") as staging:
        (staging / "model.safetensors").write_text("w")
    theirs.mkdir()
    for folder in (ours, theirs):
        write_thresholds(folder, {"default": 0.5, "target_recall": 0.2}, target_recall=0.9)
        write_thresholds(folder, {"default": 0.5, "target_recall": 0.25, "max_f1": 0.4}, target_recall=0.9)
    assert check_output_folder(ours, kind="hf-model", force=True) == ours
    assert not (theirs / MANIFEST_NAME).exists()
