"""GPU check in one command: correctness against `transformers`' ModernBert, a bf16 training step, and
throughput on the ModernBERT paper's Table 2 workloads, on an offline CUDA machine.

    PYTHONPATH=src python benchmarks/gpu_check.py --out gpu-report --budget-s 420
    PYTHONPATH=src python benchmarks/gpu_check.py --out /tmp/rehearsal --cpu-rehearsal

Needs torch >= 2.5 (FlexAttention) and transformers >= 4.48 (ModernBert), nothing else: the modernenc code it
imports (the model, the MLM masking) uses only their dependencies. flash-attn and composer are used when
they import, and their steps are skipped, with a note, when not. `--cpu-rehearsal` runs every step at a
tiny size on the CPU, eagerly, so the script is exercised without a GPU (tests/test_gpu_check.py).

Steps, in order of importance (the budget may end the run early; what ran is reported):
1. correctness on the same weights, per backend (eager, bucketed = the sdpa path, flex, flash): fp32 MLM
   and sequence-classification logits within 1e-3 of transformers' sdpa; bf16 error against that fp32
   reference at most 1.5x transformers' own; one training step's gradients equal to transformers';
   packed input equal to padded input; and a guard that a wrong window does fail the comparison;
2. bf16 MLM steps with sparse prediction through a plain PyTorch loop: loss finite and falling, tok/s,
   peak memory; then the same through composer's Trainer (FSDP on one rank on CUDA) if composer imports;
3. throughput (inference, bf16 autocast, base shape) on 8,192 documents of fixed 512, N(256, 64), fixed
   8,192 and N(4,096, 1,024) tokens, modernenc beside transformers, each at the largest batch that fits
   (time-boxed: the documents measured are reported), then the targets.

Writes OUT/report.json and OUT/report.md. Exit status: 0 when every check passed, 1 when a check failed or
a step raised, 2 when the budget ran out before the correctness checks finished.
"""

from __future__ import annotations

import os

# Offline by design: no hub lookups, and transformers 5's hub kernels stay off (they would download).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("USE_HUB_KERNELS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import contextlib
import dataclasses
import datetime
import gc
import importlib
import json
import math
import platform
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification, ModernBertConfig

from modernenc.data.masking import mask_tokens
from modernenc.model.attention import ATTENTION_BACKENDS
from modernenc.model.config import ModernEncoderConfig
from modernenc.model.encoder import ModernEncoderModel
from modernenc.model.heads import ModernEncoderForMaskedLM, ModernEncoderForSequenceClassification

# ModernBERT paper, Table 2: ModernBERT-base on an NVIDIA RTX 4090, thousands of tokens/s (and max batch).
PAPER_RTX4090_KTOK_S = {"fixed 512": 148.1, "N(256, 64)": 147.3, "fixed 8192": 123.7, "N(4096, 1024)": 133.8}
PAPER_MODEL = "ModernBERT-base as published: paper, Table 2, RTX 4090 (not run here)"
PAPER_RTX4090_BATCH = {"fixed 512": 1604, "N(256, 64)": 1604, "fixed 8192": 98, "N(4096, 1024)": 98}
VARIABLE_MEANS = {"N(256, 64)": "fixed 256", "N(4096, 1024)": "fixed 4096"}  # same mean, fixed length
FP32_TOLERANCE = 1e-3
BF16_ERROR_RATIO = 1.5
GRAD_TOLERANCE = 1e-3  # relative, per parameter tensor
PACKED_TOLERANCE = 1e-4


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    mean: int
    sd: int  # 0: every document has `mean` tokens
    max_length: int
    paper: bool  # one of the paper's four (the others serve the same-mean comparison)

    def describe(self) -> str:
        """The documents' lengths in tokens, as run (the rehearsal scales the paper's down)."""
        return f"{self.mean}" if not self.sd else f"N({self.mean}, {self.sd}) in [8, {self.max_length}]"

    def lengths(self, docs: int, seed: int = 0) -> np.ndarray:
        if not self.sd:
            return np.full(docs, self.mean)
        drawn = np.random.default_rng(seed).normal(self.mean, self.sd, docs)
        return np.clip(np.rint(drawn), 8, self.max_length).astype(int)


@dataclasses.dataclass(frozen=True)
class Scale:
    """Sizes of one run: the GPU check itself, or its tiny CPU rehearsal."""

    device: str
    # correctness: a small model with ModernBERT's window and layer pattern, documents past the window
    check_model: dict[str, Any]
    check_lengths: tuple[int, ...]
    # training step
    train_model: dict[str, Any]
    train_docs: int
    train_mean: int
    train_steps: int
    # throughput
    bench_model: dict[str, Any]
    workloads: tuple[Workload, ...]
    bench_docs: int
    max_batch_tokens: int  # batches start at the most documents within this many tokens
    max_batch_docs: int  # and at most this many documents
    warmup_batches: int
    compile_mlp: bool  # modernenc's `compile` flag (its MLPs), where torch.compile works


