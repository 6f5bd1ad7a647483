"""The networkx view of a program's dataflow, and the warnings ``shardc check`` gives from it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import shardc
from shardc.cli.main import main
from shardc.ir.dataflow import dataflow, unused

PROGRAM = """\
model m
dims B=2, E=4
input x : f32[B, E]
param w : f32[E]
param spare : f32[E]
h = x * w
d = gelu(x)
repeat 2 {
  param g : f32[E]
  x = x + h * g
}
output x
"""


def test_edges_run_from_operands_to_results() -> None:
    g = shardc.parse(PROGRAM)
    dag = dataflow(g)
    names = {i: dag.nodes[i]["name"] for i in dag.nodes}
    x0 = next(d.value.id for d, _ in g.decls() if d.value.name == "x")
    assert sorted(names[i] or "tmp" for i in dag.successors(x0)) == ["d", "h", "x"]  # h, gelu, the carry


def test_unused_finds_declarations_and_values_no_output_needs() -> None:
    found = unused(shardc.parse(PROGRAM))
    assert [(s.loc.line, getattr(s, "value", None) and s.value.name) for s in found] == [(5, "spare"), (7, None)]
    assert not unused(shardc.parse(PROGRAM.replace("output x", "output x, d, spare")))


def test_examples_have_nothing_unused() -> None:
    for path in sorted(Path(__file__).resolve().parent.parent.glob("examples/*.model")):
        assert not unused(shardc.load(path)), path.name


def test_check_warns_with_location(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.model"
    path.write_text(PROGRAM)
    assert main(["check", str(path)]) == 0  # a warning, not an error
    err = capsys.readouterr().err
    assert f"{path}:5:1: warning: param 'spare' is declared but no output depends on it\nparam spare : f32[E]\n^" in err
    assert f"{path}:7:1: warning: 'd' is computed but no output depends on it" in err
    assert main(["check", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [(w["line"], w["col"]) for w in data["warnings"]] == [(5, 1), (7, 1)]

