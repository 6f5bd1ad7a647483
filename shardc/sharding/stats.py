"""The statistics all-reduce inside a norm or softmax over a split dim, defined once.

A layernorm, rmsnorm or softmax over a dim that the layout splits over some
mesh axes is still computed locally: each chip computes partial statistics of
every row it holds (sums of ``x`` and ``x**2``, or the max and the sum of
exponentials) and a small all-reduce over those axes completes them (the paper
§3.4: layernorm over ``BLE_x``).  That all-reduce is not an op of the sharded
program; it is part of the op.  What it moves is defined here and nowhere else:

* the axes it runs over (:func:`stats_axes`, used by the norm rule of
  :mod:`shardc.sharding.rules`);
* the statistics each chip holds and the bytes a ring all-reduce of them sends
  (:func:`stats_allreduce`, :func:`op_stats`), used by the collective records
  (:mod:`shardc.sharding.sharded`), the per-op counters
  (:mod:`shardc.sharding.counts`) and the cost model (:mod:`shardc.cost.model`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from shardc.ir.graph import Op, OpKind, OverAttrs
from shardc.ir.layout import Layout
from shardc.ir.mesh import Mesh

# Statistics per row that a norm or softmax all-reduces when its dim is split (f32 each).
STATS_PER_ROW = {OpKind.LAYERNORM: 2, OpKind.RMSNORM: 1, OpKind.SOFTMAX: 2}
STATS_ITEMSIZE = 4


@dataclass(frozen=True)
class StatsAllReduce:
    """The statistics all-reduce of one norm or softmax whose dim ``over`` is split.

    ``buffer_bytes`` is what each chip holds (``STATS_PER_ROW`` f32 per row, a row
    being every index of the other dims held locally); ``bytes_per_chip`` is what
    each chip sends in a ring all-reduce of it over the ``K`` chips of ``axes``,
    ``2 (K-1)/K`` of the buffer.  Both are 0 when those axes span one chip.
    """

    kind: OpKind  # the norm or softmax
    over: str
    axes: tuple[str, ...]
    layout: Layout  # of the normalised operand (and of the result)
    buffer_bytes: float
    bytes_per_chip: float


def describe_stats(kind: OpKind, over: str, axes: tuple[str, ...], line: int | None = None) -> str:
    """Why a statistics all-reduce is there (``line``: of the op, when it is worth saying)."""
    where = f" on line {line}" if line is not None else ""
    return (f"{kind} statistics over {over}, which is split over {''.join(axes)} "
            f"(a small all-reduce inside the op{where})")


def stats_axes(layout: Layout, over: str) -> tuple[str, ...]:
    """The mesh axes the statistics over ``over`` are all-reduced across: those splitting it."""
    return layout.axes_of(over)


def stats_allreduce(kind: OpKind, layout: Layout, over: str, sizes: Mapping[str, int],
                    mesh: Mesh) -> StatsAllReduce | None:
    """The statistics all-reduce of a ``kind`` op over ``over`` on an operand in ``layout``.

    None when ``kind`` keeps no statistics or ``over`` is not split.
    """
    if kind not in STATS_PER_ROW:
        return None
    axes = stats_axes(layout, over)
    if not axes:
        return None
    k = mesh.group_size(axes)
    if k == 1:
        return StatsAllReduce(kind, over, axes, layout, 0.0, 0.0)
    rows = 1
    for d, size in zip(layout.dims, layout.local_sizes(sizes, mesh), strict=True):
        if d != over:
            rows *= size
    buffer = float(rows * STATS_PER_ROW[kind] * STATS_ITEMSIZE)
    sent = 2 * (k - 1) / k * rows * STATS_PER_ROW[kind] * STATS_ITEMSIZE
    return StatsAllReduce(kind, over, axes, layout, buffer, sent)


def op_stats(op: Op, sizes: Mapping[str, int], mesh: Mesh) -> StatsAllReduce | None:
    """The statistics all-reduce inside ``op`` of a sharded program (None if it has none)."""
    if op.kind not in STATS_PER_ROW:
        return None
    assert isinstance(op.attrs, OverAttrs)
    layout = op.inputs[0].layout
    assert layout is not None, f"{op.result.name} has no layout"
    return stats_allreduce(op.kind, layout, op.attrs.dim, sizes, mesh)
