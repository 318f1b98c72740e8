"""ADE sentence-classification splits, checked against the raw corpus files parsed independently here."""

import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

from modernenc.pv import ade_data
from modernenc.pv.ade_data import dedupe, make_splits, read_jsonl
from modernenc.pv.bundled_data import shared_data_dir

ROOT = Path(__file__).resolve().parents[1]
ADE = shared_data_dir() / "ade_corpus_v2"
SPLITS = ("train", "validation", "test")

pytestmark = pytest.mark.skipif(not ADE.is_dir(), reason="ADE corpus not available")
ERR = "modernenc prepare-ade: error: "


def ade_cli(argv: list[str]) -> int:
    return run_cli("prepare-ade", *argv)


def raw_truth() -> tuple[set[str], set[str]]:
    """Sentence sets straight from the files: column 2 of DRUG-AE.rel; the rest of 'PMID NEG ...' lines."""
    rel = (ADE / "DRUG-AE.rel").read_text(encoding="utf-8").splitlines()
    neg = (ADE / "ADE-NEG.txt").read_text(encoding="utf-8").splitlines()
    positives = {line.split("|")[1] for line in rel if line}
    negatives = {line.partition(" NEG ")[2] for line in neg if line}
    return positives, negatives


def run(out: Path, *extra: str, source: Path | str = ADE) -> int:
    return ade_cli(["--source", str(source), "--out", str(out), *extra])


def read_splits(out: Path) -> dict[str, list[dict]]:
    return {name: read_jsonl(out / f"{name}.jsonl") for name in SPLITS}


def counts(rows: list[dict]) -> tuple[int, int]:
    """(negatives, positives)"""
    pos = sum(r["label"] for r in rows)
    return len(rows) - pos, pos


@pytest.fixture(scope="module")
def default_split(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ade") / "default"
    assert run(out) == 0
    return out


def test_unique_counts_match_the_published_corpus():
    positives, negatives = raw_truth()
    assert (len(positives), len(negatives), len(positives & negatives)) == (4271, 16625, 0)
    found = dedupe(ade_data.read_raw_ade(ADE))
    assert found.raw_rows == {"positive": 6821, "negative": 16695}  # 23,516 rows, as in the HF config
    assert (set(found.positives), set(found.negatives), found.conflicts) == (positives, negatives, 0)
    assert len(found.positives) + len(found.negatives) == 20896


def test_default_split_sizes_labels_and_no_leaks(default_split, capsys):
    splits = read_splits(default_split)
    assert {name: counts(rows) for name, rows in splits.items()} == {
        "train": (2562, 2562),
        "validation": (855, 855),
        "test": (854, 854),
    }
    positives, negatives = raw_truth()
    texts = {name: [r["text"] for r in rows] for name, rows in splits.items()}
    for name, rows in splits.items():
        assert len(set(texts[name])) == len(rows), f"duplicate sentence inside {name}"
        assert all(r["text"] in (positives if r["label"] == 1 else negatives) for r in rows)
    a, b, c = (set(texts[n]) for n in SPLITS)
    assert not (a & b or a & c or b & c), "a sentence is shared between splits"
    assert set().union(a, b, c) >= positives  # every positive is used exactly once

    info = json.loads((default_split / "split_info.json").read_text())
    assert info["seed"] == 42 and info["distribution"] == "balanced" and info["conflicts"] == 0
    assert info["counts"]["test"] == {"negative": 854, "positive": 854, "total": 1708}
    for name in SPLITS:
        digest = hashlib.sha256((default_split / f"{name}.jsonl").read_bytes()).hexdigest()
        assert info["sha256"][f"{name}.jsonl"] == digest


def test_same_seed_same_files_other_seed_different(default_split, tmp_path):
    assert run(tmp_path / "again") == 0
    assert run(tmp_path / "seed7", "--seed", "7") == 0
    for name in SPLITS:
        ref = (default_split / f"{name}.jsonl").read_bytes()
        assert (tmp_path / "again" / f"{name}.jsonl").read_bytes() == ref
        assert (tmp_path / "seed7" / f"{name}.jsonl").read_bytes() != ref
    other = read_splits(tmp_path / "seed7")
    assert counts(other["validation"]) == (855, 855)


def test_split_ignores_source_row_order():
    """The HF copy may list rows in another order; the split must depend only on the sentence sets."""
    positives, negatives = ade_data.load_ade_sentences(ADE)
    shuffled_pos, shuffled_neg = positives[::-1], random.Random(0).sample(negatives, len(negatives))
    assert make_splits(positives, negatives, seed=3) == make_splits(shuffled_pos, shuffled_neg, seed=3)


def test_natural_keeps_every_negative(tmp_path):
    assert run(tmp_path / "nat", "--natural") == 0
    splits = read_splits(tmp_path / "nat")
    # 16,625 negatives -> 9975/3325/3325 (train and test round down); positives as in the balanced split
    assert {name: counts(rows) for name, rows in splits.items()} == {
        "train": (9975, 2562),
        "validation": (3325, 855),
        "test": (3325, 854),
    }
    positives, negatives = raw_truth()
    everything = [r["text"] for rows in splits.values() for r in rows]
    assert len(everything) == len(set(everything)) == 20896
    assert set(everything) == positives | negatives


def test_conflicting_sentence_is_a_positive():
    found = dedupe([("a", 0), ("b", 1), ("a", 1), ("a", 0), ("c", 0)])
    assert (found.positives, found.negatives, found.conflicts) == (["b", "a"], ["c"], 1)


def test_force_replaces_only_an_earlier_split_folder(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    for extra in ((), ("--force",)):  # a folder of the user's is refused, with or without --force
        assert run(out, *extra) == 1
        assert "it holds notes.txt" in capsys.readouterr().err
        assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    (out / "notes.txt").unlink()
    assert run(out) == 0  # an empty folder needs no --force
    assert run(out, "--seed", "7") == 1
    assert (
        "already holds an ADE split folder (prepare-ade) modernenc wrote; pass --force"
        in capsys.readouterr().err
    )
    assert run(out, "--seed", "7", "--force") == 0
    assert json.loads((out / "split_info.json").read_text())["seed"] == 7
    assert counts(read_jsonl(out / "test.jsonl")) == (854, 854)


def test_missing_source_errors_name_the_path(tmp_path, capsys):
    assert run(tmp_path / "out", source=tmp_path / "nowhere") == 1
    assert str(tmp_path / "nowhere") in capsys.readouterr().err
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "DRUG-AE.rel").write_bytes((ADE / "DRUG-AE.rel").read_bytes())
    assert run(tmp_path / "out", source=partial) == 1
    assert str(partial / "ADE-NEG.txt") in capsys.readouterr().err
    (partial / "ADE-NEG.txt").write_bytes(b"123 NEG caf\xe9\n")
    assert run(tmp_path / "out", source=partial) == 1
    assert f"{partial / 'ADE-NEG.txt'}:1 is not UTF-8 (byte 0xe9 at column 12)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_hf_source_offline_fails_with_one_clear_sentence(tmp_path, monkeypatch, capsys):
    import datasets
    import huggingface_hub.constants as hub_constants

    # Constants are read at import time, so set both the environment and the loaded modules' flags.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "empty_cache"))  # no stale cached copy
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "empty_cache")
    assert run(tmp_path / "out", source="hf") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(ERR + "cannot load the Hugging Face dataset 'ade_corpus_v2' offline")
    assert "pass the local corpus folder instead" in err and err.count("\n") == 0
    assert not (tmp_path / "out").exists()
    with pytest.raises(RuntimeError) as raised:  # the message wraps the real `datasets` failure
        ade_data.read_raw_hf()
    assert isinstance(raised.value.__cause__, ConnectionError)


