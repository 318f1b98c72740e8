"""Where the int8 model's time goes at the base shape, and what each way of cutting it buys.

Issue 19 asks for int8 at 1.5x ONNX Runtime int8 on length-sorted ADE batches. `modernenc bench
--gemm-floor` times the int8 GEMMs alone; this script measures everything else, in three sections:

1. `profile`: the int8 model on `ade-sorted` (512 sentences, batches of 64, longest first), op by op
   (`torch.profiler`), grouped by the block each op serves.
2. `kernels`: candidates at one layer of one batch (M packed tokens: the workload's mean per batch):
   - the share of each int8 GEMM spent quantizing its input;
   - oneDNN's int8 linear with the next op fused into it (GELU; the residual add) against the two apart;
   - GeGLU's `gelu(input) * gate` and residual add + LayerNorm, eager against `torch.compile` (inductor,
     `--compile`);
   - rotary as the model does it against one in-place complex multiply (which needs Wqkv's q and k rows
     interleaved per head);
   - attention's score matmul (64 sequences x 12 heads) in fp32 and in bf16, at lengths 20 to 64.
3. `model`: the whole int8 model as it is; with rotary as one complex multiply and GeGLU's multiply in
   place (timing only: the model's Wqkv rows are not interleaved, so its outputs are not the model's); and
   with two single-threaded workers taking alternate batches instead of one two-thread pool.

    python benchmarks/int8_headroom.py                      # all three sections, ~4 min on 2 cores
    python benchmarks/int8_headroom.py --sections kernels --compile
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import MethodType

import torch
import torch.nn.functional as F

from modernenc import ModernEncoderForSequenceClassification
from modernenc.cli.bench import positive_int
from modernenc.cli.bench_inference import Workload, ade_test_texts, ade_workload, save_random_classifier
from modernenc.model.layers import Attention, GeGLU
from modernenc.model.precision import int8_engine
from modernenc.pv.bundled_data import modernbert_tokenizer_dir

SECTIONS = ("profile", "kernels", "model")
# Profiler op -> the block it serves. `aten::mul` serves two: rotary's `x * cos` and GeGLU's gate.
OP_BLOCKS = {
    "quantized::linear_dynamic": "int8 GEMMs (input quantization included)",
    "aten::bmm": "attention: score and value matmuls",
    "aten::_softmax": "attention: softmax and masking",
    "aten::masked_fill_": "attention: softmax and masking",
    "aten::index_select": "attention: gathers into length buckets and back",
    "aten::cat": "attention: gathers into length buckets and back",
    "aten::addcmul_": "rotary",
    "aten::mul": "multiplies: rotary's x * cos, GeGLU's gate",
    "aten::gelu": "GELU",
    "aten::native_layer_norm": "LayerNorm",
    "aten::add": "residual adds",
}


def median_ms(call: Callable[[], object], number: int = 20, repeats: int = 5) -> float:
    """Median over `repeats` of the mean time of `number` calls, in ms, after two warm-up calls."""
    call(), call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            call()
        times.append((time.perf_counter() - start) / number)
    return statistics.median(times) * 1e3


def run_batches(model: torch.nn.Module, batches: list) -> None:
    with torch.inference_mode():
        for ids, mask in batches:
            model(input_ids=ids, attention_mask=mask)


# ---------------------------------------------------------------------------------------------------------
# 1. profile


def profile_section(model: torch.nn.Module, workload: Workload) -> None:
    from torch.profiler import ProfilerActivity, profile

    run_batches(model, workload.batches)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run_batches(model, workload.batches)
    seconds: dict[str, float] = {}
    for event in prof.key_averages():
        block = OP_BLOCKS.get(event.key, "everything else")
        seconds[block] = seconds.get(block, 0.0) + event.self_cpu_time_total / 1e6
    total = sum(seconds.values())
    print(f"\n## profile: int8 model, {workload.name}, {workload.real_tokens:,} real tokens\n")
    print("| block | s | share |\n|---|---|---|")
    for block, s in sorted(seconds.items(), key=lambda item: -item[1]):
        print(f"| {block} | {s:.2f} | {s / total:.1%} |")
    print(f"| all (profiled) | {total:.2f} | 100% |")


# ---------------------------------------------------------------------------------------------------------
# 2. kernels


def quantized_weight(out_features: int, in_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    weight = torch.randn(out_features, in_features) * 0.05
    scales = weight.abs().amax(1) / 127
    zeros = torch.zeros(out_features, dtype=torch.long)
    return torch.quantize_per_channel(weight, scales.double(), zeros, 0, torch.qint8), scales


def gemm_row(name: str, in_features: int, out_features: int, tokens: int) -> str:
    """One GEMM of a layer: the dynamic int8 linear, its input quantization alone, and oneDNN's fused
    post-ops (GELU, residual add) against the separate op."""
    x, residual = torch.randn(tokens, in_features), torch.randn(tokens, out_features)
    qweight, scales = quantized_weight(out_features, in_features)
    packed = torch.ops.quantized.linear_prepack(qweight, None)
    onednn_weight = torch.ops.onednn.qlinear_prepack(qweight.int_repr(), [tokens, in_features])
    zeros = torch.zeros(out_features, dtype=torch.long)

    def linear() -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic(x, packed, reduce_range=False)

    def quantize_input() -> tuple[torch.Tensor, float, int]:
        qx = torch.quantize_per_tensor_dynamic(x, torch.quint8, False)
        return qx.int_repr(), qx.q_scale(), qx.q_zero_point()

    def fused_gelu() -> torch.Tensor:
        qx, scale, zero = quantize_input()
        return torch.ops.onednn.qlinear_pointwise(
            qx, scale, zero, onednn_weight, scales, zeros, None, 1.0, 0, torch.float32, "gelu", [], "none"
        )

    def fused_add() -> torch.Tensor:
        qx, scale, zero = quantize_input()
        return torch.ops.onednn.qlinear_pointwise.binary(
            qx, scale, zero, onednn_weight, scales, zeros, residual, None, 1.0, 0, torch.float32,
            1.0, 0, "add", 1.0, "none", [], "",
        )  # fmt: skip

    linear_ms, quantize_ms = median_ms(linear), median_ms(quantize_input)
    cells = [
        f"{name} {in_features}x{out_features}",
        f"{linear_ms:.2f}",
        f"{quantize_ms:.2f} ({quantize_ms / linear_ms:.0%})",
        f"{median_ms(fused_gelu):.2f}",
        f"{median_ms(lambda: F.gelu(linear())):.2f}",
        f"{median_ms(fused_add):.2f}",
        f"{median_ms(lambda: linear() + residual):.2f}",
    ]
    return "| " + " | ".join(cells) + " |"


def geglu(projected: torch.Tensor) -> torch.Tensor:
    inp, gate = projected.chunk(2, dim=-1)
    return F.gelu(inp) * gate


def add_norm(
    x: torch.Tensor, update: torch.Tensor, weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    x = x + update
    return x, F.layer_norm(x, weight.shape, weight, None, 1e-5)


def rotary_rows(tokens: int, heads: int = 12, dim: int = 64) -> list[str]:
    from modernenc.model.layers import apply_rotary

    qkv = torch.randn(tokens, 3, heads, dim)
    angles = torch.randint(0, 64, (tokens, 1)).float() * (1e-4 ** (torch.arange(0, dim, 2) / dim))
    cos, sin = torch.cat((angles.cos(), angles.cos()), -1)[:, None, None], angles.sin()[:, None, None]
    rotation = torch.polar(torch.ones_like(angles), angles)[:, None, None]

    def complex_in_place() -> None:
        torch.view_as_complex(qkv.view(tokens, 3, heads, dim // 2, 2)[:, :2]).mul_(rotation)

    as_is = median_ms(lambda: apply_rotary(qkv[:, :2], cos, sin))
    return [
        f"| rotary of q and k: x * cos + rotate_half(x) * sin | {as_is:.2f} |",
        f"| rotary of q and k: one in-place complex multiply | {median_ms(complex_in_place):.2f} |",
    ]


def kernels_section(tokens: int, compile_blocks: bool) -> None:
    print(f"\n## kernels: one layer of one batch, M = {tokens} packed tokens (ms, median)\n")
    print("| GEMM | int8 linear | its input quantization | with fused GELU | linear, then GELU | "
          "with fused residual add | linear, then add |\n|---|---|---|---|---|---|---|")  # fmt: skip
    shapes = {"Wqkv": (768, 2304), "attention Wo": (768, 768), "Wi": (768, 2304), "MLP Wo": (1152, 768)}
    for name, (in_features, out_features) in shapes.items():
        print(gemm_row(name, in_features, out_features, tokens))

    print("\n| block | ms |\n|---|---|")
    projected, x, update, weight = (torch.randn(tokens, 2304), torch.randn(tokens, 768),
                                    torch.randn(tokens, 768), torch.ones(768))  # fmt: skip
    print(f"| GeGLU gelu(input) * gate, eager | {median_ms(lambda: geglu(projected)):.2f} |")
    print(f"| residual add + LayerNorm, eager | {median_ms(lambda: add_norm(x, update, weight)):.2f} |")
    if compile_blocks:
        start = time.perf_counter()
        compiled_geglu = torch.compile(geglu, dynamic=True)
        compiled_add_norm = torch.compile(add_norm, dynamic=True)
        compiled_geglu(projected), compiled_add_norm(x, update, weight)
        seconds = time.perf_counter() - start
        geglu_ms = median_ms(lambda: compiled_geglu(projected))
        add_norm_ms = median_ms(lambda: compiled_add_norm(x, update, weight))
        print(f"| GeGLU, torch.compile (inductor) | {geglu_ms:.2f} |")
        print(f"| residual add + LayerNorm, torch.compile | {add_norm_ms:.2f} |")
        print(f"| (compiling the two, cold cache: {seconds:.1f} s) | |")
    with torch.inference_mode():
        print("\n".join(rotary_rows(tokens)))

    print("\n| attention scores q @ k^T, 64 sequences x 12 heads x length L | fp32 ms | bf16 ms | speed-up |")
    print("|---|---|---|---|")
    for length in (20, 30, 45, 64):
        q, k = torch.randn(64 * 12, length, 64), torch.randn(64 * 12, length, 64)
        q16, k16 = q.bfloat16(), k.bfloat16()
        fp32 = median_ms(lambda q=q, k=k: torch.bmm(q, k.transpose(1, 2)))
        bf16 = median_ms(lambda q=q16, k=k16: torch.bmm(q, k.transpose(1, 2)))
        print(f"| L = {length} | {fp32:.2f} | {bf16:.2f} | {fp32 / bf16:.1f}x |")


# ---------------------------------------------------------------------------------------------------------
# 3. model


def complex_rotary_forward(self: Attention, x, layout, cache, rotary) -> torch.Tensor:
    """Attention with rotary as one in-place complex multiply (timing only: see the module docstring)."""
    qkv = self.Wqkv(x).view(-1, 3, self.num_heads, self.head_dim)
    cos, sin = rotary
    half = self.head_dim // 2
    rotation = cache.get(("complex rotary", self.is_global), lambda: torch.complex(cos[..., :half], sin))
    torch.view_as_complex(qkv.view(-1, 3, self.num_heads, half, 2)[:, :2]).mul_(rotation)
    out = self.backend(qkv[:, :2], qkv[:, 2], layout, cache, window=self.window)
    return self.Wo(out.reshape(x.shape[0], self.num_heads * self.head_dim))


def in_place_geglu_forward(self: GeGLU, x: torch.Tensor) -> torch.Tensor:
    inp, gate = self.Wi(x).chunk(2, dim=-1)
    return self.Wo(F.gelu(inp).mul_(gate))


def patched(model: torch.nn.Module, on: bool) -> None:
    for module in model.modules():
        if isinstance(module, Attention | GeGLU):
            if on:
                fast = complex_rotary_forward if isinstance(module, Attention) else in_place_geglu_forward
                module.forward = MethodType(fast, module)
            else:
                module.__dict__.pop("forward", None)


def model_section(model: torch.nn.Module, workload: Workload, threads: int, repeats: int) -> None:
    def as_is() -> None:
        patched(model, False)
        torch.set_num_threads(threads)
        run_batches(model, workload.batches)

    def fused_by_hand() -> None:
        patched(model, True)
        torch.set_num_threads(threads)
        run_batches(model, workload.batches)

    def single_thread_workers() -> None:
        patched(model, False)
        torch.set_num_threads(1)
        workers = [threading.Thread(target=run_batches, args=(model, workload.batches[i::threads]))
                   for i in range(threads)]  # fmt: skip
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    variants = {
        "int8 model as it is": as_is,
        "rotary as one complex multiply, GeGLU multiply in place": fused_by_hand,
        f"{threads} single-threaded workers, alternate batches": single_thread_workers,
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for run in variants.values():
        run()  # warm-up
    for repeat in range(repeats):
        names = list(variants)[repeat % len(variants) :] + list(variants)[: repeat % len(variants)]
        for name in names:
            start = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - start)
    patched(model, False)
    torch.set_num_threads(threads)
    base = statistics.median(times["int8 model as it is"])
    print(f"\n## model: {workload.name}, {repeats} runs each in rotating order\n")
    print("| variant | real tok/s | against as it is | runs (s) |\n|---|---|---|---|")
    for name, runs in times.items():
        median = statistics.median(runs)
        print(f"| {name} | {workload.real_tokens / median:,.0f} | {base / median:.2f}x | "
              f"{' '.join(f'{t:.2f}' for t in runs)} |")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--threads", type=positive_int, default=2)
    p.add_argument("--repeats", type=positive_int, default=5, help="whole-model runs per variant")
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd GeGLU and add + norm")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if "onednn" not in torch.backends.quantized.supported_engines:
        raise SystemExit("error: this torch has no oneDNN quantized engine, which the kernel section times")
    torch.backends.quantized.engine = "onednn"  # the kernel rows use oneDNN, as int8 does on VNNI CPUs

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_random_classifier("base", folder, modernbert_tokenizer_dir())
        model = ModernEncoderForSequenceClassification.from_pretrained(folder).for_inference("int8")
        workload = ade_workload("ade-sorted", ade_test_texts(None, 512), model.config, folder)
    print(f"int8 kernel: {int8_engine()}, {args.threads} threads, torch {torch.__version__}")
    if "profile" in args.sections:
        profile_section(model, workload)
    if "kernels" in args.sections:
        kernels_section(round(workload.real_tokens / len(workload.batches)), args.compile)
    if "model" in args.sections:
        model_section(model, workload, args.threads, args.repeats)


if __name__ == "__main__":
    main()
