"""Every example that ``shardc COMMAND --help`` shows runs, as written, and succeeds.

Each example line is run in-process in a temporary folder that holds a copy of ``examples/`` and the
placeholder files the examples name (``my.model``, ``my_chip.toml``), so outputs such as
``-o tiny_ffn.sharded.model`` land there.  ``a && b`` runs ``b`` only if ``a`` succeeded and
``a || b`` only if it failed, as a shell would; the line succeeds when its last command run does.
"""
from __future__ import annotations

import contextlib
import io
import re
import shlex
import shutil
from pathlib import Path

import pytest

from shardc.cli.main import COMMANDS, main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_LINES = [(c.name, line.strip()) for c in COMMANDS for line in c.example.splitlines() if line.strip()]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    shutil.copy(ROOT / "examples" / "tiny_layer.model", tmp_path / "my.model")
    shutil.copy(ROOT / "shardc" / "hardware" / "profiles" / "tpu-v4.toml", tmp_path / "my_chip.toml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_line(line: str) -> tuple[int, str]:
    """Run one example line (``&&`` and ``||`` as in a shell); its final status and all output."""
    words = shlex.split(line)
    status, output, skip_to = 0, [], None
    command: list[str] = []
    for word in words + [";"]:
        if word not in ("&&", "||", ";"):
            command.append(word)
            continue
        if skip_to is None:
            assert command[0] == "shardc", line
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                status = main(command[1:])
            output.append(out.getvalue() + err.getvalue())
        skip_to = None
        if (word == "&&" and status != 0) or (word == "||" and status == 0):
            skip_to = word  # the next command is not run
        command = []
    return status, "".join(output)


def test_every_command_shows_an_example() -> None:
    assert {c.name for c in COMMANDS} == {name for name, _ in EXAMPLE_LINES}


@pytest.mark.parametrize("command, line", EXAMPLE_LINES, ids=[line for _, line in EXAMPLE_LINES])
def test_help_example_runs(workdir: Path, command: str, line: str) -> None:
    status, output = run_line(line)
    assert status == 0, f"{line!r} exited {status}:\n{output[-2000:]}"
    assert "Traceback" not in output


def test_the_runner_can_fail(workdir: Path) -> None:
    assert run_line("shardc check examples/no_such.model")[0] == 2
    assert run_line("shardc check examples/no_such.model || shardc check examples/tiny_ffn.model")[0] == 0
    assert run_line("shardc check examples/no_such.model && shardc check examples/tiny_ffn.model")[0] == 2


def _options(parser: object) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}  # type: ignore[attr-defined]


def test_every_flag_a_help_names_is_one_it_takes() -> None:
    """verify's and cost's --ffn help said "--explain shows it", a flag both reject: a flag named in
    a command's help is that command's, or is written after the command it belongs to."""
    import argparse

    from shardc.cli.main import build_parser

    top = build_parser()
    subparsers = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    parsers = subparsers.choices
    checked = 0
    for name, parser in parsers.items():
        text = parser.format_help()
        for program, owner, flag in re.findall(r"(python \S+\s+)?(?:\b(\w+)\s+)?(--[a-z][a-z-]*)", text):
            if program:  # a flag of the program shardc writes ("python OUT --check")
                continue
            where = owner if owner in parsers else name
            assert flag in _options(parsers[where]), f"shardc {name} --help names {where} {flag}"
            checked += 1
    assert checked > 50
    assert "--explain" not in _options(parsers["verify"])  # the case that was wrong: now "compile --explain"
