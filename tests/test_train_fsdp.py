"""composer's FSDP on our model, on two CPU ranks: per-layer units, the DDP gradients, the optimizer groups.

composer wraps the model with plain torch FSDP (gloo on CPU) after three CUDA-only spots get CPU
stand-ins (`cpu_fsdp.py`). The truth is the unwrapped model: the same batches through a copy of it, with
its gradients averaged over the ranks as DDP would, and `param_groups` on it for the weight decay.
"""

from __future__ import annotations

import copy
import json
import socket
from pathlib import Path

import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from cpu_fsdp import patch_composer_fsdp_for_cpu, set_rank_environment

from modernenc import ModernEncoderForMaskedLM
from modernenc.model.config import ModernEncoderConfig
from modernenc.train.composer_model import ModernEncoderComposerModel
from modernenc.train.optimizers import build_optimizer, param_groups

WORLD = 2
LAYERS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch(seed: int) -> dict[str, torch.Tensor]:
    """Mixed lengths past the 8-token window, so local and global layers both act; 30% of tokens masked."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 256, (3, 40), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 25:] = 0
    mask[2, 10:] = 0
    labels = torch.where(torch.rand(ids.shape, generator=g) < 0.3, ids, -100)
    labels[mask == 0] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _wrap_and_step(rank: int, port: int, out: Path) -> None:
    from composer.distributed.dist_strategy import prepare_fsdp_module
    from composer.utils import FSDPConfig
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.fsdp._common_utils import clean_tensor_name

    set_rank_environment(rank, WORLD, port)
    torch.set_num_threads(1)
    torch_dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    patch_composer_fsdp_for_cpu()
    torch.manual_seed(0)
    config = ModernEncoderConfig.from_preset(
        "tiny", vocab_size=256, pad_token_id=0, cls_token_id=1, sep_token_id=2, mask_token_id=3,
        num_hidden_layers=LAYERS, local_attention=8,
    )  # fmt: skip
    model = ModernEncoderForMaskedLM(config)
    reference = copy.deepcopy(model)
    composer_model = ModernEncoderComposerModel(model)
    optimizer = build_optimizer(model, "stableadamw", lr=1e-3, weight_decay=1e-5)
    fsdp_config = FSDPConfig(sharding_strategy="FULL_SHARD", activation_checkpointing=True)
    prepare_fsdp_module(composer_model, optimizer, fsdp_config, precision="fp32", device="cpu")

    batch = _batch(seed=rank)  # each rank its own data
    loss = composer_model.loss(composer_model(batch), batch)
    loss.backward()
    reference_loss = reference(**batch).loss
    reference_loss.backward()
    for param in reference.parameters():
        torch_dist.all_reduce(param.grad)
        param.grad /= WORLD

    local_numel = sum(p.numel() for p in composer_model.model.parameters())
    name_of = {id(p): clean_tensor_name(n) for n, p in composer_model.model.named_parameters()}
    decay = {name_of[id(p)]: g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    with FullyShardedDataParallel.summon_full_params(composer_model.model, with_grads=True):
        grads = {clean_tensor_name(n): p.grad.clone() for n, p in composer_model.model.named_parameters()}
    reference_name = {id(p): n for n, p in reference.named_parameters()}
    reference_grads = {n: p.grad for n, p in reference.named_parameters()}
    reference_decay = {
        reference_name[id(p)]: g["weight_decay"]
        for g in param_groups(reference, weight_decay=1e-5)
        for p in g["params"]
    }
    result = {
        "units": sum(isinstance(m, FullyShardedDataParallel) for m in composer_model.modules()),
        "checkpointed": sum(isinstance(m, CheckpointWrapper) for m in composer_model.modules()),
        "local_numel": local_numel,
        "full_numel": sum(p.numel() for p in reference.parameters()),
        "loss": [loss.item(), reference_loss.item()],
        "grad_names_equal": sorted(grads) == sorted(reference_grads),
        "worst_grad": max((grads[n] - reference_grads[n]).abs().max().item() for n in reference_grads),
        "largest_grad": max(g.abs().max().item() for g in reference_grads.values()),
        "decay": decay,
        "reference_decay": reference_decay,
    }
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    torch_dist.destroy_process_group()


def test_fsdp_wraps_each_layer_shards_and_matches_ddp_gradients(tmp_path):
    mp.spawn(_wrap_and_step, args=(_free_port(), tmp_path), nprocs=WORLD)
    for rank in range(WORLD):
        r = json.loads((tmp_path / f"rank{rank}.json").read_text())
        # One unit per encoder layer plus the root (embeddings, final norm, head and the tied decoder), and
        # an activation checkpoint around each layer: without our wrap policy composer makes one unit.
        assert r["units"] == LAYERS + 1 and r["checkpointed"] == LAYERS
        assert r["local_numel"] <= r["full_numel"] / WORLD + 64  # each rank holds its half (+ padding)
        assert abs(r["loss"][0] - r["loss"][1]) < 1e-5
        assert r["grad_names_equal"]
        assert r["worst_grad"] < 1e-6 and r["largest_grad"] > 1e-3
        # composer rebuilds the optimizer's groups after wrapping: norms keep no decay, matrices keep it.
        assert r["decay"] == r["reference_decay"]
        assert sorted(set(r["decay"].values())) == [0.0, 1e-5]
