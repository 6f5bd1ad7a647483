"""The planner (shardc.plan, shardc/planner/): the paper's choices come out on their own, it agrees with a brute-force
loop over shard + estimate, and bad input says what came closest.

* The paper's choices for PaLM 540B on 64 chips (its Table 2 and §3.2): decode at batch 64 is 2D
  weight-stationary with attention by batch; prefill at batch 1 is 2D weight-stationary with attention
  by heads; prefill at batch 512 x 2048 tokens is XYZ weight-gathered (attention by batch among the
  best: the prefill program has no KV cache, so both attention layouts give one program); and as tokens
  per batch grow the best feed-forward layout goes weight-stationary -> X -> XY -> XYZ weight-gathered.
* On random small programs the winner's estimate equals the least estimate of a plain loop over every
  candidate with ``shard`` and ``estimate``.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from test_shard_properties import examples, layer_programs

import shardc
from shardc.cli.main import main
from shardc.errors import ShardcError
from shardc.hardware.profile import load_profile
from shardc.planner.choose import Objective, plan
from shardc.planner.space import mesh_shapes, meshes, role_meshes
from shardc.sharding.presets import FFN, Attention

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TPU = load_profile("tpu-v4")


def load(name: str, **sizes: int) -> shardc.Graph:
    return shardc.load(EXAMPLES / name, sizes=sizes)


# --- the search space ------------------------------------------------------------------------------
def test_the_meshes_of_64_chips_are_the_torus_factorisations() -> None:
    assert mesh_shapes(64, TPU) == [(64,), (32, 2), (16, 4), (8, 8), (16, 2, 2), (8, 4, 2), (4, 4, 4)]
    assert mesh_shapes(8, TPU) == [(8,), (4, 2), (2, 2, 2)]
    assert mesh_shapes(7, TPU) == [] and mesh_shapes(12, TPU) == [(12,), (6, 2)]


def test_role_meshes_name_each_axis_by_the_role_it_plays() -> None:
    assert [m.spec() for m in role_meshes((4, 4, 4))] == ["4x4x4"]
    assert [m.spec() for m in role_meshes((8, 4, 2))] == ["8x4x2", "8x2x4", "4x8x2", "2x8x4", "4x2x8", "2x4x8"]
    assert [m.spec() for m in role_meshes((16, 4))] == ["16x4", "x=16,z=4", "4x16", "y=16,z=4", "x=4,z=16",
                                                        "y=4,z=16"]
    assert sum(len(role_meshes(s)) for s in mesh_shapes(64, TPU)) == len(meshes(64, TPU)) == 28


# --- the paper's choices (item 4) -------------------------------------------------------------------
def test_decode_at_batch_64_is_2d_weight_stationary_by_batch() -> None:
    p = plan(load("palm_540b_decode.model"), 64)
    c = p.best.candidate
    assert (c.mesh.spec(), c.ffn, c.attention) == ("4x4x4", FFN.WS_2D, Attention.BATCH)


def test_prefill_at_batch_1_is_2d_weight_stationary_by_heads() -> None:
    p = plan(load("palm_540b_prefill.model"), 64)
    c = p.best.candidate
    assert (c.mesh.spec(), c.ffn, c.attention) == ("4x4x4", FFN.WS_2D, Attention.HEADS)


def test_prefill_at_batch_512_is_xyz_weight_gathered() -> None:
    p = plan(load("palm_540b_prefill.model"), 64, batch=512)
    assert p.best.candidate.ffn is FFN.WG_XYZ and p.best.candidate.mesh.spec() == "4x4x4"
    best = p.best.figures.latency_s
    tied = [r for r in p.candidates if r.figures.latency_s == best]
    assert any(r.candidate.attention is Attention.BATCH and r.candidate.ffn is FFN.WG_XYZ for r in tied)
    assert p.best.figures.mfu > 0.7  # the paper's 76%


def test_the_crossover_goes_x_then_xy_then_xyz_as_tokens_grow() -> None:
    g = load("palm_540b_prefill.model")
    order = [FFN.WS_2D, FFN.WG_X, FFN.WG_XY, FFN.WG_XYZ]
    winners = [plan(g, mesh="4x4x4", batch=b, attention="heads").best.candidate.ffn
               for b in (1, 8, 16, 64, 256, 512)]
    assert winners[0] is FFN.WS_2D and winners[-1] is FFN.WG_XYZ
    assert [order.index(w) for w in winners] == sorted(order.index(w) for w in winners)
    assert set(winners) == set(order), winners


# --- the planner equals a brute-force loop ------------------------------------------------------------
def brute_force(g: shardc.Graph) -> float | None:
    """The least estimated latency over every preset and attention layout on the program's own mesh,
    by a plain loop of shard + estimate."""
    best = None
    for ffn in ("1d-ws", "2d-ws", "wg-x", "wg-xy", "wg-xyz"):
        for attention in ("heads", "batch"):
            try:
                sg = shardc.shard(g, None, ffn, attention)
            except ShardcError:
                continue
            r = shardc.estimate(sg)
            if r.fits_hbm and (best is None or r.latency_s < best):
                best = r.latency_s
    return best


@settings(max_examples=examples(15), deadline=None)
@given(program=layer_programs())
def test_plan_agrees_with_a_brute_force_loop(program) -> None:
    text, _ = program
    g = shardc.parse(text)
    want = brute_force(g)
    assume(want is not None)
    got = plan(g, mesh=g.mesh)
    assert got.best.figures.latency_s == pytest.approx(want, rel=1e-9)


def test_the_figures_are_the_estimate() -> None:
    p = plan(load("palm_540b_decode.model"), mesh="4x4x4", weights="any")
    for r in p.candidates[:4]:
        report = r.report()
        f = r.figures
        assert f.latency_s == pytest.approx(report.latency_s, rel=1e-9)
        assert f.mfu == pytest.approx(report.mfu, rel=1e-9)
        assert f.memory_bytes_per_chip == pytest.approx(report.memory_bytes_per_chip, rel=1e-9)
        assert f.cost_chip_s_per_token == pytest.approx(report.cost_chip_s_per_token, rel=1e-9)


def test_objectives_rank_differently_where_they_should() -> None:
    g = load("palm_540b_decode.model")
    lat = plan(g, mesh="4x4x4", batch="16,256", objective="latency")
    cost = plan(g, mesh="4x4x4", batch="16,256", objective=Objective.COST)
    assert lat.best.candidate.batch == 16 and cost.best.candidate.batch == 256


# --- the command line and bad input -----------------------------------------------------------------
def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_prints_the_ranking_the_winner_and_why(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plan", str(EXAMPLES / "palm_540b_decode.model"), "--chips", "64", "--top", "3")
    assert code == 0
    assert "280 candidates considered, 120 feasible, 160 dropped" in out
    assert "  1     4x4x4  2d-ws  batch" in out
    assert "best: mesh 4x4x4, 2d-ws/batch, bf16 weights, pad none, B=64" in out
    assert "why: 2d-ws/batch on 4x4x4 beats the runner-up" in out and "KV cache" not in out.split("why:")[0]


def test_plan_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plan", str(EXAMPLES / "tiny_layer.model"), "--mesh", "2x2x2", "--json")
    assert code == 0
    data = json.loads(out)
    assert set(data["best"]) == {"mesh", "roles", "ffn", "attention", "weights", "pad", "batch", "latency_s",
                                 "per_token_latency_s", "mfu", "cost_chip_s_per_token", "memory_bytes_per_chip"}
    assert data["candidates"][0] == data["best"] and isinstance(data["dropped"], list)


@pytest.mark.parametrize("argv, words", [
    (["--chips", "7"], ["no mesh of 7 chips fits a tpu-v4 torus", "the nearest chip counts that do: 6 and 8"]),
    (["--chips", "64", "--max-latency", "1ms"], ["no candidate is left of the 280 considered",
                                                  "are slower than --max-latency; the closest: mesh 4x4x4"]),
    (["--chips", "8"], ["no candidate is left", "do not fit in HBM; the closest: mesh 2x2x2"]),
    (["--chips", "64", "--max-latency", "soon"], ["--max-latency soon: give a positive time"]),
    (["--chips", "64", "--weights", "fp4"], ["--weights fp4: unknown"]),
])
def test_bad_input_says_what_came_closest(capsys: pytest.CaptureFixture[str], argv: list[str],
                                          words: list[str]) -> None:
    code, out, err = run(capsys, "plan", str(EXAMPLES / "palm_540b_decode.model"), *argv)
    assert code == 2 and out == "" and "Traceback" not in err
    for w in words:
        assert w in err, err
    code, out, _ = run(capsys, "plan", str(EXAMPLES / "palm_540b_decode.model"), *argv, "--json")
    assert code == 2 and words[0] in json.loads(out)["error"]["message"]


# --- --ffn auto / --attention auto -----------------------------------------------------------------
def test_auto_presets_take_the_planners_choice_on_the_mesh(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(EXAMPLES / "palm_540b_decode.model")
    code, out, _ = run(capsys, "compile", path, "--ffn", "auto", "--attention", "auto", "--json")
    data = json.loads(out)
    assert code == 0 and (data["ffn"], data["attention"]) == ("2d-ws", "batch")
    ranked = data["planner"]["candidates"]
    assert ranked[0]["latency_s"] == min(r["latency_s"] for r in ranked)
    best = plan(load("palm_540b_decode.model"), mesh="4x4x4")
    assert ranked[0] == best.best.to_json()
    code, out, _ = run(capsys, "compile", path, "--ffn", "auto", "--explain")
    assert code == 0 and "# presets chosen by the planner" in out
    assert "#   ffn                       2d-ws (chosen by the planner)" in out
    code, out, _ = run(capsys, "cost", path, "--ffn", "auto", "--attention", "auto")
    assert code == 0 and "2d-ws / attention by batch" in out.splitlines()[0]
