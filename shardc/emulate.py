"""The SPMD emulator: run a sharded program on emulated chips in NumPy, and count its cost.

Every value lives on every chip as one stacked array ``[*mesh_shape, *local]``
(:mod:`shardc.chips`); each op is one vectorised NumPy call over all chips at
once -- a local einsum is ``np.einsum("...BLE,...EF->...BLF")`` with the mesh
dims riding along in the ellipsis -- and each collective is a
reshape/transpose/sum over mesh dims.  Inputs, params and caches are the
reference executor's seeded arrays (:class:`~shardc.reference.SeededData`),
scattered into their layouts, so :func:`emulate` and
:func:`~shardc.reference.reference` see the same numbers.

A norm or softmax over a split dim sums (or maxes) its per-row statistics
across the chips of that dim's axes inside the op, as the sharding rules say.

Counters (per chip; every chip does the same work under these layouts):

* ``flops``: einsums, 2 per multiply-add over the op's local dims;
* ``elementwise_flops``: one per local result element of every other compute op;
* ``comm_bytes``: bytes each chip sends, ring formulas of :mod:`shardc.reshard`
  (and :func:`shardc.sharded.stats_bytes` for statistics all-reduces), at the
  declared dtype of the value (bf16: 2 bytes), not the emulator's f32;
* ``hbm_bytes``: bytes of operands read by every op (weights, caches and
  activations, at their declared dtype);
* ``peak_bytes``: the most bytes live at once (values freed after their last use).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from . import chips
from .errors import ShardcError
from .ir import (
    CausalAttrs,
    CollectiveAttrs,
    Const,
    Decl,
    EinsumAttrs,
    Graph,
    Op,
    OpKind,
    Output,
    OverAttrs,
    Repeat,
    Stmt,
    Value,
)
from .layout import Layout
from .mesh import Mesh
from .reference import DEFAULT_MAX_BYTES, EPS, IMPLS, SeededData, _human, _np_dtype
from .counts import op_comm_bytes, op_flops, op_hbm_bytes
from .sharded import verify_sharded

Local = Callable[["_Ctx", Op, Sequence["np.ndarray | float"]], np.ndarray]


class ReplicaError(ShardcError):
    """Chips that the layout says hold copies of a value hold different data."""


# --- counters ----------------------------------------------------------------------------
@dataclass
class OpCount:
    """What one statement cost per chip, summed over the layers run."""

    value: str
    kind: str
    line: int
    runs: int = 0
    flops: float = 0.0
    elementwise_flops: float = 0.0
    comm_bytes: float = 0.0
    hbm_bytes: float = 0.0

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class Counters:
    """Per-chip totals of one emulated run, and the same per statement."""

    flops: float = 0.0
    elementwise_flops: float = 0.0
    comm_bytes: float = 0.0
    hbm_bytes: float = 0.0
    peak_bytes: int = 0
    by_op: dict[int, OpCount] = field(default_factory=dict)

    def add(self, op: Op, flops: float = 0.0, elementwise: float = 0.0, comm: float = 0.0,
            hbm: float = 0.0) -> None:
        entry = self.by_op.setdefault(op.result.id, OpCount(op.result.name or "", op.kind.value, op.loc.line))
        entry.runs += 1
        entry.flops += flops
        entry.elementwise_flops += elementwise
        entry.comm_bytes += comm
        entry.hbm_bytes += hbm
        self.flops += flops
        self.elementwise_flops += elementwise
        self.comm_bytes += comm
        self.hbm_bytes += hbm

    def to_json(self) -> dict[str, object]:
        return {
            "flops_per_chip": self.flops,
            "elementwise_flops_per_chip": self.elementwise_flops,
            "comm_bytes_per_chip": self.comm_bytes,
            "hbm_bytes_per_chip": self.hbm_bytes,
            "peak_bytes_per_chip": self.peak_bytes,
            "by_op": [c.to_json() for c in self.by_op.values()],
        }


@dataclass(frozen=True)
class Emulation:
    """Outputs (global arrays, as :func:`~shardc.reference.reference` returns them) and counters."""

    outputs: dict[str, np.ndarray]
    counters: Counters
    mesh: Mesh

    @property
    def chips(self) -> int:
        return self.mesh.num_chips


# --- the run ----------------------------------------------------------------------------
@dataclass
class _Ctx:
    mesh: Mesh
    sizes: Mapping[str, int]
    dtype: np.dtype
    counters: Counters
    check_replicas: bool
    on_value: Callable[[Op, int, np.ndarray], None] | None
    layer: int = 0
    live: dict[int, int] = field(default_factory=dict)

    @property
    def m(self) -> int:
        return len(self.mesh.axes)

    def local_bytes(self, v: Value) -> int:
        assert v.layout is not None
        return v.layout.local_numel(self.sizes, self.mesh) * v.dtype.bytes

    def hold(self, v: Value) -> None:
        self.live[v.id] = self.local_bytes(v)
        self.counters.peak_bytes = max(self.counters.peak_bytes, sum(self.live.values()))

    def release(self, ids: Sequence[int]) -> None:
        for i in ids:
            self.live.pop(i, None)


def _layout(operand: Value) -> Layout:
    assert operand.layout is not None
    return operand.layout


def _local_einsum(ctx: _Ctx, op: Op, args: Sequence[np.ndarray | float]) -> np.ndarray:
    assert isinstance(op.attrs, EinsumAttrs)
    arrays = [a for a in args if isinstance(a, np.ndarray)]
    if len(arrays) == 1:
        spec = "..." + op.attrs.inputs[0] + "->..." + op.attrs.output
        return np.einsum(spec, arrays[0])
    return batched_einsum(op.attrs.inputs[0], op.attrs.inputs[1], op.attrs.output, arrays[0], arrays[1], ctx.m)


def batched_einsum(left: str, right: str, out: str, a: np.ndarray, b: np.ndarray, lead: int) -> np.ndarray:
    """``einsum(f"{left},{right}->{out}")`` on every chip at once, as one batched matmul.

    ``a`` and ``b`` carry ``lead`` mesh dims first.  Letters are sorted into
    batch (both operands and the result), contracted (both, not the result)
    and free (one operand and the result); letters of one operand only that
    the result lacks are summed first.  Each operand is transposed to
    ``[*mesh, batch, free, contracted]`` (resp. ``[*mesh, batch, contracted,
    free]``), flattened to 3 dims, multiplied with ``np.matmul`` (BLAS per
    chip and batch), and the product is unflattened and transposed to ``out``.
    """
    a, left = _sum_away(a, left, right + out, lead)
    b, right = _sum_away(b, right, left + out, lead)
    batch = [c for c in out if c in left and c in right]
    contract = [c for c in left if c in right and c not in out]
    free_a = [c for c in out if c in left and c not in right]
    free_b = [c for c in out if c in right and c not in left]
    mesh_shape = a.shape[:lead]
    size = {c: a.shape[lead + left.index(c)] for c in left}
    size.update({c: b.shape[lead + right.index(c)] for c in right})

    def flat(arr: np.ndarray, letters: str, groups: list[list[str]]) -> np.ndarray:
        perm = list(range(lead)) + [lead + letters.index(c) for g in groups for c in g]
        shape = tuple(math.prod(size[c] for c in g) for g in groups)
        # Contiguous, or np.matmul may leave BLAS for a slow strided loop (size-1 dims make
        # the reshape a view with odd strides).
        return np.ascontiguousarray(arr.transpose(perm).reshape(mesh_shape + shape))

    product = np.matmul(flat(a, left, [batch, free_a, contract]), flat(b, right, [batch, contract, free_b]))
    order = batch + free_a + free_b
    product = product.reshape(mesh_shape + tuple(size[c] for c in order))
    return product.transpose(list(range(lead)) + [lead + order.index(c) for c in out])


def _sum_away(arr: np.ndarray, letters: str, keep: str, lead: int) -> tuple[np.ndarray, str]:
    """Sum the dims of ``arr`` whose letters are not in ``keep`` (one-sided reductions)."""
    gone = [c for c in letters if c not in keep]
    if not gone:
        return arr, letters
    arr = arr.sum(axis=tuple(lead + letters.index(c) for c in gone))
    return arr, "".join(c for c in letters if c not in gone)


def _align(arr: np.ndarray | float, dims: tuple[str, ...], out: tuple[str, ...], m: int) -> np.ndarray | float:
    """Local dims ``dims`` of a stacked array transposed into ``out``'s order (size 1 where absent)."""
    if not isinstance(arr, np.ndarray):
        return arr
    order = list(range(m)) + [m + dims.index(d) for d in out if d in dims]
    shape = list(arr.shape[:m]) + [arr.shape[m + dims.index(d)] if d in dims else 1 for d in out]
    return arr.transpose(order).reshape(shape)


