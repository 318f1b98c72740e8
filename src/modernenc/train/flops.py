"""Model FLOPs of an MLM training step, for model-FLOPs utilisation (MFU).

    flops = 6 * N * T  +  12 * hidden * (query-key pairs)  +  6 * (hidden^2 + hidden * vocab) * P

`N` is the encoder's non-embedding parameter count and `T` the real (non-pad) tokens: 2 FLOPs per
parameter and token forward, 4 backward. The second term is attention's two matmuls (QK^T and AV, 2 * 2 *
hidden FLOPs per query-key pair forward, x3 with backward), summed over layers and over each packed
document of length `l`: `l * l` pairs on global layers, and on sliding-window layers the pairs within
`w = local_attention // 2` of each other, `l * (2w + 1) - w * (w + 1)` once `l > w`. The third is the
MLM head (dense + tied decoder), which sparse prediction runs on the `P` predicted tokens only. Padding
and recomputation are not counted (model FLOPs, not hardware FLOPs), as in PaLM's MFU (Chowdhery et al.
2022).

MFU = flops / step time / `logging.peak_flops` (FLOP/s of one device, since every rank measures its own
step). Dense bf16 peak of an H100 SXM is 989e12; for a CPU, measure the fp32 matmul rate, e.g.
`python -c "import torch,time; a=torch.randn(2048,2048); a@a; t=time.time(); [a@a for _ in range(10)];
print(10*2*2048**3/(time.time()-t))"`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from modernenc.model.config import IGNORE_INDEX, ModernEncoderConfig


def document_lengths(micro_batch: dict[str, Any]) -> list[int]:
    """Lengths of the real documents of a packed micro-batch (the padding tail segment is left out)."""
    cu = micro_batch["cu_seqlens"].tolist()
    return [b - a for a, b in zip(cu[:-1], cu[1:], strict=True)][: int(micro_batch["num_sequences"])]


def window_pairs(length: int, window: int) -> int:
    """Query-key pairs of one document under sliding-window attention of `window` tokens each side."""
    if length <= window:
        return length * length
    return length * (2 * window + 1) - window * (window + 1)  # the ends see fewer keys


def model_flops(
    config: ModernEncoderConfig, encoder_params: int, lengths: Sequence[int], predicted: int
) -> float:
    """Forward + backward FLOPs of MLM training on documents of `lengths` with `predicted` MLM labels;
    `encoder_params` is the encoder's non-embedding parameter count."""
    n_layers = config.num_hidden_layers
    n_global = sum(1 for i in range(n_layers) if config.is_global_layer(i))
    pairs = sum(
        n_global * n * n + (n_layers - n_global) * window_pairs(n, config.local_attention // 2)
        for n in lengths
    )
    d = config.hidden_size
    head = d * d + d * config.vocab_size
    return 6.0 * encoder_params * sum(lengths) + 12.0 * d * pairs + 6.0 * head * predicted


def training_flops(
    config: ModernEncoderConfig, encoder_params: int, micro_batches: Iterable[dict[str, Any]]
) -> float:
    """`model_flops` of packed MLM micro-batches (their `labels` mark the predicted tokens)."""
    lengths: list[int] = []
    predicted = 0
    for batch in micro_batches:
        lengths += document_lengths(batch)
        if batch.get("labels") is not None:
            predicted += int((batch["labels"] != IGNORE_INDEX).sum())
    return model_flops(config, encoder_params, lengths, predicted)
