"""`modernenc export-onnx`: the graph ONNX Runtime runs gives transformers' own logits at every batch and
sequence size, the folder carries what serving needs, and bad input changes nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import cli_error, run_cli
from test_tasks_predict import TEXTS, build_classifier
from transformers import AutoModelForSequenceClassification as HFSequence
from transformers import AutoModelForTokenClassification as HFToken
from transformers import AutoTokenizer

from modernenc.model import ModernEncoderConfig, ModernEncoderForMaskedLM, ModernEncoderForTokenClassification
from modernenc.tasks.decisions import read_thresholds, write_precision_rule
from modernenc.tasks.onnx_export import CHECK_TEXTS, export_onnx

ort = pytest.importorskip("onnxruntime")
TOKENIZER_DIR = build_classifier.__globals__["TOKENIZER_DIR"]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    folder = build_classifier(tmp_path_factory.mktemp("clf") / "clf", "cls")
    # as `modernenc calibrate --dtype int8` records it: a rule for modernenc's int8, not ONNX Runtime's
    write_precision_rule(folder, "int8", {"default": 0.5, "target_recall": 0.21})
    return folder


def graph_and_transformers(folder, graph, hf_class, texts):
    """Logits of the ONNX graph and of transformers' own model, on one right-padded batch of `texts`."""
    tok = AutoTokenizer.from_pretrained(folder)
    batch = tok(texts, padding=True, truncation=True, max_length=40, return_tensors="np")
    feeds = {k: batch[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
    got = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"]).run(["logits"], feeds)[0]
    hf = hf_class.from_pretrained(folder, attn_implementation="sdpa").eval()
    with torch.no_grad():
        expected = hf(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
    return got, expected, feeds["attention_mask"].astype(bool)


def test_sequence_classifier_graph_matches_transformers_at_any_batch_and_length(classifier, tmp_path, capsys):
    out = tmp_path / "onnx"
    assert run_cli("export-onnx", classifier, out, "--int8") == 0
    printed = capsys.readouterr().out
    assert (
        "max abs logit difference" in printed and "model_quantized.onnx (onnxruntime dynamic int8)" in printed
    )
    for texts in (TEXTS[:3], TEXTS, TEXTS[5:6]):  # batch and sequence sizes other than the traced example
        got, expected, _ = graph_and_transformers(classifier, out / "model.onnx", HFSequence, texts)
        assert got.shape == (len(texts), 2) and np.abs(got - expected).max() < 1e-4
    got8, expected, _ = graph_and_transformers(classifier, out / "model_quantized.onnx", HFSequence, TEXTS)
    margins = [(logits[:, 1] - logits[:, 0]) for logits in (got8, expected)]
    assert np.abs(got8 - expected).max() > 1e-4 and np.corrcoef(*margins)[0, 1] > 0.8  # quantized, close
    for name in ("tokenizer.json", "config.json"):
        assert (out / name).read_bytes() == (classifier / name).read_bytes()
    # thresholds.json: the fp32 rule, which applies to model.onnx; the int8 rule beside model_quantized.onnx
    # would read as that graph's, but it was chosen on modernenc's int8 probabilities
    source = json.loads((classifier / "thresholds.json").read_text())
    assert "int8" in source["variants"]
    assert json.loads((out / "thresholds.json").read_text()) == {
        k: v for k, v in source.items() if k != "variants"
    }
    assert read_thresholds(out) == read_thresholds(classifier) and read_thresholds(out, "int8") is None
    record = json.loads((out / "onnx_export.json").read_text())
    assert "its int8 rules were left out" in record["thresholds"]
    assert record["architecture"] == "ModernBertForSequenceClassification" and record["opset"] == 17
    assert record["check"]["texts"] == len(CHECK_TEXTS) and record["check"]["fp32_max_abs_logit_diff"] <= 1e-4
    assert record["check"]["int8_max_abs_logit_diff"] > 0
    assert not list(tmp_path.glob(".*partial"))  # the staging folder is gone


def test_token_classifier_graph_returns_per_token_logits(tmp_path):
    torch.manual_seed(0)
    config = ModernEncoderConfig(
        hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, local_attention=8,
        max_position_embeddings=40, num_labels=3, id2label={0: "O", 1: "B-AE", 2: "I-AE"},
        initializer_range=0.5,
    )  # fmt: skip
    folder = tmp_path / "tagger"
    ModernEncoderForTokenClassification(config).save_pretrained(folder, tokenizer_path=TOKENIZER_DIR)
    result = export_onnx(folder, tmp_path / "onnx", opset=18, check_texts=TEXTS[:6])
    assert result.fp32_max_abs_diff <= 1e-4 and result.int8_max_abs_diff is None and result.check_texts == 6
    got, expected, real = graph_and_transformers(folder, tmp_path / "onnx/model.onnx", HFToken, TEXTS)
    assert got.shape == (*real.shape, 3)
    assert np.abs(got - expected)[real].max() < 1e-4  # padding positions are free to differ
    assert not (tmp_path / "onnx" / "thresholds.json").exists()  # a tagger has no decision rule


def test_an_existing_output_needs_force_and_force_replaces_only_an_export(classifier, tmp_path, capsys):
    out = tmp_path / "onnx"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    for force in ((), ("--force",)):  # a folder of the user's is never replaced
        message = cli_error(capsys, "export-onnx", classifier, out, *force)
        assert message == (
            f"modernenc export-onnx: error: the output folder {out} is not empty and is not an ONNX export "
            "(export-onnx) modernenc wrote: it holds keep.txt. Refusing to replace it even with --force; "
            "choose a new or empty folder"
        )
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    (out / "keep.txt").unlink()
    export_onnx(classifier, out, check_texts=TEXTS[:2])  # an empty folder may be filled
    message = cli_error(capsys, "export-onnx", classifier, out)
    assert message.endswith(
        f"{out} already holds an ONNX export (export-onnx) modernenc wrote; pass --force to replace it"
    )
    export_onnx(classifier, out, force=True, check_texts=TEXTS[:2])  # and an earlier export replaced
    assert (out / "model.onnx").is_file()
    (out / "notes.md").write_text("the user's, inside the export")
    message = cli_error(capsys, "export-onnx", classifier, out, "--force")
    assert "holds files modernenc did not write there (or that changed since): notes.md" in message
    message = cli_error(capsys, "export-onnx", classifier, classifier.parent, "--force")
    assert message.endswith(
        f"the input {classifier} lies inside the output folder {classifier.parent}, which this command "
        "replaces; choose another output folder"
    )


def test_a_folder_that_is_not_a_fine_tuned_classifier_is_refused(tmp_path, capsys):
    config = ModernEncoderConfig(
        hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4
    )
    ModernEncoderForMaskedLM(config).save_pretrained(tmp_path / "mlm", tokenizer_path=TOKENIZER_DIR)
    message = cli_error(capsys, "export-onnx", tmp_path / "mlm", tmp_path / "onnx")
    assert message == (
        f"modernenc export-onnx: error: {tmp_path / 'mlm'} is not a fine-tuned classifier (its config.json "
        "names ModernBertForMaskedLM); export-onnx exports ModernBertForSequenceClassification and "
        "ModernBertForTokenClassification folders"
    )
    assert not (tmp_path / "onnx").exists()


def test_without_the_extra_one_sentence_says_how_to_install_it(classifier, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    message = cli_error(capsys, "export-onnx", classifier, tmp_path / "onnx")
    assert message == (
        "modernenc export-onnx: error: export-onnx needs onnx and onnxruntime (onnxruntime is missing): "
        "pip install 'modernenc[onnx]'"
    )
    assert not (tmp_path / "onnx").exists()


def test_onnx_is_imported_only_when_the_command_runs():
    code = (
        "import sys, modernenc.cli, modernenc.tasks.onnx_export; "
        "print(sorted({'onnx', 'onnxruntime'} & set(sys.modules)))"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        == "[]\n"
    )