def _local_binary(ufunc: np.ufunc) -> Local:
    def binary(ctx: _Ctx, op: Op, args: Sequence[np.ndarray | float]) -> np.ndarray:
        left, right = (a if isinstance(o, Const) else _align(a, o.dims, op.result.dims, ctx.m)
                       for o, a in zip(op.operands, args))
        return ufunc(left, right)
    return binary


def _global_unary(kind: OpKind) -> Local:
    """Activations are elementwise: the reference's implementation works on any shape."""
    impl = IMPLS[kind]

    def unary(ctx: _Ctx, op: Op, args: Sequence[np.ndarray | float]) -> np.ndarray:
        return impl(op, args)
    return unary


def _over(ctx: _Ctx, op: Op) -> tuple[int, tuple[str, ...], int]:
    """Local axis of the ``over`` dim, the mesh axes splitting it, and its global size."""
    assert isinstance(op.attrs, OverAttrs)
    dim = op.attrs.dim
    operand = op.inputs[0]
    return ctx.m + operand.dims.index(dim), _layout(operand).axes_of(dim), ctx.sizes[dim]


def _all_sum(ctx: _Ctx, x: np.ndarray, axes: tuple[str, ...]) -> np.ndarray:
    return chips.sum_over(x, axes, ctx.mesh) if axes else x


