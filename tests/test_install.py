"""The package works installed, outside the checkout: a wheel in a fresh virtualenv, run from a temp folder.

The wheel is built from this checkout and installed with `pip install --no-deps` into a new virtualenv. Its
dependencies (torch, composer: gigabytes) are borrowed from the test's own environment through a path entry;
the test checks that `modernenc` itself is imported from the new virtualenv, not from the checkout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import SHARED_DATA

from modernenc.cli import COMMANDS

REPO = Path(__file__).resolve().parents[1]


def _run(*argv, cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True)
    if check and done.returncode != 0:
        pytest.fail(f"{' '.join(map(str, argv))} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path, dict]:
    """(virtualenv bin folder, an empty working folder outside the checkout, the environment to run in)."""
    root = tmp_path_factory.mktemp("install")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["MODERNENC_SHARED_DATA"] = str(SHARED_DATA)
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        REPO,
        "--no-deps",
        "-q",
        "-w",
        root / "wheels",
        cwd=root,
        env=env,
    )
    (wheel,) = (root / "wheels").glob("modernenc-*.whl")
    _run(sys.executable, "-m", "venv", root / "venv", cwd=root, env=env)
    bin_dir = root / "venv" / "bin"
    site = _run(
        bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=root, env=env
    )
    # A plain path line: the borrowed folder's own .pth files (this checkout's editable install) stay unread.
    Path(site.stdout.strip(), "borrowed_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run(
        bin_dir / "python", "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel, cwd=root, env=env
    )
    work = root / "work"
    work.mkdir()
    return bin_dir, work, env


def test_modernenc_is_imported_from_the_wheel(installed):
    bin_dir, work, env = installed
    done = _run(bin_dir / "python", "-c", "import modernenc; print(modernenc.__file__)", cwd=work, env=env)
    location = Path(done.stdout.strip())
    assert bin_dir.parent in location.parents and REPO not in location.parents


def test_every_subcommand_answers_help(installed):
    bin_dir, work, env = installed
    assert _run(bin_dir / "modernenc", "--help", cwd=work, env=env).stdout.startswith("usage: modernenc")
    for name in COMMANDS:
        done = _run(bin_dir / "modernenc", name, "--help", cwd=work, env=env)
        assert done.stdout.startswith(f"usage: modernenc {name}") and "xample" in done.stdout, name
    done = _run(bin_dir / "python", "-m", "modernenc.train", "--help", cwd=work, env=env)
    assert done.stdout.startswith("usage: python -m modernenc.train")  # what `composer -m` launches


def test_prepare_train_and_predict_from_a_packaged_recipe(installed):
    """The ADE split, a tiny fine-tune from the shipped quickstart recipe, then predict: all in a folder of
    the user's, with paths relative to it."""
    bin_dir, work, env = installed
    modernenc = bin_dir / "modernenc"
    _run(
        modernenc, "prepare-ade", "--source", SHARED_DATA / "ade_corpus_v2", "--out", "ade", cwd=work, env=env
    )
    for split in ("train", "validation", "test"):  # a small slice keeps the run short
        lines = (work / "ade" / f"{split}.jsonl").read_text().splitlines()[:64]
        (work / f"small_{split}.jsonl").write_text("\n".join(lines) + "\n")
    _run(modernenc, "recipes", "quickstart/finetune_ade", "--out", "my_recipe.yaml", cwd=work, env=env)
    overrides = [
        "run_name=installed",
        "model.init_from=null",
        "model.preset=tiny",
        "data.train=small_train.jsonl",
        "data.eval=small_validation.jsonl",
        "data.test=small_test.jsonl",
        f"data.tokenizer={SHARED_DATA / 'tokenizers' / 'modernbert'}",
        "max_duration=1ep",
        "logging.progress_bar=false",
    ]
    _run(modernenc, "train", "my_recipe.yaml", *overrides, cwd=work, env=env)
    best = work / "checkpoints" / "installed" / "best-hf"
    assert json.loads((best / "thresholds.json").read_text())["chosen"] == "target_recall"
    _run(modernenc, "predict", best, "small_test.jsonl", "--out", "predictions.jsonl", cwd=work, env=env)
    rows = [json.loads(line) for line in (work / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 64 and all(0.0 <= r["probability"] <= 1.0 for r in rows)
