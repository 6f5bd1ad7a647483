"""Redundant compute (:mod:`shardc.sharding.replication`): per-einsum and whole-run replication factors,
the run-replicated warning, and how ``shardc compile`` and ``shardc cost`` report them (text and JSON)."""
from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

import shardc
from shardc.cli.main import main
from shardc.ir.graph import Graph, OpKind
from shardc.ir.layout import Layout
from shardc.ir.transforms import rebuild
from shardc.sharding.presets import FFN
from shardc.sharding.replication import Replicated, replication, replication_factor, replication_warning
from shardc.sharding.shard import shard_program

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TINY_LAYER = EXAMPLES / "tiny_layer.model"
TINY_FFN = EXAMPLES / "tiny_ffn.model"
PALM_DECODE = EXAMPLES / "palm_540b_decode.model"
PALM_PREFILL = EXAMPLES / "palm_540b_prefill.model"
BATCH_1 = ["--mesh", "4x4x4", "--ffn", "wg-xyz", "--set", "B=1"]


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def replicated_everywhere(sg: Graph) -> Graph:
    """The mutation: every value of ``sg`` held whole on every chip (the layouts a broken pass might give)."""
    return rebuild(sg, lambda v, _: replace(v, layout=Layout.replicated(v.dims)))[0]


# --- the factors -------------------------------------------------------------------------------
def test_tiny_layer_factors_by_hand() -> None:
    # tiny_layer on 2x2x2 (8 chips), 2d-ws, attention by heads: B=2 L=S=4 E=16 F=32 H=4 D=4 V=32.
    sg = shardc.shard(shardc.load(TINY_LAYER), "2x2x2", "2d-ws", "heads")
    got = {r.value: r for r in replication(sg)}
    assert set(got) == {"kn1", "vn1", "t1", "a"}
    # kn = einsum("BLE,ED->BLD"): 2*B*L*E*D = 1024 FLOPs, 128 per chip ideally; only E is split (over x,
    # 2 ways), so each chip does 512: the work of 4 chips is repeated.
    kn = got["kn1"]
    assert (kn.line, kn.kind, kn.spec) == (29, OpKind.EINSUM, "BLE,ED->BLD")
    assert (kn.factor, kn.flops_per_chip, kn.ideal_flops_per_chip) == (4.0, 512.0, 128.0)
    assert got["vn1"].factor == 4.0
    # The scores and the weighted sum split H over yz (4 ways) but are repeated over x: 2x, 256 of 1024.
    for name in ("t1", "a"):
        assert (got[name].factor, got[name].flops_per_chip, got[name].ideal_flops_per_chip) == (2.0, 256.0, 128.0)
    # The run: per layer 36,864 einsum FLOPs (q 4096, kn 1024, vn 1024, t1 1024, a 1024, o 4096, the three
    # FFN matmuls 8192 each), 2 layers, plus the unembedding's 8192: 81,920.  Redundant per layer:
    # 3 x 1024 for each of kn, vn and 1 x 1024 for each of t1, a = 8192, twice: 16,384.
    assert replication_factor(sg) == pytest.approx((81_920 + 16_384) / 81_920)
    assert replication_warning(sg, None) is None


def test_repeat_body_counts_once_and_weighs_by_trip_count() -> None:
    two = shardc.shard(shardc.load(TINY_LAYER), "2x2x2", "2d-ws", "heads")
    text = TINY_LAYER.read_text(encoding="utf-8").replace("repeat 2 {", "repeat 50 {")
    fifty = shardc.shard(shardc.parse(text, "fifty.model"), "2x2x2", "2d-ws", "heads")
    # One record per statement, whatever the trip count.
    assert replication(fifty) == replication(two)
    # The run weighs the body 50 times: 50 layers of 36,864 FLOPs (8192 redundant) and the unembedding's 8192.
    assert replication_factor(fifty) == pytest.approx((50 * (36_864 + 8192) + 8192) / (50 * 36_864 + 8192))


def test_a_perfect_split_reports_nothing() -> None:
    sg = shardc.shard(shardc.load(TINY_FFN), "2x2x2", "2d-ws")
    assert replication(sg) == []
    assert replication_factor(sg) == 1.0


