"""Attention backends: the specification (`eager`) against attention written out one sequence at a time, and
every other backend against the specification, forward and backward, fp32, bf16 and fp64 (gradcheck);
flash-attn's glue against flash-attn's documented semantics; flex's block mask against PyTorch's own
`create_block_mask`. Whole-model parity with `transformers` per backend is in test_model_parity.py."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import padded_batch, use_backend
from torch.nn.attention.flex_attention import create_block_mask

from modernenc import ModernEncoderConfig, ModernEncoderForMaskedLM, ModernEncoderModel
from modernenc.model.attention import (
    ATTENTION_BACKENDS,
    AttentionCache,
    AutoAttention,
    PackedLayout,
    eager_attention,
    resolve_backend,
)
from modernenc.model.bucketed_attention import BucketedAttention
from modernenc.model.flash_attention import FlashAttention
from modernenc.model.flex_attention import FlexAttention, build_block_mask
from modernenc.model.padding import positions_from_cu_seqlens

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

# Every backend that runs on the CPU, with its knobs set to reach each of its paths.
BACKENDS = {
    "bucketed": BucketedAttention(),
    "bucketed, fused kernel": BucketedAttention(matmul_max_length=0),
    "bucketed, grids only": BucketedAttention(route="grids"),
    "bucketed, banded only": BucketedAttention(route="banded"),
    # grids of 150 and 130 on the fused kernel, shorter ones as matmuls split into several calls
    "bucketed, fused + split matmul grids": BucketedAttention(matmul_max_length=100, matmul_max_scores=700),
    "flex": FlexAttention(),
}
LENGTHS = {
    "mixed": [150, 40, 97, 97, 12, 130, 25],  # 25 is padded to 40 in its grid: 15 padding queries past 8
    "equal, in order": [64, 64, 64],  # the packed tokens are a grid in place
    "long": [300, 129, 64, 7],  # 500 tokens: the last band block and the last flex tile are part padding
    "an empty sequence": [30, 0, 12, 1],
}


def packed_inputs(lengths, heads=2, dim=8, seed=0):
    """Random packed `qk` `[T, 2, h, d]`, `v` `[T, h, d]` and their layout."""
    gen = torch.Generator().manual_seed(seed)
    num_tokens = sum(lengths)
    qk = torch.randn(num_tokens, 2, heads, dim, generator=gen)
    v = torch.randn(num_tokens, heads, dim, generator=gen)
    cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    layout = PackedLayout(cu_seqlens, max(lengths), positions_from_cu_seqlens(cu_seqlens, num_tokens))
    return qk, v, layout


def per_sequence_attention(qk, v, lengths, window):
    """The paper's attention with no packing at all: one sequence at a time, its scores written out."""
    outs, start = [], 0
    for n in lengths:
        q, k = (t.transpose(0, 1) for t in qk[start : start + n].unbind(1))  # [h, n, d]
        scores = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])
        if window is not None:
            pos = torch.arange(n)
            scores = scores.masked_fill((pos[None, :] - pos[:, None]).abs() > window, float("-inf"))
        outs.append((scores.softmax(-1) @ v[start : start + n].transpose(0, 1)).transpose(0, 1))
        start += n
    return torch.cat(outs)


def forward_and_grads(attend, qk, v, weights):
    qk, v = qk.clone().requires_grad_(), v.clone().requires_grad_()
    out = attend(qk, v)
    (out.float() * weights).sum().backward()
    return out, qk.grad, v.grad


@pytest.mark.parametrize("window", [None, 8], ids=["global", "local"])
def test_eager_is_attention_within_each_sequence_and_window(window):
    lengths = LENGTHS["mixed"]
    qk, v, layout = packed_inputs(lengths)
    weights = torch.randn(v.shape)
    got = forward_and_grads(
        lambda a, b: eager_attention(a, b, layout, AttentionCache(), window), qk, v, weights
    )
    expected = forward_and_grads(lambda a, b: per_sequence_attention(a, b, lengths, window), qk, v, weights)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)
    if window is not None:  # one more key on each side shows: the comparison sees the window
        wider = per_sequence_attention(qk, v, lengths, window + 1)
        assert (got[0] - wider).abs().max() > 1e-2


