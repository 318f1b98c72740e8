"""Optimizer building: parameter groups, fully decoupled weight decay, defaults and registry errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modernenc.train import build_optimizer, param_groups_summary


class Toy(nn.Module):
    """Embedding, Linear(bias=False), Linear(bias=True), LayerNorm(bias=False), and a decoder tied to the
    embedding, registered first so that a first-owner-wins grouping would decay the embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.decoder = nn.Linear(4, 10, bias=True)
        self.emb = nn.Embedding(10, 4)
        self.proj = nn.Linear(4, 4, bias=False)
        self.out = nn.Linear(4, 3, bias=True)
        self.norm = nn.LayerNorm(4, bias=False)
        self.decoder.weight = self.emb.weight


def groups_by_name(optimizer) -> dict[str, set[int]]:
    return {g["group_name"]: {id(p) for p in g["params"]} for g in optimizer.param_groups}


@pytest.mark.parametrize("name", ["stableadamw", "adamw"])
def test_param_groups(name):
    model = Toy()
    opt = build_optimizer(model, name, lr=1e-3)
    groups = groups_by_name(opt)
    assert groups == {
        "decay": {id(model.proj.weight), id(model.out.weight)},
        "no_decay": {id(model.out.bias), id(model.norm.weight), id(model.decoder.bias)},
        "embedding": {id(model.emb.weight)},  # tied decoder weight appears once, as an embedding
    }
    assert {g["group_name"]: g["weight_decay"] for g in opt.param_groups} == {
        "decay": 1e-5,
        "no_decay": 0.0,
        "embedding": 1e-5,  # ModernBERT decays every 2-D tensor, embeddings included
    }
    summary = param_groups_summary(opt)
    assert summary["decay"] == {"tensors": 2, "numel": 16 + 12, "weight_decay": 1e-5}
    assert summary["no_decay"]["tensors"] == 3 and summary["embedding"]["numel"] == 40
    assert sum(s["numel"] for s in summary.values()) == sum(p.numel() for p in model.parameters())


def test_decay_embeddings_and_frozen_params():
    model = Toy()
    model.proj.weight.requires_grad_(False)
    opt = build_optimizer(model, "stableadamw", lr=1e-3, weight_decay=1e-4, decay_embeddings=False)
    assert {g["group_name"]: g["weight_decay"] for g in opt.param_groups}["embedding"] == 0.0
    assert id(model.proj.weight) not in set().union(*groups_by_name(opt).values())


def test_real_mlm_model_grouping():
    from modernenc import ModernEncoderConfig, ModernEncoderForMaskedLM

    model = ModernEncoderForMaskedLM(
        ModernEncoderConfig.from_preset(
            "tiny", vocab_size=128, pad_token_id=0, cls_token_id=1, sep_token_id=2, mask_token_id=3
        )
    )
    summary = param_groups_summary(build_optimizer(model, "stableadamw", lr=1e-3))
    assert summary["embedding"]["tensors"] == 1  # token embeddings, shared with the decoder
    assert sum(s["numel"] for s in summary.values()) == model.num_parameters()
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            assert module.weight.ndim == 1  # so every norm lands in no_decay


@pytest.mark.parametrize("name", ["stableadamw", "adamw"])
@pytest.mark.parametrize("lr_multiplier", [1.0, 0.5])
def test_weight_decay_is_fully_decoupled(name, lr_multiplier):
    model = Toy()
    with pytest.warns(UserWarning, match="potentially high"):  # optimi flags wd >= 1e-3 with decouple_lr
        opt = build_optimizer(model, name, lr=1e-3, weight_decay=0.1)
    for group in opt.param_groups:  # what a scheduler does: scale lr, keep max_lr at the peak
        group["lr"] *= lr_multiplier
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # zero grads: the Adam update is exactly 0, only decay acts
    params = {
        "proj.weight": model.proj.weight,
        "out.weight": model.out.weight,
        "out.bias": model.out.bias,
        "norm.weight": model.norm.weight,
        "emb.weight": model.emb.weight,
        "decoder.bias": model.decoder.bias,
    }
    before = {n: p.detach().clone() for n, p in params.items()}
    opt.step()
    # Fully decoupled: the factor is 1 - wd * lr_t / max_lr, independent of lr's magnitude (1e-3).
    factor = 1 - 0.1 * lr_multiplier
    for n in ("proj.weight", "out.weight", "emb.weight"):
        assert torch.equal(params[n], before[n] * factor), n
    for n in ("out.bias", "norm.weight", "decoder.bias"):
        assert torch.equal(params[n], before[n]), n
    assert all(g["triton"] is False for g in opt.param_groups)  # CPU tensors: no Triton kernels


@pytest.mark.parametrize("name", ["stableadamw", "adamw"])
def test_defaults(name):
    opt = build_optimizer(Toy(), name, lr=8e-4)
    group = opt.param_groups[0]
    assert (group["beta1"], group["beta2"]) == (0.9, 0.98)  # optimi stores betas as beta1 / beta2
    assert group["eps"] == 1e-6 and group["lr"] == 8e-4
    assert group["decouple_lr"] is True and group["max_lr"] == 8e-4


def test_unknown_names_and_kwargs():
    with pytest.raises(ValueError, match="did you mean 'stableadamw'"):
        build_optimizer(Toy(), "stableadam", lr=1e-3)
    with pytest.raises(ValueError, match="did you mean 'kahan_sum'"):
        build_optimizer(Toy(), "adamw", lr=1e-3, kahan_summ=True)
    with pytest.raises(ValueError, match="lr"):
        build_optimizer(Toy(), "adamw", lr=0.0)
