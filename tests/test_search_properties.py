"""Properties of the layout search on random programs (shardc.sharding.search).

* Exact: on small random programs the searched plan's estimated time equals the least estimate
  over every plan the candidate tables allow (:func:`shardc.sharding.shard.every_plan`, a brute
  force that merges nothing and prices each plan with ``shardc.estimate`` itself).
* Never slower than the greedy policy, and correct: on random transformer layers the searched
  plan's estimate is at most the greedy plan's, and it computes what the unsharded program
  computes on the emulator.
* The brute force is shown able to fail: a deliberately worse choice is caught.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st
from test_shard_properties import examples, layer_programs

import shardc
from shardc.sharding.shard import every_plan, shard_program
from shardc.testing import meshes, program_models

LIMIT = 3_000
FFN = st.sampled_from([None, "2d-ws", "1d-ws", "wg-x", "wg-xyz"])
ATTENTION = st.sampled_from([None, "heads", "batch"])


def least_estimate(g: shardc.Graph, mesh: str | None, ffn: str | None, attention: str | None) -> float | None:
    """The least estimated latency over every plan, or None when there are too many to enumerate."""
    try:
        plans = every_plan(g, mesh, ffn, attention, limit=LIMIT)
    except shardc.ShardcError as err:
        if "too many to enumerate" in err.message:
            return None
        raise
    event(f"{'one plan' if len(plans) == 1 else 'several plans'}")
    return min(shardc.estimate(p).latency_s for p in plans)


def planned(g: shardc.Graph, mesh: str | None, ffn: str | None, attention: str | None,
            method: str = "search") -> shardc.ShardResult | None:
    try:
        return shard_program(g, mesh, ffn, attention, method=method)
    except shardc.ShardcError:
        return None  # a preset dim that does not divide, an output pin that cannot hold: not this test's


def check_against_brute_force(g: shardc.Graph, ffn: str | None, attention: str | None) -> None:
    """The searched plan's estimate is the least over every plan (when both exist)."""
    r = planned(g, None, ffn, attention)
    assume(r is not None)
    assert r is not None
    best = least_estimate(g, None, ffn, attention)
    assume(best is not None)
    assert shardc.estimate(r.graph).latency_s == pytest.approx(best, rel=1e-9)


@settings(max_examples=examples(100), deadline=None)
@given(model=program_models(mesh=meshes(min_axes=1, max_axes=2, min_size=2, max_size=3), max_statements=4,
                            max_repeats=1),
       ffn=FFN, attention=ATTENTION)
def test_the_search_equals_the_brute_force_on_small_programs(model, ffn, attention) -> None:
    check_against_brute_force(shardc.parse(model.text()), ffn, attention)


@settings(max_examples=examples(20), deadline=None)
@given(program=layer_programs(), ffn=FFN, attention=ATTENTION)
def test_the_search_equals_the_brute_force_on_layers(program, ffn, attention) -> None:
    text, _ = program
    check_against_brute_force(shardc.parse(text), ffn, attention)


@settings(max_examples=examples(50), deadline=None)
@given(program=layer_programs(), ffn=FFN, attention=ATTENTION)
def test_the_search_is_never_slower_than_greedy_and_verifies(program, ffn, attention) -> None:
    text, _ = program
    g = shardc.parse(text)
    searched, greedy = planned(g, None, ffn, attention), planned(g, None, ffn, attention, "greedy")
    assume(searched is not None and greedy is not None)
    assert searched is not None and greedy is not None
    fast, slow = shardc.estimate(searched.graph).latency_s, shardc.estimate(greedy.graph).latency_s
    assert fast <= slow * (1 + 1e-9)
    event("faster than greedy" if fast < slow * (1 - 1e-9) else "as fast as greedy")
    report = shardc.verify(searched.graph, source=g)
    assert report.passed, report
    explained = shard_program(g, None, ffn, attention, explain=True)  # --explain's re-searches never fail
    assert explained.graph == searched.graph
    assert all(c.alternative.startswith(("beat ", "tied with ", "the only way")) for c in explained.collectives
               if c.alternative)


def test_the_brute_force_catches_a_worse_plan() -> None:
    """The oracle can fail: the plans it enumerates differ in time, and the search returns the
    least of them, not merely one of them."""
    g = shardc.load(Path(__file__).resolve().parent.parent / "examples" / "tiny_ffn.model")
    times = sorted(shardc.estimate(p).latency_s for p in every_plan(g, "2x2x2", "2d-ws", "heads", limit=LIMIT))
    assert len(times) > 1 and times[-1] > times[0] * 1.01
    searched = shardc.estimate(shard_program(g, "2x2x2", "2d-ws", "heads").graph).latency_s
    assert searched == pytest.approx(times[0], rel=1e-9) and searched != pytest.approx(times[-1], rel=1e-9)