def _gain(ctx: _Ctx, op: Op, args: Sequence[np.ndarray | float], normed: np.ndarray, axis: int) -> np.ndarray:
    if len(args) < 2:
        return normed
    gain = args[1]
    assert isinstance(gain, np.ndarray)
    shape = [1] * normed.ndim
    shape[: ctx.m] = gain.shape[: ctx.m]
    shape[axis] = gain.shape[-1]
    return normed * gain.reshape(shape)


def _local_layernorm(ctx: _Ctx, op: Op, args: Sequence[np.ndarray | float]) -> np.ndarray:
    a = args[0]
    assert isinstance(a, np.ndarray)
    axis, axes, n = _over(ctx, op)
    mean = _all_sum(ctx, a.sum(axis=axis, keepdims=True), axes) / n
    centered = a - mean
    var = _all_sum(ctx, (centered * centered).sum(axis=axis, keepdims=True), axes) / n
    return _gain(ctx, op, args, centered / np.sqrt(var + EPS), axis)


def _local_rmsnorm(ctx: _Ctx, op: Op, args: Sequence[np.ndarray | float]) -> np.ndarray:
    a = args[0]
    assert isinstance(a, np.ndarray)
    axis, axes, n = _over(ctx, op)
    mean_square = _all_sum(ctx, (a * a).sum(axis=axis, keepdims=True), axes) / n
    return _gain(ctx, op, args, a / np.sqrt(mean_square + EPS), axis)


def _local_softmax(ctx: _Ctx, op: Op, args: Sequence[np.ndarray | float]) -> np.ndarray:
    a = args[0]
    assert isinstance(a, np.ndarray)
    axis, axes, _ = _over(ctx, op)
    top = a.max(axis=axis, keepdims=True)
    if axes:
        positions = tuple(ctx.mesh.index(x) for x in axes)
        top = np.broadcast_to(top.max(axis=positions, keepdims=True), top.shape)
    e = np.exp(a - top)
    return e / _all_sum(ctx, e.sum(axis=axis, keepdims=True), axes)


def _local_sum(ctx: _Ctx, op: Op, args: Sequence[np.ndarray | float]) -> np.ndarray:
    a = args[0]
    assert isinstance(a, np.ndarray)
    axis, _, _ = _over(ctx, op)
    return a.sum(axis=axis)  # a split dim leaves partial sums, as the layout says


