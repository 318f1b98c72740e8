"""Whether this machine runs bf16 fast, so a slow precision choice gets a warning rather than a surprise.

CPUs without AVX512-BF16 or AMX emulate bf16 matmuls, which then run far slower than fp32: on the AVX2
hosts this project was developed on, about 6x for inference and 50x for a training step (see
docs/benchmarks.md). The result is still correct.
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)


def has_fast_bf16(device: torch.device | str) -> bool:
    """True where bf16 matmuls run on hardware units: AVX512-BF16 or AMX on CPU, Ampere or later on CUDA."""
    device = torch.device(device)
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return True


def warn_if_bf16_is_slow(device: torch.device | str) -> bool:
    """Log a warning (and return True) when bf16 on ``device`` is emulated; fp32 is then the faster choice."""
    if has_fast_bf16(device):
        return False
    logger.warning(
        "this %s has no bf16 matrix units (AVX512-BF16 or AMX): bf16 autocast will run several times "
        "slower than fp32 here; results stay correct",
        "CPU" if torch.device(device).type == "cpu" else "GPU",
    )
    return True
