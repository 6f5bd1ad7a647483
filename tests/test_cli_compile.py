"""``shardc compile``: the sharded program, the collectives table, --explain, --json and -o.

The CLI is called in-process (:func:`shardc.cli.main`) and its output read with capsys.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest

import shardc
from shardc.cli.common import human_bytes
from shardc.cli.main import main
from shardc.ir.graph import OpKind
from shardc.sharding.presets import FFN_CHOICES
from shardc.sharding.replication import replication_warning
from shardc.sharding.shard import shard_program

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
ALL_EXAMPLES = sorted(EXAMPLES.glob("*.model"))
PALM_DECODE = EXAMPLES / "palm_540b_decode.model"
PALM_PREFILL = EXAMPLES / "palm_540b_prefill.model"
TINY_FFN = EXAMPLES / "tiny_ffn.model"
TINY_LAYER = EXAMPLES / "tiny_layer.model"
KINDS = {"all_gather", "reduce_scatter", "all_reduce", "all_to_all"}
NOT_DIVISIBLE = re.compile(r"dim ([A-Z]) of size \d+ is not divisible")


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, dict]:
    code, out, _ = run(capsys, *argv, "--json")
    return code, json.loads(out)  # exactly one JSON object on stdout


def preset_args(ffn: str | None, attention: str | None) -> list[str]:
    return ([f"--ffn={ffn}"] if ffn else []) + ([f"--attention={attention}"] if attention else [])


def needs_padding(path: Path, ffn: str | None) -> dict[str, int]:
    """1D weight-stationary splits heads 64 ways: the PaLM files pad H to 64, as the paper does."""
    return {"H": 64} if ffn == "1d-ws" and path.stem.startswith("palm_") else {}


# --- every example under every preset ------------------------------------------------------
@pytest.mark.parametrize("attention", [None, "heads", "batch"])
@pytest.mark.parametrize("ffn", [None, *FFN_CHOICES])
@pytest.mark.parametrize("path", ALL_EXAMPLES, ids=lambda p: p.stem)
def test_compile_every_example_and_preset(capsys: pytest.CaptureFixture[str], path: Path, ffn: str | None,
                                          attention: str | None) -> None:
    sizes = needs_padding(path, ffn)
    sets = [f"--set={d}={n}" for d, n in sizes.items()]
    try:
        expected = shard_program(shardc.load(path, sizes=sizes), None, ffn, attention)
    except shardc.ShardcError as err:  # a preset that does not divide this program's dims
        assert NOT_DIVISIBLE.search(err.message), err.message
        code, out, stderr = run(capsys, "compile", path, *sets, *preset_args(ffn, attention))
        assert code == 2 and out == ""
        assert err.message in stderr
        return
    code, out, err = run(capsys, "compile", path, *sets, *preset_args(ffn, attention))
    assert code == 0, err
    warning = replication_warning(expected.graph, expected.strategy)  # the run-replicated warning, if any
    assert err == ("" if warning is None else f"{path}: warning: {warning.message}\n  hint: {warning.hint}\n")
    program = shardc.format(expected.graph)
    assert out.startswith(program)
    # The table follows as comments: the whole output is itself a sharded .model program.
    assert all(line.startswith("#") or not line for line in out[len(program):].splitlines())
    printed = shardc.parse(out, "<stdout>")
    assert printed.is_sharded
    assert printed == expected.graph
    assert shardc.parse(program) == expected.graph


PALM_EXAMPLES = [p for p in ALL_EXAMPLES if p.stem.startswith("palm_")]


@pytest.mark.parametrize("path", PALM_EXAMPLES, ids=lambda p: p.stem)
def test_1d_ws_on_palm_needs_padded_heads(capsys: pytest.CaptureFixture[str], path: Path) -> None:
    code, out, err = run(capsys, "compile", path, "--ffn", "1d-ws")
    assert code == 2 and out == ""
    assert NOT_DIVISIBLE.search(err).group(1) == "H"
    assert "--set H=" in err  # the hint says how to pad
    assert "Traceback" not in err
    code, data = run_json(capsys, "compile", path, "--ffn", "1d-ws")
    assert code == 2
    assert "dim H" in data["error"]["message"]
    code, _, err = run(capsys, "compile", path, "--ffn", "1d-ws", "--set", "H=64")
    assert code == 0, err


# --- the collectives table -------------------------------------------------------------------
def test_table_palm_2d_ws(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "compile", PALM_DECODE, "--ffn", "2d-ws", "--attention", "batch",
                       "--set", "H=64")
    assert code == 0
    table = out[out.index("# collectives on mesh 4x4x4 (64 chips)"):]
    lines = table.splitlines()
    assert "# top level" in lines
    assert "# repeat 118 (per layer, ×118)" in lines
    header = next(line for line in lines if "collective" in line and "bytes/chip" in line)
    assert header.split() == ["#", "value", "collective", "axes", "dim", "from", "->", "to", "bytes/chip",
                              "reason"]
    # The paper's 2D layout: all-gather(yz) of the layernorm output, reduce-scatter(x) into F, ...
    assert re.search(r"h1\s+all_gather\s+yz\s+-\s+BLE_xyz -> BLE_x\s+540\.0 KiB", table)
    assert re.search(r"reduce_scatter\s+x\s+F\s+BLF_yz \(partialsum-x\) -> BLF_yzx\s+432\.0 KiB", table)
    assert re.search(r"u1\s+all_gather\s+x\s+-\s+BLF_yzx -> BLF_yz", table)
    # ... and one reduce-scatter(yz) of the summed attention and MLP outputs (parallel block).
    assert len(re.findall(r"reduce_scatter\s+yz\s+E\s+BLE_x \(partialsum-yz\) -> BLE_xyz", table)) == 1
    assert re.search(r"h\s+all_reduce \(in op\)\s+xyz", table)  # layernorm statistics
    result = shard_program(shardc.load(PALM_DECODE, sizes={"H": 64}), None, "2d-ws", "batch")
    per_layer = sum(c.bytes_per_chip for c in result.collectives if c.repeat == 0)
    per_run = sum(c.bytes_per_chip * c.count for c in result.collectives)
    assert (f"{human_bytes(per_layer)} per chip per layer, × 118 = {human_bytes(per_layer * 118)} "
            "per chip per run") in table
    assert f"# program run: {human_bytes(per_run)} per chip" in lines


def test_table_totals_tiny(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "compile", TINY_FFN)
    assert code == 0
    assert "#   (no collectives)" in out  # the top level of tiny_ffn
    assert "#   total: 4 collectives, 480 B per chip per layer, × 2 = 960 B per chip per run" in out
    assert "# program run: 960 B per chip" in out


def test_slices_stay_in_the_program_only(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ("compile", PALM_DECODE, "--ffn", "wg-xyz", "--attention", "heads")
    code, out, _ = run(capsys, *argv)
    assert code == 0
    assert "= slice(" in out
    table = out[out.index("# collectives on mesh"):]
    assert " slice " not in table
    assert "(plus 2 slices: free local ops)" in table  # the replicated KV caches cut to meet q
    code, data = run_json(capsys, *argv)
    assert "= slice(" in data["program"]
    assert all(c["kind"] != "slice" for c in data["collectives"])


def test_human_bytes() -> None:
    assert human_bytes(0) == "0 B"
    assert human_bytes(1008) == "1,008 B"
    assert human_bytes(552960) == "540.0 KiB"
    assert human_bytes(1536768) == "1.5 MiB"
    assert human_bytes(3 * 2**30) == "3.0 GiB"


# --- --json ----------------------------------------------------------------------------------
def test_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, data = run_json(capsys, "compile", PALM_DECODE, "--set", "H=64")
    assert code == 0
    assert {"program", "mesh", "ffn", "attention", "collectives"} <= set(data)
    assert data["mesh"] == "4x4x4"
    assert (data["ffn"], data["attention"]) == ("2d-ws", "batch")  # the phase-rule defaults for decode
    result = shard_program(shardc.load(PALM_DECODE, sizes={"H": 64}))
    assert shardc.parse(data["program"]) == result.graph
    records = [c for c in result.collectives if c.kind is not OpKind.SLICE]
    assert len(data["collectives"]) == len(records)
    for c, r in zip(data["collectives"], records):
        assert {"kind", "axes", "dim", "bytes_per_chip", "count", "reason", "implicit"} <= set(c)
        assert c["kind"] in KINDS
        assert (c["kind"], c["bytes_per_chip"], c["count"], c["implicit"]) == (
            r.kind.value, r.bytes_per_chip, r.count, r.implicit)
        assert c["reason"]
    implicit = [c for c in data["collectives"] if c["implicit"]]
    assert implicit and all(c["kind"] == "all_reduce" for c in implicit)
    assert {c["kind"] for c in data["collectives"]} == KINDS  # decode by batch uses all four
    assert [c["count"] for c in data["collectives"] if c["value"] == "h1"] == [118]
    total = sum(c["bytes_per_chip"] * c["count"] for c in data["collectives"])
    assert data["bytes_per_chip_per_run"] == total


def test_json_prefill_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    code, data = run_json(capsys, "compile", PALM_PREFILL, "--ffn", "wg-xyz")
    assert code == 0
    assert data["ffn"] == "wg-xyz"
    assert data["attention"] == "heads"  # prefill at batch 1: B does not divide over 64 chips
    assert {c["kind"] for c in data["collectives"]} == {"all_gather"}


def test_json_explain(capsys: pytest.CaptureFixture[str]) -> None:
    code, data = run_json(capsys, "compile", PALM_DECODE, "--explain")
    assert code == 0
    assert data["preset"]["ffn"] == "2d-ws"
    assert data["layouts"]["win1"] == "E_xF_yz"
    assert data["layouts"]["k"] == "B_yzxSD"


# --- -o OUT ------------------------------------------------------------------------------------
def test_output_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_file = tmp_path / "palm.sharded.model"
    code, out, err = run(capsys, "compile", PALM_DECODE, "--ffn", "2d-ws", "-o", out_file)
    assert code == 0, err
    header, text = out_file.read_text(encoding="utf-8").split("\n", 1)
    # The header names the source, relative to the written file, and the digest of its text
    # (verify --against reads both).
    digest = hashlib.sha256(Path(PALM_DECODE).read_bytes()).hexdigest()[:16]
    assert header == ("# shardc: sharded from " + os.path.relpath(Path(PALM_DECODE).resolve(), tmp_path)
                      + f" (sha256 {digest})")
    assert text == shardc.format(shard_program(shardc.load(PALM_DECODE), None, "2d-ws").graph)
    assert out.startswith(f"wrote the sharded program to {out_file} (")
    assert "repeat 118 {" not in out  # the program went to the file
    assert "collectives on mesh 4x4x4" in out and "\n# " not in out  # a plain table
    umask = os.umask(0)
    os.umask(umask)
    assert out_file.stat().st_mode & 0o777 == 0o666 & ~umask
    assert list(tmp_path.iterdir()) == [out_file]  # no temporary left behind
    code, out, err = run(capsys, "check", out_file)
    assert code == 0, err
    assert "sharded" in out
    # An already-sharded program compiles to itself (verified as written).
    code, out, err = run(capsys, "compile", out_file)
    assert code == 0, err
    assert out.startswith(text)
    assert "written in the sharded program" in out


def test_output_keeps_mode_and_replaces(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_file = tmp_path / "o.model"
    out_file.write_text("old\n")
    out_file.chmod(0o640)
    code, _, err = run(capsys, "compile", TINY_FFN, "-o", out_file, "--json")
    assert code == 0, err
    assert out_file.read_text().split("\n", 1)[1].startswith("# A tiny feed-forward stack")
    assert out_file.stat().st_mode & 0o777 == 0o640


def test_output_to_missing_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "compile", TINY_FFN, "-o", tmp_path / "no" / "such.model")
    assert code == 2
    assert "cannot write" in err and "Traceback" not in err


# --- --explain ---------------------------------------------------------------------------------
def test_explain_2d_ws_palm(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "compile", PALM_DECODE, "--ffn", "2d-ws", "--explain")
    assert code == 0
    head = out[:out.index("# PaLM 540B")]  # the explanation comes before the program
    assert "E_xF_yz" in head
    assert re.search(r"^#\s+win1\s+E_xF_yz$", head, re.M)
    assert re.search(r"^#\s+wout\s+F_yzE_x$", head, re.M)
    assert re.search(r"^#\s+k\s+B_yzxSD$", head, re.M)
    assert re.search(r"^#\s+ffn\s+2d-ws$", head, re.M)  # given, so not marked default
    assert re.search(r"^#\s+attention\s+batch \(default\)$", head, re.M)
    assert re.search(r"^#\s+weights \(stored\)\s+E_x F_yz", head, re.M)
    assert shardc.parse(out).is_sharded  # still one valid program


def test_explain_weight_gathered(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # Never point a test's output at a device: a writer that renames over its target would replace it.
    code, out, _ = run(capsys, "compile", PALM_PREFILL, "--ffn", "wg-xyz", "--explain", "-o", str(tmp_path / "p.model"))
    assert code == 0
    assert re.search(r"^\s+ffn\s+wg-xyz$", out, re.M)
    assert re.search(r"^\s+attention\s+heads \(default\)$", out, re.M)
    assert "weights (gathered over xyz)" in out
    assert re.search(r"^\s+win1\s+E_xF_yz$", out, re.M)  # stored as in 2D: one copy for both phases


def _header_split(row: str) -> dict[str, tuple[str, ...]]:
    """``B_yz E`` (before any parenthesised note) -> {"B": ("y", "z"), "E": ()}."""
    out = {}
    for word in row.split(" (")[0].split():
        dim, _, axes = word.partition("_")
        out[dim] = tuple(axes)
    return out


@pytest.mark.parametrize("path, mesh, args", [
    (PALM_DECODE, "8x4x4", ["--attention", "batch"]),  # B=64 does not divide over 128 chips
    (PALM_DECODE, "4x4x4", ["--attention", "batch"]),
    (PALM_PREFILL, "4x4x4", ["--ffn", "wg-xyz"]),  # B=1: nothing to split activations over
    (PALM_PREFILL, "4x4x4", ["--ffn", "wg-xyz", "--set", "B=64", "--attention", "batch"]),
    (PALM_DECODE, "4x4x4", ["--ffn", "wg-x", "--set", "B=2", "--attention", "batch"]),
])
def test_explain_header_agrees_with_the_layouts_listed(capsys: pytest.CaptureFixture[str], path: Path, mesh: str,
                                                       args: list[str]) -> None:
    """The header said "KV cache B_yzx" over caches listed B_yzSD, and "activations rest as B_xyz E"
    over replicated activations: it described the preset, not what the program gets."""
    code, data = run_json(capsys, "compile", path, "--mesh", mesh, "--explain", *args)
    assert code == 0
    g = shardc.parse(data["program"])
    assert g.mesh is not None
    rest = _header_split(data["preset"]["activations rest as"])
    x = next(d.value for d, _ in g.decls() if d.value.name == "x")
    assert x.layout == shardc.Layout.of(x.dims, {d: a for d, a in rest.items() if d in x.dims})
    caches = [d.value for d, _ in g.decls() if str(d.kind) == "cache"]
    assert bool(caches) == (path == PALM_DECODE)
    if "batch" in args and caches:
        cache_b = _header_split(data["preset"]["KV cache"])["B"]
        assert all(c.layout.axes_of("B") == cache_b for c in caches), (cache_b, caches[0].layout)


def test_weight_gathered_reasons_name_the_axes_of_their_row(capsys: pytest.CaptureFixture[str]) -> None:
    """wk : E_xD is gathered over x alone under wg-xyz: its reason said "gathered over xyz"."""
    code, data = run_json(capsys, "compile", PALM_PREFILL, "--ffn", "wg-xyz")
    assert code == 0
    gathered = [c for c in data["collectives"] if "weight-gathered" in c["reason"]]
    assert {c["value"] for c in gathered} >= {"wk1", "wq1"}
    for c in gathered:
        said = re.search(r"is gathered over ([a-z]+) before", c["reason"]).group(1)
        assert sorted(said) == sorted(c["axes"]), c
    wk = next(c for c in gathered if c["value"] == "wk1")
    assert wk["axes"] == "x" and "the preset gathers over xyz" in wk["reason"]


@pytest.mark.parametrize("path, args", [(PALM_DECODE, []), (PALM_PREFILL, ["--ffn", "wg-xyz"]),
                                        (TINY_LAYER, ["--mesh", "2x2x2", "--explain"])])
def test_cited_lines_are_those_of_the_printed_program(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                      path: Path, args: list[str]) -> None:
    """The reasons cited "line 45" of the source, which is not line 45 of the printed program;
    now a reason names what the collective feeds, and every line cited is the printed one."""
    code, data = run_json(capsys, "compile", path, *args)
    assert code == 0
    program = data["program"].splitlines()
    for c in data["collectives"]:
        assert re.match(rf"\s*{c['value']}\s+=", program[c["line"] - 1]), (c, program[c["line"] - 1])
        assert "line" not in c["reason"], c["reason"]
    for r in data["replication"]:
        assert re.match(rf"\s*{r['value']}\s+= einsum", program[r["line"] - 1])
    for out_file in (None, tmp_path / "s.model"):  # the table under the program, or the file written
        code, out, _ = run(capsys, "compile", path, *args, *(["-o", out_file] if out_file else []))
        assert code == 0
        shown = (out_file.read_text() if out_file else out).splitlines()
        table = out[out.index("collectives on mesh"):]
        assert not re.search(r"on line \d", table), table
        for value, line in re.findall(r"^#?\s+(\w+)\s+[A-Z]+,[A-Z,]*->[A-Z]+\s+(\d+)", table, re.M):
            assert re.match(rf"\s*{value}\s+= einsum", shown[int(line) - 1]), (value, line)


# --- errors, mesh, help -------------------------------------------------------------------------
@pytest.mark.parametrize("flag,value,valid", [("--ffn", "3d-ws", "1d-ws, 2d-ws, wg-x, wg-xy, wg-xyz"),
                                              ("--attention", "sequence", "heads, batch")])
def test_unknown_preset(capsys: pytest.CaptureFixture[str], flag: str, value: str, valid: str) -> None:
    code, out, err = run(capsys, "compile", TINY_LAYER, flag, value)
    assert code == 2 and out == ""
    assert f"unknown {flag} preset '{value}'" in err
    assert valid in err
    code, data = run_json(capsys, "compile", TINY_LAYER, flag, value)
    assert code == 2
    assert valid in data["error"]["message"]


def test_mesh_override(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "compile", TINY_LAYER, "--mesh", "2x2x2", "--explain")
    assert code == 0, err
    g = shardc.parse(out)
    assert g.mesh == shardc.Mesh.parse("2x2x2")
    assert g == shard_program(shardc.load(TINY_LAYER, mesh=shardc.Mesh.parse("2x2x2"))).graph
    assert "# preset on mesh 2x2x2 (8 chips)" in out
    assert "# collectives on mesh 2x2x2 (8 chips)" in out
    code, data = run_json(capsys, "compile", PALM_DECODE, "--mesh", "2x2x2")
    assert code == 0
    assert data["mesh"] == "2x2x2"
    assert "mesh x=2, y=2, z=2" in data["program"]


def test_sharded_program_keeps_its_mesh(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_file = tmp_path / "t.model"
    assert run(capsys, "compile", TINY_FFN, "-o", out_file)[0] == 0
    code, _, err = run(capsys, "compile", out_file, "--mesh", "2x2x2")
    assert code == 2
    assert "cannot change the mesh of a sharded program" in err


def test_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(TINY_FFN.read_text()))
    code, out, err = run(capsys, "compile", "-")
    assert code == 0, err
    assert shardc.parse(out).is_sharded


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "compile", "--help")
    assert code == 0
    for flag in ("--ffn", "--attention", "--mesh", "--set", "-o", "--explain", "--json"):
        assert flag in out
    assert "shardc compile examples/palm_540b_decode.model" in out
    code, out, _ = run(capsys, "--help")
    assert "compile" in out



def test_mesh_override_drops_the_mesh_lines_comment(capsys: pytest.CaptureFixture[str]) -> None:
    """``# 64 TPU v4 chips`` described the file's mesh, not the one --mesh asks for."""
    code, out, _ = run(capsys, "compile", PALM_DECODE, "--mesh", "2x2x2")
    assert code == 0
    assert re.search(r"^mesh x=2, y=2, z=2$", out, re.M)
    code, out, _ = run(capsys, "compile", PALM_DECODE)
    assert re.search(r"^mesh x=4, y=4, z=4  # 64 TPU v4 chips$", out, re.M)  # kept when the mesh is the file's


