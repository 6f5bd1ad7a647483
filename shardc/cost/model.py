"""The analytical cost model: time, memory and MFU of a sharded program on a chip profile.

Nothing runs and nothing is allocated: every number comes from layouts and dim
sizes, through the same per-op counts the emulator measures (:mod:`shardc.sharding.counts`).
A repeat body is costed once and multiplied by its trip count.

Per op (per chip), two models side by side:

* **bound** (``bound_latency_s``, ``bound_mfu``): the roofline.  An einsum
  takes ``max(FLOPs / peak, HBM bytes / HBM bandwidth)``, every other compute
  op (norms, activations...) its memory time, a collective its bandwidth time
  (:func:`shardc.hardware.comm.collective_time`; norms and softmax over a split dim add
  the all-reduce of their statistics).  No fitted term is used.
* **estimate** (``latency_s``, ``mfu``): the same counts with the chip's
  fitted ``[calibration]`` terms and without the roofline's perfect overlap:
  an einsum takes ``FLOPs / (peak * efficiency) + HBM bytes / HBM bandwidth``
  with ``efficiency = m / (m + matmul_half_size)`` (``m`` the smallest side of
  the chip's local matmul); collectives add ``collective_latency`` per ring
  step; each layer of a repeat adds ``layer_overhead``.

HBM bytes are an op's traffic: the operands it reads *and* the result it
writes (collectives stream over the links and are charged to them instead).

Why the estimate does not overlap an op's HBM traffic with its compute: with
that overlap, the best fit of the three terms to the paper's Table 2
(benchmarks/calibrate.py) puts the small-batch decode step entirely on the
matmul-efficiency term and hides the weight reads behind it, so int8 weights
would not change the 28.4 ms low-latency decode step at all -- whereas the
paper attributes 7.0 ms of it to reading int8 weights (14.1 ms in bf16) --
and it still misses the high-throughput decode by 10% in latency (12% in
MFU).  Counting every op's reads and writes in full, as an un-pipelined
kernel would, fits all four columns within 6%.

Collectives add to the matmuls (default) or, with ``overlap``, run under the
einsum they feed or follow (the looped CollectiveEinsum of the paper's §3.5): the
pair costs ``max(einsum, collectives)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

from shardc.cost.memory import MemoryPeak, memory_peak, resident_bytes
from shardc.errors import ShardcError
from shardc.hardware.comm import COMM_CHOICES, CommMode, collective_time
from shardc.hardware.profile import ChipProfile, load_profile
from shardc.ir.graph import CollectiveAttrs, DeclKind, EinsumAttrs, Graph, Op, OpKind
from shardc.ir.mesh import Mesh
from shardc.sharding.counts import local_bytes, op_comm_bytes, op_flops, op_hbm_bytes
from shardc.sharding.sharded import verify_sharded
from shardc.sharding.stats import op_stats


@dataclass(frozen=True)
class OpTime:
    """Time of one statement per chip, for all its executions in one program run."""

    value: str
    kind: str
    line: int
    count: int
    seconds: float
    compute_s: float
    memory_s: float
    comm_s: float
    flops: float
    hbm_bytes: float
    comm_bytes: float


@dataclass(frozen=True)
class CostReport:
    """What one run of the program costs (see the module docstring for the model)."""

    chip: str
    mesh: str
    chips: int
    comm_mode: str
    overlap: bool
    latency_s: float
    bound_latency_s: float
    per_token_latency_s: float
    tokens: int
    mfu: float
    bound_mfu: float
    cost_chip_s_per_token: float
    flops_per_chip: float
    comm_bytes_per_chip: float
    hbm_bytes_per_chip: float
    weight_bytes_per_chip: float
    cache_bytes_per_chip: float
    activation_bytes_per_chip: float
    memory_bytes_per_chip: float
    hbm_capacity: float
    fits_hbm: bool
    bound: str
    params: int
    breakdown_by_kind: dict[str, float] = field(default_factory=dict)
    breakdown_by_collective: dict[str, float] = field(default_factory=dict)
    # Seconds by what each op waits on (compute, weights, KV cache, activations, communication),
    # before any overlap and without the per-layer overhead.
    buckets: dict[str, float] = field(default_factory=dict)
    bound_buckets: dict[str, float] = field(default_factory=dict)  # the same for the roofline (``bound``)
    calibration: dict[str, object] = field(default_factory=dict)  # the profile's fitted terms (and fit mode)
    ops: tuple[OpTime, ...] = ()
    memory_peak: MemoryPeak = field(default_factory=MemoryPeak)  # the op at the activation peak, its live set

    def to_json(self) -> dict[str, object]:
        out = {k: v for k, v in self.__dict__.items() if k != "ops"}
        out["memory_peak"] = self.memory_peak.to_json()
        total = self.latency_s or 1.0
        out["breakdown"] = {
            "by_kind": {k: {"seconds": v, "share": v / total} for k, v in self.breakdown_by_kind.items()},
            "by_collective": {k: {"seconds": v, "share": v / total}
                              for k, v in self.breakdown_by_collective.items()},
        }
        del out["breakdown_by_kind"], out["breakdown_by_collective"]
        return out


def _matmul_sides(op: Op, sizes: Mapping[str, int], mesh: Mesh) -> tuple[int, int, int]:
    """(M, N, K) of the chip's local matmul (batch dims left out)."""
    assert isinstance(op.attrs, EinsumAttrs)
    local: dict[str, int] = {}
    for v in op.inputs:
        assert v.layout is not None
        local.update(zip(v.dims, v.layout.local_sizes(sizes, mesh), strict=True))
    if len(op.attrs.inputs) == 1:
        n = math.prod(local.values())
        return n, 1, 1
    left, right = op.attrs.inputs
    out = op.attrs.output
    m = math.prod(local[c] for c in left if c not in right)
    n = math.prod(local[c] for c in right if c not in left)
    k = math.prod(local[c] for c in left if c in right and c not in out)
    return m, n, k