def _workloads(divide: int) -> tuple[Workload, ...]:
    def w(name: str, mean: int, sd: int, max_length: int, paper: bool = True) -> Workload:
        return Workload(name, mean // divide, sd // divide, max_length // divide, paper)

    return (
        w("fixed 512", 512, 0, 512),
        w("N(256, 64)", 256, 64, 512),
        w("fixed 8192", 8192, 0, 8192),
        w("N(4096, 1024)", 4096, 1024, 8192),
        # max_length as their variable twins': the same batches, in documents
        w("fixed 256", 256, 0, 512, paper=False),
        w("fixed 4096", 4096, 0, 8192, paper=False),
    )


SMALL_IDS = dict(pad_token_id=0, cls_token_id=1, sep_token_id=2, mask_token_id=3)
# Weights 5x ModernBERT's init scale make attention peaky, so that a wrong window moves the logits well past
# the tolerance (the guard below); at 0.02 it moved them by 1.5e-3 (rehearsal) and 6e-3 (GPU sizes).
PEAKY = dict(initializer_range=0.1)
GPU = Scale(
    device="cuda",
    check_model=dict(
        **PEAKY, hidden_size=256, intermediate_size=384, num_hidden_layers=6, num_attention_heads=4
    ),
    check_lengths=(1100, 700, 513, 300, 129, 64, 17),
    train_model=dict(preset="small"),
    train_docs=64,
    train_mean=256,
    train_steps=8,
    bench_model=dict(preset="base"),
    workloads=_workloads(1),
    bench_docs=8192,
    max_batch_tokens=2**20,
    max_batch_docs=8192,
    warmup_batches=2,
    compile_mlp=True,
)
REHEARSAL = Scale(
    device="cpu",
    check_model=dict(
        **PEAKY,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        global_attn_every_n_layers=2,  # layer 0 global, layer 1 local
        num_attention_heads=4,
        local_attention=16,
        vocab_size=512,
        max_position_embeddings=512,
        **SMALL_IDS,
    ),
    check_lengths=(200, 57, 130, 9, 151),
    train_model=dict(preset="tiny", vocab_size=512, **SMALL_IDS),
    train_docs=8,
    train_mean=64,
    train_steps=4,
    bench_model=dict(
        preset="tiny", num_hidden_layers=2, global_attn_every_n_layers=2, vocab_size=512, **SMALL_IDS
    ),
    workloads=_workloads(32),
    bench_docs=4,
    max_batch_tokens=2 * 256,
    max_batch_docs=2,
    warmup_batches=1,
    compile_mlp=False,
)


# --- the report -------------------------------------------------------------------------------------


class Report:
    """Everything the run found, written to report.json and report.md when asked (also by the watchdog)."""

    def __init__(self, out: Path, mode: str, budget_s: float) -> None:
        self.out, self.lock = out, threading.RLock()
        self.start = time.monotonic()
        self.data: dict[str, Any] = {
            "mode": mode,
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "budget_s": budget_s,
            "steps": [],
            "correctness": [],
            "training": [],
            "throughput": [],
            "targets": [],
            "paper_rtx4090_ktok_s": PAPER_RTX4090_KTOK_S,
        }
        self.correctness_finished = False

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def add(self, section: str, row: dict[str, Any]) -> None:
        with self.lock:
            self.data[section].append(row)

    def check(self, name: str, value: float, limit: float, passed: bool, **where: Any) -> None:
        self.add("correctness", {"check": name, **where, "value": value, "limit": limit, "passed": passed})
        status = "ok  " if passed else "FAIL"
        print(f"  [{status}] {name} {where}: {value:.3g} (limit {limit:.3g})", flush=True)

    def failed(self) -> bool:
        rows = self.data["correctness"] + [r for r in self.data["training"] if "passed" in r]
        return any(not r["passed"] for r in rows) or any(s["status"] == "error" for s in self.data["steps"])

    def exit_status(self) -> int:
        if self.failed():
            return 1
        return 0 if self.correctness_finished else 2

    def write(self, stopped_by_budget: str | None = None) -> int:
        with self.lock:
            status = self.exit_status()
            self.data.update(
                elapsed_s=round(self.elapsed(), 1),
                stopped_by_budget=stopped_by_budget,
                exit_status=status,
            )
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "report.json").write_text(json.dumps(self.data, indent=2, default=str) + "\n")
            (self.out / "report.md").write_text(render_markdown(self.data))
            return status


