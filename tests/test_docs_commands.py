"""Every command in README.md and docs/*.md, in its smallest form: the files it names exist, train.py
yamls and overrides pass the schema, `modernenc` subcommands parse, and every option given to a script is
one its `--help` lists. Running them for real is the quickstart's job (and too slow for tests)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from modernenc.cli import build_parser
from modernenc.train.config import load_config

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def doc_commands() -> list[tuple[str, list[str]]]:
    """(doc name, argv) for each command line of every ```bash block, continuation lines joined."""
    found = []
    for doc in DOCS:
        for block in re.findall(r"```bash\n(.*?)```", doc.read_text(), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" #")[0].strip()
                if line and not line.startswith("#"):
                    found.append((doc.name, shlex.split(line)))
    return found


COMMANDS = doc_commands()


@cache
def script_help(script: str) -> str:
    return subprocess.run(
        [sys.executable, str(REPO / script), "--help"], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout


def check_script_options(script: str, args: list[str]) -> None:
    assert (REPO / script).is_file(), f"{script} does not exist"
    listed = script_help(script)
    for option in (a.split("=")[0] for a in args if a.startswith("--")):
        assert re.search(rf"{re.escape(option)}\b", listed), f"{script} has no option {option}"


def check_train(args: list[str]) -> None:
    yaml, overrides = args[0], args[1:]
    load_config(REPO / yaml if (REPO / yaml).is_file() else yaml, [o for o in overrides if "=" in o])


def check(argv: list[str]) -> None:
    if argv[0] in ("source", "cd", "export"):
        return
    if argv[0] == "bash":
        assert (REPO / argv[1]).is_file(), f"{argv[1]} does not exist"
    elif argv[0] == "composer":
        entry = "train.py" if "train.py" in argv else "modernenc.train"
        check_train(argv[argv.index(entry) + 1 :])
    elif argv[0] == "python" and argv[1] == "-c":
        compile(argv[2], "<doc>", "exec")
    elif argv[0] == "python" and argv[1] == "train.py":
        check_train(argv[2:])
    elif argv[0] == "python" and argv[1] == "-m" and argv[2] == "modernenc.train":
        check_train(argv[3:])
    elif argv[0] == "python":
        check_script_options(argv[1], argv[2:])
    elif argv[0] == "modernenc":
        args = build_parser().parse_args(argv[1:])  # exits (fails the test) on an unknown option
        if args.command == "train":
            check_train([args.yaml, *args.overrides])
    elif argv[0] == "pip":
        assert argv[1] == "install", argv
    else:
        pytest.fail(f"unknown command in the docs: {shlex.join(argv)}")


def test_docs_have_commands():
    assert len(COMMANDS) > 20


@pytest.mark.parametrize("doc,argv", COMMANDS, ids=[f"{d}:{' '.join(a)[:60]}" for d, a in COMMANDS])
def test_doc_command_is_valid(doc, argv):
    check(argv)
