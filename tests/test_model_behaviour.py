"""The encoder's own contract: packed input, padding edge cases, bad input, config rules.

The attention backends themselves are tested in test_attention.py."""

from __future__ import annotations

import pytest
import torch
from conftest import padded_batch, use_backend

from modernenc import (
    ModernEncoderConfig,
    ModernEncoderForMaskedLM,
    ModernEncoderForSequenceClassification,
    ModernEncoderModel,
)

SMALL = dict(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=4,
    num_attention_heads=4,
    local_attention=16,
    pad_token_id=0,
    cls_token_id=1,
    sep_token_id=2,
    mask_token_id=3,
)


def small_config(**overrides) -> ModernEncoderConfig:
    return ModernEncoderConfig(**{**SMALL, **overrides})


def test_presets_are_modernbert_shapes():
    base, large = ModernEncoderConfig.from_preset("base"), ModernEncoderConfig.from_preset("large")
    assert (base.hidden_size, base.intermediate_size, base.num_hidden_layers, base.num_attention_heads) == (
        768,
        1152,
        22,
        12,
    )
    assert (
        large.hidden_size,
        large.intermediate_size,
        large.num_hidden_layers,
        large.num_attention_heads,
    ) == (1024, 2624, 28, 16)
    for cfg in (base, large):
        assert (cfg.vocab_size, cfg.local_attention, cfg.global_attn_every_n_layers) == (50368, 128, 3)
        assert (cfg.global_rope_theta, cfg.local_rope_theta, cfg.norm_eps) == (160_000.0, 10_000.0, 1e-5)


def test_base_parameter_count_matches_modernbert():
    # Counted by hand from ModernBERT-base's shapes (the paper rounds it to 149M); the decoder is tied.
    embeddings = 50368 * 768 + 768
    per_layer = 768 * 2304 + 768 * 768 + 768 * 2304 + 1152 * 768 + 2 * 768
    layers = 22 * per_layer - 768  # layer 0 has no attention norm
    head = 768 * 768 + 768 + 50368  # dense, norm, decoder bias
    with torch.device("meta"):  # skip allocation
        model = ModernEncoderForMaskedLM(ModernEncoderConfig.from_preset("base"))
    assert model.num_parameters() == embeddings + layers + 768 + head == 149_655_232


def test_no_biases_except_decoder_and_classifier():
    model = ModernEncoderForMaskedLM(small_config())
    biases = [name for name, _ in model.named_parameters() if name.endswith("bias")]
    assert biases == ["decoder.bias"]
    assert model.decoder.weight is model.model.embeddings.tok_embeddings.weight
    assert isinstance(model.model.layers[0].attn_norm, torch.nn.Identity)
    assert not isinstance(model.model.layers[1].attn_norm, torch.nn.Identity)
    assert [layer.attn.is_global for layer in model.model.layers] == [True, False, False, True]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(hidden_size=66), "hidden_size"),
        (dict(hidden_size=36, num_attention_heads=4), "num_attention_heads"),
        (dict(num_attention_heads=0), "num_attention_heads"),
        (dict(local_attention=15), "local_attention"),
        (dict(attention_dropout=1.5), "attention_dropout"),
        (dict(attn_backend="xformers"), "attn_backend"),
        (dict(classifier_pooling="max"), "classifier_pooling"),
        (dict(hidden_activation="swishy"), "hidden_activation"),
        (dict(pad_token_id=600), "pad_token_id"),
    ],
)
def test_impossible_config_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=rf"ModernEncoderConfig\.{field}="):
        small_config(**overrides)


def test_unknown_config_key_suggests_the_nearest():
    with pytest.raises(ValueError, match=r"'hiden_size' \(did you mean 'hidden_size'\?\)"):
        ModernEncoderConfig.from_dict({**SMALL, "hiden_size": 64})


def test_packed_input_equals_padded_input(cpu_backend):
    model = use_backend(ModernEncoderModel(small_config()).eval(), cpu_backend)
    lengths = [200, 57, 130, 9, 151]
    ids, mask = padded_batch(lengths)
    packed_ids = ids[mask.bool()]
    cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    with torch.no_grad():
        padded_out = model(ids, mask).last_hidden_state
        packed_out = model(packed_ids, cu_seqlens=cu_seqlens, max_seqlen=max(lengths)).last_hidden_state
    assert packed_out.shape == (sum(lengths), 64)
    torch.testing.assert_close(packed_out, padded_out[mask.bool()], atol=1e-5, rtol=1e-5)


def test_a_sequence_does_not_see_its_neighbours_in_the_pack(cpu_backend):
    model = use_backend(ModernEncoderModel(small_config()).eval(), cpu_backend)
    ids, _ = padded_batch([40, 70])
    a, b = ids[0, :40], ids[1, :70]
    other = torch.randint(3, 512, (70,))
    cu = torch.tensor([0, 40, 110], dtype=torch.int32)
    with torch.no_grad():
        first = model(torch.cat([a, b]), cu_seqlens=cu).last_hidden_state[:40]
        changed_neighbour = model(torch.cat([a, other]), cu_seqlens=cu).last_hidden_state[:40]
    torch.testing.assert_close(first, changed_neighbour, atol=1e-6, rtol=1e-6)


