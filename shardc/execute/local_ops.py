"""Per-chip op implementations: what every chip computes for one op of a sharded program.

Every value lives on every chip as one stacked array ``[*mesh_shape, *local]``
(:mod:`shardc.execute.chips`; a mesh dim of size 1: one copy every chip along it
holds), and each entry of :data:`LOCAL_IMPLS` runs its op on all chips at once with
vectorised NumPy calls, broadcasting such dims, so a replicated value is computed once -- a local einsum is
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


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The emulator's one matrix product, ``np.matmul`` (one entry point, so a test can watch its operands)."""
    return np.matmul(a, b, out=out)


def inner_contiguous(x: np.ndarray) -> bool:
    """Whether the two inner dims of ``x`` are one contiguous matrix, row- or column-major.

    That is what ``np.matmul`` needs to hand each matrix of a batch to BLAS (a
    transposed matrix is fine: BLAS takes a transpose flag); otherwise it runs
    its own loop, some 50 times slower.  A dim of size 1 may have any stride.
    """
    if x.ndim < 2:
        return True
    (m, n), (sm, sn), item = x.shape[-2:], x.strides[-2:], x.itemsize
    row_major = (n == 1 or sn == item) and (m == 1 or sm == n * item)
    column_major = (m == 1 or sm == item) and (n == 1 or sn == m * item)
    return row_major or column_major


def batched_einsum(left: str, right: str, out: str, a: np.ndarray, b: np.ndarray, lead: int,
                   buffers: dict[tuple[int, ...], np.ndarray] | None = None) -> np.ndarray:
    """``einsum(f"{left},{right}->{out}")`` on every chip at once, as one batched matmul.

    ``a`` and ``b`` carry ``lead`` mesh dims first; a mesh dim of size 1 means
    every chip along it holds the same block.  Letters are sorted into batch
    (both operands and the result), contracted (both, not the result) and free
    (one operand and the result); letters of one operand only that the result
    lacks are summed first.  Mesh dims on which both operands vary are batch
    dims; a mesh dim on which only one varies joins that operand's free dims,
    so a block every chip holds is multiplied once against all the chips'
    blocks of the other operand (one GEMM with a long side instead of many
    small ones).  Each operand becomes ``[*batch, free, contracted]`` (resp.
    ``[*batch, contracted, free]``) with the inner pair contiguous -- a view
    when its strides allow, else one copy (:func:`_as_matrices`) -- and goes to
    :func:`matmul`; the product is unflattened and transposed to ``out`` (a view).
    ``buffers``: arrays by shape the product may be written into (one is made on first use), for a
    caller that computes products of one shape again and again and reads each before the next.
    """
    a, left = _sum_away(a, left, right + out, lead)
    b, right = _sum_away(b, right, left + out, lead)
    ga, gb, names, sizes = _groups(left, right, out, a.shape, b.shape, lead)
    ma, mb = _as_matrices(a, *ga), _as_matrices(b, *gb)
    into = None
    if buffers is not None:
        shape = np.broadcast_shapes(ma.shape[:-2], mb.shape[:-2]) + (ma.shape[-2], mb.shape[-1])
        into = buffers.get(shape)
        if into is None:
            into = buffers[shape] = np.empty(shape, np.result_type(ma, mb))
    product = matmul(ma, mb, into).reshape(sizes)
    return product.transpose([names.index(p) for p in range(lead)] + [names.index(c) for c in out])


Groups = tuple[list[int], list[int], list[int], list[int]]  # an operand's outer, row, column and dropped axes


def _groups(left: str, right: str, out: str, shape_a: tuple[int, ...], shape_b: tuple[int, ...],
            lead: int) -> tuple[Groups, Groups, list[int | str], list[int]]:
    """Each operand's axes grouped for :func:`_as_matrices`, and how to unflatten the product:
    the names (mesh positions and letters) and sizes of its dims."""
    batch = [c for c in out if c in left and c in right]
    # The contraction order of the larger operand, so that it is the one more likely left as a view.
    larger = left if math.prod(shape_a) >= math.prod(shape_b) else right
    contract = [c for c in larger if c in left and c in right and c not in out]
    free_a = [c for c in left if c not in right]
    free_b = [c for c in right if c not in left]
    ea, eb = shape_a[:lead], shape_b[:lead]
    fold_a = [p for p in range(lead) if ea[p] > 1 and eb[p] == 1]
    fold_b = [p for p in range(lead) if eb[p] > 1 and ea[p] == 1]
    outer = [p for p in range(lead) if p not in fold_a and p not in fold_b]

    def axes(letters: str, wanted: list[str]) -> list[int]:
        return [lead + letters.index(c) for c in wanted]

    ga = (outer + axes(left, batch), fold_a + axes(left, free_a), axes(left, contract), fold_b)
    gb = (outer + axes(right, batch), axes(right, contract), fold_b + axes(right, free_b), fold_a)
    # The product: [*outer mesh, *batch, *fold_a, *free_a, *fold_b, *free_b].
    names: list[int | str] = [*outer, *batch, *fold_a, *free_a, *fold_b, *free_b]
    sizes = ([max(ea[p], eb[p]) for p in outer] + [shape_a[lead + left.index(c)] for c in batch]
             + [ea[p] for p in fold_a] + [shape_a[lead + left.index(c)] for c in free_a]
             + [eb[p] for p in fold_b] + [shape_b[lead + right.index(c)] for c in free_b])
    return ga, gb, names, sizes


