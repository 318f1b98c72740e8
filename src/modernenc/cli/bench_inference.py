"""CPU inference throughput of a classifier: modernenc (fp32, bf16, int8) against `transformers` and ONNX
Runtime (fp32, dynamic int8), on identical random weights.

One ModernBERT sequence classifier (mean pooling, 2 labels) is built at the chosen shape with a fixed seed
and saved as a `transformers` folder; every engine runs those weights:

- `transformers` ModernBertForSequenceClassification (sdpa), fp32 and bf16 autocast;
- modernenc's classifier loaded from the folder, as `for_inference("fp32" | "bf16" | "int8")`;
- ONNX Runtime on `modernenc export-onnx`'s graphs (fp32, and `quantize_dynamic` int8), ORT_ENABLE_ALL.

Every engine gets the same right-padded batches (modernenc unpads them inside, as its predict packs them)
under `torch.inference_mode()`; tokenization is not timed. Workloads:

- `ade-file`, `ade-sorted`: the first `--ade-texts` sentences of the ADE test split (the published
  balanced split, seed 42, as `modernenc prepare-ade` writes it), tokenized with ModernBERT's tokenizer,
  in batches of 64, in file order or longest first (what a careful user, and `predict`, does);
- `doc`: 16 random-id documents, lengths N(256, 64); `fixed512`: 8 x 512; `ade`: one batch of 64
  random-id sentences, lengths N(30, 15) (the lengths of ../shared/reference/cpu-baselines.md).

A run is one pass over a workload's batches. Runs alternate between engines (the order rotates), so the
host's drifting speed hits all alike; after a warm-up pass each engine's time is the median of
`--repeats` runs, and its ratio to ONNX Runtime int8 is the median of the per-run (paired) ratios, which
drift cancels out of. Only real (non-pad) tokens are counted. The logit difference is the largest over
the workload, against `transformers` fp32. GFLOP/s are forward model FLOPs of the real tokens
(`modernenc.train.flops`, attention pairs included) per second, and "of peak" divides them by the matmul
peak of the engine's precision, measured in the same process before and after (the higher kept): fp32
and bf16 `torch.mm` at 2048^2, int8 the dynamic int8 linear modernenc uses (input quantization included)
at 2048^2, per quantized engine. With `--gemm-floor`, rows for the int8 variant's GEMMs alone
(`gemm_floor_engine`) bound what any int8 engine on torch's kernel can reach.

    modernenc bench --shape base --repeats 5      (or python benchmarks/inference_cpu.py ... in a checkout)
"""
# `modernenc bench` runs this; its options are in `modernenc.cli.bench`.

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from modernenc.model.precision import int8_engine

BATCH_SIZE = 64
PEAK_SIZE = 2048
SYNTHETIC = {
    # name: (batch size, length sampler) -- lengths as in ../shared/reference/cpu-baselines.md
    "ade": (64, lambda rng, n: np.clip(rng.normal(30, 15, n), 8, 128)),
    "doc": (16, lambda rng, n: np.clip(rng.normal(256, 64, n), 32, 512)),
    "fixed512": (8, lambda rng, n: np.full(n, 512)),
}
# (engine, precision) pairs that exist; `--engines` and `--dtypes` choose among them.
VARIANTS = [
    ("transformers", "fp32"),
    ("transformers", "bf16"),
    ("modernenc", "fp32"),
    ("modernenc", "bf16"),
    ("modernenc", "int8"),
    ("onnxruntime", "fp32"),
    ("onnxruntime", "int8"),
]
ANCHOR = "onnxruntime int8"
REFERENCE = "transformers fp32"


@dataclass
class Workload:
    name: str
    batches: list[tuple[torch.Tensor, torch.Tensor]]  # right-padded int64 ids and mask
    lengths: list[int]  # real tokens per sequence, all batches

    @property
    def real_tokens(self) -> int:
        return sum(self.lengths)

    @property
    def padded_tokens(self) -> int:
        return sum(ids.numel() for ids, _ in self.batches)


@dataclass
class Engine:
    name: str
    precision: str
    forward: Callable[[torch.Tensor, torch.Tensor], np.ndarray]  # padded batch -> logits
    times: list[float] = field(default_factory=list)
    floor: bool = False  # a bound, not a model: its "logits" are placeholders

    def run(self, workload: Workload) -> tuple[float, np.ndarray]:
        start = time.perf_counter()
        logits = [self.forward(ids, mask) for ids, mask in workload.batches]
        return time.perf_counter() - start, np.concatenate(logits)


