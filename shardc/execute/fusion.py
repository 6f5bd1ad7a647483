"""The emulator's fused steps: reusing a dead operand's memory, and partial sums never held whole.

A weight-stationary layout makes every chip compute a partial sum of a whole activation, which
the next statement adds to another partial sum (``x + o + f``) or sums over the chips (a
reduce-scatter or an all-reduce).  Held as one stacked array, those partial sums are the
largest values of a run -- one whole activation per chip -- written once and read once, and
allocating them costs as much as computing them (fresh pages from the system).  So:

* an elementwise op writes its result into an operand's array when nothing reads that operand
  afterwards and nothing else holds its memory (:func:`exclusive`);
* an einsum read only by the next statement, an add (with an addend that dies there) or a
  reduction over chips, is computed one slice of the mesh at a time (:func:`run`), each slice
  added into the other addend's array, or into the running sum of the reduction in chip order
  (:func:`~shardc.execute.chips.chip_order_sum`, which the unfused reduction uses too).

Each chip's matrix product is the same call on the same data as unfused (the slices are taken
along a mesh dim both operands vary on, which the batched product loops over anyway), and the
additions come in the same order, so the results are identical to the last bit (the tests
compare both ways).  Nothing is fused when a caller watches every value (``on_value``), nor
where an einsum's copies would need a replica check.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from enum import Enum
from typing import Mapping, Sequence

import numpy as np

from shardc.execute import chips
from shardc.execute.local_ops import LocalCtx, batched_einsum
from shardc.ir.graph import CollectiveAttrs, Const, EinsumAttrs, Op, OpKind, Stmt, Value
from shardc.ir.layout import Layout
from shardc.ir.mesh import Mesh
from shardc.sharding.counts import reads

__all__ = ["Fusion", "FusionKind", "exclusive", "plan", "run", "slice_axis"]

#: Reference counts :func:`exclusive` sees besides the caller's: its own argument and
#: ``sys.getrefcount``'s.
_OWN_REFS = 2


def exclusive(arr: np.ndarray, refs: int) -> bool:
    """Whether ``arr`` may be overwritten: writable, and its memory held by nothing but ``arr``,
    which the caller holds ``refs`` references to (and nobody else: no other value, view,
    declaration's global array or caller's callback).

    CPython's reference counts say so: a view holds its base, so a base with no other holder
    than ``arr`` backs no other array.
    """
    if not arr.flags.writeable or sys.getrefcount(arr) != refs + _OWN_REFS:
        return False
    base = arr.base
    if base is None:
        return bool(arr.flags.owndata)
    # ``base`` is held by ``arr``, by the name ``base`` and by getrefcount's argument.
    return isinstance(base, np.ndarray) and base.base is None and bool(base.flags.owndata) \
        and sys.getrefcount(base) == 3


class FusionKind(Enum):
    """What reads the fused einsum's partial sums."""

    ADD_INTO = "add_into"  # the next statement adds them to an addend that dies there
    REDUCE = "reduce"  # the next statement sums them over chips (reduce-scatter or all-reduce)
    # The next statement adds them to an earlier einsum's, computed late, and the one after sums
    # that over chips: neither einsum nor their sum is ever held whole.
    ADD_REDUCE = "add_reduce"


@dataclass(frozen=True)
class Fusion:
    """An einsum computed with the statement after it (ADD_REDUCE: the two after it)."""

    kind: FusionKind
    einsum: Op
    consumer: Op
    partner: Value | None  # ADD_INTO, ADD_REDUCE: the other addend
    late: Op | None = None  # ADD_REDUCE: the einsum computing the partner, put off until here
    late_index: int | None = None  # its statement index
    reduce: Op | None = None  # ADD_REDUCE: the reduction of the sum

    @property
    def result(self) -> Op:
        """The last statement fused: its result is the one the run holds."""
        return self.reduce if self.reduce is not None else self.consumer


