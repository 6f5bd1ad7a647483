"""Floors under a candidate's time and memory, known before its layout search runs.

The planner's sweeps need only each point's winner.  :func:`floor` gives, for one
candidate, a time no plan of it can beat and the HBM its stored weights and caches
take at least, from the program, the mesh and the strategy alone (a few
microseconds per op, against milliseconds for the search).  A candidate whose floor
is slower than a winner already found, or which cannot fit even before its
activations, need not be searched (:func:`shardc.planner.choose.plan` with
``prune=True``): the winner is the one the full ranking finds.

Why the time floor holds.  The search prices each emitted op with
:func:`~shardc.sharding.timing.op_seconds`, ``max(compute, memory) + communication +
overhead``, times its block's trip count, and emits every source op once (plus the
collectives and slices it inserts).  Per chip and per execution of a source op:

* its operands and result each have a local block of at least ``1/chips`` of the
  global tensor (a layout splits a dim over at most all the chips), so the HBM traffic
  is at least the global traffic over ``chips``; an einsum's local FLOPs are at least
  its global FLOPs over ``chips``, and the matrix unit runs at most at peak
  (``matmul_efficiency`` is at most ``max(1, peak_fraction)``);
* communication is never negative, and every op but a view pays the overhead.

And a weight-gathered preset gathers each weight it places into its compute layout
before the weight's first einsum in every trip of the weight's block: the einsum
candidates take a gatherable weight in exactly that layout, and the only other
choice, a free slice, needs a mesh axis the stored layout leaves idle.  So when the
stored layout uses every axis of the mesh, the gather's collectives (priced as the
search prices them) are part of every plan.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from shardc.errors import ShardcError
from shardc.hardware.comm import CommMode
from shardc.hardware.profile import ChipProfile
from shardc.ir.graph import Decl, DeclKind, Graph, Op, OpKind, Value
from shardc.ir.layout import Layout
from shardc.ir.mesh import Mesh
from shardc.sharding.presets import Strategy
from shardc.sharding.reshard import reshard
from shardc.sharding.timing import op_floor, op_seconds

__all__ = ["Declared", "Floor", "declared", "floor", "roofline_floor"]

_ROUNDING = 1e-9  # the floor is summed in another order than the search's total


@dataclass(frozen=True)
class Floor:
    """What no plan of a candidate beats: its seconds per run, and its resident bytes per chip."""

    seconds: float
    resident_bytes: float


def _numel(v: Value, sizes: dict[str, int]) -> int:
    return math.prod(sizes[d] for d in v.dims)


def roofline_floor(g: Graph, chips: int, chip: ChipProfile) -> float:
    """The part of the floor every candidate on ``chips`` chips shares: each source op ideally
    spread over all of them (module docstring), times its trip count."""
    sizes = g.sizes
    total = 0.0
    for stmt, rep in g.walk():
        if isinstance(stmt, Op):
            total += op_floor(stmt, sizes, chips, chip) * (rep.count if rep else 1)
    return total


def _einsum_operands(g: Graph) -> set[int]:
    return {v.id for op in g.ops() if op.kind is OpKind.EINSUM for v in op.inputs}


@dataclass(frozen=True)
class Declared:
    """What a floor reads of one declaration of a program (:func:`declared`)."""

    decl: Decl
    trips: int  # executions: the trip count of its block
    nbytes: int  # of the whole tensor
    einsum_operand: bool  # some einsum reads it


def declared(g: Graph) -> tuple[Declared, ...]:
    """The declarations of ``g`` as :func:`floor` reads them: found once for all the candidates that
    share the program."""
    used = _einsum_operands(g)
    sizes = g.sizes
    return tuple(Declared(d, rep.count if rep else 1, _numel(d.value, sizes) * d.value.dtype.bytes,
                          d.value.id in used) for d, rep in g.decls())


def floor(g: Graph, mesh: Mesh, strategy: Strategy, chip: ChipProfile, mode: CommMode,
          shared: float, gathers: bool = True, decls: tuple[Declared, ...] | None = None) -> Floor:
    """The :class:`Floor` of sharding ``g`` on ``mesh`` with ``strategy``, priced on ``chip`` (as
    the search prices, :func:`~shardc.hardware.comm.priced_in`); ``shared`` is
    :func:`roofline_floor` of the program and ``decls`` its :func:`declared` (found here if not
    given).  ``gathers=False`` leaves the weight gathers out of the time (a lower floor, without
    their reshard searches: for when only memory is asked)."""
    sizes = g.sizes
    chips = mesh.num_chips
    every_axis = frozenset(a for a, n in mesh.axes if n > 1)
    seconds, resident = shared, 0.0
    for fact in declared(g) if decls is None else decls:
        d = fact.decl
        stored = _stored(d, strategy, sizes, mesh)
        if d.kind in (DeclKind.PARAM, DeclKind.CACHE):
            # A floating weight (no stored layout yet) takes at least its share of the chips.
            local = fact.nbytes / chips if stored is None else \
                stored.local_numel(sizes, mesh) * d.value.dtype.bytes
            resident += local * fact.trips
        if (gathers and d.kind is DeclKind.PARAM and stored is not None and d.value.layout is None
                and strategy.gathered and fact.einsum_operand and stored.used_axes >= every_axis):
            seconds += _gather_seconds(d.value, stored, strategy.compute_layout(stored), sizes, mesh, chip,
                                       mode) * fact.trips
    return Floor(seconds * (1 - _ROUNDING), resident)


def _stored(d: Decl, strategy: Strategy, sizes: dict[str, int], mesh: Mesh) -> Layout | None:
    """Where the pass will store a declaration (None: a weight its first use places); raises the
    error the pass would raise there when the preset cannot place it."""
    v = d.value
    layout = v.layout if v.layout is not None else strategy.placement(d.kind, v.dims, sizes, v.name or "")
    if layout is not None:
        try:
            layout.check(sizes, mesh, v.dims)
        except ShardcError as err:
            raise ShardcError(f"'{v.name}': {err.message}", hint=err.hint) from None
    return layout


_GATHERS: dict[tuple, float] = {}
_GATHERS_MAX = 1 << 16


def _gather_seconds(v: Value, stored: Layout, compute: Layout, sizes: dict[str, int], mesh: Mesh,
                    chip: ChipProfile, mode: CommMode) -> float:
    """The collectives taking a weight from its stored to its compute layout, priced as emitted
    (memoised: every candidate storing a weight alike on a mesh gathers it alike)."""
    key = (v.type, stored, compute, tuple(sizes[d] for d in v.dims), mesh, chip, mode)
    found = _GATHERS.get(key)
    if found is None:
        if len(_GATHERS) >= _GATHERS_MAX:
            _GATHERS.clear()
        found = _GATHERS[key] = _priced_gather(v, stored, compute, sizes, mesh, chip, mode)
    return found


def _priced_gather(v: Value, stored: Layout, compute: Layout, sizes: dict[str, int], mesh: Mesh,
                   chip: ChipProfile, mode: CommMode) -> float:
    total = 0.0
    for step in reshard(stored, compute, sizes, mesh, itemsize=v.dtype.bytes):
        before = Value(0, None, v.type, step.before)
        after = Value(1, None, v.type, step.after)
        total += op_seconds(Op(step.kind, after, (before,), step.attrs), sizes, mesh, chip, mode)
    return total
