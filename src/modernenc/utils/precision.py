"""Inference precisions, and whether this machine runs them fast, so a slow choice gets a warning rather
than a surprise.

CPUs without AVX512-BF16 or AMX emulate bf16 matmuls, which then run far slower than fp32: on the AVX2
hosts this project was developed on, about 6x for inference and 50x for a training step (see
docs/benchmarks.md). CPUs without VNNI run int8 matmuls through 16-bit intermediate sums, which saturate
unless activations keep 7 bits of their 8 (torch's `reduce_range`): slower and a little less accurate.
Results stay correct in both cases.

torch is imported inside the functions: the command line reads `PRECISIONS` without loading it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# The inference variants of a model (`modernenc.model.precision.for_inference`, `predict --dtype`).
PRECISIONS = ("fp32", "bf16", "int8")


def has_fast_bf16(device: torch.device | str) -> bool:
    """True where bf16 matmuls run on hardware units: AVX512-BF16 or AMX on CPU, Ampere or later on CUDA."""
    import torch

    device = torch.device(device)
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return True


def has_vnni() -> bool:
    """True where the CPU multiplies uint8 by int8 into 32-bit sums in one instruction (AVX512-VNNI or
    AVX-VNNI), so int8 matmuls need no 16-bit intermediate and activations may use all 8 bits."""
    import torch

    return torch.cpu._is_vnni_supported()


def warn_if_bf16_is_slow(device: torch.device | str) -> bool:
    """Log a warning (and return True) when bf16 on ``device`` is emulated; fp32 is then the faster choice."""
    import torch

    if has_fast_bf16(device):
        return False
    logger.warning(
        "this %s has no bf16 matrix units (AVX512-BF16 or AMX): bf16 autocast will run several times "
        "slower than fp32 here; results stay correct",
        "CPU" if torch.device(device).type == "cpu" else "GPU",
    )
    return True


def warn_if_int8_is_slow() -> bool:
    """Log a warning (and return True) when the CPU lacks VNNI, so int8 matmuls take the slower path."""
    if has_vnni():
        return False
    logger.warning(
        "this CPU has no VNNI (AVX512-VNNI or AVX-VNNI): int8 matmuls run without it, with activations "
        "quantized to 7 bits to avoid overflow; slower and slightly less accurate than on a VNNI CPU, and "
        "the thresholds calibrated for int8 elsewhere may not carry over; results stay correct"
    )
    return True