def plan(stmts: Sequence[Stmt], frees: Mapping[int, Sequence[int]], mesh: Mesh) -> dict[int, Fusion]:
    """Statement index -> the fusion of that einsum with the next statement, where the program
    allows one (``frees``: :func:`~shardc.sharding.counts.last_uses` of ``stmts``).

    Decided from the program alone, so that the memory estimate
    (:mod:`shardc.execute.footprint`) knows what the run will hold: the einsum's copies need no
    replica check (no mesh axis its operands vary on is one its result replicates over); a
    reduction's first summed axis is one both operands vary on (the slices are taken along it, in
    chip order); an addend that receives the sum is another two-operand einsum's result (a fresh
    array) that nothing but the add reads, so no other array shares its memory.
    """
    made: dict[int, Op] = {}  # value id -> the op of this block that computed it
    index: dict[int, int] = {}  # value id -> the statement computing it
    readers: dict[int, int] = {}
    for n, s in enumerate(stmts):
        if isinstance(s, Op):
            made[s.result.id] = s
            index[s.result.id] = n
        for v in reads(s):  # ops, outputs, repeats (whose carries may hand an init back as is)
            readers[v.id] = readers.get(v.id, 0) + 1
    out: dict[int, Fusion] = {}
    for i in range(len(stmts) - 1):
        e, nxt = stmts[i], stmts[i + 1]
        if isinstance(e, Op) and _two_operand_einsum(e) and isinstance(nxt, Op):
            dying = frees.get(i + 1, ())
            found = _fusion(e, nxt, dying, made, readers, mesh)
            if found is not None and found.kind is FusionKind.ADD_INTO and i + 2 < len(stmts):
                found = _add_reduce(found, stmts[i + 2], frees.get(i + 2, ()), made, index, readers, mesh) or found
            if found is not None:
                out[i] = found
    return out


def _add_reduce(add: Fusion, third: Stmt, dying: Sequence[int], made: Mapping[int, Op],
                index: Mapping[int, int], readers: Mapping[int, int], mesh: Mesh) -> Fusion | None:
    """ADD_INTO made ADD_REDUCE: the sum is read only by the next statement, a reduction over
    chips whose first summed axis all four einsum operands vary on (the slices, in chip order)."""
    total = add.consumer.result
    if not (isinstance(third, Op) and third.kind in (OpKind.REDUCE_SCATTER, OpKind.ALL_REDUCE)
            and third.inputs[0].id == total.id and readers.get(total.id) == 1 and total.id in dying):
        return None
    assert add.partner is not None
    late = made[add.partner.id]
    first = min(third.attrs_as(CollectiveAttrs).axes, key=mesh.index)
    if mesh.size(first) < 2 or not all(first in _layout(v).used_axes for v in (*add.einsum.inputs, *late.inputs)):
        return None
    return Fusion(FusionKind.ADD_REDUCE, add.einsum, add.consumer, add.partner, late, index[add.partner.id], third)


def _fusion(e: Op, nxt: Op, dying: Sequence[int], made: Mapping[int, Op], readers: Mapping[int, int],
            mesh: Mesh) -> Fusion | None:
    r = e.result
    if r.id not in dying or sum(1 for v in nxt.inputs if v.id == r.id) != 1:
        return None  # read after the next statement too, or twice by it
    varies = [set(_layout(v).used_axes) for v in e.inputs]
    if (varies[0] | varies[1]) - _layout(r).used_axes:
        return None  # copies computed chip by chip: the unfused run checks them
    if nxt.kind in (OpKind.REDUCE_SCATTER, OpKind.ALL_REDUCE):
        first = min(nxt.attrs_as(CollectiveAttrs).axes, key=mesh.index)
        ok = first in varies[0] & varies[1] and mesh.size(first) > 1
        return Fusion(FusionKind.REDUCE, e, nxt, None) if ok else None
    if nxt.kind is not OpKind.ADD or any(isinstance(o, Const) for o in nxt.operands):
        return None
    (partner,) = [v for v in nxt.inputs if v.id != r.id]
    source = made.get(partner.id)
    ok = (source is not None and _two_operand_einsum(source) and readers.get(partner.id) == 1
          and partner.id in dying and partner.dims == r.dims == nxt.result.dims
          and partner.layout == r.layout == nxt.result.layout)
    return Fusion(FusionKind.ADD_INTO, e, nxt, partner) if ok else None