def _local_causal(ctx: _Ctx, op: Op, args: Sequence[np.ndarray | float]) -> np.ndarray:
    """Global query/key positions from each chip's block offsets, then the mask."""
    a = args[0]
    assert isinstance(a, np.ndarray) and isinstance(op.attrs, CausalAttrs)
    operand = op.inputs[0]
    layout = _layout(operand)
    positions = []
    for dim in (op.attrs.query, op.attrs.key):
        q = ctx.m + operand.dims.index(dim)
        local = a.shape[q]
        offsets = chips.block_offsets(layout, dim, local, ctx.mesh)
        shape = [1] * a.ndim
        shape[: ctx.m] = offsets.shape
        index = offsets.reshape(shape)
        along = [1] * a.ndim
        along[q] = local
        positions.append(index + np.arange(local).reshape(along))
    i, j = positions
    n_query, n_key = ctx.sizes[op.attrs.query], ctx.sizes[op.attrs.key]
    return np.where(j <= i + (n_key - n_query), a, a.dtype.type(-np.inf))


def _local_relabel(ctx: _Ctx, op: Op, args: Sequence[np.ndarray | float]) -> np.ndarray:
    a = args[0]
    assert isinstance(a, np.ndarray)
    return a


def _local_collective(ctx: _Ctx, op: Op, args: Sequence[np.ndarray | float]) -> np.ndarray:
    a = args[0]
    assert isinstance(a, np.ndarray) and isinstance(op.attrs, CollectiveAttrs)
    return chips.run_collective(a, op.kind, op.attrs, _layout(op.inputs[0]), ctx.mesh)


LOCAL_IMPLS: dict[OpKind, Local] = {
    OpKind.EINSUM: _local_einsum,
    OpKind.ADD: _local_binary(np.add),
    OpKind.SUB: _local_binary(np.subtract),
    OpKind.MUL: _local_binary(np.multiply),
    OpKind.DIV: _local_binary(np.divide),
    OpKind.NEG: _global_unary(OpKind.NEG),
    OpKind.GELU: _global_unary(OpKind.GELU),
    OpKind.RELU: _global_unary(OpKind.RELU),
    OpKind.SILU: _global_unary(OpKind.SILU),
    OpKind.TANH: _global_unary(OpKind.TANH),
    OpKind.EXP: _global_unary(OpKind.EXP),
    OpKind.LAYERNORM: _local_layernorm,
    OpKind.RMSNORM: _local_rmsnorm,
    OpKind.SOFTMAX: _local_softmax,
    OpKind.SUM: _local_sum,
    OpKind.CAUSAL: _local_causal,
    OpKind.RELABEL: _local_relabel,
    OpKind.ALL_GATHER: _local_collective,
    OpKind.REDUCE_SCATTER: _local_collective,
    OpKind.ALL_REDUCE: _local_collective,
    OpKind.ALL_TO_ALL: _local_collective,
    OpKind.SLICE: _local_collective,
}


def _replica_axes(ctx: _Ctx, op: Op) -> list[int]:
    """Mesh positions along which every operand (hence the result) is replicated."""
    used = set()
    for v in op.inputs:
        used |= _layout(v).used_axes
    return [p for p, (a, size) in enumerate(ctx.mesh.axes) if a not in used and size > 1]


def _compute(ctx: _Ctx, op: Op, args: list[np.ndarray | float]) -> np.ndarray:
    """The op on every chip.  A local op whose operands are all replicated along some mesh
    axes runs once per distinct shard and is then copied to the replicas: the operands were
    checked to be equal copies when they were made, so the copies compute the same thing."""
    replicated = [] if op.kind.is_collective else _replica_axes(ctx, op)
    if not replicated:
        return LOCAL_IMPLS[op.kind](ctx, op, args)
    index = tuple(slice(0, 1) if p in replicated else slice(None) for p in range(ctx.m))
    small = [a[index] if isinstance(a, np.ndarray) else a for a in args]
    return chips.copy_to(LOCAL_IMPLS[op.kind](ctx, op, small), replicated, ctx.mesh)


