"""Model FLOPs of a training step, for model-FLOPs utilisation (MFU).

    flops = 6 * N * T  +  12 * hidden * sum over layers and documents of  l * span(l)

`N` is the non-embedding parameter count and `T` the real (non-pad) tokens: 2 FLOPs per parameter and
token forward, 4 backward. The second term is attention's two matmuls (QK^T and AV, 2 * 2 * hidden FLOPs
per query-key pair forward, x3 with backward) over each packed document of length `l`: `span = l` on
global layers, `min(l, local_attention)` on sliding-window layers. Padding, the sparse MLM decoder and
recomputation are not counted (model FLOPs, not hardware FLOPs), as in PaLM's MFU (Chowdhery et al. 2022).

MFU = flops / step time / `logging.peak_flops` (FLOP/s of one device, since every rank measures its own
step). Dense bf16 peak of an H100 SXM is 989e12; for a CPU, measure the fp32 matmul rate, e.g.
`python -c "import torch,time; a=torch.randn(2048,2048); a@a; t=time.time(); [a@a for _ in range(10)];
print(10*2*2048**3/(time.time()-t))"`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from modernenc.model.config import ModernEncoderConfig


def document_lengths(micro_batch: dict[str, Any]) -> list[int]:
    """Lengths of the real documents of a packed micro-batch (the padding tail segment is left out)."""
    cu = micro_batch["cu_seqlens"].tolist()
    return [b - a for a, b in zip(cu[:-1], cu[1:], strict=True)][: int(micro_batch["num_sequences"])]


def training_flops(
    config: ModernEncoderConfig, non_embedding_params: int, micro_batches: Iterable[dict[str, Any]]
) -> float:
    """Model FLOPs (forward + backward) of training on `micro_batches`."""
    n_layers = config.num_hidden_layers
    n_global = sum(1 for i in range(n_layers) if config.is_global_layer(i))
    tokens = 0
    pairs = 0  # query-key pairs summed over layers
    for batch in micro_batches:
        for length in document_lengths(batch):
            tokens += length
            pairs += n_global * length * length
            pairs += (n_layers - n_global) * length * min(length, config.local_attention)
    return 6.0 * non_embedding_params * tokens + 12.0 * config.hidden_size * pairs
