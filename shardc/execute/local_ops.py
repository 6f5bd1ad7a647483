"""Per-chip op implementations: what every chip computes for one op of a sharded program.

Every value lives on every chip as one stacked array ``[*mesh_shape, *local]``
(:mod:`shardc.execute.chips`), and each entry of :data:`LOCAL_IMPLS` runs its op on all
chips at once with vectorised NumPy calls -- a local einsum is
``np.einsum("...BLE,...EF->...BLF")`` with the mesh dims riding along in the
ellipsis (two operands: :func:`batched_einsum`, one batched matmul) -- and each
collective is a reshape/transpose/sum over mesh dims (:mod:`shardc.execute.chips`).

A norm or softmax over a split dim sums (or maxes) its per-row statistics
across the chips of that dim's axes inside the op, as the sharding rules say.
Activations are elementwise and use the reference's whole-array NumPy
(:data:`shardc.execute.reference.IMPLS`).

An implementation uses only what a :class:`LocalCtx` holds (the mesh and the
dim sizes); the emulator (:mod:`shardc.execute.emulate`) calls it with its own run
context, a subclass, and counts the cost.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from shardc.execute import chips
from shardc.execute.reference import EPS, IMPLS
from shardc.ir.graph import (
    CausalAttrs,
    CollectiveAttrs,
    Const,
    EinsumAttrs,
    Op,
    OpKind,
    OverAttrs,
    RelabelAttrs,
    Value,
)
from shardc.ir.layout import Layout
from shardc.ir.mesh import Mesh

Local = Callable[["LocalCtx", Op, Sequence["np.ndarray | float"]], np.ndarray]


@dataclass
class LocalCtx:
    """What a per-chip implementation may know: the mesh and the dim sizes."""

    mesh: Mesh
    sizes: Mapping[str, int]

    @property
    def m(self) -> int:
        return len(self.mesh.axes)


def _layout(operand: Value) -> Layout:
    assert operand.layout is not None
    return operand.layout


def _local_einsum(ctx: LocalCtx, op: Op, args: Sequence[np.ndarray | float]) -> np.ndarray:
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
    def binary(ctx: LocalCtx, op: Op, args: Sequence[np.ndarray | float]) -> np.ndarray:
        left, right = (a if isinstance(o, Const) else _align(a, o.dims, op.result.dims, ctx.m)
                       for o, a in zip(op.operands, args))
        return ufunc(left, right)
    return binary


def _global_unary(kind: OpKind) -> Local:
    """Activations are elementwise: the reference's implementation works on any shape."""
    impl = IMPLS[kind]

    def unary(ctx: LocalCtx, op: Op, args: Sequence[np.ndarray | float]) -> np.ndarray:
        return impl(op, args, ctx.sizes)
    return unary


def _over(ctx: LocalCtx, op: Op) -> tuple[int, tuple[str, ...], int]:
    """Local axis of the ``over`` dim, the mesh axes splitting it, and its global size."""
    assert isinstance(op.attrs, OverAttrs)
    dim = op.attrs.dim
    operand = op.inputs[0]
    return ctx.m + operand.dims.index(dim), _layout(operand).axes_of(dim), ctx.sizes[dim]


def _all_sum(ctx: LocalCtx, x: np.ndarray, axes: tuple[str, ...]) -> np.ndarray:
    return chips.sum_over(x, axes, ctx.mesh) if axes else x


def _gain(ctx: LocalCtx, op: Op, args: Sequence[np.ndarray | float], normed: np.ndarray, axis: int) -> np.ndarray:
    if len(args) < 2:
        return normed
    gain = args[1]
    assert isinstance(gain, np.ndarray)
    shape = [1] * normed.ndim
    shape[: ctx.m] = gain.shape[: ctx.m]
    shape[axis] = gain.shape[-1]
    return normed * gain.reshape(shape)


def _local_layernorm(ctx: LocalCtx, op: Op, args: Sequence[np.ndarray | float]) -> np.ndarray:
    a = args[0]
    assert isinstance(a, np.ndarray)
    axis, axes, n = _over(ctx, op)
    mean = _all_sum(ctx, a.sum(axis=axis, keepdims=True), axes) / n
    centered = a - mean
    var = _all_sum(ctx, (centered * centered).sum(axis=axis, keepdims=True), axes) / n
    return _gain(ctx, op, args, centered / np.sqrt(var + EPS), axis)


def _local_rmsnorm(ctx: LocalCtx, op: Op, args: Sequence[np.ndarray | float]) -> np.ndarray:
    a = args[0]
    assert isinstance(a, np.ndarray)
    axis, axes, n = _over(ctx, op)
    mean_square = _all_sum(ctx, (a * a).sum(axis=axis, keepdims=True), axes) / n
    return _gain(ctx, op, args, a / np.sqrt(mean_square + EPS), axis)


def _local_softmax(ctx: LocalCtx, op: Op, args: Sequence[np.ndarray | float]) -> np.ndarray:
    a = args[0]
    assert isinstance(a, np.ndarray)
    axis, axes, _ = _over(ctx, op)
    top = a.max(axis=axis, keepdims=True)
    if axes:
        positions = tuple(ctx.mesh.index(x) for x in axes)
        top = np.broadcast_to(top.max(axis=positions, keepdims=True), top.shape)
    e = np.exp(a - top)
    return e / _all_sum(ctx, e.sum(axis=axis, keepdims=True), axes)


def _local_sum(ctx: LocalCtx, op: Op, args: Sequence[np.ndarray | float]) -> np.ndarray:
    a = args[0]
    assert isinstance(a, np.ndarray)
    axis, _, _ = _over(ctx, op)
    return a.sum(axis=axis)  # a split dim leaves partial sums, as the layout says


def _local_causal(ctx: LocalCtx, op: Op, args: Sequence[np.ndarray | float]) -> np.ndarray:
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


def _local_relabel(ctx: LocalCtx, op: Op, args: Sequence[np.ndarray | float]) -> np.ndarray:
    a = args[0]
    assert isinstance(a, np.ndarray)
    return a


def _local_last(ctx: LocalCtx, op: Op, args: Sequence[np.ndarray | float]) -> np.ndarray:
    """Every chip keeps the last size(T) positions of its block: the sliced dim is unsplit (the rule)."""
    a = args[0]
    assert isinstance(a, np.ndarray) and isinstance(op.attrs, RelabelAttrs)
    ((old, new),) = op.attrs.renames
    axis = ctx.m + op.inputs[0].dims.index(old)
    n = ctx.sizes[new]
    return np.take(a, np.arange(a.shape[axis] - n, a.shape[axis]), axis=axis)


def _local_collective(ctx: LocalCtx, op: Op, args: Sequence[np.ndarray | float]) -> np.ndarray:
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
    OpKind.LAST: _local_last,
    OpKind.ALL_GATHER: _local_collective,
    OpKind.REDUCE_SCATTER: _local_collective,
    OpKind.ALL_REDUCE: _local_collective,
    OpKind.ALL_TO_ALL: _local_collective,
    OpKind.SLICE: _local_collective,
}