def _run_op(ctx: _Ctx, op: Op, env: Mapping[int, np.ndarray]) -> np.ndarray:
    args = [o.value if isinstance(o, Const) else env[o.id] for o in op.operands]
    result = _compute(ctx, op, args).astype(ctx.dtype, copy=False)
    flops, elementwise = op_flops(op, ctx.sizes, ctx.mesh)
    hbm = op_hbm_bytes(op, ctx.sizes, ctx.mesh)
    ctx.counters.add(op, flops, elementwise, op_comm_bytes(op, ctx.sizes, ctx.mesh), hbm)
    layout = op.result.layout
    assert layout is not None
    # Local ops compute replicas once and copy them (_compute), so only a collective can make
    # copies diverge: check after each one.
    if ctx.check_replicas and op.kind.is_collective:
        bad = chips.replica_mismatch(result, layout, ctx.mesh)
        if bad is not None:
            raise ReplicaError(
                f"after {op.kind} on line {op.loc.line}, value '{op.result.name}' ({layout.format(ctx.mesh)}) "
                f"differs between chips {bad[0]} and {bad[1]}, which should hold copies")
    if ctx.on_value is not None:
        ctx.on_value(op, ctx.layer, result)
    return result


def _last_uses(stmts: Sequence[Stmt]) -> dict[int, list[int]]:
    """Statement index -> ids of the block's values last used there (freed after it)."""
    last: dict[int, int] = {}
    defined: set[int] = set()
    for i, s in enumerate(stmts):
        if isinstance(s, Decl):
            defined.add(s.value.id)
        elif isinstance(s, Op):
            for v in s.inputs:
                last[v.id] = i
            defined.add(s.result.id)
        elif isinstance(s, Output):
            for v in s.values:
                last[v.id] = i
        elif isinstance(s, Repeat):
            for c in s.carries:
                last[c.init.id] = i
            for inner in s.body:  # outer values a body reads live until the repeat ends
                for v in (inner.inputs if isinstance(inner, Op) else ()):
                    last[v.id] = i
    out: dict[int, list[int]] = {}
    for v, i in last.items():
        if v in defined:
            out.setdefault(i, []).append(v)
    return out


# Scratch one op may need beyond the values it keeps, in units of its largest stacked array:
# a collective's reshape copy and its copies to the replicas, a matmul's transposed operands,
# and the replica check's comparison.
SCRATCH_ARRAYS = 3


def estimate_bytes(g: Graph, dtype: str = "f32", layers: int | None = None) -> int:
    """Bytes an emulated run of the sharded ``g`` holds at most (Python ints; nothing allocated).

    Every stacked value of the top level and of one layer of each repeat (all
    kept until the block ends), the stacked per-layer outputs, scratch for one
    op (``SCRATCH_ARRAYS`` times the largest stacked value) and for the largest
    global draw (drawn in float64, then cast).
    """
    return _estimate(g, _np_dtype(dtype), layers)


def _estimate(g: Graph, dtype: np.dtype, layers: int | None) -> int:
    mesh = g.mesh
    assert mesh is not None
    sizes = g.sizes
    total, biggest, biggest_stacked = 0, 0, 0
    for stmt, rep in g.walk():
        values = [stmt.value] if isinstance(stmt, Decl) else [stmt.result] if isinstance(stmt, Op) else []
        for v in values:
            assert v.layout is not None
            stacked = v.layout.local_numel(sizes, mesh) * mesh.num_chips * dtype.itemsize
            total += stacked
            biggest_stacked = max(biggest_stacked, stacked)
            n = math.prod(sizes[d] for d in v.dims)
            biggest = max(biggest, n)
            if isinstance(stmt, Op) and rep is not None and any(
                    isinstance(s, Output) and v in s.values for s in rep.body):
                run = rep.count if layers is None else min(layers, rep.count)
                total += n * dtype.itemsize * run
    return total + SCRATCH_ARRAYS * biggest_stacked + biggest * (8 + dtype.itemsize) * 2


