"""Inference precisions: bf16 computes what torch.autocast computes, int8 what its integer arithmetic says,
the classifier stays fp32, and a converted model is never saved as a checkpoint."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from conftest import padded_batch
from torch import nn

from modernenc.model import (
    ModernEncoderConfig,
    ModernEncoderForMaskedLM,
    ModernEncoderForSequenceClassification,
    ModernEncoderForTokenClassification,
    ModernEncoderModel,
)
from modernenc.model.precision import Bf16Linear, Int8Linear, int8_activation_bits

TASK_CLASSES = [
    ModernEncoderForSequenceClassification,
    ModernEncoderForTokenClassification,
    ModernEncoderForMaskedLM,
    ModernEncoderModel,
]
LENGTHS = [40, 7, 25, 33]  # longer than the window: local layers attend over part of each sequence


def small_config(**overrides) -> ModernEncoderConfig:
    values = dict(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=4,
        num_attention_heads=4,
        local_attention=16,
        global_attn_every_n_layers=3,
        max_position_embeddings=128,
        pad_token_id=0,
        cls_token_id=1,
        sep_token_id=2,
        mask_token_id=3,
    )
    return ModernEncoderConfig(**{**values, **overrides})


def first_output(model, ids, mask) -> torch.Tensor:
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask)
    return (out.logits if hasattr(out, "logits") else out.last_hidden_state).float()


def real(out: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token outputs at real tokens only (padding positions are zeros in every variant)."""
    return out[mask.bool()] if out.dim() == 3 else out


@pytest.mark.parametrize("cls", TASK_CLASSES, ids=lambda c: c.__name__)
def test_bf16_variant_computes_what_autocast_computes(cls):
    torch.manual_seed(0)
    model = cls(small_config()).eval()
    ids, mask = padded_batch(LENGTHS)
    fp32 = real(first_output(model, ids, mask), mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = real(first_output(model, ids, mask), mask)
    bf16 = real(first_output(copy.deepcopy(model).for_inference("bf16"), ids, mask), mask)
    autocast_error = (autocast - fp32).abs().max()
    assert autocast_error > 1e-5  # bf16 rounding is visible, so the comparison below means something
    # Same linear layers in bf16, same fp32 norms and softmax; the kept-fp32 classifier only helps.
    assert (bf16 - fp32).abs().max() <= 1.5 * autocast_error
    assert (bf16 - autocast).abs().max() <= 1.5 * autocast_error


def reference_int8_linear(linear: nn.Linear, x: torch.Tensor, bits: int) -> torch.Tensor:
    """Dynamic int8 written out: weights symmetric per output row (scale max|w| / 127), the input per tensor
    in [0, 2^bits - 1] from its own min and max (zero included), integer products summed in int64."""
    w = linear.weight.detach().double()
    w_scale = w.abs().amax(1) / 127
    w_q = torch.round(w / w_scale[:, None]).clamp(-128, 127)
    levels = 2**bits - 1
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    x_scale = (hi - lo) / levels
    zero = round(-lo / x_scale)
    x_q = torch.round(x.double() / x_scale + zero).clamp(0, levels)
    acc = (x_q - zero).long() @ w_q.long().T
    return (acc.double() * x_scale * w_scale[None, :]).float()


@pytest.mark.parametrize("bits", [8, 7])
def test_int8_linear_is_integer_arithmetic_on_quantized_values(bits):
    torch.manual_seed(0)
    linear = nn.Linear(96, 48, bias=False)
    x = torch.randn(37, 96) * 3 + 0.5
    ours = Int8Linear(linear, reduce_range=bits == 7)(x)
    expected = reference_int8_linear(linear, x, bits)
    float_out = linear(x)
    # Ties in rounding may fall one level apart; that is far below the quantization error itself.
    assert (ours - expected).abs().max() < 0.05 * (expected - float_out).abs().max()
    assert (ours - float_out).abs().max() < 0.05 * float_out.abs().max()


@pytest.mark.parametrize("cls", TASK_CLASSES, ids=lambda c: c.__name__)
def test_int8_variant_quantizes_every_linear_layer_but_the_classifier(cls):
    torch.manual_seed(0)
    model = cls(small_config()).eval()
    linears = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    ids, mask = padded_batch(LENGTHS)
    fp32 = real(first_output(model, ids, mask), mask)
    converted = copy.deepcopy(model).for_inference("int8")
    modules = dict(converted.named_modules())
    quantized = {n for n, m in modules.items() if isinstance(m, Int8Linear)}
    assert quantized == linears - {"classifier"} and len(quantized) >= 4 * 4
    if "classifier" in linears:
        assert (
            type(modules["classifier"]) is nn.Linear and modules["classifier"].weight.dtype == torch.float32
        )
    # Embeddings and norms are untouched fp32 modules.
    assert all(m.weight.dtype == torch.float32 for m in modules.values() if isinstance(m, nn.LayerNorm))
    assert (
        modules[
            "embeddings.tok_embeddings" if cls is ModernEncoderModel else "model.embeddings.tok_embeddings"
        ].weight.dtype
        == torch.float32
    )
    int8 = real(first_output(converted, ids, mask), mask)
    assert int8.dtype == torch.float32 and int8.shape == fp32.shape
    assert (int8 - fp32).abs().max() < 0.1 * fp32.abs().max()


def test_8_bit_activations_are_closer_to_fp32_than_torchs_7_bit_default():
    """torch's own quantize_dynamic always quantizes activations to 7 bits; with VNNI we use all 8."""
    if int8_activation_bits() != 8:
        pytest.skip("this CPU has no VNNI: int8 uses 7-bit activations, as torch's default does")
    torch.manual_seed(0)
    model = ModernEncoderForSequenceClassification(small_config(num_hidden_layers=6)).eval()
    ids, mask = padded_batch([60, 44, 51, 30, 12, 57, 38, 25])
    fp32 = first_output(model, ids, mask)
    ours = first_output(copy.deepcopy(model).for_inference("int8"), ids, mask)
    per_channel = torch.ao.quantization.per_channel_dynamic_qconfig  # and the classifier kept, as ours
    spec = {"model": per_channel, "head": per_channel}
    mapping = {nn.Linear: torch.ao.nn.quantized.dynamic.Linear}
    torch_default = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), spec, mapping=mapping)
    assert type(torch_default.classifier) is nn.Linear
    theirs = first_output(torch_default, ids, mask)
    assert (ours - fp32).abs().mean() < 0.75 * (theirs - fp32).abs().mean()


