"""The quickstart chain: stage order, reuse of finished stages, and that every stage's command is real."""

from __future__ import annotations

from pathlib import Path

import pytest

import modernenc.pv.quickstart as chain
from modernenc.cli import build_parser


def test_finished_stages_are_reused_and_the_rest_run_in_order(monkeypatch, capsys):
    ran = []
    fake = [
        chain.Stage("a", "first", lambda: True, run=lambda: ran.append("a")),
        chain.Stage("b", "second", lambda: False, run=lambda: ran.append("b")),
        chain.Stage("c", "third", lambda: False, run=lambda: ran.append("c")),
    ]
    monkeypatch.setattr(chain, "stages", lambda out: fake)
    chain.run_chain("unused.md")
    assert ran == ["b", "c"]
    out = capsys.readouterr().out
    assert "[1/3] a: first  (done, reusing)" in out and "[3/3] c: third" in out
    ran.clear()
    chain.run_chain("unused.md", only=["c"])
    assert ran == ["c"]


def test_a_results_path_that_cannot_be_written_fails_before_any_stage(monkeypatch, tmp_path):
    ran = []
    monkeypatch.setattr(chain, "stages", lambda out: [chain.Stage("a", "x", lambda: False, run=ran.append)])
    (tmp_path / "README.md").write_text("the user's own file")
    for bad, problem in (
        (
            tmp_path / "no" / "x.md",
            f"the results table {tmp_path / 'no' / 'x.md'} is in a folder that does not",
        ),
        (tmp_path, f"the results table \\(--out\\) {tmp_path} is a folder"),
        (tmp_path / "README.md", "refusing to replace .*README.md: modernenc has no record"),
    ):
        with pytest.raises((chain.ChainError, ValueError), match=problem):
            chain.run_chain(bad)
    assert ran == [] and (tmp_path / "README.md").read_text() == "the user's own file"


def test_every_stage_is_a_valid_modernenc_command_on_files_that_exist():
    from modernenc.train.config import load_config

    parser = build_parser()
    for stage in chain.stages(Path("results.md")):
        if stage.command is None:
            continue
        args = parser.parse_args(stage.command)  # a real subcommand with valid options
        named = [*(getattr(args, "input", None) or []), getattr(args, "tokenizer", None)]
        for path in [*named, getattr(args, "source", None)]:
            assert path is None or Path(path).exists(), (stage.name, path)
        if args.command == "train":
            load_config(args.yaml, args.overrides)  # the recipe and its overrides are valid
