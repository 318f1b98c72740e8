"""The `modernenc` command: every subcommand answers --help with an example, and errors are one line."""

from __future__ import annotations

import pytest

from modernenc.cli import COMMANDS, SCRIPTS, main


@pytest.mark.parametrize("name", sorted([*COMMANDS, *SCRIPTS]))
def test_every_subcommand_has_help_with_an_example(name, capsys):
    try:
        main([name, "--help"])
    except SystemExit as done:
        assert done.code in (0, None)
    text = capsys.readouterr().out
    assert "usage" in text.lower() or "train.py" in text
    assert "example" in text.lower() or "python " in text


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for name in [*COMMANDS, *SCRIPTS]:
        assert name in text


def test_export_of_a_missing_checkpoint_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["export-hf", str(tmp_path / "missing.pt"), str(tmp_path / "out")])
    assert str(exit_info.value.code).startswith("modernenc export-hf: error: checkpoint")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["tile", "average-checkpoints"])
def test_tile_and_average_help_exit_0_with_an_example(name, capsys):
    with pytest.raises(SystemExit) as done:
        main([name, "--help"])
    assert done.value.code == 0
    assert f"Example: modernenc {name} " in capsys.readouterr().out


def test_average_of_a_missing_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit, match="average-checkpoints: error: save folder .* does not exist"):
        main(["average-checkpoints", str(tmp_path / "nowhere"), str(tmp_path / "avg.pt"), "--last", "2"])
    assert not (tmp_path / "avg.pt").exists()