THROUGHPUT_COLUMNS = "workload|tokens per document|model|batch (docs)|docs measured|real tok/s|peak GiB|note"


def render_markdown(data: dict[str, Any]) -> str:
    stopped = data["stopped_by_budget"]
    summary = f"Started {data['started']}; {data['elapsed_s']} s of a {data['budget_s']} s budget"
    summary += f"; exit status {data['exit_status']}"
    summary += f"; **stopped by the budget during {stopped}**." if stopped else "."
    steps = [[s["name"], s["status"], s.get("seconds", ""), s.get("note", "")] for s in data["steps"]]
    checks = [
        [r["check"], r.get("task", ""), r.get("backend", ""), fmt(r["value"], ".3g"), fmt(r["limit"], ".3g"),
         ("pass" if r["passed"] else "**FAIL**") + (f" ({r['note']})" if r.get("note") else "")]
        for r in data["correctness"]
    ]  # fmt: skip
    training = [
        [r["loop"], r["backend"], f"{r['losses'][0]:.3f} → {r['losses'][-1]:.3f}" if r["losses"] else "",
         "yes" if r["passed"] else "**no**", fmt(r["tokens_per_s"]), fmt(r["peak_gib"], ".2f")]
        for r in data["training"]
    ]  # fmt: skip
    throughput = [
        [r["workload"], r["tokens"], r["model"], r.get("batch", ""), r.get("docs", ""),
         fmt(r.get("tokens_per_s")), fmt(r.get("peak_gib"), ".2f"), r.get("note", "")]
        for r in data["throughput"]
    ] + [
        [name, "", PAPER_MODEL, PAPER_RTX4090_BATCH[name], "", fmt(1000 * k), "", ""]
        for name, k in PAPER_RTX4090_KTOK_S.items()
    ]  # fmt: skip
    targets = [[t["target"], fmt(t["value"], ".2f"), t["status"]] for t in data["targets"]]
    return "\n".join(
        [
            f"# GPU check ({data['mode']})",
            "",
            summary,
            "",
            *table(["environment", ""], [[k, v] for k, v in data.get("environment", {}).items()]),
            "## Steps",
            "",
            *table(["step", "status", "seconds", "note"], steps),
            "## Correctness (against transformers' ModernBert on the same weights)",
            "",
            *table(["check", "task", "backend", "value", "limit", ""], checks),
            "## Training steps (bf16, MLM with sparse prediction)",
            "",
            *table(
                ["loop", "backend", "loss, first → last", "finite and falling", "real tok/s", "peak GiB"],
                training,
            ),
            "## Throughput (inference, bf16 autocast; real tokens/s)",
            "",
            *table(THROUGHPUT_COLUMNS.split("|"), throughput),
            "## Targets",
            "",
            *table(["target", "value", "status"], targets),
        ]
    )


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A markdown table, then a blank line."""
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows),
        "",
    ]


def fmt(value: Any, spec: str = ",.0f") -> str:
    return "" if value is None or value != value else format(value, spec)  # None and NaN: blank


class Budget:
    """The run's deadline; a watchdog writes the report and exits when it passes mid-step."""

    def __init__(self, report: Report, budget_s: float) -> None:
        self.report = report
        reserve = min(30.0, 0.1 * budget_s)  # for writing the report, and for a step's last item
        self.deadline = report.start + budget_s - reserve
        self.current = "start"
        self.timer = threading.Timer(max(0.0, self.deadline - time.monotonic()), self._expire)
        self.timer.daemon = True
        self.timer.start()

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def _expire(self) -> None:
        print(f"\nbudget spent during {self.current}: writing the report and stopping", flush=True)
        status = self.report.write(stopped_by_budget=self.current)
        os._exit(status)

    @contextlib.contextmanager
    def step(self, name: str, needs_s: float = 0.0) -> Iterator[bool]:
        """Run a step if the budget allows; record its status, time and any exception (which ends it)."""
        row: dict[str, Any] = {"name": name}
        if self.left() < needs_s:
            row.update(status="skipped", note=f"budget: {self.left():.0f} s left, needs ~{needs_s:.0f}")
            self.report.add("steps", row)
            yield False
            return
        self.current, start = name, time.monotonic()
        print(f"\n== {name}", flush=True)
        try:
            yield True
            row["status"] = "done"
        except SkipStep as skip:
            row.update(status="skipped", note=str(skip))
        except Exception as err:  # a crash is a finding: record it, go on with the other steps
            traceback.print_exc()
            row.update(status="error", note=f"{type(err).__name__}: {err}"[:500])
        row["seconds"] = round(time.monotonic() - start, 1)
        self.report.add("steps", row)
        print(f"   {row['status']} in {row['seconds']} s {row.get('note', '')}", flush=True)


