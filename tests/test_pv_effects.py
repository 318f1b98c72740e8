"""benchmarks/ade_effects.py at a tiny size: real `modernenc train` runs per seed, statistics recomputed here
from the runs' own reports, trainable parameters counted by transformers and by hand, finished runs reused."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA
from transformers import AutoModelForSequenceClassification

from modernenc.model import ModernEncoderConfig, ModernEncoderForMaskedLM
from modernenc.pv import effects
from modernenc.pv.ade_data import load_ade_sentences, make_splits, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "model.preset=tiny",
    "data.max_seq_len=64",
    "data.micro_batch_size=16",
    "max_duration=1ep",
    "eval_interval=1ep",
    "save_interval=1ep",
    "logging.plots=false",
]


@pytest.fixture(scope="module")
def ade_dir(tmp_path_factory) -> Path:
    positives, negatives = load_ade_sentences(SHARED_DATA / "ade_corpus_v2")
    splits = make_splits(positives, negatives, seed=0)
    out = tmp_path_factory.mktemp("ade")
    for split, rows in splits.items():
        write_jsonl(rows[:16] + rows[-16:], out / f"{split}.jsonl")  # 32 sentences: 2 batches of 16
    return out


def run_script(*argv) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "ade_effects.py"), *map(str, argv)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )


def test_seeds_table_at_a_tiny_size(tmp_path, ade_dir, monkeypatch):
    encoder = tmp_path / "encoder"
    ModernEncoderForMaskedLM(ModernEncoderConfig.from_preset("tiny")).save_pretrained(encoder)
    out = tmp_path / "effects"
    argv = ["--split-dir", ade_dir, "--out-dir", out, "--seeds", 1, 2, "--lora-lr-grid", "--set", *TINY]
    argv += ["--row", "tiny encoder", encoder, "--row", "tiny encoder, LoRA", encoder, "finetune.lora={}"]
    done = run_script(*argv)
    assert done.returncode == 0, done.stderr[-3000:]

    result = json.loads((out / "effects.json").read_text())
    full, lora, tfidf = result["rows"]
    assert (full["label"], lora["label"]) == ("tiny encoder", "tiny encoder, LoRA")
    assert tfidf["label"].startswith("TF-IDF") and tfidf["summary"]["f1"]["sd"] == 0
    for row in (full, lora):
        runs = row["runs"]
        assert [r["seed"] for r in runs] == [1, 2]
        reports = [json.loads((Path(r["folder"]) / "eval" / "report.json").read_text()) for r in runs]
        f1 = np.array([rep["splits"]["test"]["results"]["default"]["f1"] for rep in reports])
        recall = np.array([rep["splits"]["test"]["results"]["target_recall"]["recall"] for rep in reports])
        assert row["summary"]["f1"]["mean"] == pytest.approx(f1.mean())
        assert row["summary"]["f1"]["sd"] == pytest.approx(f1.std(ddof=1))
        assert row["summary"]["recall_at_target"]["mean"] == pytest.approx(recall.mean())
        assert all(r["wall_s"] > 0 and 100 < r["peak_rss_mb"] < 20_000 for r in runs)
        # The seed reached training: the two seeds' models differ.
        a, b = (
            AutoModelForSequenceClassification.from_pretrained(Path(r["folder"]) / "best-hf") for r in runs
        )
        assert not torch.equal(a.classifier.weight, b.classifier.weight)
    assert full["trainable_parameters"] == sum(p.numel() for p in a.parameters())  # transformers' count
    assert lora["trainable_parameters"] == 55_170  # tiny, r=8: see test_train_lora.hand_count

    pair = next(
        d for d in result["differences"] if (d["a"], d["b"]) == ("tiny encoder", "tiny encoder, LoRA")
    )
    fa, fb = full["summary"]["f1"], lora["summary"]["f1"]
    assert pair["metrics"]["f1"]["sd"] == pytest.approx(math.sqrt(fa["sd"] ** 2 / 2 + fb["sd"] ** 2 / 2))
    table = (out / "effects.md").read_text()
    assert "| tiny encoder, LoRA |" in table and "55,170" in table and "sqrt(sd_A²/n_A + sd_B²/n_B)" in table

    # A finished run is reused: no process starts.
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("a finished run was started again"))
    experiment = effects.Experiment("quickstart/finetune_ade", ade_dir, out, [1, 2], progress=lambda _: None)
    again = effects.fine_tune(experiment, effects.Row("tiny encoder", str(encoder)), 2, None)
    assert again == effects.Run(**full["runs"][1])


def test_learning_rate_is_chosen_on_validation_with_the_first_seed(monkeypatch, tmp_path):
    calls = []
    val_f1 = {1e-4: 0.80, 2e-4: 0.83, 5e-4: 0.83}  # a tie: the smaller LR wins

    def fake_fine_tune(experiment, row, seed, lr):
        calls.append((seed, lr))
        metrics = {m: 0.5 + seed / 100 for m in effects.METRICS}
        return effects.Run(row.label, seed, lr, "", metrics, val_f1[lr] if seed == 1 else 0.0, 1.0, 1.0, 10)

    monkeypatch.setattr(effects, "fine_tune", fake_fine_tune)
    experiment = effects.Experiment("recipe", tmp_path, tmp_path, [1, 2, 3], progress=lambda _: None)
    row = effects.run_row(experiment, effects.Row("r", None, (), (5e-4, 1e-4, 2e-4)))
    assert calls == [(1, 1e-4), (1, 2e-4), (1, 5e-4), (2, 2e-4), (3, 2e-4)]
    assert row["lr"] == 2e-4 and [r["seed"] for r in row["runs"]] == [1, 2, 3]
    assert row["summary"]["f1"]["mean"] == pytest.approx(0.52) and row["summary"]["f1"][
        "sd"
    ] == pytest.approx(0.01)


def test_difference_exceeds_two_sd_by_hand():
    a, b = {"mean": 0.85, "sd": 0.01, "n": 3}, {"mean": 0.82, "sd": 0.02, "n": 3}
    d = effects.difference(a, b)
    assert d["sd"] == pytest.approx(math.sqrt(0.0001 / 3 + 0.0004 / 3))  # 0.0129
    assert d["difference"] == pytest.approx(0.03) and d["exceeds_2sd"] is True
    assert effects.difference({**a, "mean": 0.84}, b)["exceeds_2sd"] is False  # 0.02 < 0.0258
    tfidf = {"mean": 0.84, "sd": 0.0, "n": 1}
    assert effects.difference(a, tfidf)["sd"] == pytest.approx(0.01 / math.sqrt(3))
    assert effects.difference({"mean": 0.9, "sd": float("nan"), "n": 1}, b)["exceeds_2sd"] is None