@pytest.mark.parametrize("lengths", list(LENGTHS.values()), ids=list(LENGTHS))
@pytest.mark.parametrize("window", [None, 8], ids=["global", "local"])
@pytest.mark.parametrize("backend", list(BACKENDS.values()), ids=list(BACKENDS))
def test_backend_matches_eager_forward_and_backward(backend, window, lengths):
    qk, v, layout = packed_inputs(lengths)
    weights = torch.randn(v.shape)
    results = [
        forward_and_grads(
            lambda a, b, attend=attend: attend(a, b, layout, AttentionCache(), window), qk, v, weights
        )
        for attend in (backend, eager_attention)
    ]
    for got, expected in zip(*results, strict=True):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_bucketed_plans_fused_and_matmul_grids_and_picks_banded_by_cost():
    """The paths the knobs above are meant to reach are the ones taken."""
    _, _, layout = packed_inputs(LENGTHS["mixed"])
    cache, split = AttentionCache(), BACKENDS["bucketed, fused + split matmul grids"]
    assert split.buckets(layout, cache).shapes == [(1, 150), (1, 130), (2, 97), (2, 40), (1, 12)]
    assert split.grid_routes(layout, cache, heads=2, matmul_max_length=100).matmul_grids == 3
    default = BucketedAttention()
    assert default.local_route(*packed_inputs(LENGTHS["long"])[2:], AttentionCache(), window=8) == "banded"
    assert default.local_route(*packed_inputs([20, 12, 17, 9, 20])[2:], AttentionCache(), window=8) == "grids"
    equal = packed_inputs(LENGTHS["equal, in order"])[2]
    assert default.buckets(equal, AttentionCache()).is_identity


@pytest.mark.parametrize("window", [None, 8], ids=["global", "local"])
def test_bf16_backends_err_no_more_than_the_fused_kernel(window):
    """On peaky attention in bf16, every backend's outputs and gradients err against fp64 at most a little
    more than the fused sdpa kernel's: the scores are kept in fp32 (bf16 scores, as plain attention under
    autocast has them, measured 2.1x the fused kernel's error)."""
    lengths = [60, 33, 59, 12]
    qk, v, layout = packed_inputs(lengths, heads=4, dim=32)
    qk = qk * 3  # large scores: a peaky softmax, where score rounding matters most
    weights = torch.randn(v.shape)
    expected = forward_and_grads(
        lambda a, b: per_sequence_attention(a, b, lengths, window), qk.double(), v.double(), weights.double()
    )

    def errors(attend):
        got = forward_and_grads(
            lambda a, b: attend(a, b, layout, AttentionCache(), window), qk.bfloat16(), v.bfloat16(), weights
        )
        return [float((g.double() - e).norm() / e.norm()) for g, e in zip(got, expected, strict=True)]

    fused = errors(BACKENDS["bucketed, fused kernel"])
    for name, attend in {**BACKENDS, "eager": eager_attention}.items():
        for what, err, bound in zip(("output", "qk grad", "v grad"), errors(attend), fused, strict=True):
            assert err < 1.25 * bound, (name, what, err, bound)


@pytest.mark.parametrize(
    "backend",
    [
        BACKENDS["bucketed, fused kernel"],
        BACKENDS["bucketed"],
        BACKENDS["bucketed, banded only"],
        eager_attention,
        BACKENDS["flex"],
    ],
    ids=["bucketed, fused kernel", "bucketed, matmul grids", "bucketed, banded", "eager", "flex"],
)
def test_gradients_match_finite_differences_in_fp64(backend):
    """Checked by `gradcheck` against numerical derivatives: in fp64, so no backend may round its scores to
    fp32 (the matmul grids did: a Jacobian mismatch)."""
    lengths = [7, 5, 1]
    qk, v, layout = packed_inputs(lengths, heads=2, dim=4)
    qk, v = (t.double().requires_grad_() for t in (qk * 2, v))
    # fast mode: a random projection of the Jacobian, 2 evaluations per input instead of 2 per element; fp32
    # rounding in the function still shows in its finite differences (checked: the mismatch was found so).
    assert torch.autograd.gradcheck(
        lambda a, b: backend(a, b, layout, AttentionCache(), 3), (qk, v), fast_mode=True
    )