def test_all_padding_row_gives_finite_outputs(cpu_backend):
    ids, mask = padded_batch([30, 0, 12])
    for pooling in ("cls", "mean"):
        clf = ModernEncoderForSequenceClassification(small_config(classifier_pooling=pooling)).eval()
        with torch.no_grad():
            assert torch.isfinite(use_backend(clf, cpu_backend)(ids, mask).logits).all()
    mlm = use_backend(ModernEncoderForMaskedLM(small_config()).eval(), cpu_backend)
    with torch.no_grad():
        logits = mlm(ids, mask).logits
    assert torch.isfinite(logits).all() and logits.shape == (3, 30, 512)


def test_out_of_range_token_ids_are_a_clear_error():
    model = ModernEncoderModel(small_config())
    ids, mask = padded_batch([10, 8])
    ids[0, 3] = 512
    with pytest.raises(ValueError, match=r"outside \[0, 512\).*max 512"):
        model(ids, mask)
    ids[0, 3] = -1
    with pytest.raises(ValueError, match=r"min -1"):
        model(ids, mask)


def test_bf16_autocast_runs_close_to_fp32():
    model = ModernEncoderForMaskedLM(small_config()).eval()
    ids, mask = padded_batch([100, 40])
    with torch.no_grad():
        fp32 = model(ids, mask).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(ids, mask).logits
    assert torch.isfinite(bf16).all()
    real = mask.bool()
    rel = (bf16.float() - fp32)[real].norm() / fp32[real].norm()
    assert rel < 0.05


def test_training_step_reduces_mlm_loss_with_sparse_prediction():
    model = ModernEncoderForMaskedLM(small_config(sparse_prediction=True))
    ids, mask = padded_batch([60, 45, 30])
    labels = ids.masked_fill(mask == 0, -100)
    inputs = ids.masked_fill(torch.rand(ids.shape) < 0.3, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(5):
        loss = model(inputs, mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss))
    assert losses[-1] < losses[0] - 0.5


def test_compile_flag_compiles_the_mlps_and_keeps_outputs():
    eager = ModernEncoderForMaskedLM(small_config()).eval()
    compiled = ModernEncoderForMaskedLM(small_config(compile=True)).eval()
    compiled.load_state_dict(eager.state_dict())
    assert all(layer.mlp._compiled_call_impl is not None for layer in compiled.model.layers)
    ids, mask = padded_batch([100, 50])
    with torch.no_grad():
        torch.testing.assert_close(compiled(ids, mask).logits, eager(ids, mask).logits, atol=1e-5, rtol=1e-5)


def test_padding_inside_a_row_is_refused():
    model = ModernEncoderModel(small_config())
    ids, mask = padded_batch([40, 40])
    mask[1, 10:20] = 0
    with pytest.raises(ValueError, match=r"attention_mask rows \[1\] have padding between real tokens"):
        model(ids, mask)


def test_labels_shaped_unlike_the_input_are_refused():
    ids, mask = padded_batch([10, 7])
    mlm = ModernEncoderForMaskedLM(small_config(sparse_prediction=True))
    with pytest.raises(ValueError, match=r"shaped like input_ids \(2, 10\); got \(2, 9\)"):
        mlm(ids, mask, labels=ids[:, :9])
    packed = ids[mask.bool()]
    cu = torch.tensor([0, 10, 17], dtype=torch.int32)
    with pytest.raises(ValueError, match=r"shaped like input_ids \(17,\); got \(16,\)"):
        mlm(packed, cu_seqlens=cu, labels=packed[:16])


def test_position_ids_of_a_padded_batch_are_used_like_packed_ones():
    model = ModernEncoderModel(small_config(initializer_range=0.5)).eval()  # peaky attention: positions show
    ids, mask = padded_batch([30, 30])
    shifted = torch.arange(30).repeat(2, 1)
    shifted[1, 15:] += 5  # row 1 skips 5 positions halfway (RoPE is relative: a uniform shift does nothing)
    with torch.no_grad():
        padded = model(ids, mask, position_ids=shifted).last_hidden_state
        cu = torch.tensor([0, 30, 60], dtype=torch.int32)
        packed = model(ids.flatten(), cu_seqlens=cu, position_ids=shifted.flatten()).last_hidden_state
    torch.testing.assert_close(padded.reshape(60, -1), packed, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(padded[1], model(ids, mask).last_hidden_state[1], atol=1e-3)


def test_packed_layout_is_checked_against_the_tokens():
    model = ModernEncoderModel(small_config())
    ids = torch.randint(3, 512, (50,))
    with pytest.raises(ValueError, match=r"max_seqlen=8 is shorter than the longest packed sequence \(30\)"):
        model(ids, cu_seqlens=torch.tensor([0, 30, 50]), max_seqlen=8)
    with pytest.raises(ValueError, match="must not decrease"):
        model(ids, cu_seqlens=torch.tensor([0, 40, 30, 50]))
    with pytest.raises(ValueError, match=r"from 0 to the number of packed tokens \(50\)"):
        model(ids, cu_seqlens=torch.tensor([0, 30, 49]))


def test_a_batch_of_only_padding_runs(cpu_backend):
    ids, mask = padded_batch([0, 0], seq_len=6)
    clf = use_backend(ModernEncoderForSequenceClassification(small_config()).eval(), cpu_backend)
    with torch.no_grad():
        logits = clf(ids, mask).logits
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()


def test_special_token_ids_may_be_absent():
    config = small_config(pad_token_id=None, cls_token_id=None, sep_token_id=None)
    ids, mask = padded_batch([12, 5])
    assert ModernEncoderModel(config)(ids, mask).last_hidden_state.shape == (2, 12, 64)