# ---------------------------------------------------------------------------------------------------------
# workloads


def _pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(map(len, sequences))
    ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    return ids, mask


def ade_test_texts(split_file: Path | None, count: int) -> list[str]:
    """The first `count` texts of the ADE test split: `split_file`, else built from the shared corpus."""
    from modernenc.pv.ade_data import load_ade_sentences, make_splits, read_jsonl
    from modernenc.pv.bundled_data import shared_data_dir

    if split_file is not None:
        rows = read_jsonl(split_file)
    else:
        rows = make_splits(*load_ade_sentences(shared_data_dir() / "ade_corpus_v2"), seed=42)["test"]
    return [r["text"] for r in rows[:count]]


def ade_workload(name: str, texts: list[str], config, tokenizer_dir: Path) -> Workload:
    from modernenc.data.masking import load_tokenizer
    from modernenc.tasks.classification_data import length_sorted_batches, tokenize_texts

    tokenizer = load_tokenizer(tokenizer_dir / "tokenizer.json")
    ids, _ = tokenize_texts(tokenizer, texts, 512, config.cls_token_id, config.sep_token_id)
    if name == "ade-sorted":
        order = length_sorted_batches([len(x) for x in ids], BATCH_SIZE)
    else:
        order = [list(range(i, min(i + BATCH_SIZE, len(ids)))) for i in range(0, len(ids), BATCH_SIZE)]
    batches = [_pad([ids[i] for i in chunk], config.pad_token_id) for chunk in order]
    return Workload(name, batches, [len(ids[i]) for chunk in order for i in chunk])


def synthetic_workload(name: str, vocab_size: int, pad_id: int, seed: int = 0) -> Workload:
    rng = np.random.default_rng(seed)
    batch, sampler = SYNTHETIC[name]
    lengths = sampler(rng, batch).astype(int).tolist()
    sequences = [rng.integers(5, vocab_size - 100, size=n).tolist() for n in lengths]
    return Workload(name, [_pad(sequences, pad_id)], lengths)


# ---------------------------------------------------------------------------------------------------------
# engines


def save_random_classifier(shape: str, folder: Path, tokenizer_dir: Path) -> None:
    """A random-weight `transformers` ModernBERT classifier of `shape`, with the tokenizer, in `folder`."""
    from transformers import ModernBertConfig, ModernBertForSequenceClassification

    from modernenc import ModernEncoderConfig
    from modernenc.model.hf_interop import find_tokenizer_files

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
        pad_token_id=preset.pad_token_id,
        cls_token_id=preset.cls_token_id,
        sep_token_id=preset.sep_token_id,
        bos_token_id=preset.cls_token_id,
        eos_token_id=preset.sep_token_id,
        classifier_pooling="mean",
        num_labels=2,
        reference_compile=False,
    )
    torch.manual_seed(0)
    ModernBertForSequenceClassification(hf_cfg).save_pretrained(folder)
    for file in find_tokenizer_files(tokenizer_dir):
        shutil.copyfile(file, folder / file.name)