class SkipStep(Exception):
    """A step cannot run here (a package is missing); the message says which and why."""


# --- models and inputs ------------------------------------------------------------------------------


def hf_config(values: dict[str, Any], **extra: Any) -> ModernBertConfig:
    """transformers' config for our config's values; the 4.x names, which 5.x still accepts."""
    ours = ModernEncoderConfig(**values)
    return ModernBertConfig(
        vocab_size=ours.vocab_size,
        hidden_size=ours.hidden_size,
        intermediate_size=ours.intermediate_size,
        num_hidden_layers=ours.num_hidden_layers,
        num_attention_heads=ours.num_attention_heads,
        local_attention=ours.local_attention,
        global_attn_every_n_layers=ours.global_attn_every_n_layers,
        global_rope_theta=ours.global_rope_theta,
        local_rope_theta=ours.local_rope_theta,
        max_position_embeddings=ours.max_position_embeddings,
        initializer_range=ours.initializer_range,
        pad_token_id=ours.pad_token_id,
        cls_token_id=ours.cls_token_id,
        sep_token_id=ours.sep_token_id,
        bos_token_id=ours.cls_token_id,
        eos_token_id=ours.sep_token_id,
        **extra,
    )


def model_values(spec: dict[str, Any]) -> dict[str, Any]:
    spec = dict(spec)
    preset = spec.pop("preset", None)
    return {**(ModernEncoderConfig.from_preset(preset).to_dict() if preset else {}), **spec}


def padded_batch(lengths, config: ModernEncoderConfig, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded random ids `[B, S]` and mask; each row is CLS, random tokens, SEP."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([int(n) for n in lengths])
    ids = torch.randint(5, min(config.vocab_size, 50280), (len(lengths), int(lengths.max())), generator=gen)
    mask = torch.arange(ids.shape[1])[None, :] < lengths[:, None]
    rows = torch.arange(len(lengths))
    ids[rows, 0] = config.cls_token_id
    ids[rows, lengths - 1] = config.sep_token_id
    return ids.masked_fill(~mask, config.pad_token_id), mask.long()


def mlm_labels(ids: torch.Tensor, mask: torch.Tensor, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    chosen = (torch.rand(ids.shape, generator=gen) < 0.3) & mask.bool()
    return torch.where(chosen, ids, torch.full_like(ids, -100))


def autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None


def release(device: torch.device) -> None:
    if device.type == "cuda":  # (a full gc.collect costs half a second: only where memory is scarce)
        gc.collect()
        torch.cuda.empty_cache()


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


# --- steps ------------------------------------------------------------------------------------------


def environment(device: torch.device) -> dict[str, Any]:
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "flash-attn": "imports" if importable("flash_attn") else "missing",
        "composer": "imports" if importable("composer") else "missing",
        "streaming": "imports" if importable("streaming") else "missing",
        "auto backend here": type(ATTENTION_BACKENDS["auto"].choose(device)).__name__,
    }
    if device.type == "cuda":
        env["gpu memory GiB"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
        env["torch.compile"] = compile_probe(device)
    return env


def compile_probe(device: torch.device) -> str:
    """Whether torch.compile builds kernels here (Triton needs a C compiler at run time, for one)."""
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(8, device=device))
    except Exception as err:
        return f"fails: {type(err).__name__}: {err}"[:300]
    return "works"


def backends_to_check(device: torch.device) -> list[str]:
    names = ["eager", "bucketed", "flex"]
    if device.type == "cuda" and importable("flash_attn"):
        names.append("flash")
    return names


@dataclasses.dataclass
class Reference:
    """transformers' outputs on the check batch: fp32 logits, its own bf16 error, MLM gradients."""

    logits: torch.Tensor  # fp32, real tokens only (per-token tasks)
    bf16_error: float  # relative error of its bf16 logits against `logits`
    grads: dict[str, torch.Tensor] | None


TASKS = {
    "mlm": (AutoModelForMaskedLM, ModernEncoderForMaskedLM),
    "seq-cls": (AutoModelForSequenceClassification, ModernEncoderForSequenceClassification),
}


def check_correctness(scale: Scale, device: torch.device, report: Report, budget: Budget) -> None:
    values = model_values(scale.check_model)
    ids, mask = padded_batch(scale.check_lengths, ModernEncoderConfig(**values))
    batch = dict(
        input_ids=ids.to(device), attention_mask=mask.to(device), labels=mlm_labels(ids, mask).to(device)
    )
    if device.type == "cuda" and "flash" not in backends_to_check(device):
        report.add(
            "steps", {"name": "correctness: flash", "status": "skipped", "note": "flash-attn is missing"}
        )
    with tempfile.TemporaryDirectory() as tmp:
        for task, (auto_cls, our_cls) in TASKS.items():
            torch.manual_seed(0)
            config = hf_config(values, classifier_pooling="mean", num_labels=3, attn_implementation="sdpa")
            hf = auto_cls.from_config(config).to(device).eval()
            folder = Path(tmp) / task
            hf.save_pretrained(folder)
            reference = reference_outputs(hf, task, batch)
            del hf
            release(device)
            for name in backends_to_check(device):
                budget.current = f"correctness {task} {name}"
                try:
                    ours = our_cls.from_pretrained(folder, attn_backend=name).to(device).eval()
                    check_backend(ours, task, name, batch, reference, report)
                except Exception as err:  # one backend failing must not hide the others' results
                    traceback.print_exc()
                    report.check(
                        "runs",
                        1.0,
                        0.0,
                        False,
                        task=task,
                        backend=name,
                        note=f"{type(err).__name__}: {err}"[:300],
                    )
                ours = None
                release(device)
            if task == "mlm":  # the comparison must be able to fail: a doubled window must show
                window = 2 * values.get("local_attention", 128)
                wrong = our_cls.from_pretrained(folder, local_attention=window, attn_backend="bucketed")
                wrong = wrong.to(device).eval()
                diff = float((real_logits(wrong, batch) - reference.logits).abs().max())
                limit = 10 * FP32_TOLERANCE
                guard = "guard: a doubled window differs by more than"
                report.check(guard, diff, limit, diff > limit, task=task, backend="bucketed")
                del wrong
                release(device)
    report.correctness_finished = True


def real_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor], bf16: bool = False) -> torch.Tensor:
    """fp32 logits (under bf16 autocast if asked), per-token ones on the real tokens only."""
    device = batch["input_ids"].device
    with torch.no_grad(), autocast(device, bf16):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    return logits[batch["attention_mask"].bool()] if logits.dim() == 3 else logits