def _larger_side_bytes(op: Op, sizes: Mapping[str, int], mesh: Mesh) -> float:
    """D of :mod:`shardc.hardware.comm`: all-gather output bytes, else input bytes, per chip."""
    operand = op.inputs[0]
    if op.kind is OpKind.ALL_GATHER:
        return float(local_bytes(op.result, sizes, mesh))
    return float(local_bytes(operand, sizes, mesh))


def _traffic_bytes(op: Op, sizes: Mapping[str, int], mesh: Mesh) -> float:
    """HBM bytes one execution of ``op`` moves per chip: operands read plus the result written.

    Collectives (charged to the links) and relabels (a view) move nothing
    through HBM here; :func:`shardc.sharding.counts.op_hbm_bytes` is the read side only.
    """
    if op.kind.is_collective or op.kind is OpKind.RELABEL:
        return 0.0
    return float(op_hbm_bytes(op, sizes, mesh) + local_bytes(op.result, sizes, mesh))


class _Model:
    def __init__(self, sg: Graph, chip: ChipProfile, mode: CommMode, overlap: bool, roofline: bool) -> None:
        """``roofline``: each op takes max(compute, memory) (the bound); else compute + memory."""
        assert sg.mesh is not None
        self.sg, self.chip, self.mode, self.overlap, self.roofline = sg, chip, mode, overlap, roofline
        self.mesh = sg.mesh
        self.sizes = sg.sizes
        self.decl_kind: dict[int, DeclKind] = {d.value.id: d.kind for d, _ in sg.decls()}

    def op_time(self, op: Op) -> tuple[float, float, float, float]:
        """(compute, memory, comm bandwidth, comm latency) seconds of one execution."""
        flops, _ = op_flops(op, self.sizes, self.mesh)
        memory = _traffic_bytes(op, self.sizes, self.mesh) / self.chip.hbm_bandwidth
        compute = 0.0
        if op.kind is OpKind.EINSUM:
            half = self.chip.calibration.matmul_half_size
            m = min(_matmul_sides(op, self.sizes, self.mesh))
            efficiency = m / (m + half) if half > 0 else 1.0
            compute = flops / (self.chip.peak_flops * efficiency)
        bw, lat = 0.0, 0.0
        if op.kind.is_collective:
            memory = 0.0  # a collective streams over the links, not through a roofline
            assert isinstance(op.attrs, CollectiveAttrs)
            bw, lat = collective_time(op.kind, op.attrs.axes, _larger_side_bytes(op, self.sizes, self.mesh),
                                      self.mesh, self.chip, self.mode)
        stats = op_stats(op, self.sizes, self.mesh)
        if stats is not None and stats.buffer_bytes:
            stats_bw, stats_lat = collective_time(OpKind.ALL_REDUCE, stats.axes, stats.buffer_bytes, self.mesh,
                                                  self.chip, self.mode)
            bw, lat = bw + stats_bw, lat + stats_lat
        return compute, memory, bw, lat

    def block(self, stmts: tuple, count: int, out: list[OpTime], buckets: dict[str, float]) -> float:
        """Seconds of ``count`` runs of a block, appending per-op times."""
        ops = [s for s in stmts if isinstance(s, Op)]
        times = {op.result.id: self.op_time(op) for op in ops}
        partner = self._overlap_partners(ops) if self.overlap else {}
        hidden: dict[int, float] = {}  # einsum id -> seconds of collectives running under it
        for op in ops:
            if op.result.id in partner:
                *_, bw, lat = times[op.result.id]
                hidden[partner[op.result.id]] = hidden.get(partner[op.result.id], 0.0) + bw + lat
        total = 0.0
        for op in ops:
            compute, memory, bw, lat = times[op.result.id]
            local = max(compute, memory) if self.roofline else compute + memory
            comm = bw + lat
            if op.result.id in partner:
                seconds = 0.0  # accounted under its einsum
            elif op.result.id in hidden:
                seconds = max(local, hidden[op.result.id])
            else:
                seconds = local + comm
            self._bucket(op, compute, memory, comm, buckets, count)
            flops, _ = op_flops(op, self.sizes, self.mesh)
            out.append(OpTime(op.result.name or "", op.kind.value, op.loc.line, count, seconds * count,
                              compute * count, memory * count, comm * count, flops * count,
                              _traffic_bytes(op, self.sizes, self.mesh) * count,
                              op_comm_bytes(op, self.sizes, self.mesh) * count))
            total += seconds
        return total * count

    def _bucket(self, op: Op, compute: float, memory: float, comm: float, buckets: dict[str, float],
                count: int) -> None:
        """Attribute an op's time to compute, weight loading, KV cache, activations or communication.

        In the roofline an op counts wholly as what bounds it (compute, else the
        bytes it moves); in the estimate compute and memory time both count.
        """
        buckets["communication"] = buckets.get("communication", 0.0) + comm * count
        if compute and (compute >= memory or not self.roofline):
            buckets["compute"] = buckets.get("compute", 0.0) + compute * count
            if self.roofline:
                return
        if not memory:
            return
        moved: dict[str, float] = {"activations": float(local_bytes(op.result, self.sizes, self.mesh))}
        for v in op.inputs:
            kind = self.decl_kind.get(v.id)
            key = {DeclKind.PARAM: "weight loading", DeclKind.CACHE: "KV cache"}.get(kind, "activations")  # type: ignore[arg-type]
            moved[key] = moved.get(key, 0.0) + local_bytes(v, self.sizes, self.mesh)
        total = sum(moved.values()) or 1.0
        for key, nbytes in moved.items():
            buckets[key] = buckets.get(key, 0.0) + memory * count * nbytes / total

    def _overlap_partners(self, ops: list[Op]) -> dict[int, int]:
        """Collective id -> the einsum it runs under: the one it feeds, else the one it follows."""
        defs = {op.result.id: op for op in ops}
        partner: dict[int, int] = {}
        for op in ops:
            if op.kind is not OpKind.EINSUM:
                continue
            for v in op.inputs:  # collectives feeding this einsum (gathers of its operands)
                src = defs.get(v.id)
                if src is not None and src.kind.is_collective:
                    partner.setdefault(src.result.id, op.result.id)
        for op in ops:
            if op.kind.is_collective and op.result.id not in partner:
                src = defs.get(op.inputs[0].id)
                if src is not None and src.kind is OpKind.EINSUM:  # reduce-scatters of its result
                    partner[op.result.id] = src.result.id
        return partner


