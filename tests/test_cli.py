"""The `modernenc` command: every subcommand answers --help with an example, and errors are one line."""

from __future__ import annotations

import json
import re

import pytest
import torch
import transformers
from conftest import run_cli

from modernenc.cli import COMMANDS, main
from modernenc.model import (
    ModernEncoderConfig,
    ModernEncoderForMaskedLM,
    ModernEncoderForSequenceClassification,
    ModernEncoderForTokenClassification,
)
from modernenc.train.composer_model import ModernEncoderComposerModel


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_subcommand_has_help_with_an_example(name, capsys):
    try:
        main([name, "--help"])
    except SystemExit as done:
        assert done.code in (0, None)
    text = capsys.readouterr().out
    assert "usage" in text.lower()
    assert "example" in text.lower()


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for name in COMMANDS:
        assert name in text


def test_export_of_a_missing_checkpoint_is_a_one_line_error(tmp_path, capsys):
    assert run_cli("export-hf", tmp_path / "missing.pt", tmp_path / "out") == 1
    assert capsys.readouterr().err.startswith("modernenc export-hf: error: checkpoint")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["tile", "average-checkpoints"])
def test_tile_and_average_help_exit_0_with_an_example(name, capsys):
    with pytest.raises(SystemExit) as done:
        main([name, "--help"])
    assert done.value.code == 0
    assert f"Example: modernenc {name} " in capsys.readouterr().out


def test_average_of_a_missing_folder_is_a_one_line_error(tmp_path, capsys):
    assert run_cli("average-checkpoints", tmp_path / "nowhere", tmp_path / "avg.pt", "--last", "2") == 1
    assert re.match(
        r"modernenc average-checkpoints: error: save folder .* does not exist", capsys.readouterr().err
    )
    assert not (tmp_path / "avg.pt").exists()


@pytest.mark.parametrize("name", ["notes.jsonl", "model.safetensors", "empty.pt", "tensor.pt"])
def test_export_of_a_file_that_is_no_checkpoint_names_it(name, tmp_path, capsys):
    from safetensors.torch import save_file

    path = tmp_path / name
    if name == "notes.jsonl":
        path.write_text(json.dumps({"text": "a"}) + "\n")
    elif name == "model.safetensors":
        save_file({"w": torch.zeros(2)}, path)
    elif name == "empty.pt":
        path.touch()
    else:
        torch.save(torch.zeros(2), path)
    assert run_cli("export-hf", path, tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert err.startswith(
        f"modernenc export-hf: error: {path} is not a composer checkpoint written by train.py"
    )
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()


def test_export_of_a_run_folder_asks_for_its_pt_file(tmp_path, capsys):
    assert run_cli("export-hf", tmp_path, tmp_path / "out") == 1
    assert capsys.readouterr().err == (
        f"modernenc export-hf: error: checkpoint {tmp_path} is a folder; expected a .pt file written by "
        f"train.py, e.g. {tmp_path / 'latest-rank0.pt'}\n"
    )


@pytest.mark.parametrize(
    "cls, auto",
    [
        (ModernEncoderForMaskedLM, "AutoModelForMaskedLM"),
        (ModernEncoderForSequenceClassification, "AutoModelForSequenceClassification"),
        (ModernEncoderForTokenClassification, "AutoModelForTokenClassification"),
    ],
)
def test_export_names_the_auto_class_that_loads_the_task(cls, auto, tmp_path, capsys):
    config = ModernEncoderConfig(
        hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2
    )
    composer_model = ModernEncoderComposerModel(cls(config))  # what train.py saves, minus the trainer state
    torch.save({"state": {"model": composer_model.state_dict()}}, tmp_path / "latest-rank0.pt")
    main(["export-hf", str(tmp_path / "latest-rank0.pt"), str(tmp_path / "hf")])
    assert f"load it with transformers.{auto}.from_pretrained" in capsys.readouterr().out
    loaded = getattr(transformers, auto).from_pretrained(tmp_path / "hf")  # the named class loads it
    assert type(loaded).__name__ == cls.hf_architecture


def test_demo_runs_and_an_existing_export_is_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "demo"
    main(["demo", "--out", str(out), "--preset", "tiny"])
    printed = capsys.readouterr().out
    difference = float(printed.split("max |logit difference| vs transformers: ")[1].split()[0])
    assert difference < 1e-4 and "[4/4]" in printed
    assert run_cli("demo", "--out", out, "--preset", "tiny") == 1
    printed = capsys.readouterr()
    assert "already holds a Hugging Face model folder modernenc wrote; pass --force" in printed.err
    assert "[1/4]" not in printed.out