def test_without_vnni_int8_warns_once_and_keeps_7_bit_activations(monkeypatch, caplog):
    monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: False)
    model = ModernEncoderForSequenceClassification(small_config())
    with caplog.at_level(logging.WARNING, logger="modernenc.utils.precision"):
        model.for_inference("int8")
    assert caplog.text.count("this CPU has no VNNI") == 1
    assert all(m.reduce_range for m in model.modules() if isinstance(m, Int8Linear))
    assert "activation_bits=7" in repr(model.model.layers[0].attn.Wqkv)


def test_a_converted_model_is_not_saved_and_not_converted_twice(tmp_path):
    model = ModernEncoderForSequenceClassification(small_config())
    assert model.for_inference("fp32") is model  # fp32: nothing to convert, saving stays allowed
    model.save_pretrained(tmp_path / "fp32")
    for precision in ("bf16", "int8"):
        converted = ModernEncoderForSequenceClassification.from_pretrained(tmp_path / "fp32")
        converted.for_inference(precision)
        assert converted.for_inference(precision) is converted  # again: nothing to do
        with pytest.raises(ValueError, match=f"converted for {precision} inference .* not saved"):
            converted.save_pretrained(tmp_path / precision)
        assert not (tmp_path / precision).exists()
        other = "int8" if precision == "bf16" else "bf16"
        with pytest.raises(ValueError, match=f"already prepared for {precision} inference; load it again"):
            converted.for_inference(other)
    with pytest.raises(ValueError, match="unknown precision 'int4'; choose one of fp32, bf16, int8"):
        ModernEncoderForSequenceClassification(small_config()).for_inference("int4")


def test_int8_refuses_a_model_off_the_cpu():
    model = ModernEncoderForSequenceClassification(small_config()).to("meta")
    with pytest.raises(ValueError, match="int8 runs on the CPU only .* on meta"):
        model.for_inference("int8")


def test_bf16_variant_keeps_its_weights_in_bf16_and_the_rest_in_fp32():
    model = ModernEncoderForMaskedLM(small_config()).for_inference("bf16")
    kinds = {type(m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, Bf16Linear))}
    assert Bf16Linear in kinds and nn.Linear not in kinds  # the MLM decoder is a head layer: bf16 too
    assert model.decoder.weight.dtype == torch.bfloat16
    assert model.model.embeddings.tok_embeddings.weight.dtype == torch.float32  # no longer tied: a copy
    assert not any(p.requires_grad for p in model.parameters())


def test_loading_a_checkpoint_skips_the_random_init_it_would_overwrite(tmp_path, monkeypatch):
    torch.manual_seed(0)
    ModernEncoderForMaskedLM(small_config()).save_pretrained(tmp_path / "mlm")
    ModernEncoderModel(small_config()).save_pretrained(tmp_path / "encoder")
    initialised = []  # every tensor the random init touched
    original = torch.nn.init.trunc_normal_

    def recording(tensor, *args, **kwargs):
        initialised.append(tensor)
        return original(tensor, *args, **kwargs)

    monkeypatch.setattr(torch.nn.init, "trunc_normal_", recording)
    mlm = ModernEncoderForMaskedLM.from_pretrained(tmp_path / "mlm")
    ModernEncoderModel.from_pretrained(tmp_path / "mlm")  # the bare encoder: every tensor is stored
    assert not initialised  # no random init: the checkpoint fills every tensor
    assert torch.nn.init.trunc_normal_ is recording  # and torch's init functions are back as they were
    assert mlm.decoder.weight is mlm.model.embeddings.tok_embeddings.weight  # tied again after loading
    assert not any(t.is_meta for t in [*mlm.parameters(), *mlm.buffers()])
    fresh = ModernEncoderModel(small_config())
    assert torch.equal(mlm.model.rotary_local.inv_freq, fresh.rotary_local.inv_freq)  # computed, not stored
    initialised.clear()
    # A fresh task layer on a bare encoder is initialised for real, as before.
    ModernEncoderForSequenceClassification.from_pretrained(tmp_path / "encoder")
    assert initialised
