"""benchmarks/gpu_check.py, rehearsed on the CPU so it cannot rot before a GPU runs it.

The GPU machines have no composer, streaming or omegaconf: the script must import without them. The
rehearsal itself runs every step at a tiny size and must pass every check (transformers' ModernBert is the
truth there, as on the GPU); the budget watchdog must stop a run and still write its report.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
ABSENT_ON_GPU_MACHINES = ("composer", "streaming", "omegaconf", "optimi", "flash_attn")


def run_check(*args: str, stubs: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    paths = [str(stubs)] if stubs else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, str(ROOT / "src")])}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("rehearsal") / "report"
    return run_check("--out", str(out), "--cpu-rehearsal", "--budget-s", "240"), out


def test_the_rehearsal_runs_every_step_and_passes_every_check(rehearsal):
    done, out = rehearsal
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["exit_status"] == 0 and report["stopped_by_budget"] is None
    steps = {s["name"]: s["status"] for s in report["steps"]}
    assert set(steps.values()) == {"done"}, steps
    checked = {(r["task"], r["backend"], r["check"]) for r in report["correctness"]}
    assert all(r["passed"] for r in report["correctness"])
    for backend in ("eager", "bucketed", "flex"):
        assert ("mlm", backend, "fp32 logits, max abs diff") in checked
        assert ("mlm", backend, "training-step gradients, max relative diff") in checked
        assert ("mlm", backend, "packed == padded, max abs diff") in checked
        assert ("seq-cls", backend, "bf16 error vs fp32 reference") in checked
    assert ("mlm", "bucketed", "guard: a doubled window differs by more than") in checked
    assert [r["loop"] for r in report["training"]] == ["plain PyTorch", "composer Trainer, no FSDP (CPU)"]
    assert all(r["passed"] and r["losses"][-1] < r["losses"][0] for r in report["training"])
    measured = {(r["workload"], r["model"]) for r in report["throughput"] if r.get("tokens_per_s")}
    for workload in ("fixed 512", "N(256, 64)", "fixed 8192", "N(4096, 1024)"):
        assert {(workload, "modernenc flex"), (workload, "transformers sdpa")} <= measured
    assert len(report["targets"]) == 5 and all("rehearsal" in t["status"] for t in report["targets"])
    markdown = (out / "report.md").read_text()
    assert "148,100" in markdown and "133,800" in markdown and "RTX 4090" in markdown


def test_an_existing_report_is_not_overwritten(rehearsal, capsys, monkeypatch):
    _, out = rehearsal
    before = (out / "report.json").read_text()
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", gpu_check)  # its dataclasses look their module up
    for name in ("HF_HUB_OFFLINE", "USE_HUB_KERNELS", "TOKENIZERS_PARALLELISM"):  # it sets them: undo after
        monkeypatch.setenv(name, os.environ.get(name, ""))
        if not os.environ[name]:
            monkeypatch.delenv(name)
    spec.loader.exec_module(gpu_check)
    with pytest.raises(SystemExit) as exited:
        gpu_check.main(["--out", str(out), "--cpu-rehearsal"])
    assert exited.value.code == 2
    assert "report.json exists; pass an empty or new --out folder" in capsys.readouterr().err
    assert (out / "report.json").read_text() == before


@pytest.fixture
def gpu_machine_stubs(tmp_path) -> Path:
    """Packages the GPU machines lack, made unimportable (earlier on the path than the real ones)."""
    for name in ABSENT_ON_GPU_MACHINES:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(
            f"raise ImportError('{name} is absent on the GPU machine')\n"
        )
    return tmp_path


def test_without_composer_the_budget_stops_the_run_and_the_report_says_so(gpu_machine_stubs, tmp_path):
    """Imports need none of the GPU machines' missing packages; a budget spent before the correctness checks
    finish ends the run with exit status 2 and a report that names the step it stopped in."""
    out = tmp_path / "report"
    done = run_check("--out", str(out), "--cpu-rehearsal", "--budget-s", "3", stubs=gpu_machine_stubs)
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["environment"]["composer"] == "missing" and report["environment"]["flash-attn"] == "missing"
    assert report["stopped_by_budget"] and report["exit_status"] == 2
    assert f"stopped by the budget during {report['stopped_by_budget']}" in (out / "report.md").read_text()
