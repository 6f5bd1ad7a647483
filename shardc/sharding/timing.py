"""How long one sharded op takes a chip: the per-op time model, shared by the pass and the cost model.

The layout search of the sharding pass (:mod:`shardc.sharding.search`) minimises the sum
of these times and the cost model (:mod:`shardc.cost.model`) reports it, so the two price
every op, collective or not, identically.  Per execution of an op, per chip:

* compute: an einsum's FLOPs over the chip's peak times the matrix unit's efficiency on
  the local matmul shape (:func:`matmul_efficiency`); other ops do no matrix work;
* memory: the HBM traffic (operands read, result written) over the HBM bandwidth; a
  collective streams over the links instead;
* communication: a collective's bandwidth and latency terms (:func:`shardc.hardware.comm.collective_time`),
  plus the statistics all-reduce of a norm or softmax over a split dim.

:func:`op_seconds` combines them as the estimate does without overlap: ``max(compute, memory)
+ communication + op_overhead`` (no overhead for a view).  With the profile's terms zeroed
(:meth:`~shardc.hardware.profile.ChipProfile.uncalibrated`) it is the roofline bound.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Mapping

from shardc.hardware.comm import CommMode, collective_time
from shardc.hardware.profile import ChipProfile
from shardc.ir.graph import CollectiveAttrs, EinsumAttrs, Op, OpKind, Value
from shardc.ir.layout import Layout
from shardc.ir.mesh import Mesh
from shardc.sharding.counts import local_bytes, op_flops, op_hbm_bytes
from shardc.sharding.stats import op_stats

__all__ = ["VIEWS", "matmul_efficiency", "matmul_shape", "op_floor", "op_seconds", "op_time", "traffic_bytes"]


def matmul_shape(op: Op, sizes: Mapping[str, int], mesh: Mesh) -> tuple[int, int, int, int] | None:
    """(batch, M, N, K) of the chip's local matmul, or None for a one-operand einsum.

    ``batch``: the dims in both operands and the result; ``M``/``N``: the free dims of the
    left/right operand; ``K``: the contracted dims (in both operands, not in the result).
    """
    assert isinstance(op.attrs, EinsumAttrs)
    if len(op.attrs.inputs) == 1:
        return None
    local: dict[str, int] = {}
    for v in op.inputs:
        assert v.layout is not None
        local.update(zip(v.dims, v.layout.local_sizes(sizes, mesh), strict=True))
    left, right = op.attrs.inputs
    out = op.attrs.output
    batch = math.prod(local[c] for c in left if c in right and c in out)
    m = math.prod(local[c] for c in left if c not in right)
    n = math.prod(local[c] for c in right if c not in left)
    k = math.prod(local[c] for c in left if c in right and c not in out)
    return batch, m, n, k


def matmul_efficiency(shape: tuple[int, int, int, int] | None, tile: int, fill: float, peak: float = 1.0) -> float:
    """Fraction of peak the matrix unit reaches on a local matmul (1 in the bound).

    The larger free side and the contracted side are held in ``tile x tile`` systolic
    tiles, padded up to whole tiles; the smaller free side (``m`` rows) streams through each
    tile in groups of 8, which costs ``fill`` rows of pipeline fill per pass: ``m / (m + fill)``; and a
    large aligned matmul sustains ``peak`` of the chip's peak.  A
    one-operand einsum or one with nothing to contract is vector work, memory-bound like any
    elementwise op: efficiency 1, and its time is ``max(FLOPs / peak, memory)``.
    """
    if shape is None or shape[3] == 1:
        return 1.0
    _, m, n, k = shape
    rows, held = min(m, n), max(m, n)

    def padded(x: int) -> int:
        return -(-x // tile) * tile if tile else x

    streamed = -(-rows // 8) * 8 if tile else rows  # rows move in groups of 8 (sublanes)
    return peak * (held * k * rows) / (padded(held) * padded(k) * streamed) * (streamed / (streamed + fill))


def larger_side_bytes(op: Op, sizes: Mapping[str, int], mesh: Mesh) -> float:
    """D of :mod:`shardc.hardware.comm`: all-gather output bytes, else input bytes, per chip."""
    operand = op.inputs[0]
    if op.kind is OpKind.ALL_GATHER:
        return float(local_bytes(op.result, sizes, mesh))
    return float(local_bytes(operand, sizes, mesh))


def traffic_bytes(op: Op, sizes: Mapping[str, int], mesh: Mesh) -> float:
    """HBM bytes one execution of ``op`` moves per chip: operands read plus the result written.

    Collectives (charged to the links) and relabels (a view) move nothing
    through HBM here; :func:`shardc.sharding.counts.op_hbm_bytes` is the read side only.
    """
    if op.kind.is_collective or op.kind is OpKind.RELABEL:
        return 0.0
    return float(op_hbm_bytes(op, sizes, mesh) + local_bytes(op.result, sizes, mesh))


VIEWS = frozenset({OpKind.RELABEL, OpKind.SLICE})  # no kernel of their own


def op_time(op: Op, sizes: Mapping[str, int], mesh: Mesh, chip: ChipProfile,
            mode: CommMode) -> tuple[float, float, float, float]:
    """(compute, memory, comm bandwidth, comm latency) seconds of one execution of ``op``."""
    flops, _ = op_flops(op, sizes, mesh)
    memory = traffic_bytes(op, sizes, mesh) / chip.hbm_bandwidth
    compute = 0.0
    if op.kind is OpKind.EINSUM:
        cal = chip.calibration
        shape = matmul_shape(op, sizes, mesh)
        compute = flops / (chip.peak_flops * matmul_efficiency(shape, cal.matmul_tile, cal.mxu_fill,
                                                               cal.peak_fraction))
    bw, lat = 0.0, 0.0
    if op.kind.is_collective:
        memory = 0.0  # a collective streams over the links, not through a roofline
        assert isinstance(op.attrs, CollectiveAttrs)
        bw, lat = collective_time(op.kind, op.attrs.axes, larger_side_bytes(op, sizes, mesh), mesh, chip, mode)
    stats = op_stats(op, sizes, mesh)
    if stats is not None and stats.buffer_bytes:
        stats_bw, stats_lat = collective_time(OpKind.ALL_REDUCE, stats.axes, stats.buffer_bytes, mesh, chip, mode)
        bw, lat = bw + stats_bw, lat + stats_lat
    return compute, memory, bw, lat


def op_seconds(op: Op, sizes: Mapping[str, int], mesh: Mesh, chip: ChipProfile, mode: CommMode) -> float:
    """Seconds of one execution of ``op`` per chip, as the estimate adds them without overlap."""
    compute, memory, bw, lat = op_time(op, sizes, mesh, chip, mode)
    return max(compute, memory) + bw + lat + (0.0 if op.kind in VIEWS else chip.calibration.op_overhead)


def _whole(v: Value) -> Value:
    return replace(v, layout=Layout.replicated(v.dims))


def op_floor(op: Op, sizes: Mapping[str, int], chips: int, chip: ChipProfile) -> float:
    """Seconds one execution of the source op ``op`` takes at least on ``chips`` chips, however it is
    sharded: the per-op counts of whole tensors (the tables every estimate reads) over ``chips``.

    Why it holds: the sharded op's operands and result each have a local block of at least
    ``1/chips`` of the global tensor, so its HBM traffic is at least the global traffic over
    ``chips``; an einsum's local FLOPs are at least its global FLOPs over ``chips``, and the
    matrix unit runs at most at peak (:func:`matmul_efficiency` is at most ``max(1, peak)``);
    communication is never negative, and every op but a view pays the overhead.
    """
    if op.kind in VIEWS:
        return 0.0
    whole = replace(op, result=_whole(op.result),
                    operands=tuple(_whole(o) if isinstance(o, Value) else o for o in op.operands))
    one_chip = Mesh((("x", 1),))
    compute = 0.0
    if op.kind is OpKind.EINSUM:
        flops = op_flops(whole, sizes, one_chip).einsum
        compute = flops / chips / (chip.peak_flops * max(1.0, chip.calibration.peak_fraction))
    memory = traffic_bytes(whole, sizes, one_chip) / chips / chip.hbm_bandwidth
    return max(compute, memory) + chip.calibration.op_overhead
