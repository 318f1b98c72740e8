"""CPU MLM pre-training throughput: modernenc's packed path vs `transformers` ModernBertForMaskedLM.

Both train the same weights on the same 16 documents (lengths N(256, 64), 30% masked) with the same
optimizer (StableAdamW, lr 1e-4) and the same global batch:
- reference: `ModernBertForMaskedLM` (sdpa) on the padded batch in a plain PyTorch loop, dense logits
  (its default), and again with its `sparse_prediction=True`;
- modernenc: packed tokens (`cu_seqlens`), no padding anywhere, sparse prediction.
Steps alternate between the models in blocks so drift hits all alike; the median s/step is reported.
MFU is model FLOPs per second over the machine's matmul peak, measured in the same run.

    python benchmarks/pretrain_cpu.py --shape mini --steps 5 --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time

import numpy as np
import torch
from optimi import StableAdamW
from transformers import ModernBertConfig, ModernBertForMaskedLM

from modernenc import ModernEncoderConfig, ModernEncoderForMaskedLM
from modernenc.train.flops import model_flops

MASK_ID = 50284


RUNS = {
    "dense": "transformers dense logits (padded)",
    "sparse": "transformers sparse_prediction (padded)",
    "modernenc": "modernenc packed + sparse",
}


def make_batch(seed: int = 0, batch: int = 16, vocab: int = 50368):
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.normal(256, 64, batch), 32, 512).astype(int)
    ids = torch.from_numpy(rng.integers(5, vocab - 100, size=(batch, lengths.max())))
    mask = torch.arange(lengths.max())[None, :] < torch.from_numpy(lengths)[:, None]
    chosen = (torch.from_numpy(rng.random(ids.shape)) < 0.3) & mask
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    inputs = torch.where(chosen, torch.full_like(ids, MASK_ID), ids).masked_fill(~mask, 0)
    return inputs, mask.long(), labels, lengths


def matmul_peak(dtype: torch.dtype, n: int = 2048, runs: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", default="mini")
    parser.add_argument("--steps", type=int, default=5, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks per model")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--runs", nargs="+", default=list(RUNS), choices=list(RUNS),
        help="which runs to time (default all; bf16 on a CPU without bf16 units is very slow)",
    )  # fmt: skip
    parser.add_argument("--peak-size", type=int, default=2048, help="n of the n x n matmul peak")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    cfg = ModernEncoderConfig.from_preset(args.shape)
    hf_cfg = ModernBertConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        max_position_embeddings=1024, reference_compile=False, attn_implementation="sdpa",
    )  # fmt: skip
    torch.manual_seed(0)
    hf_dense = ModernBertForMaskedLM(hf_cfg)
    with tempfile.TemporaryDirectory() as tmp:
        hf_dense.save_pretrained(tmp)
        hf_sparse = ModernBertForMaskedLM.from_pretrained(
            tmp, sparse_prediction=True, attn_implementation="sdpa"
        )
        ours = ModernEncoderForMaskedLM.from_pretrained(tmp, sparse_prediction=True)

    inputs, mask, labels, lengths = make_batch()
    real = mask.bool()
    cu_seqlens = torch.tensor([0, *np.cumsum(lengths)], dtype=torch.int32)
    packed = dict(
        input_ids=inputs[real], labels=labels[real], cu_seqlens=cu_seqlens, max_seqlen=int(lengths.max())
    )
    padded = dict(input_ids=inputs, attention_mask=mask, labels=labels)
    runs = {
        RUNS["dense"]: (hf_dense, padded),
        RUNS["sparse"]: (hf_sparse, padded),
        RUNS["modernenc"]: (ours, packed),
    }
    runs = {RUNS[key]: runs[RUNS[key]] for key in args.runs}
    optimizers = {
        name: StableAdamW(model.parameters(), lr=1e-4, triton=False) for name, (model, _) in runs.items()
    }
    autocast = (
        torch.autocast("cpu", dtype=torch.bfloat16) if args.dtype == "bf16" else contextlib.nullcontext()
    )

    def step(name: str) -> float:
        model, batch = runs[name]
        start = time.perf_counter()
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        optimizers[name].step()
        optimizers[name].zero_grad()
        return time.perf_counter() - start

    for name in runs:  # warm-up
        step(name)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name in runs:
            times[name] += [step(name) for _ in range(args.steps)]
    peak = matmul_peak(torch.bfloat16 if args.dtype == "bf16" else torch.float32, n=args.peak_size)

    tokens, masked = int(lengths.sum()), int(real.logical_and(labels != -100).sum())
    flops = model_flops(cfg, ours.model.num_parameters(exclude_embeddings=True), lengths.tolist(), masked)
    print(
        f"shape={args.shape} dtype={args.dtype} threads={args.threads} steps={args.steps}x{args.repeats} "
        f"batch=16 docs, {tokens} real / {inputs.numel()} padded tokens, {masked} masked"
    )
    print(
        f"matmul peak ({args.dtype}, {args.peak_size}^2): {peak / 1e9:.1f} GFLOP/s; "
        f"model FLOPs/step {flops / 1e9:.1f} G"
    )
    print("| run | median s/step | real tok/s | ratio vs dense | MFU |")
    print("|---|---|---|---|---|")
    base = statistics.median(times[RUNS["dense"]]) if RUNS["dense"] in times else None
    for name, ts in times.items():
        med = statistics.median(ts)
        ratio = f"{base / med:.2f}x" if base else "-"
        print(f"| {name} | {med:.3f} | {tokens / med:,.0f} | {ratio} | {flops / med / peak:.1%} |")


if __name__ == "__main__":
    main()
