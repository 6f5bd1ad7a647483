"""How much host memory an emulated run holds at most, without running it (Python ints only).

The emulator (:mod:`shardc.execute.emulate`) holds each value as one stacked array
with a mesh dim of size 1 along every axis the value is replicated over, so a
value costs ``local elements x (the sizes of the mesh axes its layout splits or
holds partial sums over) x itemsize`` bytes of host memory -- a declaration its
global size.  :func:`emulation_footprint` walks the program the way the emulator
does (the same liveness, :func:`~shardc.sharding.counts.last_uses`; repeat layers,
loop carries and per-layer outputs included) and takes the most bytes live at any
statement, plus what that statement needs while it runs: its result, and the
temporaries of its NumPy implementation (:data:`TEMPORARIES`); an einsum also
copies the operands whose strides do not suit BLAS: for a declared operand
(scattered from its global array, so its strides are known) that is decided
as the emulator decides it, on a stand-in array with the same shape and
strides and no data; any other operand is counted as copied.

The bound is meant to be tight enough that the memory guard does not refuse a run
that fits: the tests compare it with tracemalloc's peak (never below it, within
1.5x of it on the examples and the benchmark layer).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from shardc.execute import chips, fusion
from shardc.execute.local_ops import copies_operands
from shardc.execute.reference import _np_dtype
from shardc.ir.graph import Decl, EinsumAttrs, Graph, Op, OpKind, Output, Repeat, Stmt, Value
from shardc.ir.mesh import Mesh
from shardc.sharding.counts import last_uses

#: Arrays the size of the result an op's implementation allocates besides its result, at most
#: at once (read from the NumPy code of :mod:`shardc.execute.local_ops` and
#: :mod:`shardc.execute.reference`): gelu's polynomial, norms' centred values and squares,
#: softmax's shifted exponentials, the intermediate of a collective over several dims.
TEMPORARIES: Mapping[OpKind, float] = {
    OpKind.GELU: 3.0,
    OpKind.SILU: 2.0,
    OpKind.LAYERNORM: 2.0,
    OpKind.RMSNORM: 1.0,
    OpKind.SOFTMAX: 1.0,
    OpKind.CAUSAL: 0.5,  # the boolean mask, at most a quarter of an f32 result; room for f64's halves too
    OpKind.ALL_GATHER: 1.0,
    OpKind.SLICE: 1.0,
    OpKind.ALL_TO_ALL: 1.0,
}
#: Bytes the run needs whatever its size: the Python objects of the counters and the arrays'
#: headers (tracemalloc counts them too); and a margin for what the walk does not see (NumPy's
#: own buffers, a temporary of an implementation that holds one more than counted).
FIXED_BYTES = 64 * 1024
PER_STATEMENT_BYTES = 2 * 1024
MARGIN = 0.05


def host_bytes(v: Value, sizes: Mapping[str, int], mesh: Mesh, itemsize: int) -> int:
    """Bytes the emulator holds for ``v``: its local block on every chip it differs on."""
    assert v.layout is not None
    distinct = math.prod(mesh.size(a) for a in v.layout.used_axes)
    return v.layout.local_numel(sizes, mesh) * distinct * itemsize


def emulation_footprint(g: Graph, dtype: str = "f32", layers: int | None = None, *, fused: bool = True) -> int:
    """An upper bound on the bytes an emulated run of the sharded ``g`` holds at once.

    ``fused``: the run takes the fused steps of :mod:`shardc.execute.fusion` (as it does unless a
    caller watches every value with ``on_value``).
    """
    walk = _Walk(g, _np_dtype(dtype).itemsize, fused)
    walk.block(g.body.stmts, layers, frozenset())
    statements = sum(1 for _ in g.walk())
    return int(walk.peak * (1 + MARGIN)) + FIXED_BYTES + PER_STATEMENT_BYTES * statements


def _host_frees(frees: dict[int, list[int]], fusions: Mapping[int, fusion.Fusion]) -> dict[int, list[int]]:
    """``frees`` with the operands of each put-off einsum kept until its fused statements have run."""
    out = {i: list(ids) for i, ids in frees.items()}
    for i, f in fusions.items():
        if f.late is None or f.late_index is None:
            continue
        moved = [v.id for v in f.late.inputs if v.id in out.get(f.late_index, ())]
        out[f.late_index] = [v for v in out.get(f.late_index, []) if v not in moved]
        out.setdefault(i + 1, []).extend(moved)
    return out


@dataclass
class _Walk:
    """The emulator's run replayed in bytes: what is live, and the most ever live with scratch."""

    g: Graph
    itemsize: int
    fused: bool
    live: dict[int, int] = field(default_factory=dict)
    kept: int = 0  # outputs handed back (they stay until the run ends)
    peak: int = 0
    declared: set[int] = field(default_factory=set)  # values that are a declaration's scattered array

    @property
    def mesh(self) -> Mesh:
        assert self.g.mesh is not None
        return self.g.mesh

    def bytes_of(self, v: Value) -> int:
        return host_bytes(v, self.g.sizes, self.mesh, self.itemsize)

    def global_bytes(self, v: Value) -> int:
        return math.prod(self.g.sizes[d] for d in v.dims) * self.itemsize

    def at(self, extra: int) -> None:
        self.peak = max(self.peak, sum(self.live.values()) + self.kept + extra)

    def block(self, stmts: Sequence[Stmt], layers: int | None, keep: frozenset[int]) -> None:
        frees = last_uses(stmts, keep)
        fusions = fusion.plan(stmts, frees, self.mesh) if self.fused else {}
        put_off = {f.late_index for f in fusions.values() if f.late_index is not None}
        never_whole = {f.consumer.result.id for f in fusions.values() if f.reduce is not None}
        frees = _host_frees(frees, fusions)
        for i, stmt in enumerate(stmts):
            if isinstance(stmt, Decl):
                size = self.bytes_of(stmt.value)
                # Drawn in float32, then cast: both at once for a compute dtype other than f32.
                drawn = self.global_bytes(stmt.value) * 4 // self.itemsize if self.itemsize != 4 else 0
                self.at(size + drawn)
                self.live[stmt.value.id] = size
                self.declared.add(stmt.value.id)
            elif isinstance(stmt, Op) and (i in fusions or i in put_off or stmt.result.id in never_whole):
                if i in fusions:
                    self.at(self.fused_scratch(fusions[i]))
                self.live[stmt.result.id] = 0  # never held whole
            elif isinstance(stmt, Op):
                self.op(stmt, fusions.get(i - 1))
            elif isinstance(stmt, Output):
                for v in stmt.values:
                    self.at(2 * self.global_bytes(v))  # assembled, then copied out
                    self.kept += self.global_bytes(v)
            elif isinstance(stmt, Repeat):
                self.repeat(stmt, layers)
            for vid in frees.get(i, []):
                self.live.pop(vid, None)

    def scratch(self, op: Op, size: int) -> int:
        """Bytes ``op`` allocates while it runs besides its result."""
        extra = int(TEMPORARIES.get(op.kind, 0.0) * size)
        if op.kind is OpKind.EINSUM and len(op.attrs_as(EinsumAttrs).inputs) == 2:
            extra += self.einsum_copies(op)
        if op.kind is OpKind.RELABEL:
            return -size  # the operand's array, renamed
        return extra

    def op(self, stmt: Op, after: fusion.Fusion | None) -> None:
        """An op run as it is; ``after``: the fusion of the statement before (an ADD_INTO's sum is
        written into the addend's memory)."""
        size = self.bytes_of(stmt.result)
        if after is not None and after.kind is fusion.FusionKind.ADD_INTO:
            assert after.partner is not None
            self.live.pop(after.partner.id, None)
        self.at(size + self.scratch(stmt, size))
        self.live[stmt.result.id] = size

    def fused_scratch(self, plan: fusion.Fusion) -> int:
        """Bytes a fused einsum allocates: one slice's product and operand copies at a time, and a
        reduction's running sum (the consumer's result, made here)."""
        p = fusion.slice_axis(plan, self.mesh)
        slices = self.mesh.shape[p] if p is not None else 1
        einsums = [plan.einsum] if plan.late is None else [plan.einsum, plan.late]
        extra = sum(self.bytes_of(e.result) + self.einsum_copies(e) for e in einsums) // slices
        if plan.kind is not fusion.FusionKind.ADD_INTO:
            extra += self.bytes_of(plan.result.result)
        return extra

    def einsum_copies(self, op: Op) -> int:
        """Bytes of the operands a two-operand einsum copies into BLAS order."""
        spec = op.attrs_as(EinsumAttrs)
        a, b = (self.stand_in(v) for v in op.inputs)
        copied = copies_operands(spec.inputs[0], spec.inputs[1], spec.output, a, b, len(self.mesh.axes))
        return sum(self.bytes_of(v) for v, c in zip(op.inputs, copied) if c or v.id not in self.declared)

    def stand_in(self, v: Value) -> np.ndarray:
        """An array with ``v``'s stacked shape (and, for a declaration, its strides) over one element."""
        assert v.layout is not None
        one = np.zeros(1, np.float32)
        if v.id in self.declared:
            shape = tuple(self.g.sizes[d] for d in v.dims)
            strides = tuple(4 * math.prod(shape[i + 1:]) for i in range(len(shape)))
            return chips.scatter(np.lib.stride_tricks.as_strided(one, shape, strides), v.layout, self.mesh)
        extents = tuple(k if a in v.layout.used_axes else 1 for a, k in self.mesh.axes)
        shape = extents + v.layout.local_sizes(self.g.sizes, self.mesh)
        return np.lib.stride_tricks.as_strided(one, shape, (0,) * len(shape))

    def repeat(self, rep: Repeat, layers: int | None) -> None:
        n = rep.count if layers is None else min(layers, rep.count)
        outputs = sum(self.global_bytes(v) for s in rep.body if isinstance(s, Output) for v in s.values)
        outer = set(self.live)
        keep = frozenset(c.next.id for c in rep.carries)
        for c in rep.carries:
            self.live[c.arg.id] = 0  # the first layer's carries are the inits, which stay live
        before = self.peak
        for layer in range(min(n, 2)):
            if layer == 1:  # the second layer's peak, which every later one repeats with more outputs kept
                before, self.peak = self.peak, 0
            self.block(rep.body.stmts, None, keep)
            carried = {c.arg.id: self.live.get(c.next.id, 0) for c in rep.carries}
            for vid in [v for v in self.live if v not in outer]:
                del self.live[vid]
            self.live.update(carried)
        if n > 2:
            self.peak += (n - 2) * outputs
            self.kept += (n - 2) * outputs
        self.peak = max(before, self.peak)
        self.at(outputs * n)  # each per-layer output stacked into one array: both at once, for a moment
        for c in rep.carries:
            self.live[c.result.id] = self.live.pop(c.arg.id, 0)