def test_compiling_compiled_output_prints_one_table(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The notes of an earlier compile are not kept as comments of the program and printed twice."""
    first = tmp_path / "once.model"
    code, out, _ = run(capsys, "compile", TINY_FFN, "--explain")
    first.write_text(out)
    code, again, _ = run(capsys, "compile", first, "--explain")
    assert code == 0
    assert again.count("# collectives on mesh") == 1 and again.count("# preset on mesh") == 1
    assert again.count("# total:") == out.count("# total:")
    assert shardc.parse(again).is_sharded


# --- verify --against: a sharded file against its source --------------------------------------------
def test_verify_against_catches_a_changed_computation(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A sharded file whose maths was edited verifies against itself, but not against its source."""
    out_file = tmp_path / "t.model"
    code, _, err = run(capsys, "compile", ROOT / "examples" / "tiny_layer.model", "--mesh", "2x2x2", "-o", out_file)
    assert code == 0, err
    code, out, _ = run(capsys, "verify", out_file, "--against")
    assert code == 0 and "PASSED" in out and "against  " in out
    out_file.write_text(out_file.read_text().replace("silu(t2_1)", "relu(t2_1)"))
    code, out, _ = run(capsys, "verify", out_file)
    assert code == 0 and "PASSED" in out  # consistent with itself
    code, out, _ = run(capsys, "verify", out_file, "--against")
    assert code == 1 and "FAILED: output" in out
    code, out, _ = run(capsys, "verify", out_file, "--against", ROOT / "examples" / "tiny_layer.model", "--json")
    assert code == 1 and json.loads(out)["passed"] is False
    # Recompiling the sharded file keeps naming the original source.
    again = tmp_path / "sub" / "t2.model"
    again.parent.mkdir()
    code, _, _ = run(capsys, "compile", out_file, "-o", again)
    first = again.read_text().splitlines()[0]
    assert code == 0 and first.split(" (sha256 ")[0].endswith("examples/tiny_layer.model")
    assert first == out_file.read_text().splitlines()[0].replace("../", "../../", 1)


@pytest.mark.parametrize("old, new", [
    ("silu(t2_1)", "relu(t2_1)"),  # an activation
    ("t1 * 0.5 ", "t1 * 0.25"),  # a constant
    ("x    = x + ", "x    = x - "),  # + to -
])
def test_verify_against_catches_each_change_of_the_maths(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                          old: str, new: str) -> None:
    out_file = tmp_path / "t.model"
    run(capsys, "compile", ROOT / "examples" / "tiny_layer.model", "--mesh", "2x2x2", "-o", out_file)
    text = out_file.read_text()
    assert old in text
    out_file.write_text(text.replace(old, new, 1))
    assert run(capsys, "verify", out_file)[0] == 0  # the edited file agrees with itself
    assert run(capsys, "verify", out_file, "--against")[0] == 1


def test_verify_against_catches_another_layer_count(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Both runs stop after --layers layers, where their outputs agree; the whole programs do not."""
    out_file = tmp_path / "t.model"
    run(capsys, "compile", ROOT / "examples" / "tiny_layer.model", "--mesh", "2x2x2", "-o", out_file)
    assert run(capsys, "verify", out_file, "--against", "--layers", "1")[0] == 0
    out_file.write_text(out_file.read_text().replace("repeat 2 {", "repeat 3 {", 1))
    code, out, _ = run(capsys, "verify", out_file, "--against", "--layers", "1")
    assert code == 1 and "runs 3 layers, the source's runs 2" in out
    code, data = run_json(capsys, "verify", out_file, "--against", "--layers", "1")
    assert code == 1 and data["first_mismatch"]["op"] == "repeat" and data["first_mismatch"]["rel_error"] is None


def test_verify_against_warns_of_a_source_edited_since_the_compile(capsys: pytest.CaptureFixture[str],
                                                                    tmp_path: Path) -> None:
    source, sharded = tmp_path / "layer.model", tmp_path / "s.model"
    source.write_text((ROOT / "examples" / "tiny_layer.model").read_text())
    run(capsys, "compile", source, "--mesh", "2x2x2", "-o", sharded)
    code, out, err = run(capsys, "verify", sharded, "--against")
    assert code == 0 and "warning" not in err and "edited since" not in out
    assert run_json(capsys, "verify", sharded, "--against")[1]["against"]["changed_since_compile"] is False
    source.write_text(source.read_text() + "# a comment: the maths is the same\n")
    code, out, err = run(capsys, "verify", sharded, "--against")
    assert code == 0, err  # the check itself still passes: the outputs agree
    assert "warning: this is not the text" in err and "edited since the compile" in out
    assert run_json(capsys, "verify", sharded, "--against")[1]["against"]["changed_since_compile"] is True
    # A header from before digests were recorded names the source alone: nothing to compare.
    head, rest = sharded.read_text().split("\n", 1)
    sharded.write_text(head.split(" (sha256 ")[0] + "\n" + rest)
    code, data = run_json(capsys, "verify", sharded, "--against")
    assert code == 0 and data["against"]["changed_since_compile"] is None
    # Recompiling the sharded file keeps the source's digest, not its own.
    again = tmp_path / "again.model"
    run(capsys, "compile", sharded, "-o", again)
    assert again.read_text().split("\n", 1)[0] == head.split(" (sha256 ")[0]


@pytest.mark.parametrize("setup, words", [
    ("unsharded", "is not sharded"),
    ("no header", "names no source program"),
    ("other program", "it is not the program this file was sharded from"),
])
def test_verify_against_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path, setup: str,
                               words: str) -> None:
    sharded = tmp_path / "s.model"
    run(capsys, "compile", ROOT / "examples" / "tiny_layer.model", "--mesh", "2x2x2", "-o", sharded)
    argv = {"unsharded": ["verify", str(ROOT / "examples" / "tiny_layer.model"), "--against"],
            "no header": ["verify", str(sharded), "--against"],
            "other program": ["verify", str(sharded), "--against", str(TINY_FFN)]}[setup]
    if setup == "no header":
        sharded.write_text(sharded.read_text().split("\n", 1)[1])
    code, out, err = run(capsys, *argv)
    assert code == 2 and words in err and "Traceback" not in err
