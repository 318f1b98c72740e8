"""LoRA fine-tuning (finetune.lora, through peft): what trains, what is saved, and the messages on bad input.

The truths: a hand count of the adapter and head parameters, the frozen weights of the starting model,
and `transformers`' own ModernBert loading the exported folders.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATA, cli_error, run_cli, write_small_ade_split
from transformers import AutoModelForSequenceClassification

from modernenc.model import ModernEncoderConfig, ModernEncoderForMaskedLM
from modernenc.train.builders import build_task, build_trainer
from modernenc.train.config import ConfigError, load_config
from modernenc.train.lora import plain_model, trainable_parameters

TOKENIZER = SHARED_DATA / "tokenizers" / "modernbert"
SIZES = {"train": 48, "validation": 32, "test": 32}


@pytest.fixture(scope="module")
def ade_dir(tmp_path_factory) -> Path:
    return write_small_ade_split(tmp_path_factory.mktemp("ade"), SIZES)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Path:
    """A tiny pre-trained-looking encoder (random MLM weights) that LoRA runs start from."""
    folder = tmp_path_factory.mktemp("encoder")
    ModernEncoderForMaskedLM(ModernEncoderConfig.from_preset("tiny")).save_pretrained(folder / "mlm")
    return folder / "mlm"


def write_yaml(folder: Path, ade: Path, encoder: Path) -> Path:
    text = f"""\
run_name: lora
save_folder: {folder / "run"}
model: {{task: classification, init_from: {encoder}}}
data: {{train: {ade}/train.jsonl, eval: {ade}/validation.jsonl, test: {ade}/test.jsonl,
  tokenizer: {TOKENIZER}, max_seq_len: 64, micro_batch_size: 16}}
optimizer: {{name: adamw, lr: 5.0e-3}}
scheduler: {{t_warmup: 0ba, t_decay: 0ba}}
evaluation: {{positive_label: '1', early_stopping_patience: 0}}
finetune: {{lora: {{r: 8, alpha: 16, dropout: 0.0}}}}
max_duration: 1ep
eval_interval: 1ep
save_interval: 1ep
logging: {{progress_bar: false, plots: false}}
"""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lora.yaml").write_text(text)
    return folder / "lora.yaml"


def hand_count(h: int, i: int, layers: int, r: int, labels: int) -> int:
    """LoRA adds r x (in + out) per adapted linear layer; the head (dense h x h, bias-free, and a
    bias-free norm) and the classifier (h x labels + bias) train in full."""
    per_layer = r * ((h + 3 * h) + (h + h) + (h + 2 * i) + (i + h))  # Wqkv, attn Wo, Wi (GLU), mlp Wo
    return layers * per_layer + (h * h + h) + (h * labels + labels)


def test_lora_trains_adapters_only_and_exports_a_plain_transformers_model(tmp_path, ade_dir, encoder):
    cfg = load_config(write_yaml(tmp_path, ade_dir, encoder))
    parts = build_task(cfg)
    wrapped = parts.model.model
    assert trainable_parameters(wrapped) == hand_count(128, 192, 3, 8, 2) == 55_170
    frozen_before = {n: p.detach().clone() for n, p in wrapped.named_parameters() if not p.requires_grad}

    trainer = build_trainer(cfg, parts=parts)
    trainer.fit()
    parts.finish(trainer)
    trainer.close()

    frozen_after = dict(wrapped.named_parameters())
    assert all(torch.equal(frozen_after[n], p) for n, p in frozen_before.items())  # only adapters moved
    merged = plain_model(wrapped).eval()
    assert type(merged).__module__.startswith("modernenc.")  # adapters merged away, not wrapped
    adapter_b = next(p for n, p in wrapped.named_parameters() if "lora_B" in n)
    assert adapter_b.abs().max() > 0  # the adapters learned something, so the merge changes weights

    texts = ["Aspirin caused a rash.", "The patient was treated with cisplatin for ten days."]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "run" / "best-hf")
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = merged(**batch).logits
        unmerged = wrapped.eval()(**batch).logits
    torch.testing.assert_close(ours, unmerged, atol=1e-4, rtol=0)  # merging keeps the function

    # One epoch, one evaluation: best-hf is this final model, as transformers reads it.
    best = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "best-hf").eval()
    assert type(best).__name__ == "ModernBertForSequenceClassification"
    with torch.no_grad():
        torch.testing.assert_close(best(**batch).logits, ours, atol=1e-4, rtol=0)

    # The composer checkpoint holds peft's wrapped model; export-hf merges it into the same plain folder.
    assert run_cli("export-hf", tmp_path / "run" / "latest-rank0.pt", tmp_path / "exported") == 0
    exported = AutoModelForSequenceClassification.from_pretrained(tmp_path / "exported").eval()
    with torch.no_grad():
        torch.testing.assert_close(exported(**batch).logits, ours, atol=1e-4, rtol=0)


def test_lora_target_the_model_lacks_lists_its_layers(tmp_path, ade_dir, encoder, capsys):
    yaml = write_yaml(tmp_path, ade_dir, encoder)
    err = cli_error(capsys, "train", yaml, "finetune.lora.target_modules=[query,Wo]")
    assert "finetune.lora.target_modules names query" in err
    assert "its linear layers are named Wi, Wo, Wqkv, classifier, dense" in err
    err = cli_error(capsys, "train", yaml, "finetune.lora.modules_to_save=[pooler]")
    assert (
        "modules_to_save names pooler" in err
        and "its top-level modules are model, head, drop, classifier" in err
    )
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_lora_without_peft_names_the_extra(tmp_path, ade_dir, encoder, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft now raises ImportError
    err = cli_error(capsys, "train", write_yaml(tmp_path, ade_dir, encoder))
    assert err.endswith("finetune.lora needs peft, an optional extra: pip install 'modernenc[peft]'")


def test_lora_settings_are_checked_keys(tmp_path, ade_dir, encoder):
    yaml = write_yaml(tmp_path, ade_dir, encoder)
    with pytest.raises(
        ConfigError, match=r"unknown key 'finetune.lora.alpah' \(did you mean 'finetune.lora.alpha'"
    ):
        load_config(yaml, ["finetune.lora.alpah=8"])
    with pytest.raises(ConfigError, match="finetune.lora.r=0 must be a positive rank"):
        load_config(yaml, ["finetune.lora.r=0"])
    with pytest.raises(ConfigError, match="not model.task=mlm"):
        load_config(yaml, ["model.task=mlm"])
    defaults = load_config(yaml, ["finetune.lora={}"]).finetune.lora
    assert (defaults.r, list(defaults.target_modules), list(defaults.modules_to_save)) == (
        8,
        ["Wqkv", "Wo", "Wi"],
        ["head", "classifier"],
    )
    assert load_config(yaml, ["finetune.lora=null"]).finetune.lora is None  # full fine-tuning
