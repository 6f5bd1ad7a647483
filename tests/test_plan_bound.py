"""The planner's shortcuts change nothing: floors are floors, pruning keeps the winner, workers give
the serial figures (shardc/planner/bound.py, shardc/planner/evaluate.py).

* Every candidate's floor (:func:`shardc.planner.bound.floor`) is at most the time its layout search
  finds and its resident bytes at most the weights and caches of its sharded program -- on the PaLM
  files at their real sizes and on random small programs.  A floor above the time would let
  ``prune=True`` skip a winner; the mutation test below shows the winner check catches that.
* ``plan(..., prune=True)`` picks the candidate the full ranking picks.
* A layout search given a cutoff (``shard_program(..., cutoff=)``, how pruning gives up on a
  candidate part-way) finds the plan it finds without one when that plan is within the cutoff, and
  gives up when it is not.
* ``plan(..., jobs=2)`` ranks the same candidates with the same figures as ``jobs=1``, and a
  candidate's program, searched again in this process, is the one the serial plan made.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from test_shard_properties import examples, layer_programs

import shardc
from shardc.cost.memory import resident_bytes
from shardc.errors import ShardcError
from shardc.hardware.profile import load_profile
from shardc.ir.graph import DeclKind
from shardc.ir.transforms import with_mesh
from shardc.planner import choose
from shardc.planner.bound import Floor
from shardc.planner.choose import plan
from shardc.planner.evaluate import Evaluator
from shardc.sharding.presets import FFN, Attention
from shardc.sharding.search import Beaten
from shardc.sharding.shard import shard_program

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def floors_hold(p: choose.Plan, g: shardc.Graph) -> int:
    """Check every ranked candidate's floor against its search; the number checked."""
    declared = sorted({d.value.dtype for d, _ in g.decls() if d.kind is DeclKind.PARAM},
                      key=lambda t: t.value)
    ev = Evaluator(g, declared, load_profile(p.chip), p.comm)
    for r in p.candidates:
        fl = ev.floor(r.candidate)
        assert isinstance(fl, Floor), r.candidate.label()
        assert fl.seconds <= r.figures.latency_s, r.candidate.label()
        assert fl.resident_bytes <= sum(resident_bytes(r.graph)) * (1 + 1e-12), r.candidate.label()
    return len(p.candidates)


@pytest.mark.parametrize(("name", "chips", "sizes"), [
    ("palm_540b_decode.model", 64, {}),
    ("palm_8b_decode.model", 16, {}),
    ("gqa_decode.model", 8, {}),
])
def test_every_floor_is_below_its_search(name: str, chips: int, sizes: dict[str, int]) -> None:
    g = shardc.load(EXAMPLES / name, sizes=sizes)
    p = plan(g, chips, pad="any" if "540b_decode" in name else "none", jobs=1)
    assert floors_hold(p, g) > 10


@settings(max_examples=examples(15), deadline=None)
@given(program=layer_programs())
def test_floors_hold_and_pruning_keeps_the_winner_on_random_programs(program) -> None:
    text, _ = program
    g = shardc.parse(text)
    try:
        full = plan(g, mesh=g.mesh, jobs=1)
    except ShardcError:
        assume(False)
        return
    floors_hold(full, g)
    pruned = plan(g, mesh=g.mesh, prune=True)
    assert pruned.best.candidate == full.best.candidate
    assert pruned.best.figures == full.best.figures


@settings(max_examples=examples(15), deadline=None)
@given(program=layer_programs())
def test_a_cutoff_finds_the_same_plan_or_gives_up(program) -> None:
    text, mesh = program
    g = shardc.parse(text)
    for ffn in (FFN.WS_2D, FFN.WG_XY):
        try:
            plain = shard_program(g, mesh, ffn.value, Attention.BATCH.value)
        except ShardcError:
            continue
        assert plain.seconds is not None
        within = shard_program(g, mesh, ffn.value, Attention.BATCH.value, cutoff=plain.seconds)
        assert within.graph == plain.graph and within.seconds == plain.seconds
        with pytest.raises(Beaten):
            shard_program(g, mesh, ffn.value, Attention.BATCH.value, cutoff=plain.seconds * 0.999)


@settings(max_examples=examples(30), deadline=None)
@given(program=layer_programs(), other=layer_programs())
def test_moving_a_verified_program_checks_what_verifying_checks(program, other) -> None:
    """The planner moves each verified program to each mesh without verifying it all again
    (``with_mesh(..., verified=True)``): the same program, or the same error, as verifying."""
    g = shardc.parse(program[0])
    mesh = other[1]

    def moved(verified: bool) -> object:
        try:
            return with_mesh(g, mesh, verified=verified)
        except ShardcError as err:
            return err.message
    assert moved(True) == moved(False)


@pytest.mark.parametrize(("chips", "batch", "weights"), [(64, 64, "bf16"), (64, 8, "int8"), (32, 1024, "int8")])
def test_pruning_keeps_the_winner_and_skips_most(chips: int, batch: int, weights: str) -> None:
    g = shardc.load(EXAMPLES / "palm_540b_decode.model")
    full = plan(g, chips, batch=batch, weights=weights)
    pruned = plan(g, chips, batch=batch, weights=weights, prune=True)
    assert pruned.best.candidate == full.best.candidate
    assert pruned.best.figures == full.best.figures
    assert pruned.pruned > 0 and len(pruned.candidates) < len(full.candidates)
    assert full.pruned == 0


def test_a_floor_above_the_time_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutation: floors doubled for the full ranking's winner's presets make pruning skip the winner,
    and the comparison with the full ranking sees it."""
    g = shardc.load(EXAMPLES / "palm_540b_decode.model")
    full = plan(g, 64, jobs=1)
    real_floor = Evaluator.floor

    def inflated(self: Evaluator, c: choose.Candidate, gathers: bool = True) -> Floor | ShardcError:
        fl = real_floor(self, c, gathers)
        if isinstance(fl, Floor) and (c.ffn, c.attention) == (full.best.candidate.ffn, full.best.candidate.attention):
            return replace(fl, seconds=fl.seconds * 10)
        return fl

    monkeypatch.setattr(Evaluator, "floor", inflated)
    assert plan(g, 64, prune=True).best.candidate != full.best.candidate


def test_workers_give_the_serial_ranking() -> None:
    g = shardc.load(EXAMPLES / "palm_540b_decode.model")
    serial = plan(g, 64, jobs=1)
    parallel = plan(g, 64, jobs=2)
    assert len(serial.candidates) >= choose.PARALLEL_MIN
    assert [r.candidate for r in parallel.candidates] == [r.candidate for r in serial.candidates]
    assert [r.figures for r in parallel.candidates] == [r.figures for r in serial.candidates]
    assert parallel.dropped == serial.dropped
    assert parallel.why == serial.why
    assert parallel.candidates[3].built is None  # not sent back: searched again when asked for
    assert parallel.candidates[3].graph == serial.candidates[3].graph


def test_planning_leaves_the_collector_as_it_was() -> None:
    """plan() collects garbage less often while it runs, and restores the thresholds after."""
    import gc
    g = shardc.load(EXAMPLES / "tiny_layer.model")
    before = gc.get_threshold()
    plan(g, 8, jobs=1)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    gc.set_threshold(0)  # collection off: it stays off
    try:
        plan(g, 8, jobs=1)
        assert gc.get_threshold()[0] == 0
    finally:
        gc.set_threshold(*before)