# --- flex ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("block_size", [16, 128])
@pytest.mark.parametrize("window", [None, 8, 64])
@pytest.mark.parametrize("lengths", [[300, 129, 64, 7], [256, 256], [30, 0, 12, 1], [5]])
def test_flex_block_mask_is_the_one_create_block_mask_builds(lengths, window, block_size):
    """Tiles read off the sequence boundaries equal PyTorch's own, which evaluates every token pair."""
    _, _, layout = packed_inputs(lengths)
    ours = build_block_mask(layout, window, block_size)
    padded = ours.kv_indices.shape[-1] * block_size
    assert padded == -(-sum(lengths) // block_size) * block_size
    theirs = create_block_mask(ours.mask_mod, 1, 1, padded, padded, device="cpu", BLOCK_SIZE=block_size)
    assert torch.equal(ours.to_dense(), theirs.to_dense())  # tiles with any visible pair
    assert torch.equal(ours.kv_num_blocks, theirs.kv_num_blocks)  # of which partly masked
    assert torch.equal(ours.full_kv_num_blocks, theirs.full_kv_num_blocks)  # and fully visible


def test_flex_local_layers_skip_the_tiles_outside_the_window():
    """One 1024-token sequence in 128-token tiles: a global layer visits all 8 x 8 tiles, each full; a
    local layer (64 each side) only the diagonal and its neighbours, 8 + 2 * 7 = 22, all partly masked."""
    _, _, layout = packed_inputs([1024])
    global_mask, local_mask = build_block_mask(layout, None), build_block_mask(layout, 64)
    assert int(global_mask.full_kv_num_blocks.sum()) == 64 and int(global_mask.kv_num_blocks.sum()) == 0
    assert int(local_mask.full_kv_num_blocks.sum()) == 0 and int(local_mask.kv_num_blocks.sum()) == 22


def test_flex_masks_are_built_once_per_forward_and_kind_of_layer():
    """Layers 0 and 3 are global, 1 and 2 local: one cache per forward pass, holding two masks."""
    model = ModernEncoderModel(ModernEncoderConfig(**SMALL, attn_backend="flex")).eval()
    flex, calls = model.layers[0].attn.backend, []
    assert isinstance(flex, FlexAttention)

    def recording(qk, v, layout, cache, window=None, dropout_p=0.0):
        out = flex(qk, v, layout, cache, window, dropout_p)
        calls.append((id(cache), len(cache)))
        return out

    use_backend(model, recording)
    ids, mask = padded_batch([100, 40, 17])
    with torch.no_grad():
        model(ids, mask)
        model(ids, mask)
    first, second = calls[:4], calls[4:]
    assert [n for _, n in first] == [1, 2, 2, 2] and [n for _, n in second] == [1, 2, 2, 2]
    assert len({c for c, _ in first}) == 1 and first[0][0] != second[0][0]


def test_flex_refuses_attention_dropout_in_training_only():
    model = ModernEncoderForMaskedLM(ModernEncoderConfig(**SMALL, attn_backend="flex", attention_dropout=0.1))
    ids, mask = padded_batch([30, 12])
    with pytest.raises(
        ValueError, match=r"attn_backend='flex' has no attention dropout.*attention_dropout=0\.0"
    ):
        model.train()(ids, mask)
    with torch.no_grad():
        assert torch.isfinite(model.eval()(ids, mask).logits).all()


# --- names, auto and flash ----------------------------------------------------------------------------


def test_sdpa_is_the_bucketed_backend_under_its_first_name():
    assert resolve_backend("sdpa") is resolve_backend("bucketed")
    model = ModernEncoderModel(ModernEncoderConfig(**SMALL, attn_backend="sdpa"))
    assert all(layer.attn.backend is ATTENTION_BACKENDS["bucketed"] for layer in model.layers)
    with pytest.raises(
        ValueError, match=r"unknown attention backend 'xformers'; choose one of \['auto', 'eager'"
    ):
        resolve_backend("xformers")


def test_auto_picks_by_device_and_what_imports():
    bucketed, flex, flash = (ATTENTION_BACKENDS[name] for name in ("bucketed", "flex", "flash"))
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    with_flash = AutoAttention(bucketed, flex, flash, flash_importable=True)
    without_flash = AutoAttention(bucketed, flex, flash, flash_importable=False)
    assert with_flash.choose(cuda) is flash and with_flash.choose(cuda, dropout_p=0.1) is flash
    assert without_flash.choose(cuda) is flex
    assert without_flash.choose(cuda, dropout_p=0.1) is bucketed  # flex has no attention dropout
    assert with_flash.choose(cpu) is bucketed and without_flash.choose(cpu) is bucketed
    assert ATTENTION_BACKENDS["auto"].choose(cpu) is bucketed


def test_flash_backend_on_cpu_is_a_clear_error():
    model = ModernEncoderModel(ModernEncoderConfig(**SMALL, attn_backend="flash"))
    ids, mask = padded_batch([10, 7])
    with pytest.raises(RuntimeError, match=r"needs a CUDA device and the flash-attn package"):
        model(ids, mask)


def reference_flash_attn_varlen_func(
    q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0, window_size=(-1, -1)
):
    """flash-attn's `flash_attn_varlen_func` as its docstring specifies it, written out in plain loops.

    Inputs are `[total, heads, dim]` in fp16/bf16 with a unit last stride, `cu_seqlens` int32; with
    `window_size=(left, right)` query i of a sequence sees keys `[i - left, i + right]` (-1: unbounded).
    """
    assert q.dtype in (torch.float16, torch.bfloat16) and q.dtype == k.dtype == v.dtype
    assert all(t.stride(-1) == 1 for t in (q, k, v))
    assert cu_seqlens_q.dtype == cu_seqlens_k.dtype == torch.int32
    lengths = cu_seqlens_q.diff().tolist()
    assert torch.equal(cu_seqlens_q, cu_seqlens_k) and max_seqlen_q == max_seqlen_k == max(lengths)
    left, right = (math.inf if w == -1 else w for w in window_size)
    out = torch.empty_like(q)
    for start, n in zip(cu_seqlens_q.tolist(), lengths, strict=False):
        qs, ks, vs = (t[start : start + n].float().transpose(0, 1) for t in (q, k, v))
        scores = qs @ ks.transpose(1, 2) / math.sqrt(q.shape[-1])
        offset = torch.arange(n)[None, :] - torch.arange(n)[:, None]  # key index - query index
        scores = scores.masked_fill((offset < -left) | (offset > right), float("-inf"))
        out[start : start + n] = (scores.softmax(-1) @ vs).transpose(0, 1).to(q.dtype)
    return out


@pytest.mark.parametrize("window", [None, 8], ids=["global", "local"])
def test_flash_backend_passes_flash_attn_the_packed_layout_and_window(window):
    lengths = [70, 33, 9, 50]
    qk, v, layout = packed_inputs(lengths)
    got = FlashAttention(reference_flash_attn_varlen_func)(qk, v, layout, AttentionCache(), window=window)
    assert got.dtype == torch.float32  # cast to bf16 for the kernel and back
    rounded = [t.bfloat16().float() for t in (qk, v)]
    torch.testing.assert_close(got, per_sequence_attention(*rounded, lengths, window), atol=1e-2, rtol=1e-2)
    if window is not None:  # one more key on each side must show up: the check sees the window
        wider = per_sequence_attention(*rounded, lengths, window + 1)
        assert (got - wider).abs().max() > 5e-2


def test_flash_backend_model_matches_bucketed_backend():
    model = ModernEncoderForMaskedLM(ModernEncoderConfig(**SMALL)).eval()
    ids, mask = padded_batch([100, 40, 17])  # longer than the window of 16: local layers matter
    with torch.no_grad():
        bucketed = model(ids, mask).logits
        flash = use_backend(model, FlashAttention(reference_flash_attn_varlen_func))(ids, mask).logits
    real = mask.bool()
    rel = (flash - bucketed)[real].norm() / bucketed[real].norm()
    # bf16 rounding of q, k and v measured 7e-6; a lost window or mixed sequences, 1e-3 or more
    assert rel < 2e-4, rel
