"""The `flash` backend: flash-attn's varlen kernel over the packed tokens, on CUDA.

flash-attn is optional (`pip install 'modernenc[gpu]'`) and imported only when this backend runs.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable

import torch

from modernenc.model.attention_base import AttentionCache, PackedLayout

FLASH_NEEDS = (
    "attn_backend='flash' needs a CUDA device and the flash-attn package (pip install 'modernenc[gpu]'); "
    "use attn_backend='auto' to take the best backend the device has"
)


@functools.cache
def flash_attn_importable() -> bool:
    """Whether flash-attn imports here (installed, and built for this torch and CUDA)."""
    try:
        importlib.import_module("flash_attn")
    except ImportError:
        return False
    return True


class FlashAttention:
    """`flash_attn_varlen_func` on the packed tokens; local layers use its sliding window.

    `varlen_kernel` stands in for flash-attn's function (same signature), so the glue around it runs and is
    tested without a GPU; by default the real one is imported on first use and needs CUDA tensors.
    """

    def __init__(self, varlen_kernel: Callable[..., torch.Tensor] | None = None) -> None:
        self.varlen_kernel = varlen_kernel

    def __call__(
        self,
        qk: torch.Tensor,
        v: torch.Tensor,
        layout: PackedLayout,
        cache: AttentionCache,
        window: int | None = None,
        dropout_p: float = 0.0,
    ) -> torch.Tensor:
        kernel = self.varlen_kernel or _flash_attn_varlen_func(qk.device)
        dtype = v.dtype
        q, k = qk.unbind(1)
        if dtype not in (torch.float16, torch.bfloat16):  # the kernel takes half precision only
            q, k, v = (t.to(torch.bfloat16) for t in (q, k, v))
        out = kernel(
            q,
            k,
            v,
            cu_seqlens_q=layout.cu_seqlens,
            cu_seqlens_k=layout.cu_seqlens,
            max_seqlen_q=layout.max_seqlen,
            max_seqlen_k=layout.max_seqlen,
            dropout_p=dropout_p,
            window_size=(-1, -1) if window is None else (window, window),
        )
        return out.to(dtype)


def _flash_attn_varlen_func(device: torch.device) -> Callable[..., torch.Tensor]:
    if device.type != "cuda" or not flash_attn_importable():
        raise RuntimeError(FLASH_NEEDS)
    from flash_attn import flash_attn_varlen_func  # optional dependency: GPU only

    return flash_attn_varlen_func
