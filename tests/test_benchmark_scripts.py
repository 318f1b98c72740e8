"""The deployment benchmarks run end to end at a tiny size, and the accuracy report's numbers are what
scikit-learn and transformers compute (timings are the lead's to measure, on a quiet host)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score
from test_train_classification import ade_dir, hf_probabilities, run, write_yaml  # noqa: F401 (fixture)

from modernenc.train.config import load_config

REPO = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory, ade_dir):  # noqa: F811
    folder = tmp_path_factory.mktemp("ft")
    run(load_config(write_yaml(folder, ade_dir)))
    return folder / "run" / "best-hf"


def test_precision_accuracy_reports_what_sklearn_measures(fine_tuned, ade_dir, tmp_path, capsys):  # noqa: F811
    script = load_script("precision_accuracy")
    out = tmp_path / "report.json"
    code = script.main(["--model-dir", str(fine_tuned), "--split-dir", str(ade_dir), "--json", str(out)])
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["target_recall"] == 0.9  # the fine-tuning run's, read from thresholds.json
    assert list(report["precisions"]) == ["fp32", "bf16", "int8"]
    rows = {s: [json.loads(x) for x in (ade_dir / f"{s}.jsonl").read_text().splitlines()] for s in ("test",)}
    y = np.array([r["label"] for r in rows["test"]])
    fp32_probs = hf_probabilities(fine_tuned, [r["text"] for r in rows["test"]])  # transformers, not ours
    assert np.abs(np.array(report["precisions"]["fp32"]["test_probabilities"]) - fp32_probs).max() < 1e-4
    for name, r in report["precisions"].items():
        p = np.array(r["test_probabilities"])
        assert r["f1"] == pytest.approx(f1_score(y, p >= 0.5, zero_division=0))
        assert r["auroc"] == pytest.approx(roc_auc_score(y, p))
        assert r["recall_at_threshold"] == pytest.approx(recall_score(y, p >= r["threshold"]))
        assert r["precision_at_threshold"] == pytest.approx(precision_score(y, p >= r["threshold"]))
        if name != "fp32":
            assert r["max_abs_diff"] == pytest.approx(np.abs(p - fp32_probs).max(), abs=1e-4)
            assert r["recall_at_fp32_threshold"] == pytest.approx(
                recall_score(y, p >= report["precisions"]["fp32"]["threshold"])
            )
            assert 0 < r["max_abs_diff"] < 0.2
    assert report["precisions"]["fp32"]["batch_dependence"] < 1e-5  # packing neighbours do not leak
    # The fp32 threshold is the one fine-tuning recorded (same selection, same truncation).
    recorded = json.loads((fine_tuned / "thresholds.json").read_text())["thresholds"]["target_recall"]
    assert report["precisions"]["fp32"]["threshold"] == pytest.approx(recorded, abs=1e-6)
    int8 = report["precisions"]["int8"]
    passed = int8["recall_at_threshold"] >= 0.9 and int8["f1"] >= report["precisions"]["fp32"]["f1"] - 0.005
    assert code == (0 if passed else 1) and f"gate: {'PASS' if passed else 'FAIL'}" in printed
    assert re.search(r"\| int8 \| [\d.]+ \| [\d.]+ \| [\d.]+ \|", printed)


def test_inference_benchmark_runs_every_engine_at_a_tiny_size(capsys):
    argv = [
        "bench",
        "--shape",
        "tiny",
        "--repeats",
        "1",
        "--ade-texts",
        "70",
        "--workloads",
        "ade-sorted",
        "doc",
    ]
    assert run_cli(*argv) == 0
    printed = capsys.readouterr().out
    assert "matmul peaks at 2048^2" in printed and "int8 (x86)" in printed
    for workload in ("ade-sorted: 70 sequences in 2 batches", "doc: 16 sequences in 1 batches"):
        assert workload in printed
    engines = re.findall(r"^\| (\w+ \w+) \| [\d,]+ \| ([\d.]+)x \| ([\d.e+-]+) \|", printed, flags=re.M)
    names = {name for name, _, _ in engines}
    assert names == {
        "transformers fp32", "transformers bf16", "modernenc fp32", "modernenc bf16", "modernenc int8",
        "onnxruntime fp32", "onnxruntime int8",
    }  # fmt: skip
    for name, ratio, diff in engines:
        assert (name != "onnxruntime int8" or float(ratio) == 1.0) and float(diff) < 0.1
        if name.endswith("fp32"):
            assert float(diff) < 1e-4  # identical weights: fp32 engines agree with transformers


def test_gemm_floor_runs_exactly_the_int8_models_encoder_gemms(tmp_path, monkeypatch):
    """The floor row's bound holds only if it multiplies what the int8 model multiplies: the same layers,
    on the same number of (real, unpadded) tokens. Every Int8Linear call of both is recorded."""
    import torch

    from modernenc import ModernEncoderForSequenceClassification
    from modernenc.cli import bench_inference
    from modernenc.model.precision import Int8Linear
    from modernenc.pv.bundled_data import modernbert_tokenizer_dir

    folder = tmp_path / "tiny"
    bench_inference.save_random_classifier("tiny", folder, modernbert_tokenizer_dir())
    calls: list[tuple[int, int, int]] = []
    original = Int8Linear.forward

    def recording(self, x):
        calls.append((x.shape[0], self.in_features, self.out_features))
        return original(self, x)

    monkeypatch.setattr(Int8Linear, "forward", recording)
    lengths = [9, 5, 7]
    mask = torch.tensor([[1] * n + [0] * (9 - n) for n in lengths])
    ids = torch.randint(5, 100, mask.shape) * mask
    model = ModernEncoderForSequenceClassification.from_pretrained(folder).for_inference("int8")
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=mask)
    by_model = sorted(c for c in calls if c[0] == sum(lengths))  # the head's dense runs on 3 pooled rows
    assert len(by_model) == 4 * model.config.num_hidden_layers
    calls.clear()
    floor = bench_inference.gemm_floor_engine(folder, "x86")
    assert floor.floor and floor.forward(ids, mask).shape == (3, 2)
    assert sorted(calls) == by_model


def test_whole_process_comparison_runs_at_a_tiny_size(tmp_path, capsys):
    script = load_script("predict_vs_ort")
    texts = tmp_path / "texts.jsonl"
    texts.write_text(
        "".join(json.dumps({"text": f"Case {i}: rash after drug {i}."}) + "\n" for i in range(70))
    )
    script.main(["--shape", "tiny", "--repeats", "1", "--input", str(texts)])
    printed = capsys.readouterr().out
    assert "| modernenc predict --dtype int8 |" in printed and "| onnxruntime int8 script |" in printed
    assert "70 texts from" in printed and "modernenc / onnxruntime time:" in printed
    agree = float(re.search(r"labels at 0.5 agree on ([\d.]+)%", printed).group(1))
    assert agree > 90  # two int8 engines on the same weights mostly agree