def reference_outputs(hf: torch.nn.Module, task: str, batch: dict[str, torch.Tensor]) -> Reference:
    logits = real_logits(hf, batch)
    bf16_error = float((real_logits(hf, batch, bf16=True) - logits).norm() / logits.norm())
    return Reference(logits, bf16_error, gradients(hf, batch) if task == "mlm" else None)


def check_backend(
    ours: torch.nn.Module,
    task: str,
    name: str,
    batch: dict[str, torch.Tensor],
    reference: Reference,
    report: Report,
) -> None:
    where = dict(task=task, backend=name)
    got = real_logits(ours, batch)
    if name != "flash":  # flash-attn computes in half precision only: no fp32 comparison
        diff = float((got - reference.logits).abs().max())
        report.check("fp32 logits, max abs diff", diff, FP32_TOLERANCE, diff < FP32_TOLERANCE, **where)
    error = float((real_logits(ours, batch, bf16=True) - reference.logits).norm() / reference.logits.norm())
    limit = BF16_ERROR_RATIO * reference.bf16_error
    report.check("bf16 error vs fp32 reference", error, limit, error <= limit, **where)
    if task != "mlm":
        return
    real = batch["attention_mask"].bool()
    lengths = real.sum(1)
    cu_seqlens = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
    with torch.no_grad():
        packed = ours(
            input_ids=batch["input_ids"][real], cu_seqlens=cu_seqlens, max_seqlen=int(lengths.max())
        )
    diff = float((packed.logits.float() - got).abs().max())
    report.check("packed == padded, max abs diff", diff, PACKED_TOLERANCE, diff < PACKED_TOLERANCE, **where)
    if name == "flash" or reference.grads is None:
        return
    grads = gradients(ours, batch)
    if set(grads) != set(reference.grads):
        raise RuntimeError(
            f"parameter names differ from transformers': {sorted(set(grads) ^ set(reference.grads))}"
        )
    rel = max(float((grads[k] - g).norm() / g.norm().clamp_min(1e-30)) for k, g in reference.grads.items())
    report.check(
        "training-step gradients, max relative diff", rel, GRAD_TOLERANCE, rel < GRAD_TOLERANCE, **where
    )


