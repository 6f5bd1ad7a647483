"""Resharding: the cheapest sequence of collectives from one layout to another.

This is the only place in shardc where collectives are invented: the sharding
pass asks :func:`reshard` whenever a value's layout differs from the layout an
op needs, and prints, emulates and costs the :class:`Step` s it returns.

The collectives (docs/language.md, "Sharded programs").  ``over=`` lists the axes in
the order the layout holds them; the block-order invariant of layout.py is why
axes are only ever appended to, or removed from, the minor end of a dim::

    all_gather(over=AXES)                 removes AXES from the dims that hold them; on
                                          each dim they must be its most-minor axes
    reduce_scatter(over=AXES, dim=DIM)    sums the pending partial sums over AXES and
                                          appends AXES (in that order) to the end of DIM
    all_reduce(over=AXES)                 sums the pending partial sums over AXES
    all_to_all(over=AXES, from=S, to=D)   moves AXES, a suffix of S, to the end of D
    slice(over=AXES, dim=DIM)             free and local: appends unused AXES to DIM

Cost: bytes each chip sends with ring algorithms.  ``K`` is the number of chips
in the group of AXES; ``in`` / ``out`` are the bytes of one chip's local block
before / after the collective::

    all_gather      (K-1)/K * out
    reduce_scatter  (K-1)/K * in
    all_reduce      2 (K-1)/K * in
    all_to_all      (K-1)/K * in          (in == out)
    slice           0

Algorithm.  :func:`reshard` is a uniform-cost (Dijkstra) search over layouts
whose edges are the legal single collectives; it is exact, not a heuristic.  A
path's label is ``(bytes, number of steps, step keys)``: cheapest first, then
fewest steps, then a fixed order of the steps (slice < all_reduce <
reduce_scatter < all_to_all < all_gather, then attributes), so results are
deterministic.  Labels only grow along a path, so Dijkstra settles each layout
with its least label.  Pruning: partial axes that ``dst`` keeps are never
touched, moves that break divisibility are dropped, dominated labels are not
queued, and the search stops as soon as ``dst`` is settled.  The search from one
source is cached and *resumed* by later queries for other targets (it settles
layouts in the same fixed order whatever it is asked), so asking for many
targets from one source costs one search.  Costs are kept exact as integers:
every cost times the number of chips is an integer, because K divides it.

No detours through idle axes: a ``slice`` may only add an axis that ``src``
or ``dst`` uses.  Without this rule the search would, for instance, replace an
all_reduce over ``K > 2`` chips by ``slice(w)``, ``reduce_scatter``,
``all_gather(w)`` over an axis ``w`` neither layout uses (the classic 2D
all-reduce), which sends fewer bytes but takes three collectives: a trade the
byte count alone cannot judge (per-collective latency), so it is left out.
Within that rule the search is exact.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Callable, Mapping, NoReturn

from shardc.errors import ShardcError
from shardc.ir.graph import CollectiveAttrs, OpKind
from shardc.ir.layout import Layout
from shardc.ir.mesh import Mesh
from shardc.ir.ops import spell_call
from shardc.sharding.reshard_graph import RANK, Graph, PathSearch, node_of, scaled_cost

AG, RS, AR, A2A, SLICE = (
    OpKind.ALL_GATHER, OpKind.REDUCE_SCATTER, OpKind.ALL_REDUCE, OpKind.ALL_TO_ALL, OpKind.SLICE,
)
_RANK = RANK  # the collectives, and their tie-break order (shardc.sharding.reshard_graph)


@dataclass(frozen=True)
class Step:
    """One collective of a resharding: what it does, the layouts around it, its cost."""

    kind: OpKind
    attrs: CollectiveAttrs
    before: Layout
    after: Layout
    bytes_per_chip: float

    def __str__(self) -> str:
        return f"{describe(self.kind, self.attrs)}: {self.before} -> {self.after}"


def describe(kind: OpKind, attrs: CollectiveAttrs) -> str:
    """A collective as the language writes it, without its operand: ``reduce_scatter(over=yz, dim=E)``."""
    return spell_call(kind, attrs, ())


# --- one collective --------------------------------------------------------------------
def apply_collective(layout: Layout, kind: OpKind, attrs: CollectiveAttrs, mesh: Mesh,
                     sizes: Mapping[str, int] | None = None) -> Layout:
    """The layout after one collective on a value of ``layout``.

    Raises ShardcError, naming the rule, when the collective is illegal there.
    With ``sizes`` (global dim sizes) the result's divisibility is checked too.
    """
    where = f"{describe(kind, attrs) if kind in _RANK else kind} on {layout.format(mesh)}"
    check = _Check(where, layout, attrs, tuple(attrs.axes))
    _check_common(check, kind, mesh)
    _LEGALITY[kind](check)
    after = _apply(layout, kind, attrs)
    if sizes is not None:
        try:
            after.check(dict(_sizes_key(after, sizes)), mesh)
        except ShardcError as err:
            raise ShardcError(f"{where}: {err.message}", hint=err.hint) from None
    return after


@dataclass(frozen=True)
class _Check:
    """One collective being checked on a value: what a legality rule may look at, and how it fails."""

    where: str  # the collective and the layout, as every message starts
    layout: Layout
    attrs: CollectiveAttrs
    axes: tuple[str, ...]  # attrs.axes as a tuple

    def fail(self, message: str, hint: str | None = None) -> NoReturn:
        raise ShardcError(f"{self.where}: {message}", hint=hint)

    def need_dims(self, *names: str | None) -> None:
        """Each of ``names`` (the dims the collective's attributes name) is a dim of the value."""
        for name in names:
            if name not in self.layout.dims:
                self.fail(f"the value has no dim {name}; its dims are {', '.join(self.layout.dims)}")

    def need_partial(self) -> None:
        """all_reduce and reduce_scatter sum pending partial sums: every axis must hold one."""
        for a in self.axes:
            if a not in self.layout.partial:
                self.fail(f"axis '{a}' holds no pending partial sum")

    def refuse_partial(self) -> None:
        """The other collectives move data of complete values: no axis may hold a partial sum."""
        for a in self.axes:
            if a in self.layout.partial:
                self.fail(f"axis '{a}' holds a pending partial sum",
                          hint="sum it first with all_reduce or reduce_scatter")


def _check_common(check: _Check, kind: OpKind, mesh: Mesh) -> None:
    """The rules every collective obeys: it is one, and ``over`` names distinct axes of the mesh."""
    if kind not in _RANK:
        check.fail(f"'{kind}' is not a collective")
    if not check.axes:
        check.fail("'over' names no mesh axes")
    if len(set(check.axes)) != len(check.axes):
        check.fail("an axis appears twice in 'over'")
    for a in check.axes:
        if not mesh.has(a):
            check.fail(f"the mesh ({mesh}) has no axis '{a}'")


# The rules of each collective, checked after the common ones: the dims its attributes
# name exist, then its partial-sum rule, then its own rules (module docstring).
def _all_gather_legality(check: _Check) -> None:
    check.refuse_partial()
    layout = check.layout
    for a in check.axes:
        if layout.dim_of(a) is None:
            check.fail(f"axis '{a}' splits no dim, so there is nothing to gather")
    for d, held in layout.split:
        mine = tuple(a for a in check.axes if a in held)
        if mine and held[len(held) - len(mine):] != mine:
            check.fail(f"{''.join(mine)} must be the most-minor axes of dim {d}, which is split "
                       f"over {''.join(held)} (major first); only a suffix can be gathered")


def _reduce_scatter_legality(check: _Check) -> None:
    check.need_dims(check.attrs.dim)
    check.need_partial()


def _all_reduce_legality(check: _Check) -> None:
    check.need_partial()


def _all_to_all_legality(check: _Check) -> None:
    src, dst = check.attrs.src, check.attrs.dst
    check.need_dims(src, dst)
    check.refuse_partial()
    assert src is not None  # checked to be a dim of the value above
    held = check.layout.axes_of(src)
    if src == dst:
        check.fail("'from' and 'to' name the same dim")
    if held[len(held) - len(check.axes):] != check.axes:
        check.fail(f"{''.join(check.axes)} must be the most-minor axes of dim {src}, which is "
                   f"split over {''.join(held) or 'no axes'} (major first)")


def _slice_legality(check: _Check) -> None:
    check.need_dims(check.attrs.dim)
    check.refuse_partial()
    for a in check.axes:
        if check.layout.dim_of(a) is not None:
            check.fail(f"axis '{a}' already splits dim {check.layout.dim_of(a)}")


#: The legality rules of each collective (the same kinds as ``_RANK``).
_LEGALITY: dict[OpKind, Callable[[_Check], None]] = {
    AG: _all_gather_legality,
    RS: _reduce_scatter_legality,
    AR: _all_reduce_legality,
    A2A: _all_to_all_legality,
    SLICE: _slice_legality,
}


def _apply(layout: Layout, kind: OpKind, attrs: CollectiveAttrs) -> Layout:
    """The layout after a collective already known to be legal (no checks)."""
    gone = set(attrs.axes)
    target = attrs.dst if kind is A2A else attrs.dim  # the dim that axes are appended to
    split = []
    for d, held in layout.split:
        if kind is AG or (kind is A2A and d == attrs.src):
            held = tuple(a for a in held if a not in gone)
        if kind in (RS, SLICE, A2A) and d == target:
            held = held + tuple(attrs.axes)
        split.append((d, held))
    partial = layout.partial - gone if kind in (AR, RS) else layout.partial
    return Layout(tuple(split), partial)


def collective_bytes(kind: OpKind, attrs: CollectiveAttrs, before: Layout, after: Layout,
                     sizes: Mapping[str, int], mesh: Mesh, itemsize: int) -> float:
    """Bytes each chip sends for one collective (ring algorithms; module docstring)."""
    chips = mesh.num_chips
    in_bytes = before.local_numel(sizes, mesh) * itemsize
    out_bytes = after.local_numel(sizes, mesh) * itemsize
    return scaled_cost(kind, mesh.group_size(attrs.axes), in_bytes, out_bytes, chips) / chips


# --- the search ------------------------------------------------------------------------
def reshard(src: Layout, dst: Layout, sizes: Mapping[str, int], mesh: Mesh,
            itemsize: int = 2) -> tuple[Step, ...]:
    """The cheapest sequence of collectives turning a value of layout ``src`` into ``dst``.

    Cheapest by total bytes per chip, then fewest steps, then a fixed order
    (module docstring).  ``sizes`` maps each dim to its global size; ``itemsize``
    is bytes per element.  Pending partial sums of ``src`` are summed unless
    ``dst`` keeps them pending.  Raises ShardcError when either layout is invalid
    or the request is impossible (different dims, or ``dst`` pending a partial
    sum that ``src`` does not have).  Results are cached.
    """
    if src.dims != dst.dims:
        raise ShardcError(
            f"cannot reshard {src.format(mesh)} to {dst.format(mesh)}: the layouts are over "
            f"different dims [{', '.join(src.dims)}] and [{', '.join(dst.dims)}]")
    if not isinstance(itemsize, int) or itemsize < 1:
        raise ShardcError(f"itemsize must be a positive number of bytes, got {itemsize!r}")
    return _scaled(src, dst, _sizes_key(src, sizes), mesh, itemsize)


@lru_cache(maxsize=16384)
def _scaled(src: Layout, dst: Layout, key: tuple[tuple[str, int], ...], mesh: Mesh,
            itemsize: int) -> tuple[Step, ...]:
    src.check(dict(key), mesh)
    dst.check(dict(key), mesh)
    # Which path is cheapest depends on the sizes only through which groups of axes divide each
    # dim, and every group's size divides the chip count: so the search runs on each dim's gcd with
    # the chip count (one search serves every batch and width), and the bytes are scaled back.
    chips = mesh.num_chips
    divisible = tuple((d, math.gcd(n, chips)) for d, n in key)
    steps = _reshard(src, dst, divisible, mesh)
    scale = itemsize * math.prod(n for _, n in key) / math.prod(n for _, n in divisible)
    return tuple(replace(step, bytes_per_chip=step.bytes_per_chip * scale) for step in steps)


@lru_cache(maxsize=16384)
def _reshard(src: Layout, dst: Layout, sizes: tuple[tuple[str, int], ...], mesh: Mesh) -> tuple[Step, ...]:
    """The cheapest path for one-byte elements at ``sizes`` (layouts already checked)."""
    new = dst.partial - src.partial
    if new:
        raise ShardcError(
            f"cannot reshard {src.format(mesh)} to {dst.format(mesh)}: a value cannot become a "
            f"partial sum over {''.join(mesh.sort_axes(new))}; no collective creates partial sums")
    # Partial axes that dst keeps are frozen: once summed they could never come back.
    sliceable = src.used_axes | dst.split_axes  # no detours through idle axes
    found = _search(src, dst.partial, sliceable, sizes, mesh)
    moves = found.graph.replay(found.src, found.keys_to(node_of(dst)))
    return tuple(Step(kind, attrs, before, after, cost / mesh.num_chips) for kind, attrs, before, after, cost in moves)


@lru_cache(maxsize=4096)
def _graph(dims: tuple[str, ...], sizes: tuple[int, ...], mesh: Mesh, frozen: frozenset[str],
           sliceable: frozenset[str]) -> Graph:
    return Graph(dims, sizes, mesh, frozen, sliceable)


@lru_cache(maxsize=4096)
def _search(src: Layout, frozen: frozenset[str], sliceable: frozenset[str],
            sizes: tuple[tuple[str, int], ...], mesh: Mesh) -> PathSearch:
    graph = _graph(src.dims, tuple(n for _, n in sizes), mesh, frozen, sliceable)
    return PathSearch(graph, node_of(src))


def _sizes_key(layout: Layout, sizes: Mapping[str, int]) -> tuple[tuple[str, int], ...]:
    """``sizes`` restricted to the layout's dims, hashable (ShardcError if one is missing)."""
    missing = [d for d in layout.dims if d not in sizes]
    if missing:
        raise ShardcError(f"no size given for dim {missing[0]} of layout {layout.format()}")
    return tuple((d, int(sizes[d])) for d in layout.dims)
