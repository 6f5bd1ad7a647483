"""The layout search (shardc.sharding.search): never slower than before, exact, and explained.

1. Against the record of the greedy pass (``tests/golden/search_baseline.json``, written by
   ``benchmarks/search_baseline.py`` before the search replaced it): every example x preset x mesh
   of the paper's shapes up to 64 chips plans at most as slowly as it did, and refuses what it refused.
2. The search's own number is the estimate of the program it returns.
3. Exactness: on small programs the searched plan is as fast as the best of every assignment of
   candidates (a brute-force walk), and never slower than the greedy plan on random programs.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import shardc
from shardc.cli.main import main
from shardc.errors import ShardcError
from shardc.hardware.comm import CommMode
from shardc.sharding.presets import make_strategy
from shardc.sharding.search import Method, _Search, alternatives
from shardc.sharding.shard import _finish, _PinMessages, _post_requirements
from shardc.sharding.walk import Walk

ROOT = Path(__file__).resolve().parent.parent
BASELINE = json.loads((ROOT / "tests" / "golden" / "search_baseline.json").read_text())
GRAPHS: dict[tuple[str, tuple[tuple[str, int], ...]], shardc.Graph] = {}


def graph(example: str, sets: dict[str, int]) -> shardc.Graph:
    key = (example, tuple(sorted(sets.items())))
    if key not in GRAPHS:
        GRAPHS[key] = shardc.load(ROOT / "examples" / f"{example}.model", sizes=sets)
    return GRAPHS[key]


def by_example() -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in BASELINE:
        out.setdefault(row["example"], []).append(row)
    return out


def slower_than_record(rows: list[dict]) -> list[str]:
    """The rows the search now plans more slowly than recorded (or refuses or plans differently)."""
    slower = []
    for row in rows:
        g = graph(row["example"], row["set"])
        try:
            r = shardc.shard_program(g, row["mesh"], row["ffn"], row["attention"])
        except ShardcError as err:
            assert "error" in row, f"{row}: the search refuses what the greedy pass planned: {err.message}"
            continue
        assert "error" not in row, f"{row}: planned now, refused before"
        latency = shardc.estimate(r.graph).latency_s
        assert r.seconds == pytest.approx(latency, rel=1e-9), "the search's number is the estimate's"
        if latency > row["latency_s"] * (1 + 1e-9):
            slower.append(f"{row['mesh']} {row['ffn']}/{row['attention']} {row['set']}: "
                          f"{latency:.6g} s > {row['latency_s']:.6g} s")
    return slower


@pytest.mark.parametrize("example", sorted(by_example()))
def test_never_slower_than_the_greedy_record(example: str) -> None:
    slower = slower_than_record(by_example()[example])
    assert not slower, "\n".join(slower)


def test_the_record_covers_the_paper_meshes_and_every_preset() -> None:
    meshes = {r["mesh"] for r in BASELINE}
    assert meshes == {"2x2x2", "2x4x2", "4x2x4", "4x4x4"}
    assert {r["ffn"] for r in BASELINE} == {"1d-ws", "2d-ws", "wg-x", "wg-xy", "wg-xyz"}
    assert len({r["example"] for r in BASELINE}) == len(list((ROOT / "examples").glob("*.model")))


def test_the_record_comparison_can_fail() -> None:
    """A record twice as fast as it was (the search gains at most 1.7x on any row) is caught, row by row."""
    rows = [dict(r, latency_s=r["latency_s"] * 0.5) for r in by_example()["tiny_layer"] if "error" not in r]
    assert len(slower_than_record(rows)) == len(rows) > 0


def test_the_search_improves_on_the_greedy_record() -> None:
    """The serial multihead layer, 2d-ws with attention by heads: q, k and v are completed before
    QK^T instead of all-reducing the scores."""
    row = next(r for r in BASELINE if r["example"] == "gpt_mha_serial" and r["mesh"] == "4x4x4"
               and r["ffn"] == "2d-ws" and r["attention"] == "heads")
    searched = shardc.estimate(shardc.shard(graph("gpt_mha_serial", {}), "4x4x4", "2d-ws", "heads")).latency_s
    assert searched < row["latency_s"] * 0.9


# --- 4. --explain: the alternative each choice beat ------------------------------------------------
def test_each_alternative_is_a_real_plan_that_costs_what_it_says() -> None:
    """For every collective a choice put in, the alternative is the cheapest plan that does not take
    the same operand layouts at that op; its extra time is the difference of two estimates."""
    mesh = shardc.Mesh.parse("4x4x4")
    g = shardc.parse(shardc.format(graph("gpt_mha_serial", {})), mesh=mesh)
    strategy = make_strategy(g, mesh, "2d-ws", "heads")
    profile = shardc.load_profile(None)
    walk = Walk(g, mesh, strategy, profile, CommMode(profile.default_comm), _post_requirements(g, mesh))
    pins = _PinMessages(g)
    best = _Search(walk, Method.SEARCH, pins).run()
    best_s = shardc.estimate(_finish(g, mesh, best)[0]).latency_s
    found = alternatives(walk, best, pins)
    assert found, "the layout has choices that put collectives in"
    for alt in {id(a): a for a in found.values()}.values():
        d = alt.decision
        forced = _Search(walk, Method.SEARCH, pins, forbid=(d.where, d.chosen.candidate.targets)).run()
        other = shardc.estimate(_finish(g, mesh, forced)[0]).latency_s
        assert other >= best_s * (1 - 1e-9), "no plan that chose otherwise is faster than the best"
        assert alt.extra_seconds == pytest.approx(other - best_s, rel=1e-6, abs=1e-12)


def test_explain_prints_the_alternatives(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["compile", str(ROOT / "examples" / "gpt_mha_serial.model"), "--mesh", "4x4x4",
                 "--attention", "heads", "--explain"])
    out = capsys.readouterr().out
    assert code == 0
    section = out[out.index("# layout search on tpu-v4"):]
    assert "(op by op, --search greedy:" in section.splitlines()[0]
    assert "#   q1     reduce_scatter  x     beat " in section
    code = main(["compile", str(ROOT / "examples" / "gpt_mha_serial.model"), "--mesh", "4x4x4",
                 "--attention", "heads", "--explain", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert any(c["alternative"] and c["alternative"].startswith("beat ") for c in data["collectives"])
