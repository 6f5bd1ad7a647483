"""Emulated chips: a sharded value as one stacked NumPy array, and the collectives on it.

A value on a mesh with axes ``(x, y, z)`` of sizes ``(X, Y, Z)`` is held as an
array of shape ``[X, Y, Z, *local_shape]``: index ``[i, j, k]`` is chip
``(i, j, k)``'s own memory.  A mesh dim of size 1 instead of its axis size means
every chip along that axis holds the same data, held once (NumPy broadcasting
gives each chip its copy): so it is for every axis a value is replicated over
(:func:`scatter`, :func:`all_gather`, :func:`sum_over`), and an op computes such a
value once.  Where chips that should hold copies hold separately computed data
(a mesh dim of full size on an axis the layout replicates over), the copies can
diverge, and :func:`replica_mismatch` finds two that do; :func:`held_once` then
keeps one.

Block order (docs/language.md): on a dim split over axes ``(a1, ..., am)`` (major
first), chip coordinates ``(i_a1, ..., i_am)`` hold block
``i_a1 * K_a2 * ... * K_am + ... + i_am`` -- i.e. the global dim reshaped to
``[K_a1, ..., K_am, local]`` in row-major order.  Every function here is a
reshape/transpose/sum over mesh dims; none loops over chips.
"""
from __future__ import annotations

import math

import numpy as np

from shardc.ir.graph import CollectiveAttrs, OpKind
from shardc.ir.layout import Layout
from shardc.ir.mesh import Mesh


