"""Optimizers with ModernBERT's parameter grouping and fully decoupled weight decay.

Both registered optimizers come from torch-optimi with ``decouple_lr=True``: each step multiplies a decayed
weight by ``1 - weight_decay * lr_t / max_lr`` (``max_lr`` = the ``lr`` given here), so ``weight_decay`` is
the per-step decay at peak LR and follows the schedule's shape, but not the LR's magnitude. That is
ModernBERT's ``decoupled_stableadamw`` and why its ``weight_decay`` is 1e-5 rather than ~1e-2.

AdamW is `optimi.AdamW` rather than composer's `DecoupledAdamW` so that the two choices differ only in
StableAdamW's per-tensor update clipping: same weight-decay convention, same Kahan summation for bf16
weights, same fused kernels and state layout. (Composer's version would add per-parameter metrics for
`OptimizerMonitor`, which we do not rely on.)
"""

from __future__ import annotations

import inspect
from typing import Any

import optimi
import torch
from torch import nn

from modernenc.utils.suggest import did_you_mean

__all__ = ["NO_DECAY_MODULES", "OPTIMIZERS", "build_optimizer", "param_groups", "param_groups_summary"]

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "stableadamw": optimi.StableAdamW,
    "adamw": optimi.AdamW,
}

# Normalisation layers: their scale (and shift) parameters never get weight decay, whatever their shape.
NO_DECAY_MODULES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.RMSNorm,
    nn.GroupNorm,
    nn.modules.batchnorm._NormBase,
)

# Group names, in the order they appear in `optimizer.param_groups`.
_DECAY, _NO_DECAY, _EMBEDDING = "decay", "no_decay", "embedding"


def _classify(module: nn.Module, param: nn.Parameter) -> str:
    if isinstance(module, nn.Embedding):
        return _EMBEDDING
    if isinstance(module, NO_DECAY_MODULES) or param.ndim < 2:  # norms, biases, any other 1-D vector
        return _NO_DECAY
    return _DECAY


def param_groups(
    model: nn.Module, weight_decay: float, decay_embeddings: bool = True
) -> list[dict[str, Any]]:
    """Split trainable parameters into decay / no-decay / embedding groups, each parameter once.

    ModernBERT decays embeddings (its grouping exempts only 1-D tensors and biases), hence the default;
    the separate group lets `decay_embeddings=False` exempt them, as some BERT recipes do.

    A tied parameter (e.g. token embeddings shared with the MLM decoder) is an embedding if any of its
    owners is an `nn.Embedding`, so the decoder's `Linear` cannot pull it into the decay group.
    """
    priority = {_DECAY: 0, _NO_DECAY: 1, _EMBEDDING: 2}
    chosen: dict[int, tuple[nn.Parameter, str]] = {}  # id -> (param, group); dicts keep first-seen order
    for module in model.modules():
        for param in module.parameters(recurse=False):
            if not param.requires_grad:
                continue
            group = _classify(module, param)
            seen = chosen.get(id(param))
            if seen is None or priority[group] > priority[seen[1]]:
                chosen[id(param)] = (param, group)

    decays = {_DECAY: weight_decay, _NO_DECAY: 0.0, _EMBEDDING: weight_decay if decay_embeddings else 0.0}
    groups = []
    for name in (_DECAY, _NO_DECAY, _EMBEDDING):
        params = [p for p, g in chosen.values() if g == name]
        if params:  # an empty group would only clutter logs and checkpoints
            groups.append({"params": params, "weight_decay": decays[name], "group_name": name})
    return groups


def build_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.98),
    eps: float = 1e-6,
    weight_decay: float = 1e-5,
    decay_embeddings: bool = True,
    **kwargs: Any,
) -> torch.optim.Optimizer:
    """Build a registered optimizer over `model` with ModernBERT's defaults (betas, eps, weight decay).

    Extra `kwargs` go to the optimizer (e.g. `kahan_sum`, `triton`, `max_lr`); unknown ones are rejected.
    `decouple_lr` defaults to True (fully decoupled weight decay) and may be overridden.
    """
    if name not in OPTIMIZERS:
        raise ValueError(
            f"unknown optimizer {name!r}{did_you_mean(name, OPTIMIZERS)}; choose from {sorted(OPTIMIZERS)}"
        )
    cls = OPTIMIZERS[name]
    accepted = [
        k
        for k in inspect.signature(cls).parameters
        if k not in ("params", "lr", "betas", "eps", "weight_decay")
    ]
    for key in kwargs:
        if key not in accepted:
            raise ValueError(
                f"unknown argument {key!r} for optimizer {name!r}{did_you_mean(key, accepted)}; "
                f"accepted: {['lr', 'betas', 'eps', 'weight_decay', 'decay_embeddings', *accepted]}"
            )
    if lr <= 0:
        raise ValueError(f"lr must be positive, got {lr}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    kwargs.setdefault("decouple_lr", True)
    groups = param_groups(model, weight_decay, decay_embeddings)
    optimizer = cls(groups, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, **kwargs)
    if "triton" not in kwargs and "foreach" not in kwargs:
        optimizer.register_step_pre_hook(_choose_kernels)
    return optimizer


def _choose_kernels(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Pick Triton kernels only for parameters that live on a GPU, at the first step.

    optimi 0.3.3 decides before collecting the group's parameters (`all([])` is True), so with triton
    installed it picks Triton for CPU tensors and crashes. Deciding at the first step rather than at build
    time matters because composer moves the model to the GPU after the optimizer is built.
    """
    for group in optimizer.param_groups:
        if group.get("triton") is None and group.get("foreach") is None:
            group["triton"] = optimi.utils.HAS_TRITON and all(
                p.is_cuda and torch.cuda.is_bf16_supported() for p in group["params"]
            )


def param_groups_summary(optimizer: torch.optim.Optimizer) -> dict[str, dict[str, float]]:
    """Per-group tensor and element counts plus weight decay, e.g. for `logger.log_hyperparameters`."""
    summary = {}
    for i, group in enumerate(optimizer.param_groups):
        summary[group.get("group_name", f"group{i}")] = {
            "tensors": len(group["params"]),
            "numel": sum(p.numel() for p in group["params"]),
            "weight_decay": group["weight_decay"],
        }
    return summary
