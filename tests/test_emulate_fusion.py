"""The emulator's fused steps (shardc.execute.fusion) change nothing but time and memory.

* every example under every preset that applies, on 2x2x2 and 4x4x4, shrunk, 2 layers: the
  fused run's outputs equal the unfused run's (a caller watching every value turns fusion
  off) to the last bit, and so do the counters; the weight-stationary presets fuse something;
* mutations: a fused einsum that drops a slice, or adds its slices in another order, is caught;
* ``exclusive``, which lets an op write into an operand's memory, refuses an array that
  anything else holds (another name, a view, a caller's list); the caller's input arrays and
  the arrays a caller keeps from ``on_value`` are never overwritten;
* ``chip_order_sum`` adds chip after chip, and a running sum continues it exactly;
* the memory estimate bounds the run fused and unfused, within 1.5x of its peak.
"""
from __future__ import annotations

import itertools
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from test_emulate_blas import EXAMPLES, programs

import shardc
from shardc.execute import chips, fusion
from shardc.execute.emulate import Emulation, emulate
from shardc.execute.footprint import emulation_footprint
from shardc.execute.reference import seeded_inputs
from shardc.execute.verification import shrink
from shardc.ir.mesh import Mesh
from shardc.sharding.counts import last_uses
from shardc.sharding.shard import shard_program

ROOT = Path(__file__).resolve().parent.parent
def unfused(sg: shardc.Graph, **kw: object) -> Emulation:
    return emulate(sg, 0, "f32", 2, on_value=lambda op, layer, a: None, **kw)  # type: ignore[arg-type]


def same(a: Emulation, b: Emulation) -> bool:
    return a.outputs.keys() == b.outputs.keys() and all(
        a.outputs[k].tobytes() == b.outputs[k].tobytes() for k in a.outputs)


def fusions(sg: shardc.Graph) -> int:
    stmts = sg.body.stmts
    n = len(fusion.plan(stmts, last_uses(stmts), sg.mesh))
    for rep in sg.repeats:
        body = rep.body.stmts
        n += len(fusion.plan(body, last_uses(body, frozenset(c.next.id for c in rep.carries)), sg.mesh))
    return n


@pytest.mark.parametrize("mesh", ["2x2x2", "4x4x4"])
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_fused_runs_equal_unfused_ones_to_the_bit(path: Path, mesh: str) -> None:
    cases = programs(path, mesh)
    if not cases:
        pytest.skip(f"no preset splits {path.stem} on {mesh}")
    for name, sg in cases:
        fused, plain = emulate(sg, 0, "f32", 2), unfused(sg)
        assert same(fused, plain), name
        assert fused.counters.to_json() == plain.counters.to_json(), name


def palm_2d_ws(ffn: str = "2d-ws") -> shardc.Graph:
    path = ROOT / "examples" / "palm_8b_prefill.model"
    g = shardc.parse(path.read_text(encoding="utf-8"), str(path), sizes={"H": 64} if ffn == "1d-ws" else {})
    return shrink(shard_program(g, "2x2x2", ffn, "heads").graph, floor=8)


#: Two partial sums added, and the sum read by something other than a reduction.
ADDED = """\
model added
mesh x=2, y=2
dims B=4, E=8, F=6
input h : f32[B, E] @ BE_x
param w1 : f32[E, F] @ E_xF_y
param w2 : f32[E, F] @ E_xF_y
o = einsum("BE,EF->BF", h, w1) @ BF_y (partialsum-x)
f = einsum("BE,EF->BF", h, w2) @ BF_y (partialsum-x)
t = o + f @ BF_y (partialsum-x)
u = t * 0.5 @ BF_y (partialsum-x)
r = all_reduce(u, over=x) @ BF_y
output r
"""