def test_hf_rows_go_through_the_same_protocol(default_split, tmp_path, monkeypatch):
    """A stand-in for the hub dataset (23,516 rows, another order) gives byte-identical splits."""
    import datasets

    rows = ade_data.read_raw_ade(ADE)
    random.Random(1).shuffle(rows)
    table = datasets.Dataset.from_dict({"text": [t for t, _ in rows], "label": [lab for _, lab in rows]})
    calls = []

    def fake_load(name, config, split):
        calls.append((name, config, split))
        return table

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    monkeypatch.setattr("modernenc.utils.hub.hub_reachable", lambda: True)
    assert run(tmp_path / "hf", source="hf") == 0
    assert calls == [("ade_corpus_v2", "Ade_corpus_v2_classification", "train")]
    for name in SPLITS:
        assert (tmp_path / "hf" / f"{name}.jsonl").read_bytes() == (
            default_split / f"{name}.jsonl"
        ).read_bytes()


def test_the_checkout_script_is_the_command_with_an_example():
    done = subprocess.run(
        [sys.executable, "data_prep/ade.py", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.startswith("usage: data_prep/ade.py")
    assert "example:" in done.stdout


def test_empty_corpus_files_and_empty_splits_are_errors(tmp_path, capsys):
    """An empty file would give empty splits that train, choose thresholds and test on nothing."""
    source = tmp_path / "corpus"
    source.mkdir()
    (source / "DRUG-AE.rel").write_text("")
    (source / "ADE-NEG.txt").write_text("".join(f"{i} NEG Sentence {i}.\n" for i in range(10)))
    assert run(tmp_path / "out", source=source) == 1
    assert f"ADE corpus file {source / 'DRUG-AE.rel'} holds no sentences" in capsys.readouterr().err
    (source / "DRUG-AE.rel").write_text("1|Rash after amoxicillin.|rash|0|4|amoxicillin|11|22\n" * 2)
    assert run(tmp_path / "out", source=source) == 1  # one unique positive: 60/20/20 leaves splits empty
    assert (
        "only 1 unique positive sentence(s): the train, test split(s) would get none"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "out").exists()
