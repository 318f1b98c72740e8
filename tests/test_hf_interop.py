"""Checkpoint folders: bad ones fail with names, hub ids fail offline in one sentence, no overwrites."""

from __future__ import annotations

import json
import shutil

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

    # Tokenizer files that are read-only (as the shared ones are) give writable copies, so a second
    # export over the first works for users who are not root.
    read_only = tmp_path / "read-only-tokenizer"
    shutil.copytree(TOKENIZER_DIR, read_only)
    for file in read_only.iterdir():
        file.chmod(0o444)
    for _ in range(2):
        model.save_pretrained(out, tokenizer_path=read_only, overwrite=True)
    assert all(file.stat().st_mode & 0o200 for file in out.iterdir())
    model.save_pretrained(out, tokenizer_path=out, overwrite=True)  # its own tokenizer: kept
    assert AutoTokenizer.from_pretrained(out).cls_token_id == 50281
    assert sorted(f.name for f in out.iterdir() if f.name.startswith(".")) == []


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


def test_untied_decoder_loads_and_saves_as_its_own_tensor(tmp_path):
    hf = AutoModelForMaskedLM.from_config(small_hf_config(tie_word_embeddings=False))
    with torch.no_grad():
        hf.decoder.weight.normal_(0, 0.5)  # unlike the embeddings, so a wrongly tied decoder shows
    hf.save_pretrained(tmp_path / "in")
    hf = AutoModelForMaskedLM.from_pretrained(tmp_path / "in", attn_implementation="sdpa").eval()
    assert hf.decoder.weight is not hf.model.embeddings.tok_embeddings.weight
    ours = ModernEncoderForMaskedLM.from_pretrained(tmp_path / "in")
    ids, mask = padded_batch([40, 25])
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask).logits
        assert float((ours(ids, mask).logits - expected)[mask.bool()].abs().max()) < 1e-4
    ours.save_pretrained(tmp_path / "out")
    assert "decoder.weight" in load_file(tmp_path / "out" / "model.safetensors")
    back = AutoModelForMaskedLM.from_pretrained(tmp_path / "out", attn_implementation="sdpa").eval()
    with torch.no_grad():
        assert float((back(input_ids=ids, attention_mask=mask).logits - expected).abs().max()) < 1e-5


def test_from_pretrained_returns_eval_mode_like_transformers(tmp_path):
    AutoModelForSequenceClassification.from_config(small_hf_config(classifier_dropout=0.5)).save_pretrained(
        tmp_path
    )
    model = ModernEncoderForSequenceClassification.from_pretrained(tmp_path)
    assert not model.training
    ids, mask = padded_batch([20, 9])
    with torch.no_grad():
        torch.testing.assert_close(model(ids, mask).logits, model(ids, mask).logits, atol=0, rtol=0)


def test_a_new_label_count_replaces_the_checkpoints_label_names(mlm_checkpoint, tmp_path):
    clf = ModernEncoderForSequenceClassification.from_pretrained(mlm_checkpoint, num_labels=5)
    assert clf.classifier.weight.shape == (5, 64)
    clf.save_pretrained(tmp_path / "out")
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "out").config.num_labels == 5


def test_token_classifier_checkpoint_starts_a_fresh_sequence_classifier(tmp_path):
    from transformers import AutoModelForTokenClassification

    AutoModelForTokenClassification.from_config(small_hf_config()).save_pretrained(tmp_path / "tok")
    tok = load_file(tmp_path / "tok" / "model.safetensors")
    seq = ModernEncoderForSequenceClassification.from_pretrained(tmp_path / "tok").state_dict()
    assert not torch.equal(seq["classifier.weight"], tok["classifier.weight"])  # same shape, fresh values
    torch.testing.assert_close(seq["head.dense.weight"], tok["head.dense.weight"], atol=0, rtol=0)


def test_sharded_and_dtype_and_sparse_prediction_follow_transformers(tmp_path):
    hf = AutoModelForMaskedLM.from_config(small_hf_config()).eval()
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    assert not (tmp_path / "sharded" / "model.safetensors").exists()
    ours = ModernEncoderForMaskedLM.from_pretrained(tmp_path / "sharded")
    ids, mask = padded_batch([30, 12])
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask).logits
        assert float((ours(ids, mask).logits - expected)[mask.bool()].abs().max()) < 1e-4
    ours.config.sparse_prediction = True  # a pre-training setting: exported logits keep the input's shape
    ours.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    back = AutoModelForMaskedLM.from_pretrained(tmp_path / "bf16", dtype="auto")
    assert back.dtype == torch.bfloat16 and not back.config.sparse_prediction


def test_saved_config_json_is_what_transformers_writes(tmp_path):
    # Plain defaults, so transformers' file holds no load-time settings of its own.
    hf = AutoModelForMaskedLM.from_config(small_hf_config(attn_implementation=None, reference_compile=None))
    hf.save_pretrained(tmp_path / "hf")
    ModernEncoderForMaskedLM.from_pretrained(tmp_path / "hf").save_pretrained(tmp_path / "ours")
    theirs = json.loads((tmp_path / "hf" / "config.json").read_text())
    ours = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert ours.pop("mask_token_id") is None  # ours, beside transformers' keys; id 50284 > vocab 512
    assert ours == theirs


def test_unreadable_weights_are_named(mlm_checkpoint, tmp_path, monkeypatch):
    weights = mlm_checkpoint / "model.safetensors"
    with pytest.raises(FileNotFoundError, match="is a file; pass the checkpoint folder that holds it"):
        ModernEncoderForMaskedLM.from_pretrained(weights)
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match=f"{weights} is not a readable safetensors file"):
        ModernEncoderForMaskedLM.from_pretrained(mlm_checkpoint)
    weights.unlink()
    (mlm_checkpoint / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="it holds pytorch_model.bin, which modernenc does not"):
        ModernEncoderForMaskedLM.from_pretrained(mlm_checkpoint)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints").mkdir()  # a relative path with a typo also reads as a hub id
    with pytest.raises(FileNotFoundError, match="checkpoint folder 'checkpoints/typo' does not exist"):
        ModernEncoderForMaskedLM.from_pretrained("checkpoints/typo")