def estimate(sg: Graph, chip: str | ChipProfile | None = None, comm: str = "paper",
             overlap: bool = False, gather_chunks: int | None = None) -> CostReport:
    """Cost one run of the sharded program ``sg`` (a decode step, or a whole prefill).

    ``chip``: a built-in profile name, a profile TOML path or a :class:`ChipProfile`
    (default tpu-v4); ``comm``: ``paper`` or ``torus`` (:mod:`shardc.hardware.comm`);
    ``overlap``: collectives run under the einsums they feed or follow;
    ``gather_chunks``: chunks a weight-gathered matmul streams its gathered operand in, for peak
    memory (default one per chip of the gather; :mod:`shardc.cost.memory`).
    """
    verify_sharded(sg)
    profile = load_profile(chip)
    try:
        mode = CommMode(comm)
    except ValueError:
        raise ShardcError(f"unknown --comm mode '{comm}'; choose {' or '.join(COMM_CHOICES)}") from None
    latency, ops, buckets = _run(sg, profile, mode, overlap, roofline=False)
    bound, _, bound_buckets = _run(sg, profile.uncalibrated(), mode, overlap, roofline=True)
    assert sg.mesh is not None
    sizes = sg.sizes
    chips = sg.mesh.num_chips
    tokens = sizes.get("B", 1) * sizes.get("L", 1)
    params = _param_count(sg)
    weights, caches = resident_bytes(sg)
    peak = memory_peak(sg, gather_chunks)
    activations = peak.bytes
    memory = weights + caches + activations
    by_kind: dict[str, float] = {}
    by_collective: dict[str, float] = {}
    for t in ops:
        by_kind[t.kind] = by_kind.get(t.kind, 0.0) + t.seconds
        if t.comm_s:
            key = t.kind if t.kind in {k.value for k in OpKind if k.is_collective} else f"{t.kind} statistics"
            by_collective[key] = by_collective.get(key, 0.0) + t.comm_s
    total_layers = sum(r.count for r in sg.repeats)
    latency += profile.calibration.layer_overhead * total_layers
    if total_layers and profile.calibration.layer_overhead:
        by_kind["layer overhead"] = profile.calibration.layer_overhead * total_layers
    per_token = latency / max(sizes.get("L", 1), 1)
    useful = 2.0 * params * tokens
    return CostReport(
        chip=profile.name, mesh=sg.mesh.spec(), chips=chips, comm_mode=mode.value, overlap=overlap,
        latency_s=latency, bound_latency_s=bound, per_token_latency_s=per_token, tokens=tokens,
        mfu=useful / (chips * profile.peak_flops * latency) if latency else 0.0,
        bound_mfu=useful / (chips * profile.peak_flops * bound) if bound else 0.0,
        cost_chip_s_per_token=chips * latency / tokens,
        flops_per_chip=sum(t.flops for t in ops), comm_bytes_per_chip=sum(t.comm_bytes for t in ops),
        hbm_bytes_per_chip=sum(t.hbm_bytes for t in ops),
        weight_bytes_per_chip=weights, cache_bytes_per_chip=caches, activation_bytes_per_chip=activations,
        memory_bytes_per_chip=memory, hbm_capacity=profile.hbm_bytes, fits_hbm=memory <= profile.hbm_bytes,
        bound=max(bound_buckets, key=lambda k: bound_buckets[k]) if bound_buckets else "compute", params=params,
        breakdown_by_kind=by_kind, breakdown_by_collective=by_collective, buckets=buckets,
        bound_buckets=bound_buckets,
        calibration={**profile.calibration.terms(), "comm": profile.calibration.comm or None},
        ops=tuple(ops), memory_peak=peak)


def _run(sg: Graph, chip: ChipProfile, mode: CommMode, overlap: bool,
         roofline: bool) -> tuple[float, list[OpTime], dict[str, float]]:
    model = _Model(sg, chip, mode, overlap, roofline)
    ops: list[OpTime] = []
    buckets: dict[str, float] = {}
    total = model.block(sg.body.stmts, 1, ops, buckets)
    for rep in sg.repeats:
        total += model.block(rep.body.stmts, rep.count, ops, buckets)
    return total, ops, buckets


def _param_count(g: Graph) -> int:
    total = 0
    sizes = g.sizes
    for d, rep in g.decls():
        if d.kind is DeclKind.PARAM:
            total += math.prod(sizes[x] for x in d.value.dims) * (rep.count if rep else 1)
    return total