def test_palm_decode_2d_ws_splits_the_ffn() -> None:
    sg = shardc.shard(shardc.load(PALM_DECODE), "4x4x4", "2d-ws")
    records = replication(sg)
    # The FFN matmuls (and q, o, attention, the unembedding) split perfectly over the 64 chips; only the
    # multiquery K/V projections (one head: E split over x alone) repeat, 16 ways.
    assert [(r.value, r.spec, r.factor) for r in records] == [("kn1", "BLE,ED->BLD", 16.0),
                                                               ("vn1", "BLE,ED->BLD", 16.0)]
    assert 1.0 < replication_factor(sg) < 1.05
    assert replication_warning(sg, None) is None


def test_mutation_replicated_layouts_give_the_chip_count() -> None:
    # The factor can fail: the same program with every value held whole repeats every einsum on all 8 chips.
    sg = shardc.shard(shardc.load(TINY_FFN), "2x2x2", "2d-ws")
    bad = replicated_everywhere(sg)
    records = replication(bad)
    assert len(records) == sum(1 for op in bad.ops() if op.kind is OpKind.EINSUM) == 2
    assert all(r.factor == 8.0 and r.flops_per_chip == 8 * r.ideal_flops_per_chip for r in records)
    assert replication_factor(bad) == 8.0
    warning = replication_warning(bad, None)
    assert warning is not None and "8x replicated" in warning.message
    assert "own layouts" in warning.hint


# --- the warning ---------------------------------------------------------------------------------
def test_batch_1_weight_gathered_warns() -> None:
    g = shardc.load(PALM_PREFILL, sizes={"B": 1})
    result = shard_program(g, shardc.Mesh.parse("4x4x4"), "wg-xyz", None)
    assert replication_factor(result.graph) == 64.0
    assert {r.factor for r in replication(result.graph)} == {64.0}
    warning = replication_warning(result.graph, result.strategy)
    assert warning is not None
    assert warning.message == ("the matmuls run 64x replicated on mesh 4x4x4: its 64 chips do the distinct work "
                               "of 1 chip")
    assert warning.hint == ("batch B=1 cannot split over the 64 chips wg-xyz gathers over; a weight-stationary "
                            "preset (--ffn 2d-ws) splits the work")
    # The remedy the hint names does split it.
    fixed = shard_program(g, shardc.Mesh.parse("4x4x4"), "2d-ws", None)
    assert replication_warning(fixed.graph, fixed.strategy) is None
    assert replication_factor(fixed.graph) < 1.1


def test_warning_rule_threshold() -> None:
    # At least max(2, chips / 2): tiny_layer wg-xy on 8 chips repeats 2.1x (no warning), wg-xyz 4x (one).
    g = shardc.load(TINY_LAYER)
    mesh = shardc.Mesh.parse("2x2x2")
    half = shard_program(g, mesh, "wg-xy", "heads")
    assert replication_factor(half.graph) == pytest.approx(2.1)
    assert replication_warning(half.graph, half.strategy) is None
    full = shard_program(g, mesh, "wg-xyz", "heads")
    assert replication_factor(full.graph) == 4.0
    warning = replication_warning(full.graph, full.strategy)
    assert warning is not None and "batch B=2 cannot split over the 8 chips wg-xyz" in warning.hint
    # Pins only: the hint names the preset instead.
    none = shard_program(g, mesh, FFN.NONE.value, "heads")
    warning = replication_warning(none.graph, none.strategy)
    assert warning is not None and warning.hint.startswith("--ffn none places only the program's pins")


# --- the command line ------------------------------------------------------------------------------
def test_compile_text_prints_the_section_and_the_warning(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "compile", PALM_PREFILL, *BATCH_1)
    assert code == 0
    table = out[out.index("# collectives on mesh"):]
    section = table[table.index("# redundant compute"):].splitlines()
    assert section[0] == ("# redundant compute on mesh 4x4x4 (64 chips): the run's matmul FLOPs per chip are 64x "
                          "a perfect split")
    assert section[1].split() == ["#", "value", "einsum", "line", "replicated", "FLOPs/chip", "ideal"]
    q_line = next(n for n, text in enumerate(out.splitlines(), 1) if text.startswith("  q "))
    # the line of q in what compile printed (source line 43 is not it)
    assert section[2].split() == ["#", "q", "BLE,EHD->BLHD", str(q_line), "64x", "928", "GFLOP", "14.5", "GFLOP"]
    assert len(section) == 2 + 10 + 1  # head, header, the ten einsums, the note
    assert err == (f"{PALM_PREFILL}: warning: the matmuls run 64x replicated on mesh 4x4x4: its 64 chips do the "
                   "distinct work of 1 chip\n  hint: batch B=1 cannot split over the 64 chips wg-xyz gathers over; "
                   "a weight-stationary preset (--ffn 2d-ws) splits the work\n")
    assert shardc.parse(out).is_sharded  # still a .model file: the section is comments