def torch_engine(name: str, precision: str, model: torch.nn.Module, autocast: bool = False) -> Engine:
    def forward(ids: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return model(input_ids=ids, attention_mask=mask).logits.float().numpy()

    return Engine(name, precision, forward)


def ort_engine(name: str, precision: str, path: Path, threads: int) -> Engine:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(ids: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
        return session.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]

    return Engine(name, precision, forward)


def gemm_floor_engine(folder: Path, quantized_engine: str) -> Engine:
    """The int8 variant's encoder GEMMs alone, on each batch's real tokens, packed for `quantized_engine`.

    Every `Wqkv`, attention `Wo`, `Wi` and MLP `Wo` of every layer runs once on an `[M, in]` input, M the
    batch's real tokens (what the unpadded int8 model multiplies), with nothing between them: norms,
    rotary, attention, activations and the head cost nothing here. No engine built on torch's dynamic
    int8 kernel can beat this time at these shapes, so it bounds what the int8 variant can reach.
    """
    from modernenc import ModernEncoderForSequenceClassification
    from modernenc.model.precision import Int8Linear, _quantized_engine, int8_activation_bits

    model = ModernEncoderForSequenceClassification.from_pretrained(folder)
    reduce_range = int8_activation_bits() < 8
    with _quantized_engine(quantized_engine):
        layers = [
            Int8Linear(module, reduce_range)
            for name, module in model.model.named_modules()
            if isinstance(module, torch.nn.Linear) and name.startswith("layers.")
        ]
    widths = sorted({layer.in_features for layer in layers})
    inputs: dict[int, dict[int, torch.Tensor]] = {}  # made on the warm-up pass, outside the timed runs

    def forward(ids: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
        tokens = int(mask.sum())
        if tokens not in inputs:
            inputs[tokens] = {width: torch.randn(tokens, width) for width in widths}
        with torch.inference_mode():
            for layer in layers:
                layer(inputs[tokens][layer.in_features])
        return np.zeros((ids.shape[0], model.config.num_labels), dtype=np.float32)

    name = f"modernenc int8 GEMMs alone ({quantized_engine}): a floor"
    return Engine(name, "int8", forward, floor=True)


def build_engines(folder: Path, wanted: list[tuple[str, str]], threads: int) -> list[Engine]:
    from transformers import ModernBertForSequenceClassification

    from modernenc import ModernEncoderForSequenceClassification
    from modernenc.tasks.onnx_export import INT8_FILE, ONNX_FILE, export_onnx

    engines = []
    for engine, precision in wanted:
        name = f"{engine} {precision}"
        if engine == "transformers":
            model = ModernBertForSequenceClassification.from_pretrained(folder, attn_implementation="sdpa")
            engines.append(torch_engine(name, precision, model.eval(), autocast=precision == "bf16"))
        elif engine == "modernenc":
            model = ModernEncoderForSequenceClassification.from_pretrained(folder).for_inference(precision)
            engines.append(torch_engine(name, precision, model))
        else:
            onnx_dir = folder.with_name(f"{folder.name}-onnx")  # beside the model: export-onnx refuses inside
            if not onnx_dir.is_dir():
                print("exporting the ONNX graphs (not timed) ...", flush=True)
                export_onnx(folder, onnx_dir, int8=True)
            path = onnx_dir / (ONNX_FILE if precision == "fp32" else INT8_FILE)
            engines.append(ort_engine(name, precision, path, threads))
    return engines


# ---------------------------------------------------------------------------------------------------------
# matmul peaks


def _median_rate(flops: float, call: Callable[[], object], repeats: int = 5) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return flops / statistics.median(times) / 1e9


def measure_peaks(n: int = PEAK_SIZE) -> dict[str, float]:
    """GFLOP/s (GOP/s for int8) of an n x n x n matmul: fp32 and bf16 torch.mm, and the dynamic int8
    linear layer modernenc's int8 variant uses, packed by each quantized engine torch offers here."""
    from modernenc.model.precision import Int8Linear, _quantized_engine, int8_activation_bits

    flops = 2.0 * n**3
    a = torch.randn(n, n)
    a16 = a.bfloat16()
    peaks = {
        "fp32": _median_rate(flops, lambda: torch.mm(a, a)),
        "bf16": _median_rate(flops, lambda: torch.mm(a16, a16)),
    }
    linear = torch.nn.Linear(n, n, bias=False)
    reduce_range = int8_activation_bits() < 8
    for engine in ("x86", "fbgemm", "onednn"):
        if engine in torch.backends.quantized.supported_engines:
            with _quantized_engine(engine):
                layer = Int8Linear(linear, reduce_range)
            peaks[f"int8 ({engine})"] = _median_rate(flops, lambda layer=layer: layer(a))
    return peaks


# ---------------------------------------------------------------------------------------------------------
# the benchmark


def _forward_flops(config, non_embedding_params: int, lengths: list[int]) -> float:
    from modernenc.train.flops import model_flops

    return model_flops(config, non_embedding_params, lengths, predicted=0) / 3  # forward: 1 of 3 passes


def time_workload(engines: list[Engine], workload: Workload, repeats: int) -> dict[str, list[float]]:
    """Warm up every engine (keeping its logits), then `repeats` timed runs in rotating order."""
    logits = {engine.name: engine.run(workload)[1] for engine in engines}
    times: dict[str, list[float]] = {engine.name: [] for engine in engines}
    for repeat in range(repeats):
        shift = repeat % len(engines)
        for engine in engines[shift:] + engines[:shift]:
            times[engine.name].append(engine.run(workload)[0])
    return {"logits": logits, "times": times}


def report_workload(
    workload: Workload, engines: list[Engine], measured: dict, flops: float, peaks: dict[str, float]
) -> str:
    logits, times = measured["logits"], measured["times"]
    reference = REFERENCE if REFERENCE in times else engines[0].name
    lines = [
        f"{workload.name}: {len(workload.lengths)} sequences in {len(workload.batches)} batches, "
        f"{workload.real_tokens} real / {workload.padded_tokens} padded tokens; logit difference vs "
        f"{reference}",
        "",
        f"| engine | real tok/s | ratio to {ANCHOR} | max abs logit diff | GFLOP/s | of its peak "
        "| runs (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for engine in engines:
        seconds = statistics.median(times[engine.name])
        ratio = "-"
        if ANCHOR in times:
            pairs = zip(times[ANCHOR], times[engine.name], strict=True)
            ratio = f"{statistics.median(a / b for a, b in pairs):.2f}x"
        diff = float(np.abs(logits[engine.name] - logits[reference]).max())
        rate = flops / seconds / 1e9
        runs = " ".join(f"{t:.2f}" for t in times[engine.name])
        lines.append(
            f"| {engine.name} | {workload.real_tokens / seconds:,.0f} | {ratio} | "
            f"{'-' if engine.floor else f'{diff:.2g}'} | {rate:,.0f} | "
            f"{rate / _peak_for(engine.precision, peaks):.0%} | {runs} |"
        )
    return "\n".join(lines)


def _peak_for(precision: str, peaks: dict[str, float]) -> float:
    if precision == "int8":
        return max(v for k, v in peaks.items() if k.startswith("int8"))
    return peaks[precision]


def _check_onnx_runtime(wanted: list[tuple[str, str]]) -> None:
    if any(engine == "onnxruntime" for engine, _ in wanted):
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError:
            raise RuntimeError(
                "the onnxruntime engines need onnx and onnxruntime: pip install 'modernenc[onnx]' (or leave "
                "onnxruntime out of --engines)"
            ) from None


def run_benchmark(args: argparse.Namespace) -> None:
    from modernenc import ModernEncoderForSequenceClassification
    from modernenc.pv.bundled_data import modernbert_tokenizer_dir

    wanted = [(e, p) for e, p in VARIANTS if e in args.engines and p in args.dtypes]
    if not wanted:
        raise ValueError(f"no engine runs {args.dtypes} among {args.engines}; see --help for the pairs")
    _check_onnx_runtime(wanted)
    torch.set_num_threads(args.threads)
    tokenizer_dir = modernbert_tokenizer_dir()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "classifier"
        print(f"building a random {args.shape} classifier and its engines (not timed) ...", flush=True)
        save_random_classifier(args.shape, folder, tokenizer_dir)
        engines = build_engines(folder, wanted, args.threads)
        if args.gemm_floor:
            engines += [
                gemm_floor_engine(folder, engine)
                for engine in ("x86", "onednn")
                if engine in torch.backends.quantized.supported_engines
            ]
        config = ModernEncoderForSequenceClassification.from_pretrained(folder).config
        params = _non_embedding_params(folder)
        real_texts = any(name.startswith("ade-") for name in args.workloads)
        texts = ade_test_texts(args.ade_split, args.ade_texts) if real_texts else []
        before = measure_peaks()
        results = []
        for name in args.workloads:
            start = time.perf_counter()
            workload = (
                ade_workload(name, texts, config, tokenizer_dir)
                if name.startswith("ade-")
                else synthetic_workload(name, config.vocab_size, config.pad_token_id)
            )
            results.append((workload, time_workload(engines, workload, args.repeats)))
            print(f"{name}: measured in {time.perf_counter() - start:.0f} s", flush=True)
        after = measure_peaks()
    peaks = {k: max(v, after[k]) for k, v in before.items()}  # the host drifts: the higher is the peak
    print(
        f"\nshape={args.shape} threads={args.threads} repeats={args.repeats} torch={torch.__version__} "
        f"int8 engine={int8_engine()}"
    )
    print(
        f"matmul peaks at {PEAK_SIZE}^2 (GFLOP/s, before / after the workloads): "
        + ", ".join(f"{k} {before[k]:,.0f} / {after[k]:,.0f}" for k in before)
    )
    for workload, measured in results:
        flops = _forward_flops(config, params, workload.lengths)
        print("\n" + report_workload(workload, engines, measured, flops, peaks), flush=True)


def _non_embedding_params(folder: Path) -> int:
    from modernenc import ModernEncoderModel

    return ModernEncoderModel.from_pretrained(folder).num_parameters(exclude_embeddings=True)
