"""Centred weight tiling and the depth map that grow a trained encoder into a bigger one."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import cli_error, padded_batch

from modernenc.cli import main
from modernenc.model import (
    ModernEncoderConfig,
    ModernEncoderForMaskedLM,
    ModernEncoderForSequenceClassification,
)
from modernenc.train.tiling import config_for_preset, layer_map, repeat_counts, tile_model, tile_tensor

SPECIAL = dict(pad_token_id=0, cls_token_id=1, sep_token_id=2, mask_token_id=4)


def small_config(**overrides) -> ModernEncoderConfig:
    """tiny's shape on a 512-token vocab: 128 hidden, 2 heads of 64, 3 layers (global at 0)."""
    values = dict(vocab_size=512, local_attention=16, **SPECIAL)
    return ModernEncoderConfig.from_preset("tiny", **{**values, **overrides})


def trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """Give every norm weight a distinct non-one value, so a mis-copied norm would show."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
    return model


# tile_tensor ---------------------------------------------------------------------------------------


def test_1d_examples_by_hand():
    a, b, c = 10.0, 20.0, 30.0
    src = torch.tensor([a, b, c])
    # offset (5 - 3) // 2 = 1: out[j] = src[(j - 1) % 3]; the middle element b lands on out[2].
    assert tile_tensor(src, (5,)).tolist() == [c, a, b, c, a]
    # offset 2: out[j] = src[(j - 2) % 3]; b lands on out[3], the middle of 7.
    assert tile_tensor(src, (7,)).tolist() == [b, c, a, b, c, a, b]
    # odd growth: offset (4 - 3) // 2 = 0, the extra element at the end.
    assert tile_tensor(src, (4,)).tolist() == [a, b, c, a]


def test_2d_example_by_hand():
    src = torch.tensor([[1, 2], [3, 4]])
    # rows: offset 0 -> rows 0, 1, 0; columns: offset 1 -> columns 1, 0, 1, 0.
    expected = [[2, 1, 2, 1], [4, 3, 4, 3], [2, 1, 2, 1]]
    assert tile_tensor(src, (3, 4)).tolist() == expected


def test_same_shape_is_the_identity_and_a_copy():
    src = torch.randn(3, 5)
    out = tile_tensor(src, src.shape)
    assert torch.equal(out, src) and out.data_ptr() != src.data_ptr()


def test_every_big_slice_is_a_periodic_copy_of_the_source():
    src = torch.randn(3, 5)
    out = tile_tensor(src, (8, 12))
    row_offset, col_offset = (8 - 3) // 2, (12 - 5) // 2
    assert torch.equal(out[row_offset : row_offset + 3, col_offset : col_offset + 5], src)  # centred
    for i in range(8):
        for j in range(12):
            assert out[i, j] == src[(i - row_offset) % 3, (j - col_offset) % 5]
    assert torch.equal(out[3:], out[:-3]) and torch.equal(out[:, 5:], out[:, :-5])  # period = source size


def test_shrinking_is_refused():
    with pytest.raises(ValueError, match="dimension 1 shrinks"):
        tile_tensor(torch.zeros(2, 3), (4, 2))


# layer_map -----------------------------------------------------------------------------------------

PAIRS = [("base", "large"), ("mini", "small"), ("tiny", "mini"), ("small", "base"), ("tiny", "large")]


@pytest.mark.parametrize(("small", "big"), PAIRS)
def test_layer_map_keeps_attention_types_uses_every_layer_in_order(small, big):
    s, b = ModernEncoderConfig.from_preset(small), ModernEncoderConfig.from_preset(big)
    mapping = layer_map(s, b)
    assert len(mapping) == b.num_hidden_layers
    assert sorted(set(mapping)) == list(range(s.num_hidden_layers))  # every small layer used
    for i, source in enumerate(mapping):
        assert b.is_global_layer(i) == s.is_global_layer(source), f"big layer {i} <- small layer {source}"
    for is_global in (True, False):  # within each attention type: monotone, repeats at most one apart
        picks = [m for i, m in enumerate(mapping) if b.is_global_layer(i) == is_global]
        assert picks == sorted(picks)
        counts = [picks.count(x) for x in set(picks)]
        assert max(counts) - min(counts) <= 1
    last_is_global = b.is_global_layer(b.num_hidden_layers - 1)
    same_type = [i for i in range(s.num_hidden_layers) if s.is_global_layer(i) == last_is_global]
    assert mapping[0] == 0 and mapping[-1] == same_type[-1]  # the ends copy the ends


def test_base_to_large_by_hand():
    # Global slots 0, 3, ..., 27 (10 of them) take base's globals 0, 3, ..., 21 (8): the k-th slot takes
    # global number floor((k + 1/2) * 8 / 10) = 0 1 2 2 3 4 5 6 6 7, i.e. layers 0 3 6 6 9 12 15 18 18 21.
    mapping = layer_map(ModernEncoderConfig.from_preset("base"), ModernEncoderConfig.from_preset("large"))
    assert [mapping[i] for i in range(0, 28, 3)] == [0, 3, 6, 6, 9, 12, 15, 18, 18, 21]


def test_no_map_is_monotone_over_the_whole_depth_for_base_to_large():
    """Why `layer_map` orders each attention type on its own: a monotone map that uses every small layer
    advances by 0 or 1 per big layer, and no such walk over base's layers fits large's global/local
    pattern (it would keep base's 8 global runs, large has 10)."""
    s, b = ModernEncoderConfig.from_preset("base"), ModernEncoderConfig.from_preset("large")
    reachable = {0} if b.is_global_layer(0) == s.is_global_layer(0) else set()
    for i in range(1, b.num_hidden_layers):
        reachable = {
            m + step
            for m in reachable
            for step in (0, 1)
            if m + step < s.num_hidden_layers and s.is_global_layer(m + step) == b.is_global_layer(i)
        }
    assert s.num_hidden_layers - 1 not in reachable


def test_layer_map_refuses_to_shrink():
    with pytest.raises(ValueError, match="global-attention layers"):
        layer_map(ModernEncoderConfig.from_preset("base"), ModernEncoderConfig.from_preset("mini"))


# tile_model ----------------------------------------------------------------------------------------


def test_fused_projections_are_tiled_part_by_part():
    small = ModernEncoderForMaskedLM(small_config())
    with torch.no_grad():
        for layer in small.model.layers:
            q, k, v = layer.attn.Wqkv.weight.chunk(3)
            q.fill_(1.0), k.fill_(2.0), v.fill_(3.0)
            inp, gate = layer.mlp.Wi.weight.chunk(2)
            inp.fill_(5.0), gate.fill_(7.0)
    big = tile_model(small, config_for_preset(small.config, "mini"))
    for layer in big.model.layers:
        q, k, v = layer.attn.Wqkv.weight.chunk(3)
        assert (q == 1).all() and (k == 2).all() and (v == 3).all()
        inp, gate = layer.mlp.Wi.weight.chunk(2)
        assert (inp == 5).all() and (gate == 7).all()


def test_heads_are_tiled_whole():
    # 2 -> 5 heads of 8: growing by an odd number of heads, row tiling would start mid-head.
    s = ModernEncoderConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=1,
        num_attention_heads=2,
        **SPECIAL,
    )
    b = ModernEncoderConfig(
        vocab_size=64,
        hidden_size=40,
        intermediate_size=24,
        num_hidden_layers=1,
        num_attention_heads=5,
        **SPECIAL,
    )
    small = ModernEncoderForMaskedLM(s)
    big = tile_model(small, b)
    small_q = small.model.layers[0].attn.Wqkv.weight.chunk(3)[0].reshape(2, 8, 16)
    big_q = big.model.layers[0].attn.Wqkv.weight.chunk(3)[0].reshape(5, 8, 40)
    hidden_cols = (torch.arange(40) - 12) % 16  # the residual stream's own centred tiling
    for head, small_head in zip(range(5), [1, 0, 1, 0, 1], strict=True):  # head offset (5 - 2) // 2 = 1
        assert torch.equal(big_q[head], small_q[small_head][:, hidden_cols])
    small_wo = small.model.layers[0].attn.Wo.weight.reshape(16, 2, 8)
    big_wo = big.model.layers[0].attn.Wo.weight.reshape(40, 5, 8)
    assert torch.equal(big_wo[12:28, 1], small_wo[:, 0])


