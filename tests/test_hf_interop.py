"""Checkpoint folders: bad ones fail with names, hub ids fail offline in one sentence, no overwrites."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import SHARED_DATA, padded_batch, small_hf_config
from safetensors.torch import load_file, save_file
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer

from modernenc import ModernEncoderForMaskedLM, ModernEncoderForSequenceClassification, ModernEncoderModel
from modernenc.model.hf_interop import CheckpointMismatchError

TOKENIZER_DIR = SHARED_DATA / "tokenizers" / "modernbert"


@pytest.fixture
def mlm_checkpoint(tmp_path):
    folder = tmp_path / "mlm"
    AutoModelForMaskedLM.from_config(small_hf_config()).save_pretrained(folder)
    return folder


def edit_weights(folder, edit):
    weights = load_file(folder / "model.safetensors")
    edit(weights)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


def test_missing_tensor_is_named(mlm_checkpoint):
    edit_weights(mlm_checkpoint, lambda w: w.pop("model.layers.2.mlp.Wi.weight"))
    with pytest.raises(CheckpointMismatchError, match=r"missing: model\.layers\.2\.mlp\.Wi\.weight"):
        ModernEncoderForMaskedLM.from_pretrained(mlm_checkpoint)


def test_unexpected_tensor_is_named(mlm_checkpoint):
    edit_weights(mlm_checkpoint, lambda w: w.update({"model.layers.0.attn.Wqkv.bias": torch.zeros(192)}))
    with pytest.raises(CheckpointMismatchError, match=r"unexpected: model\.layers\.0\.attn\.Wqkv\.bias"):
        ModernEncoderForMaskedLM.from_pretrained(mlm_checkpoint)


def test_misshaped_tensor_is_named(mlm_checkpoint):
    edit_weights(mlm_checkpoint, lambda w: w.update({"head.dense.weight": torch.zeros(64, 32)}))
    with pytest.raises(
        CheckpointMismatchError, match=r"mis-shaped: head\.dense\.weight \(checkpoint \(64, 32\)"
    ):
        ModernEncoderForMaskedLM.from_pretrained(mlm_checkpoint)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 64}))
    save_file({"x": torch.zeros(1)}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="model_type='bert'"):
        ModernEncoderModel.from_pretrained(tmp_path)


def test_missing_folder_and_missing_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ModernEncoderModel.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text(json.dumps(small_hf_config().to_dict()))
    with pytest.raises(FileNotFoundError, match="model.safetensors is missing"):
        ModernEncoderModel.from_pretrained(tmp_path)


def test_a_broken_config_json_is_named(mlm_checkpoint):
    config_file = mlm_checkpoint / "config.json"
    config_file.write_text(config_file.read_text().replace('"', "", 1))  # the first key loses its quote
    with pytest.raises(ValueError) as error:
        ModernEncoderForMaskedLM.from_pretrained(mlm_checkpoint)
    assert str(error.value).startswith(f"{config_file} is not valid JSON: Expecting property name")
    config_file.write_text("[]")
    with pytest.raises(ValueError) as error:
        ModernEncoderForMaskedLM.from_pretrained(mlm_checkpoint)
    assert str(error.value) == f"{config_file} must hold a JSON object (a ModernBERT config)"


def test_hub_id_offline_fails_with_one_sentence(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError) as err:
        ModernEncoderForMaskedLM.from_pretrained("answerdotai/ModernBERT-base-not-cached")
    message = str(err.value)
    assert message.count(". ") == 0 and message.endswith(
        "pass the path of a local checkpoint folder instead."
    )
    assert "answerdotai/ModernBERT-base-not-cached" in message


def test_mlm_checkpoint_starts_a_classifier_with_its_encoder_and_head(mlm_checkpoint):
    mlm = ModernEncoderForMaskedLM.from_pretrained(mlm_checkpoint)
    clf = ModernEncoderForSequenceClassification.from_pretrained(mlm_checkpoint, num_labels=2)
    for name, tensor in mlm.state_dict().items():
        if name.startswith(("model.", "head.")):
            torch.testing.assert_close(clf.state_dict()[name], tensor, atol=0, rtol=0)
    assert clf.classifier.weight.shape == (2, 64)


def test_bare_encoder_loads_from_an_mlm_checkpoint(mlm_checkpoint):
    hf = AutoModelForMaskedLM.from_pretrained(mlm_checkpoint, attn_implementation="sdpa").eval()
    enc = ModernEncoderModel.from_pretrained(mlm_checkpoint).eval()
    ids, mask = padded_batch([50, 20])
    with torch.no_grad():
        expected = hf.model(input_ids=ids, attention_mask=mask).last_hidden_state
        got = enc(ids, mask).last_hidden_state
    assert float((expected - got)[mask.bool()].abs().max()) < 1e-4


def test_save_refuses_to_overwrite_and_copies_tokenizer(mlm_checkpoint, tmp_path):
    model = ModernEncoderForMaskedLM.from_pretrained(mlm_checkpoint)
    out = model.save_pretrained(tmp_path / "export", tokenizer_path=TOKENIZER_DIR)
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save_pretrained(out)
    assert (out / "model.safetensors").read_bytes() == before
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.mask_token_id == 50284 and tokenizer.cls_token_id == 50281


def test_label_names_round_trip(tmp_path):
    hf = AutoModelForSequenceClassification.from_config(
        small_hf_config(id2label={0: "no_ade", 1: "ade"}, label2id={"no_ade": 0, "ade": 1})
    )
    hf.save_pretrained(tmp_path / "in")
    ours = ModernEncoderForSequenceClassification.from_pretrained(tmp_path / "in")
    assert ours.config.id2label == {0: "no_ade", 1: "ade"} and ours.config.num_labels == 2
    ours.save_pretrained(tmp_path / "out")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    assert reloaded.config.id2label == {0: "no_ade", 1: "ade"}