def copies_operands(left: str, right: str, out: str, a: np.ndarray, b: np.ndarray, lead: int) -> tuple[bool, bool]:
    """Whether :func:`batched_einsum` copies ``a`` and ``b`` (read for shapes and strides only, so
    stand-ins over no real data do).  An operand with a letter of its own to sum away counts as copied."""
    if any(c not in right + out for c in left) or any(c not in left + out for c in right):
        return True, True
    ga, gb, _, _ = _groups(left, right, out, a.shape, b.shape, lead)
    return _as_view(a, *ga) is None, _as_view(b, *gb) is None


def _as_view(arr: np.ndarray, outer: list[int], rows: list[int], cols: list[int], drop: list[int]) -> np.ndarray | None:
    """``arr`` as ``[*outer, prod(rows), prod(cols)]`` with the inner pair contiguous, without copying,
    or None: rows then cols, or cols then rows seen transposed (``drop``: axes of size 1 left out)."""
    shape = [arr.shape[p] for p in outer] + [math.prod(arr.shape[p] for p in g) for g in (rows, cols)]
    assert all(arr.shape[p] == 1 for p in drop)
    for first, second, swap in ((rows, cols, False), (cols, rows, True)):
        order = outer + first + second + drop
        target = shape[:-2] + ([shape[-1], shape[-2]] if swap else shape[-2:])
        try:
            view = np.reshape(arr.transpose(order), target, copy=False)
        except ValueError:  # the dims of a group are not evenly strided: no view
            continue
        view = view.swapaxes(-1, -2) if swap else view
        if _blas_ready(view):
            return view
    return None


def _as_matrices(arr: np.ndarray, outer: list[int], rows: list[int], cols: list[int], drop: list[int]) -> np.ndarray:
    """``arr`` as ``[*outer, prod(rows), prod(cols)]`` with the inner pair contiguous (:func:`inner_contiguous`):
    a view when the strides allow it (:func:`_as_view`), else one copy."""
    view = _as_view(arr, outer, rows, cols, drop)
    if view is not None:
        return view
    shape = [arr.shape[p] for p in outer] + [math.prod(arr.shape[p] for p in g) for g in (rows, cols)]
    return np.ascontiguousarray(arr.transpose(outer + rows + cols + drop)).reshape(shape)


_blas_ready = inner_contiguous  # the layout choice's test (a test swaps it to show the check can fail)


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


def _local_binary(ctx: LocalCtx, op: Op, args: Sequence[np.ndarray | float]) -> np.ndarray:
    return binary_into(ctx, op, args, None)


BINARY_UFUNCS: Mapping[OpKind, np.ufunc] = {
    OpKind.ADD: np.add, OpKind.SUB: np.subtract, OpKind.MUL: np.multiply, OpKind.DIV: np.divide}


def binary_into(ctx: LocalCtx, op: Op, args: Sequence[np.ndarray | float], out: np.ndarray | None) -> np.ndarray:
    """``+ - * /`` on every chip, operands aligned by name to the result; into ``out`` when given
    (an operand's array that nothing reads afterwards, of the result's shape and dtype: the
    emulator reuses its memory instead of allocating another result)."""
    left, right = (a if isinstance(o, Const) else _align(a, o.dims, op.result.dims, ctx.m)
                   for o, a in zip(op.operands, args))
    ufunc = BINARY_UFUNCS[op.kind]
    if out is not None and out.shape != np.broadcast_shapes(np.shape(left), np.shape(right)):
        out = None  # the other operand has chips or elements this one lacks
    return ufunc(left, right) if out is None else ufunc(left, right, out=out)


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
    if axes:  # the max over the chips of the split dim, held once along their axes
        positions = [ctx.mesh.index(x) for x in axes]
        top = chips.full(top, positions, ctx.mesh).max(axis=tuple(positions), keepdims=True)
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
        # Equal along the axes that do not split ``dim``: keep them at size 1 (not a copy per chip).
        split = layout.axes_of(dim)
        offsets = offsets[tuple(slice(None) if x in split else slice(0, 1) for x in ctx.mesh.names)]
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
    OpKind.ADD: _local_binary,
    OpKind.SUB: _local_binary,
    OpKind.MUL: _local_binary,
    OpKind.DIV: _local_binary,
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