def emulate(sg: Graph, seed: int = 0, dtype: str = "f32", layers: int | None = None, *,
            check_replicas: bool = True, max_bytes: int = DEFAULT_MAX_BYTES,
            on_value: Callable[[Op, int, np.ndarray], None] | None = None) -> Emulation:
    """Run the sharded program ``sg`` on emulated chips; outputs as global arrays, plus counters.

    ``layers`` runs ``min(layers, count)`` layers of each repeat (None: all).
    With ``check_replicas`` every op's result is checked for diverging
    replicas (:class:`ReplicaError`).  ``on_value(op, layer, stacked)`` sees
    every op's per-chip result.  Raises :class:`ShardcError` for a program that
    is not sharded, or one whose run needs more than ``max_bytes`` of host
    memory (estimated before anything is allocated).
    """
    np_dtype = _np_dtype(dtype)
    verify_sharded(sg)
    mesh = sg.mesh
    assert mesh is not None
    need = _estimate(sg, np_dtype, layers)
    if need > max_bytes:
        raise ShardcError(
            f"emulating this program would need about {_human(need)} of host memory (limit "
            f"{_human(max_bytes)})", hint="shrink the dims with --shrink or --set, or run fewer --layers")
    data = SeededData(sg, seed, dtype)
    ctx = _Ctx(mesh, sg.sizes, np_dtype, Counters(), check_replicas, on_value)
    env: dict[int, np.ndarray] = {}
    outputs: dict[str, np.ndarray] = {}
    _run_block(ctx, sg.body.stmts, env, data, None, layers, outputs)
    return Emulation(outputs, ctx.counters, mesh)


def _declare(ctx: _Ctx, decl: Decl, data: SeededData, repeat: int | None, layer: int) -> np.ndarray:
    layout = decl.value.layout
    assert layout is not None
    return chips.scatter(data(decl, repeat, layer), layout, ctx.mesh)


def _run_block(ctx: _Ctx, stmts: Sequence[Stmt], env: dict[int, np.ndarray], data: SeededData,
               repeat: int | None, layers: int | None, outputs: dict[str, np.ndarray]) -> None:
    frees = _last_uses(stmts)
    repeat_index = 0
    for i, stmt in enumerate(stmts):
        if isinstance(stmt, Decl):
            env[stmt.value.id] = _declare(ctx, stmt, data, repeat, ctx.layer)
            ctx.hold(stmt.value)
        elif isinstance(stmt, Op):
            env[stmt.result.id] = _run_op(ctx, stmt, env)
            ctx.hold(stmt.result)
        elif isinstance(stmt, Output):
            for v in stmt.values:
                array = chips.assemble(env[v.id], _layout(v), ctx.mesh)
                if repeat is None:
                    outputs[v.name or ""] = array
                else:
                    outputs.setdefault(v.name or "", []).append(array)  # type: ignore[attr-defined]
        elif isinstance(stmt, Repeat):
            _run_repeat(ctx, stmt, repeat_index, env, data, layers, outputs)
            repeat_index += 1
        ctx.release(frees.get(i, []))


def _run_repeat(ctx: _Ctx, rep: Repeat, index: int, env: dict[int, np.ndarray], data: SeededData,
                layers: int | None, outputs: dict[str, np.ndarray]) -> None:
    n = rep.count if layers is None else min(layers, rep.count)
    per_layer: dict[str, list[np.ndarray]] = {}
    for s in rep.body:
        if isinstance(s, Output):
            for v in s.values:
                per_layer[v.name or ""] = []
    carried = {c.arg.id: env[c.init.id] for c in rep.carries}
    for layer in range(n):
        ctx.layer = layer
        scope = dict(env)
        scope.update(carried)
        for c in rep.carries:
            ctx.hold(c.arg)
        _run_block(ctx, rep.body.stmts, scope, data, index, None, per_layer)  # type: ignore[arg-type]
        carried = {c.arg.id: scope[c.next.id] for c in rep.carries}
        ctx.release([v for v in scope if v not in env])  # the next layer holds the carries as args
    ctx.layer = 0
    for name, arrays in per_layer.items():
        shape = (n,) + tuple(ctx.sizes[d] for d in _output_dims(rep, name))
        outputs[name] = np.stack(arrays) if arrays else np.empty(shape, ctx.dtype)
    for c in rep.carries:
        env[c.result.id] = carried[c.arg.id]
        ctx.hold(c.result)


def _output_dims(rep: Repeat, name: str) -> tuple[str, ...]:
    for s in rep.body:
        if isinstance(s, Output):
            for v in s.values:
                if v.name == name:
                    return v.dims
    raise KeyError(name)
