"""CPU inference throughput: modernenc vs `transformers` ModernBert (sdpa) on identical weights.

Both models run the bare encoder (hidden states out) under `torch.inference_mode()`. Runs alternate
between the two models so that the host's drifting speed hits both alike; throughputs are medians of
`--repeats` timed runs after one warm-up, and the ratio is the median of the per-repeat (paired) ratios,
which drift cancels out of. Only real (non-pad) tokens are counted.

    modernenc bench --shape base --repeats 5      (or python benchmarks/inference_cpu.py ... in a checkout)
"""
# `modernenc bench` runs this; its options are in `modernenc.cli.bench`.

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time

import numpy as np
import torch
from transformers import ModernBertConfig, ModernBertModel

from modernenc import ModernEncoderConfig, ModernEncoderModel

WORKLOADS = {
    # name: (batch size, length sampler) -- lengths as in ../shared/reference/cpu-baselines.md
    "ade": (64, lambda rng, n: np.clip(rng.normal(30, 15, n), 8, 128)),
    "doc": (16, lambda rng, n: np.clip(rng.normal(256, 64, n), 32, 512)),
    "fixed512": (8, lambda rng, n: np.full(n, 512)),
}


def make_batch(name: str, vocab: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    batch, sampler = WORKLOADS[name]
    lengths = sampler(rng, batch).astype(int)
    ids = torch.from_numpy(rng.integers(5, vocab - 100, size=(batch, lengths.max())))
    mask = torch.arange(lengths.max())[None, :] < torch.from_numpy(lengths)[:, None]
    return ids.masked_fill(~mask, 0), mask.long()


def build_models(shape: str):
    preset = ModernEncoderConfig.from_preset(shape)
    hf_cfg = ModernBertConfig(
        vocab_size=preset.vocab_size,
        hidden_size=preset.hidden_size,
        intermediate_size=preset.intermediate_size,
        num_hidden_layers=preset.num_hidden_layers,
        num_attention_heads=preset.num_attention_heads,
        local_attention=128,
        global_attn_every_n_layers=3,
        max_position_embeddings=8192,
        reference_compile=False,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    hf = ModernBertModel(hf_cfg).eval()
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = ModernEncoderModel.from_pretrained(tmp).eval()
    return hf, ours


def time_once(model, ids, mask, dtype) -> float:
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        start = time.perf_counter()
        model(input_ids=ids, attention_mask=mask)
        return time.perf_counter() - start


def run_benchmark(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    hf, ours = build_models(args.shape)
    print(f"shape={args.shape} threads={args.threads} repeats={args.repeats} torch={torch.__version__}")
    print(
        "| workload | dtype | real tokens | padded tokens | transformers real tok/s "
        "| modernenc real tok/s | ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in args.workloads:
        ids, mask = make_batch(name, hf.config.vocab_size)
        real = int(mask.sum())
        for dtype in args.dtypes:
            times = {"hf": [], "ours": []}
            for model in (hf, ours):  # warm-up
                time_once(model, ids, mask, dtype)
            for repeat in range(args.repeats):
                order = (("hf", hf), ("ours", ours)) if repeat % 2 == 0 else (("ours", ours), ("hf", hf))
                for key, model in order:  # alternate who goes first
                    times[key].append(time_once(model, ids, mask, dtype))
            hf_tps = real / statistics.median(times["hf"])
            our_tps = real / statistics.median(times["ours"])
            ratio = statistics.median(h / o for h, o in zip(times["hf"], times["ours"], strict=True))
            print(
                f"| {name} {tuple(ids.shape)} | {dtype} | {real} | {ids.numel()} | {hf_tps:,.0f} | "
                f"{our_tps:,.0f} | {ratio:.2f}x |",
                flush=True,
            )
