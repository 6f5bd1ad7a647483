"""``shardc export --to jax`` without running jax: the text, its size, the CLI, and the hint without jax."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import shardc
from shardc.cli.main import main
from shardc.export.to_jax import partition_spec
from shardc.ir.layout import Layout

ROOT = Path(__file__).resolve().parent.parent
PALM_540B = ROOT / "examples" / "palm_540b_prefill.model"


def test_the_order_of_a_dims_axes_is_kept_in_its_partition_spec() -> None:
    assert partition_spec(Layout.parse("BLH_yzxD")) == 'P(None, None, ("y", "z", "x"), None)'
    assert partition_spec(Layout.parse("E_xF_yz")) == 'P("x", ("y", "z"))'


def test_every_op_has_its_line_and_its_shardc_statement() -> None:
    sg = shardc.shard(shardc.load(ROOT / "examples" / "tiny_layer.model"), "2x2x2")
    text = shardc.export_jax(sg)
    compile(text, "exported.py", "exec")
    for op in sg.ops():
        assert f"  # {op.result.name} = " in text, op.result.name
    assert "lax.scan(" in text and "length=2)" in text
    assert re.search(r'lax\.psum_scatter\(\w+, \("y", "z"\), scatter_dimension=2, tiled=True\)', text)


def _palm(layers: int) -> shardc.Graph:
    text = PALM_540B.read_text().replace("repeat 118 {", f"repeat {layers} {{")
    assert f"repeat {layers} {{" in text
    return shardc.shard(shardc.parse(text, str(PALM_540B)))


def test_the_size_of_a_palm_540b_export_does_not_grow_with_the_layer_count() -> None:
    # (its time is benchmarks/export.py's)
    text = shardc.export_jax(_palm(118))
    million = shardc.export_jax(_palm(1_000_000))
    assert "lax.scan(" in text and "length=118)" in text and "length=1000000)" in million
    digits = len("1000000") - len("118")
    # only the digits of the layer count differ, in each place it is written
    assert len(million) - len(text) == digits * million.count("1000000")
    assert million.replace("1000000", "118") == text


def test_the_cli_writes_the_program(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "prog.py"
    assert main(["export", str(ROOT / "examples" / "tiny_ffn.model"), "--mesh", "2x4", "--to", "jax",
                 "-o", str(out)]) == 0
    assert "def body(" in out.read_text()
    assert "--devices 8 --check --time" in capsys.readouterr().err


@pytest.mark.parametrize("to_file", [False, True])
def test_the_cli_under_json_prints_one_object(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              to_file: bool) -> None:
    """``--json``: standard output is one JSON object, the program inside it when there is no ``-o``."""
    out = tmp_path / "prog.py"
    argv = ["export", str(ROOT / "examples" / "tiny_ffn.model"), "--mesh", "2x4", "--to", "jax", "--json"]
    assert main(argv + (["-o", str(out)] if to_file else [])) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["mesh"] == "2x4" and obj["chips"] == 8 and obj["target"] == "jax" and obj["lines"] > 10
    if to_file:
        assert obj["output"] == str(out) and "program" not in obj and "def body(" in out.read_text()
    else:
        assert obj["output"] is None and "def body(" in obj["program"]


def test_the_cli_refuses_an_unknown_target(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(ROOT / "examples" / "tiny_ffn.model"), "--to", "torch"]) == 2
    assert "unknown export target 'torch'" in capsys.readouterr().err


def test_without_jax_the_program_says_how_to_install_it(tmp_path: Path) -> None:
    prog = tmp_path / "prog.py"
    prog.write_text(shardc.export_jax(shardc.shard(shardc.load(ROOT / "examples" / "tiny_ffn.model"), "2x2")))
    block = ("import runpy, sys; sys.modules['jax'] = None; sys.argv = [sys.argv[1]]; "
             "runpy.run_path(sys.argv[0], run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", block, str(prog)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert 'pip install "shardc[jax]"' in proc.stderr