def scatter(array: np.ndarray, layout: Layout, mesh: Mesh) -> np.ndarray:
    """The stacked per-chip array of a global ``array`` in ``layout`` (no partial sums)."""
    assert not layout.partial
    shape: list[int] = []
    block_pos: dict[str, int] = {}  # mesh axis -> position of its block axis after the reshape
    local_pos: list[int] = []
    for (_, axes), size in zip(layout.split, array.shape):
        for a in axes:
            block_pos[a] = len(shape)
            shape.append(mesh.size(a))
        local_pos.append(len(shape))
        shape.append(size // mesh.group_size(axes))
    blocks = array.reshape(shape)
    # Axes no dim uses become size-1 axes, then real copies (replicas).
    extra = [a for a in mesh.names if a not in block_pos]
    blocks = blocks.reshape(shape + [1] * len(extra))
    for n, a in enumerate(extra):
        block_pos[a] = len(shape) + n
    order = [block_pos[a] for a in mesh.names] + local_pos
    return blocks.transpose(order)  # a view: size 1 along the axes the layout replicates over


def full(stacked: np.ndarray, positions: list[int], mesh: Mesh) -> np.ndarray:
    """``stacked`` with its mesh dims at ``positions`` at full size (a broadcast view, no copy)."""
    shape = list(stacked.shape)
    for p in positions:
        shape[p] = mesh.shape[p]
    return np.broadcast_to(stacked, shape) if tuple(shape) != stacked.shape else stacked


def held_once(stacked: np.ndarray, layout: Layout, mesh: Mesh) -> np.ndarray:
    """``stacked`` with size 1 along the axes ``layout`` replicates over (chip 0's copy is kept)."""
    index = tuple(slice(0, 1) if (a not in layout.used_axes and stacked.shape[p] > 1) or stacked.strides[p] == 0
                  else slice(None) for p, a in enumerate(mesh.names))
    return stacked[index]


def assemble(stacked: np.ndarray, layout: Layout, mesh: Mesh) -> np.ndarray:
    """The global value of a stacked array: partial sums summed, replicas taken from chip 0."""
    names = mesh.names
    data = full(stacked, list(range(len(names))), mesh)
    for p, a in enumerate(names):
        if a in layout.partial:
            data = data.sum(axis=p, keepdims=True)
    index = tuple(slice(None) if layout.dim_of(a) is not None else 0 for a in names)
    data = data[index]  # mesh dims left: the split axes, in mesh order
    split_axes = [a for a in names if layout.dim_of(a) is not None]
    pos = {a: i for i, a in enumerate(split_axes)}
    order: list[int] = []
    shape: list[int] = []
    for i, (_, axes) in enumerate(layout.split):
        order.extend(pos[a] for a in axes)
        order.append(len(split_axes) + i)
        shape.append(data.shape[len(split_axes) + i] * mesh.group_size(axes))
    return data.transpose(order).reshape(shape)


def replica_mismatch(stacked: np.ndarray, layout: Layout, mesh: Mesh) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """Two chips that should hold equal data (replicas) but do not, or None.

    Only mesh dims of full size can differ: one of size 1 (or stride 0) is one copy held once.
    """
    replicated = [p for p, a in enumerate(mesh.names)
                  if a not in layout.used_axes and stacked.shape[p] > 1 and stacked.strides[p] != 0]
    if not replicated:
        return None
    # One pass over the data for the common case: every replica equals the first (a view).
    first = stacked[tuple(slice(0, 1) if p in replicated else slice(None) for p in range(len(mesh.axes)))]
    if np.equal(stacked, first).all():
        return None
    for p in replicated:  # something differs (or is NaN): find two chips that disagree
        first = np.take(stacked, [0], axis=p)
        same = (stacked == first) | (np.isnan(stacked) & np.isnan(first))
        if not same.all():
            bad = np.argwhere(~same)[0]
            chip = tuple(int(i) for i in bad[: len(mesh.axes)])
            other = list(chip)
            other[p] = 0
            return tuple(other), chip
    return None


def copy_to(data: np.ndarray, positions: list[int], mesh: Mesh) -> np.ndarray:
    """``data`` (size 1 at mesh ``positions``) seen by every chip along them (a broadcast view)."""
    return full(data, positions, mesh)


def all_gather(stacked: np.ndarray, layout: Layout, axes: tuple[str, ...], mesh: Mesh) -> np.ndarray:
    """Concatenate the blocks of ``axes`` (a suffix of each dim holding them) on every chip.

    The result is held once along ``axes``: every chip there has the same gathered blocks.
    """
    m = len(mesh.axes)
    data = full(stacked, [mesh.index(a) for a in axes], mesh)
    for i, (_, held) in enumerate(layout.split):
        gathered = [a for a in held if a in axes]
        if not gathered:
            continue
        mesh_pos = [mesh.index(a) for a in gathered]
        local = m + i
        # Move the gathered mesh axes (in the dim's major->minor order) before the local dim,
        # merge them into it, then put size-1 mesh axes back.
        moved = np.moveaxis(data, mesh_pos, [local - len(mesh_pos) + k for k in range(len(mesh_pos))])
        shape = list(moved.shape)
        start = local - len(mesh_pos)
        merged = shape[:start] + [math.prod(shape[start: local + 1])] + shape[local + 1:]
        data = moved.reshape(merged)
        for p in sorted(mesh_pos):
            data = np.expand_dims(data, p)
    return data


def sum_over(stacked: np.ndarray, axes: tuple[str, ...], mesh: Mesh) -> np.ndarray:
    """All-reduce: every chip gets the sum over the chips along ``axes`` (held once along them).

    NumPy's own reduction (its order of additions follows the memory order): for the statistics
    of norms and softmaxes.  The all-reduce collective adds in chip order (:func:`chip_order_sum`).
    """
    positions = [mesh.index(a) for a in axes]
    return full(stacked, positions, mesh).sum(axis=tuple(positions), keepdims=True)


def chip_order_sum(stacked: np.ndarray, positions: list[int], mesh: Mesh,
                   into: np.ndarray | None = None) -> np.ndarray:
    """The sum over the mesh dims at ``positions`` (kept at size 1), added one chip after the other
    in row-major chip order, or added on to ``into`` (the running sum of earlier chips) in place.

    A fixed order, whatever the memory order of ``stacked``: the emulator can then compute a
    reduction's operand chunk by chunk (:mod:`shardc.execute.fusion`) and add each chunk as it
    comes, with the same result to the last bit.  A dim of size 1 at a position (one copy held
    once) is added as often as the mesh axis has chips, as every chip holds that copy.
    """
    positions = sorted(positions)
    data = full(stacked, positions, mesh)
    acc = into
    for index in np.ndindex(*(data.shape[p] for p in positions)):
        pick: list[slice | int] = [slice(None)] * data.ndim
        for p, i in zip(positions, index):
            pick[p] = slice(i, i + 1)
        part = data[tuple(pick)]
        if acc is None:
            acc = part.copy(order="K")  # in the memory order of the parts: the additions then run along it
        else:
            np.add(acc, part, out=acc)
    assert acc is not None
    return acc


def slice_blocks(stacked: np.ndarray, layout: Layout, axes: tuple[str, ...], dim: str, mesh: Mesh) -> np.ndarray:
    """Each chip keeps its own block of ``dim`` for the appended ``axes`` (free, local)."""
    m = len(mesh.axes)
    q = m + layout.dims.index(dim)
    data = stacked
    for a in axes:  # appending a1 then a2 gives block i_a1 * K_a2 + i_a2, as appending (a1, a2)
        p, k = mesh.index(a), mesh.size(a)
        data = full(data, [p], mesh)  # one axis at a time: the others stay held once
        shape = list(data.shape)
        blocks = data.reshape(shape[:q] + [k, shape[q] // k] + shape[q + 1:])
        # Chip i along a keeps block i: the diagonal of (mesh axis p, block axis q).
        moved = np.moveaxis(blocks, [p, q], [0, 1])
        idx = np.arange(k)
        diag = moved[idx, idx]
        data = np.moveaxis(diag, 0, p)
    return data


def reduce_scatter(stacked: np.ndarray, layout: Layout, axes: tuple[str, ...], dim: str,
                   mesh: Mesh) -> np.ndarray:
    """Sum over ``axes`` and give chip ``(i_a1, ..., i_am)`` block ``i_a1 K_a2 ... + i_am`` of ``dim``."""
    positions = [mesh.index(a) for a in axes]
    return scatter_sum(chip_order_sum(stacked, positions, mesh), layout, axes, dim, mesh)


def scatter_sum(summed: np.ndarray, layout: Layout, axes: tuple[str, ...], dim: str, mesh: Mesh) -> np.ndarray:
    """A reduce-scatter's second half: the sum (size 1 along ``axes``) cut into each chip's block (a view)."""
    m = len(mesh.axes)
    positions = [mesh.index(a) for a in axes]
    q = m + layout.dims.index(dim)
    shape = list(summed.shape)
    k = [mesh.size(a) for a in axes]
    blocks = summed.reshape(shape[:q] + k + [shape[q] // math.prod(k)] + shape[q + 1:])
    # The block axes (q .. q+len-1) take the places of the summed size-1 mesh axes.
    blocks = np.squeeze(blocks, axis=tuple(positions))
    block_axes = [q - len(positions) + j for j in range(len(axes))]
    return np.moveaxis(blocks, block_axes, positions)


def run_collective(stacked: np.ndarray, kind: OpKind, attrs: CollectiveAttrs, before: Layout,
                   mesh: Mesh) -> np.ndarray:
    """Apply one collective to a stacked array whose layout is ``before``."""
    if kind is OpKind.ALL_GATHER:
        return all_gather(stacked, before, attrs.axes, mesh)
    if kind is OpKind.ALL_REDUCE:
        return chip_order_sum(stacked, [mesh.index(a) for a in attrs.axes], mesh)
    if kind is OpKind.REDUCE_SCATTER:
        assert attrs.dim is not None
        return reduce_scatter(stacked, before, attrs.axes, attrs.dim, mesh)
    if kind is OpKind.ALL_TO_ALL:
        assert attrs.src is not None and attrs.dst is not None
        gathered = all_gather(stacked, before, attrs.axes, mesh)
        middle = before.with_axes(attrs.src, before.axes_of(attrs.src)[: -len(attrs.axes)])
        return slice_blocks(gathered, middle, attrs.axes, attrs.dst, mesh)
    if kind is OpKind.SLICE:
        assert attrs.dim is not None
        return slice_blocks(stacked, before, attrs.axes, attrs.dim, mesh)
    raise AssertionError(kind)


def block_offsets(layout: Layout, dim: str, local_size: int, mesh: Mesh) -> np.ndarray:
    """Global index of each chip's first element along ``dim``, shaped ``[*mesh_shape]``."""
    axes = layout.axes_of(dim)
    offset = np.zeros(mesh.shape, dtype=np.int64)
    stride = local_size
    for a in reversed(axes):  # minor axis first: its blocks are adjacent
        p = mesh.index(a)
        shape = [1] * len(mesh.axes)
        shape[p] = mesh.size(a)
        offset = offset + np.arange(mesh.size(a)).reshape(shape) * stride
        stride *= mesh.size(a)
    return offset