@pytest.mark.parametrize("case", ["1d-ws", "2d-ws", "added"])
def test_the_fused_steps_are_taken(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison above means something: these programs do take the fused steps."""
    sg = shardc.parse(ADDED) if case == "added" else palm_2d_ws(case)
    assert fusions(sg) > 0
    real = fusion.run
    taken: list[fusion.FusionKind] = []

    def counted(ctx, plan, env, dtype, late):  # type: ignore[no-untyped-def]
        out = real(ctx, plan, env, dtype, late)
        if out is not None:
            taken.append(plan.kind)
        return out

    monkeypatch.setattr(fusion, "run", counted)
    fused = emulate(sg, 0, "f32", 2)
    kinds = {fusion.FusionKind.ADD_INTO} if case == "added" else {fusion.FusionKind.REDUCE,
                                                                   fusion.FusionKind.ADD_REDUCE}
    assert set(taken) == kinds, taken
    assert same(fused, unfused(sg))


@pytest.mark.parametrize("mutation", ["drop a slice", "reverse the chips"])
def test_the_comparison_catches_a_wrong_fused_step(mutation: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bit-for-bit comparison sees a fused einsum that loses a slice, and one whose
    reductions add the chips in another order (rounding differs)."""
    sg = palm_2d_ws()
    plain = unfused(sg)
    if mutation == "drop a slice":
        real = fusion.batched_einsum
        calls = [0]

        def dropping(*args: object) -> np.ndarray:
            calls[0] += 1
            out = real(*args)  # type: ignore[arg-type]
            return out * 0 if calls[0] % 3 == 0 else out

        monkeypatch.setattr(fusion, "batched_einsum", dropping)
    else:
        real_sum = chips.chip_order_sum

        def reversed_sum(stacked: np.ndarray, positions: list[int], mesh: Mesh,
                         into: np.ndarray | None = None) -> np.ndarray:
            flipped = chips.full(stacked, positions, mesh)[
                tuple(slice(None, None, -1) if p in positions else slice(None) for p in range(stacked.ndim))]
            return real_sum(flipped, positions, mesh, into)

        monkeypatch.setattr(chips, "chip_order_sum", reversed_sum)
    assert not same(emulate(sg, 0, "f32", 2), plain)


def test_exclusive_refuses_memory_anything_else_holds() -> None:
    a = np.ones((4, 4), np.float32)
    verdicts = [fusion.exclusive(a, 1)]  # held by the name ``a`` only
    other = a
    verdicts.append(not fusion.exclusive(a, 1))
    del other
    view = a[1:]
    verdicts.append(not fusion.exclusive(a, 1))  # the view holds a's memory
    verdicts.append(not fusion.exclusive(view, 1))  # and the name ``a`` holds the view's
    del a
    verdicts.append(fusion.exclusive(view, 1))  # the view alone holds its base now
    kept = [view]
    verdicts.append(not fusion.exclusive(view, 1))
    kept.clear()
    verdicts.append(not fusion.exclusive(np.broadcast_to(view, (2, 3, 4)), 0))  # read-only
    frozen = np.zeros(3)
    frozen.flags.writeable = False
    verdicts.append(not fusion.exclusive(frozen, 1))
    assert verdicts == [True] * 8, verdicts


def test_inputs_and_watched_values_are_never_overwritten() -> None:
    sg = palm_2d_ws()
    data = seeded_inputs(sg, 0, "f32")
    before = {k: v.copy() for k, v in data.items()}
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    emulate(sg, 0, "f32", 2, inputs=data, on_value=lambda op, layer, a: seen.append((a, a.copy())))
    assert all(np.array_equal(before[k], data[k]) for k in data)
    assert seen and all(np.array_equal(a, copy) for a, copy in seen)
    assert same(emulate(sg, 0, "f32", 2, inputs=data), emulate(sg, 0, "f32", 2))
    assert all(np.array_equal(before[k], data[k]) for k in data)


def test_chip_order_sum_adds_chip_after_chip() -> None:
    mesh = Mesh((("x", 2), ("y", 3)))
    rng = np.random.default_rng(0)
    data = rng.standard_normal((2, 3, 5)).astype(np.float32) * np.float32(1e4)
    want = np.zeros((1, 1, 5), np.float32)
    for i, j in itertools.product(range(2), range(3)):
        want = want + data[i:i + 1, j:j + 1]
    assert chips.chip_order_sum(data, [1, 0], mesh).tobytes() == want.tobytes()
    running = chips.chip_order_sum(data[:1], [1], mesh)
    assert chips.chip_order_sum(data[1:], [1], mesh, into=running).tobytes() == want.tobytes()
    held_once = data[:, :1]  # one copy every chip along y holds: added three times
    assert np.array_equal(chips.chip_order_sum(held_once, [1], mesh), held_once * 3)


@pytest.mark.parametrize("ffn", ["1d-ws", "2d-ws"])
def test_the_memory_estimate_follows_fusion_on_and_off(ffn: str) -> None:
    """Fused, a run may hold less (the estimate knows which einsums are never held whole); watched
    by ``on_value`` it holds every value, and the estimate with ``fused=False`` bounds that."""
    path = ROOT / "examples" / "palm_8b_prefill.model"
    g = shardc.parse(path.read_text(encoding="utf-8"), str(path), sizes={"H": 64} if ffn == "1d-ws" else {})
    sg = shrink(shard_program(g, "4x4x4", ffn, "heads").graph, floor=32)
    np.random.default_rng(0).standard_normal(1)  # what a first run imports, before tracing
    peaks = {}
    for fused in (True, False):
        watch = {} if fused else {"on_value": lambda op, layer, a: None}
        tracemalloc.start()
        try:
            emulate(sg, 0, "f32", 2, **watch)  # type: ignore[arg-type]
            peaks[fused] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        bound = emulation_footprint(sg, "f32", 2, fused=fused)
        assert peaks[fused] <= bound <= 1.5 * peaks[fused], (fused, peaks[fused], bound)


def test_a_fusion_the_arrays_refuse_runs_the_statements_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where ``fusion.run`` declines at run time, a put-off einsum is computed whole after all."""
    sg = palm_2d_ws("1d-ws")
    real = fusion.run
    declined: list[fusion.FusionKind] = []

    def declining(ctx, plan, env, dtype, late):  # type: ignore[no-untyped-def]
        if plan.kind is fusion.FusionKind.ADD_REDUCE:
            declined.append(plan.kind)
            return None
        return real(ctx, plan, env, dtype, late)

    monkeypatch.setattr(fusion, "run", declining)
    fused = emulate(sg, 0, "f32", 2)
    assert declined
    plain = unfused(sg)
    assert same(fused, plain) and fused.counters.to_json() == plain.counters.to_json()