def test_every_tensor_is_centred_on_its_mapped_source():
    small = trained_like(ModernEncoderForMaskedLM(small_config()))
    big = tile_model(small, config_for_preset(small.config, "mini"))  # 128 -> 256 hidden, 3 -> 6 layers
    mapping = layer_map(small.config, big.config)
    o, n = (256 - 128) // 2, 128
    emb_small, emb_big = (
        small.model.embeddings.tok_embeddings.weight,
        big.model.embeddings.tok_embeddings.weight,
    )
    assert torch.equal(emb_big[:, o : o + n], emb_small)
    assert big.decoder.weight is emb_big  # still tied
    assert torch.equal(big.decoder.bias, small.decoder.bias)
    assert torch.equal(big.head.dense.weight[o : o + n, o : o + n], small.head.dense.weight)
    assert torch.equal(big.model.final_norm.weight[o : o + n], small.model.final_norm.weight)
    for i, source in enumerate(mapping):
        got, want = big.model.layers[i], small.model.layers[source]
        assert torch.equal(got.mlp_norm.weight[o : o + n], want.mlp_norm.weight)
        assert torch.equal(got.attn.Wo.weight[o : o + n, o : o + n], want.attn.Wo.weight)
        io, inter = (384 - 192) // 2, 192
        assert torch.equal(got.mlp.Wo.weight[o : o + n, io : io + inter], want.mlp.Wo.weight)


