"""Run composer's FSDP on CPU ranks (gloo), for tests only.

composer 0.32.1's FSDP path is otherwise plain torch FSDP, which supports CPU, except in three places
that assume CUDA. Each gets a CPU stand-in here; nothing else in composer or modernenc is changed:
- `FullyShardedDataParallel(device_id=torch.cuda.current_device())`: the units are built on the CPU;
- `torch.cuda.current_device()` itself is evaluated for that argument, so it must not raise;
- checkpoints gather the full state dict with `cpu_offload=True`, which on tensors already on the CPU
  frees memory FSDP still reads (a segfault): offloading is turned off, the tensors are on the CPU anyway.
"""

from __future__ import annotations

import os
import unittest.mock

import torch


def patch_composer_fsdp_for_cpu() -> None:
    """Call once in each rank's process, before composer wraps the model."""
    import composer.core.state as composer_state
    from composer.distributed import dist_strategy
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    unittest.mock.patch("torch.cuda.current_device", return_value=-1).start()
    fsdp = dist_strategy.FullyShardedDataParallel

    class CpuFullyShardedDataParallel(fsdp):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "device_id": torch.device("cpu")})

    dist_strategy.FullyShardedDataParallel = CpuFullyShardedDataParallel
    composer_state.StateDictOptions = lambda **kw: StateDictOptions(**{**kw, "cpu_offload": False})


def set_rank_environment(rank: int, world_size: int, port: int) -> None:
    """What `composer -n N` sets for each rank; composer's `dist` reads it."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_WORLD_SIZE=str(world_size),
        NODE_RANK="0",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