def slice_axis(fusion: Fusion, mesh: Mesh) -> int | None:
    """The mesh dim the einsum is computed slice by slice along (None: at once)."""
    if fusion.kind is not FusionKind.ADD_INTO:
        return min(mesh.index(a) for a in fusion.result.attrs_as(CollectiveAttrs).axes)
    both = set(_layout(fusion.einsum.inputs[0]).used_axes) & set(_layout(fusion.einsum.inputs[1]).used_axes)
    return min((mesh.index(a) for a in both if mesh.size(a) > 1), default=None)


def _two_operand_einsum(op: Op) -> bool:
    return op.kind is OpKind.EINSUM and len(op.inputs) == 2 and len(op.operands) == 2


def _layout(v: Value) -> Layout:
    assert v.layout is not None
    return v.layout


def run(ctx: LocalCtx, fusion: Fusion, env: Mapping[int, np.ndarray], dtype: np.dtype,
        late: Mapping[int, Sequence[np.ndarray]]) -> np.ndarray | None:
    """The last fused statement's result, the einsum computed slice by slice into it; None where
    the arrays do not allow it (the caller then runs the statements as they are).  ``late``: the
    operands of einsums put off until here, by result id (ADD_REDUCE's partner)."""
    e = fusion.einsum
    a, b = (env[v.id] for v in e.inputs)
    m = ctx.m
    layout = e.result.layout
    assert layout is not None
    mesh_shape = [max(x, y) for x, y in zip(a.shape[:m], b.shape[:m])]
    p = slice_axis(fusion, ctx.mesh)
    if a.dtype != dtype or b.dtype != dtype or (p is not None and not a.shape[p] == b.shape[p] == mesh_shape[p] > 1):
        return None  # not as the layouts say (the plan read them): run the statements as they are
    slices = mesh_shape[p] if p is not None else 1
    buffers: dict[tuple[int, ...], np.ndarray] = {}  # one slice's product, its memory reused by the next
    if fusion.kind is FusionKind.ADD_INTO:
        assert fusion.partner is not None
        out = env[fusion.partner.id]
        shape = tuple(mesh_shape) + layout.local_sizes(ctx.sizes, ctx.mesh)
        if out.shape != shape or out.dtype != dtype or not exclusive(out, 2):  # env's, and ``out``
            return None
        for j in range(slices):
            part = out[_pick(p, j)]
            np.add(part, _product(e, a, b, p, j, m, buffers), out=part)
        return out
    assert p is not None
    attrs = fusion.result.attrs_as(CollectiveAttrs)
    rest = sorted(ctx.mesh.index(x) for x in attrs.axes)[1:]
    acc: np.ndarray | None = None
    if fusion.kind is FusionKind.REDUCE:
        for j in range(slices):  # chip order: the first summed axis outermost
            acc = chips.chip_order_sum(_product(e, a, b, p, j, m, buffers), rest, ctx.mesh, into=acc)
    else:
        assert fusion.partner is not None and fusion.late is not None
        first = fusion.late
        a1, b1 = late[fusion.partner.id]
        if a1.dtype != dtype or b1.dtype != dtype or [max(x, y) for x, y in zip(a1.shape[:m], b1.shape[:m])] \
                != mesh_shape or not a1.shape[p] == b1.shape[p] == slices:
            return None
        other: dict[tuple[int, ...], np.ndarray] = {}
        for j in range(slices):
            part = _product(first, a1, b1, p, j, m, other)
            np.add(part, _product(e, a, b, p, j, m, buffers), out=part)
            acc = chips.chip_order_sum(part, rest, ctx.mesh, into=acc)
    assert acc is not None
    if fusion.result.kind is OpKind.ALL_REDUCE:
        return acc
    assert attrs.dim is not None
    return chips.scatter_sum(acc, layout, attrs.axes, attrs.dim, ctx.mesh)


def _pick(p: int | None, j: int) -> tuple[slice, ...]:
    return tuple([slice(None)] * p + [slice(j, j + 1)]) if p is not None else ()


def _product(e: Op, a: np.ndarray, b: np.ndarray, p: int | None, j: int, m: int,
             buffers: dict[tuple[int, ...], np.ndarray]) -> np.ndarray:
    """Slice ``j`` along mesh dim ``p`` of einsum ``e``'s product (a view into ``buffers``)."""
    spec = e.attrs_as(EinsumAttrs)
    pick = _pick(p, j)
    return batched_einsum(spec.inputs[0], spec.inputs[1], spec.output, a[pick], b[pick], m, buffers)
