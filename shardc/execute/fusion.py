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


@dataclass(frozen=True)
class Fusion:
    """An einsum (statement ``index``) computed with the statement after it."""

    kind: FusionKind
    einsum: Op
    consumer: Op
    partner: Value | None  # ADD_INTO: the other addend, whose array receives the sum


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
    readers: dict[int, int] = {}
    for s in stmts:
        if isinstance(s, Op):
            made[s.result.id] = s
        for v in reads(s):  # ops, outputs, repeats (whose carries may hand an init back as is)
            readers[v.id] = readers.get(v.id, 0) + 1
    out: dict[int, Fusion] = {}
    for i in range(len(stmts) - 1):
        e, nxt = stmts[i], stmts[i + 1]
        if isinstance(e, Op) and _two_operand_einsum(e) and isinstance(nxt, Op):
            dying = frees.get(i + 1, ())
            found = _fusion(e, nxt, dying, made, readers, mesh)
            if found is not None:
                out[i] = found
    return out


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
    if fusion.kind is FusionKind.REDUCE:
        return min(mesh.index(a) for a in fusion.consumer.attrs_as(CollectiveAttrs).axes)
    both = set(_layout(fusion.einsum.inputs[0]).used_axes) & set(_layout(fusion.einsum.inputs[1]).used_axes)
    return min((mesh.index(a) for a in both if mesh.size(a) > 1), default=None)


def _two_operand_einsum(op: Op) -> bool:
    return op.kind is OpKind.EINSUM and len(op.inputs) == 2 and len(op.operands) == 2


def _layout(v: Value) -> Layout:
    assert v.layout is not None
    return v.layout


def run(ctx: LocalCtx, fusion: Fusion, env: dict[int, np.ndarray], dtype: np.dtype) -> np.ndarray | None:
    """The consumer's result, the einsum computed slice by slice into it; None where the arrays
    do not allow it (the caller then runs both statements as they are)."""
    e = fusion.einsum
    spec = e.attrs_as(EinsumAttrs)
    a, b = (env[v.id] for v in e.inputs)
    m = ctx.m
    layout = e.result.layout
    assert layout is not None
    if a.dtype != dtype or b.dtype != dtype:
        return None
    mesh_shape = [max(x, y) for x, y in zip(a.shape[:m], b.shape[:m])]
    p = slice_axis(fusion, ctx.mesh)
    if p is not None and not (a.shape[p] == b.shape[p] == mesh_shape[p] > 1):
        return None  # not as the layouts say (the plan read them): run both statements as they are
    buffers: dict[tuple[int, ...], np.ndarray] = {}  # one slice's product, its memory reused by the next

    def product(j: int) -> np.ndarray:
        pick = tuple([slice(None)] * p + [slice(j, j + 1)]) if p is not None else ()
        return batched_einsum(spec.inputs[0], spec.inputs[1], spec.output, a[pick], b[pick], m, buffers)

    slices = mesh_shape[p] if p is not None else 1
    if fusion.kind is FusionKind.ADD_INTO:
        assert fusion.partner is not None
        out = env[fusion.partner.id]
        shape = tuple(mesh_shape) + layout.local_sizes(ctx.sizes, ctx.mesh)
        if out.shape != shape or out.dtype != dtype or not exclusive(out, 2):  # env's, and ``out``
            return None
        for j in range(slices):
            part = out[tuple([slice(None)] * p + [slice(j, j + 1)])] if p is not None else out
            np.add(part, product(j), out=part)
        return out
    attrs = fusion.consumer.attrs_as(CollectiveAttrs)
    assert p is not None
    rest = sorted(ctx.mesh.index(x) for x in attrs.axes)[1:]
    acc: np.ndarray | None = None
    for j in range(slices):  # chip order: the first summed axis outermost
        acc = chips.chip_order_sum(product(j), rest, ctx.mesh, into=acc)
    assert acc is not None
    if fusion.consumer.kind is OpKind.ALL_REDUCE:
        return acc
    assert attrs.dim is not None
    return chips.scatter_sum(acc, layout, attrs.axes, attrs.dim, ctx.mesh)