def test_compile_text_is_silent_when_every_einsum_splits(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "compile", TINY_FFN, "--mesh", "2x2x2", "--ffn", "2d-ws")
    assert code == 0 and err == ""
    assert "redundant compute" not in out


def test_compile_json_fields(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "compile", PALM_PREFILL, *BATCH_1, "--json")
    data = json.loads(out)
    assert code == 0 and data["replication_factor"] == 64.0
    assert [r["value"] for r in data["replication"]] == ["q", "kn", "vn", "t1", "a", "o", "t2", "t4", "f", "logits"]
    first = data["replication"][0]
    q_line = next(n for n, text in enumerate(data["program"].splitlines(), 1) if text.startswith("  q "))
    assert first == {"value": "q", "line": q_line, "kind": "einsum", "spec": "BLE,EHD->BLHD", "factor": 64.0,
                     "flops_per_chip": first["flops_per_chip"],
                     "ideal_flops_per_chip": first["flops_per_chip"] / 64}
    [warning] = data["warnings"]
    assert warning["file"] == str(PALM_PREFILL) and warning["line"] is None
    assert "64x replicated" in warning["message"] and "--ffn 2d-ws" in warning["hint"]
    code, out, _ = run(capsys, "compile", TINY_FFN, "--mesh", "2x2x2", "--ffn", "2d-ws", "--json")
    data = json.loads(out)
    assert (data["replication"], data["replication_factor"], data["warnings"]) == ([], 1.0, [])


def test_cost_reports_the_same(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "cost", PALM_PREFILL, *BATCH_1)
    assert code == 0 and "hint: batch B=1 cannot split" in err
    _, compiled, _ = run(capsys, "compile", PALM_PREFILL, *BATCH_1)
    section = compiled[compiled.index("# redundant compute"):]
    # The same rows; cost prints no program, so its lines are the file's and compile's its output's.
    source = PALM_PREFILL.read_text().splitlines()
    rows = out[out.index("redundant compute"):].splitlines()
    assert [_no_line(r) for r in rows] == [_no_line(line[2:]) for line in section.splitlines()]
    assert out.endswith("\n".join(rows) + "\n")
    for value, line in re.findall(r"^  (\w+)\s+[A-Z,]+->[A-Z]+\s+(\d+)", "\n".join(rows), re.M):
        assert "einsum(" in source[int(line) - 1], (value, line)  # a line of the file, computing an einsum
    code, out, _ = run(capsys, "cost", PALM_PREFILL, *BATCH_1, "--json")
    data = json.loads(out)
    _, compiled, _ = run(capsys, "compile", PALM_PREFILL, *BATCH_1, "--json")
    expected = json.loads(compiled)
    for key in ("replication_factor", "warnings"):
        assert data[key] == expected[key], key
    assert [{**r, "line": 0} for r in data["replication"]] == [{**r, "line": 0} for r in expected["replication"]]


def _no_line(row: str) -> str:
    """A redundant-compute row without its line column."""
    return re.sub(r"(->[A-Z]+\s+)\d+(\s)", r"\1#\2", row)


def test_cost_report_fields() -> None:
    report = shardc.estimate(shardc.shard(shardc.load(PALM_DECODE), "4x4x4", "2d-ws"))
    assert [r.value for r in report.replication] == ["kn1", "vn1"]
    assert all(isinstance(r, Replicated) for r in report.replication)
    assert report.to_json()["replication"] == [r.to_json() for r in report.replication]
    assert report.replication_factor == pytest.approx(1.0306, abs=1e-4)