def test_a_copy_of_layer_0_gets_the_embedding_norm_as_attention_norm():
    small = trained_like(ModernEncoderForMaskedLM(small_config()))
    big = tile_model(small, config_for_preset(small.config, "mini"))
    copies = [i for i, m in enumerate(layer_map(small.config, big.config)) if m == 0 and i > 0]
    assert copies == [3]
    assert torch.equal(big.model.layers[3].attn_norm.weight, big.model.embeddings.norm.weight)
    assert isinstance(big.model.layers[0].attn_norm, torch.nn.Identity)


def test_tiled_model_runs_forward_without_nan():
    small = trained_like(ModernEncoderForMaskedLM(small_config()))
    big = tile_model(small, config_for_preset(small.config, "mini")).eval()
    ids, mask = padded_batch([12, 7, 20])
    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        out = big(ids, mask, labels=labels)
    assert out.logits.shape == (3, 20, 512)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.loss)


def test_tiling_to_the_own_config_gives_identical_logits():
    small = trained_like(ModernEncoderForMaskedLM(small_config())).eval()
    same = tile_model(small, small.config).eval()
    ids, mask = padded_batch([12, 7, 20])
    with torch.no_grad():
        assert torch.equal(small(ids, mask).logits, same(ids, mask).logits)


def test_repeat_counts_by_hand():
    assert repeat_counts(3, 5).tolist() == [2, 2, 1, 2, 2]  # [c, a, b, c, a]: c and a twice, b once
    assert repeat_counts(3, 3).tolist() == [1, 1, 1]


def wider(config: ModernEncoderConfig) -> ModernEncoderConfig:
    """Twice the width (and heads), the same depth."""
    return dataclasses.replace(
        config,
        hidden_size=2 * config.hidden_size,
        intermediate_size=2 * config.intermediate_size,
        num_attention_heads=2 * config.num_attention_heads,
    )


def test_scaled_inputs_keep_a_wider_model_s_logits():
    small = trained_like(ModernEncoderForMaskedLM(small_config())).eval()
    ids, mask = padded_batch([12, 7, 20])
    with torch.no_grad():
        expected = small(ids, mask).logits
        scaled = tile_model(small, wider(small.config), scale_inputs=True).eval()(ids, mask).logits
        plain = tile_model(small, wider(small.config)).eval()(ids, mask).logits
    real = mask.bool()
    assert torch.allclose(scaled[real], expected[real], atol=1e-4)
    assert not torch.allclose(plain[real], expected[real], atol=1e-1)  # plain tiling changes the function


def test_scaled_inputs_keep_a_wider_classifier_s_logits():
    small = trained_like(ModernEncoderForSequenceClassification(small_config(num_labels=3))).eval()
    ids, mask = padded_batch([12, 7, 20])
    with torch.no_grad():
        expected = small(ids, mask).logits
        got = tile_model(small, wider(small.config), scale_inputs=True).eval()(ids, mask).logits
    assert torch.allclose(got, expected, atol=1e-4)


def test_classifier_is_tiled_too():
    small = ModernEncoderForSequenceClassification(small_config(num_labels=3))
    big = tile_model(small, config_for_preset(small.config, "mini"))
    assert isinstance(big, ModernEncoderForSequenceClassification)
    assert torch.equal(big.classifier.weight[:, 64:192], small.classifier.weight)
    assert torch.equal(big.classifier.bias, small.classifier.bias)


def test_mismatched_vocab_is_refused():
    small = ModernEncoderForMaskedLM(small_config())
    with pytest.raises(ValueError, match="vocab_size 512 vs 1024"):
        tile_model(small, config_for_preset(small_config(vocab_size=1024), "mini"))


# CLI -----------------------------------------------------------------------------------------------


def test_cli_tiles_a_folder_copies_its_tokenizer_and_keeps_earlier_output(tmp_path, capsys):
    src = tmp_path / "small"
    ModernEncoderForMaskedLM(small_config()).save_pretrained(src)
    (src / "tokenizer.json").write_text("{}")
    out = tmp_path / "big"
    main(["tile", str(src), str(out), "--preset", "mini"])
    assert "big layer i copies small layer [0, 1, 1, 0, 2, 2]" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (256, 6, 512)
    assert (out / "tokenizer.json").read_text() == "{}"
    big = ModernEncoderForMaskedLM.from_pretrained(out)
    assert big.config.hidden_size == 256
    before = (out / "model.safetensors").read_bytes()
    refused = cli_error(capsys, "tile", str(src), str(out), "--preset", "mini")
    assert "already holds a Hugging Face model folder modernenc wrote; pass --force" in refused
    assert (out / "model.safetensors").read_bytes() == before
    main(["tile", str(src), str(out), "--preset", "mini", "--force"])


def test_cli_names_an_unknown_preset(tmp_path, capsys):
    src = tmp_path / "small"
    ModernEncoderForMaskedLM(small_config()).save_pretrained(src)
    message = cli_error(capsys, "tile", str(src), str(tmp_path / "big"), "--preset", "huge")
    assert "unknown model preset 'huge'" in message