def gradients(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every parameter's gradient of one MLM training step (fp32, dropout off: deterministic)."""
    model.train()
    model.zero_grad(set_to_none=True)
    model(**batch).loss.backward()
    grads = {name: p.grad.float().clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    model.eval()
    return grads


def mlm_training_batch(scale: Scale, config: ModernEncoderConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Packed documents, masked by modernenc's MLM masking (30%), as the packer hands them to the model."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(
        rng.normal(scale.train_mean, scale.train_mean / 4, scale.train_docs), 8, 2 * scale.train_mean
    )
    ids, _ = padded_batch(lengths.astype(int), config, seed)
    packed = np.concatenate([row[: int(n)] for row, n in zip(ids.numpy(), lengths, strict=True)])
    never_mask = np.zeros(config.vocab_size, dtype=bool)
    never_mask[[config.pad_token_id, config.cls_token_id, config.sep_token_id, config.mask_token_id]] = True
    random_ids = np.arange(5, min(config.vocab_size, 50280))
    masked, labels = mask_tokens(
        packed, rng, mask_token_id=config.mask_token_id, never_mask=never_mask, random_ids=random_ids
    )
    cu = np.concatenate([[0], np.cumsum(lengths.astype(int))])
    return {
        "input_ids": torch.from_numpy(masked),
        "labels": torch.from_numpy(labels),
        "cu_seqlens": torch.from_numpy(cu).to(torch.int32),
        "max_seqlen": int(lengths.max()),
        "num_sequences": len(lengths),
        "num_real_tokens": int(cu[-1]),
    }


def train_plain_loop(scale: Scale, device: torch.device, report: Report) -> None:
    values = model_values(scale.train_model)
    config = ModernEncoderConfig(**{**values, "sparse_prediction": True, "compile": scale.compile_mlp})
    torch.manual_seed(0)
    model = ModernEncoderForMaskedLM(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = {
        k: v.to(device) if isinstance(v, torch.Tensor) else v
        for k, v in mlm_training_batch(scale, config).items()
    }
    inputs = {k: batch[k] for k in ("input_ids", "labels", "cu_seqlens", "max_seqlen")}
    losses, seconds = [], []
    reset_peak(device)
    for _ in range(scale.train_steps):  # the same batch each step: the loss must fall fast
        synchronize(device)
        start = time.perf_counter()
        with autocast(device, True):
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        seconds.append(time.perf_counter() - start)
        losses.append(float(loss))
    passed = all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    step_s = statistics.median(seconds[1:])  # the first step compiles
    backend = type(ATTENTION_BACKENDS["auto"].choose(device)).__name__
    tokens_per_s = batch["num_real_tokens"] / step_s
    row = dict(loop="plain PyTorch", backend=backend, losses=losses, passed=passed, tokens_per_s=tokens_per_s)
    report.add("training", {**row, "model": scale.train_model, "peak_gib": peak_gib(device)})
    print(
        f"  losses {[round(x, 3) for x in losses]}; {batch['num_real_tokens'] / step_s:,.0f} tok/s",
        flush=True,
    )
    del model, optimizer
    release(device)


def train_composer(scale: Scale, device: torch.device, report: Report) -> None:
    """composer's Trainer on one rank: FSDP on CUDA; on the CPU (rehearsal) without, as composer's FSDP
    needs CUDA."""
    if not importable("composer"):
        raise SkipStep("composer is not installed")
    from composer import Callback, Trainer

    from modernenc.train.composer_model import ModernEncoderComposerModel, packed_batch_spec

    class LossRecorder(Callback):
        def __init__(self) -> None:
            self.losses: list[float] = []

        def after_backward(self, state, logger) -> None:
            self.losses.append(float(state.loss))

    config = ModernEncoderConfig(**{**model_values(scale.train_model), "sparse_prediction": True})
    torch.manual_seed(0)
    batch = mlm_training_batch(scale, config)
    recorder = LossRecorder()
    cuda = device.type == "cuda"
    model = ModernEncoderComposerModel(ModernEncoderForMaskedLM(config))
    trainer = Trainer(
        model=model,
        train_dataloader=packed_batch_spec([batch] * scale.train_steps),
        max_duration=f"{scale.train_steps}ba",
        optimizers=torch.optim.AdamW(model.parameters(), lr=1e-3),
        precision="amp_bf16" if cuda else "fp32",
        device="gpu" if cuda else "cpu",
        parallelism_config={"fsdp": {"sharding_strategy": "FULL_SHARD"}} if cuda else None,
        device_train_microbatch_size=batch["num_sequences"],
        callbacks=[recorder],
        loggers=[],
        progress_bar=False,
        log_to_console=False,
        save_folder=None,
        seed=0,
    )
    reset_peak(device)
    start = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - start
    trainer.close()
    losses = recorder.losses
    passed = bool(losses) and all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    loop = "composer Trainer" + (", FSDP on one rank" if cuda else ", no FSDP (CPU)")
    tokens_per_s = batch["num_real_tokens"] * len(losses) / seconds  # the first, compiling step included
    row = dict(loop=loop, backend="auto", losses=losses, passed=passed, tokens_per_s=tokens_per_s)
    report.add("training", {**row, "model": scale.train_model, "peak_gib": peak_gib(device)})


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One model of the throughput comparison: its name and how to build it."""

    name: str
    build: Callable[[], torch.nn.Module]


def throughput_candidates(scale: Scale, device: torch.device, folder: Path) -> list[Candidate]:
    flash = device.type == "cuda" and importable("flash_attn")

    def ours(backend: str) -> Callable[[], torch.nn.Module]:
        return lambda: (
            ModernEncoderModel.from_pretrained(folder, attn_backend=backend, compile=scale.compile_mlp)
            .to(device)
            .eval()
        )

    def theirs(implementation: str) -> Callable[[], torch.nn.Module]:
        return lambda: AutoModel.from_pretrained(folder, attn_implementation=implementation).to(device).eval()

    candidates = [Candidate("modernenc flex", ours("flex"))]
    if flash:
        candidates.append(Candidate("modernenc flash", ours("flash")))
    candidates.append(Candidate("transformers sdpa", theirs("sdpa")))
    if flash:
        candidates.append(Candidate("transformers flash_attention_2", theirs("flash_attention_2")))
    return candidates


def measure_throughput(
    scale: Scale, device: torch.device, report: Report, budget: Budget, workloads: list[Workload]
) -> None:
    values = model_values(scale.bench_model)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        folder = Path(tmp) / "base"
        AutoModel.from_config(hf_config(values)).save_pretrained(folder)  # the bare encoder
        candidates = throughput_candidates(scale, device, folder)
        plan = [(w, c) for w in workloads for c in candidates if w.paper or c.name == "modernenc flex"]
        for index, (workload, candidate) in enumerate(plan):
            slice_s = budget.left() / (len(plan) - index)
            budget.current = f"throughput {workload.name} {candidate.name}"
            row = {"workload": workload.name, "tokens": workload.describe(), "model": candidate.name}
            if slice_s < 5:
                row["note"] = "skipped: budget"
                report.add("throughput", row)
                continue
            try:
                row.update(
                    time_one(scale, device, workload, candidate, ModernEncoderConfig(**values), slice_s)
                )
            except Exception as err:
                traceback.print_exc()
                row["note"] = f"{type(err).__name__}: {err}"[:300]
                report.add("steps", {"name": budget.current, "status": "error", "note": row["note"]})
            report.add("throughput", row)
            measured = (
                f"{fmt(row.get('tokens_per_s')):>12} tok/s, batch {row.get('batch')}, {row.get('docs')} docs"
            )
            print(f"  {workload.name:14} {candidate.name:32} {measured} {row.get('note', '')}", flush=True)
            release(device)


def time_one(
    scale: Scale,
    device: torch.device,
    workload: Workload,
    candidate: Candidate,
    config: ModernEncoderConfig,
    slice_s: float,
) -> dict[str, Any]:
    """Real tokens/s of `candidate` on `workload` at the largest batch that fits, within `slice_s` seconds."""
    started = time.monotonic()
    lengths = workload.lengths(scale.bench_docs)
    model = candidate.build()
    batch = max(1, min(scale.bench_docs, scale.max_batch_docs, scale.max_batch_tokens // workload.max_length))
    note = ""

    def inputs(docs: np.ndarray) -> dict[str, torch.Tensor]:
        ids, mask = padded_batch(docs, config, seed=len(docs))
        return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}

    def run(batch_inputs: dict[str, torch.Tensor]) -> None:
        with torch.inference_mode(), autocast(device, True):
            model(**batch_inputs)

    while True:  # the largest batch that fits: halve on out-of-memory (that first batch warms up too)
        try:
            run(inputs(lengths[:batch]))
            break
        except Exception as err:
            if not is_oom(err) or batch == 1:
                raise
            release(device)
            batch //= 2
            note = "batch halved on out-of-memory"
    batches = [lengths[i : i + batch] for i in range(batch, len(lengths), batch)]
    for docs in batches[: scale.warmup_batches - 1]:  # a second size: compiled kernels go dynamic
        run(inputs(docs))
    batches = batches[max(0, scale.warmup_batches - 1) :] or [lengths[:batch]]
    reset_peak(device)
    tokens, seconds, docs_done = 0, 0.0, 0
    for docs in batches:
        batch_inputs = inputs(docs)
        synchronize(device)
        start = time.perf_counter()
        run(batch_inputs)
        synchronize(device)
        seconds += time.perf_counter() - start
        tokens += int(docs.sum())
        docs_done += len(docs)
        if time.monotonic() - started > slice_s:
            note = (note + "; " if note else "") + "time-boxed"
            break
    measured = dict(batch=batch, docs=docs_done, real_tokens=tokens, seconds=round(seconds, 3))
    return {**measured, "tokens_per_s": tokens / seconds, "peak_gib": peak_gib(device), "note": note}


def evaluate_targets(report: Report) -> None:
    rows = {(r["workload"], r["model"]): r.get("tokens_per_s") for r in report.data["throughput"]}

    def ratio(a: tuple[str, str], b: tuple[str, str]) -> float | None:
        return rows[a] / rows[b] if rows.get(a) and rows.get(b) else None

    rehearsal = report.data["mode"] != "gpu"

    def target(name: str, value: float | None, ok: Callable[[float], bool]) -> None:
        status = "not measured" if value is None else ("met" if ok(value) else "missed")
        if rehearsal and value is not None:
            status += " (rehearsal: CPU, eager flex, tiny sizes; not a measurement)"
        report.add("targets", {"target": name, "value": value, "status": status})

    flex, sdpa = "modernenc flex", "transformers sdpa"
    for workload in ("N(256, 64)", "N(4096, 1024)"):
        target(
            f"flex >= 2x transformers sdpa, {workload}",
            ratio((workload, flex), (workload, sdpa)),
            lambda v: v >= 2,
        )
    target(
        "flex >= 1.0x transformers sdpa, fixed 512",
        ratio(("fixed 512", flex), ("fixed 512", sdpa)),
        lambda v: v >= 1,
    )
    for variable, fixed in VARIABLE_MEANS.items():
        same_mean = ratio((variable, flex), (fixed, flex))
        target(f"flex {variable} within 10% of {fixed} (tok/s ratio)", same_mean, lambda v: abs(v - 1) <= 0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for report.json and report.md")
    parser.add_argument("--budget-s", type=float, default=420.0, help="stop (and report) before this many s")
    parser.add_argument("--cpu-rehearsal", action="store_true", help="every step at a tiny size on the CPU")
    args = parser.parse_args(argv)
    for name in ("report.json", "report.md"):
        if (args.out / name).exists():
            parser.error(f"{args.out / name} exists; pass an empty or new --out folder")
    scale = REHEARSAL if args.cpu_rehearsal else GPU
    if scale.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here; run with --cpu-rehearsal to exercise the script on the CPU")
    device = torch.device(scale.device)
    torch.set_float32_matmul_precision("highest")  # fp32 comparisons in true fp32 (no TF32)
    # Flex compiles once per dtype and kind of layer (and again dynamic in T): more than dynamo's default 8.
    dynamo = torch._dynamo.config
    limit = "recompile_limit" if hasattr(dynamo, "recompile_limit") else "cache_size_limit"  # renamed in 2.6
    setattr(dynamo, limit, max(getattr(dynamo, limit), 64))

    report = Report(args.out, "cpu rehearsal" if args.cpu_rehearsal else "gpu", args.budget_s)
    budget = Budget(report, args.budget_s)
    env = report.data["environment"] = environment(device)
    print(json.dumps(env, indent=1), flush=True)
    if not importable("torch.nn.attention.flex_attention"):
        report.add(
            "steps", {"name": "flex", "status": "error", "note": "this torch has no FlexAttention (>= 2.5)"}
        )
    if (
        env.get("torch.compile", "works") != "works"
    ):  # the flex steps will fail and say so; the MLPs stay eager
        scale = dataclasses.replace(scale, compile_mlp=False)

    with budget.step("correctness") as go:
        if go:
            check_correctness(scale, device, report, budget)
    with budget.step("training: plain loop", needs_s=10) as go:
        if go:
            train_plain_loop(scale, device, report)
    main_workloads = [w for w in scale.workloads if w.paper]
    with budget.step("throughput: paper's workloads", needs_s=20) as go:
        if go:
            measure_throughput(scale, device, report, budget, main_workloads)
    with budget.step("training: composer", needs_s=30) as go:
        if go:
            train_composer(scale, device, report)
    with budget.step("throughput: fixed length at the variable workloads' means", needs_s=10) as go:
        if go:
            measure_throughput(scale, device, report, budget, [w for w in scale.workloads if not w.paper])
    evaluate_targets(report)
    budget.timer.cancel()
    status = report.write()
    print(f"\nreport: {args.out / 'report.md'} (exit status {status})", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
