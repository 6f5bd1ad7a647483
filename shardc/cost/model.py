"""The analytical cost model: time, memory and MFU of a sharded program on a chip profile.

Nothing runs and nothing is allocated: every number comes from layouts and dim
sizes, through the same per-op counts the emulator measures (:mod:`shardc.sharding.counts`).
A repeat body is costed once and multiplied by its trip count.

Per op (per chip), two models side by side, both in one communication model
(``paper`` or ``torus``, :mod:`shardc.hardware.comm`; by default the one the chip's
terms were fitted in):

* **bound** (``bound_latency_s``, ``bound_mfu``): the roofline.  An einsum
  takes ``max(FLOPs / peak, HBM bytes / HBM bandwidth)``, every other compute
  op (norms, activations...) its memory time, a collective its bandwidth time
  (norms and softmax over a split dim add the all-reduce of their statistics).
  No fitted term is used.
* **estimate** (``latency_s``, ``mfu``): the same counts with the chip's fitted
  ``[calibration]`` terms, one per mechanism.  An einsum streams its operands
  under its arithmetic, ``max(FLOPs / (peak * efficiency), memory)``, where the
  efficiency (:func:`shardc.sharding.timing.matmul_efficiency`) is the sustained ``peak_fraction`` times
  the 128x128 tile padding of the held sides times ``m / (m + mxu_fill)`` for the
  ``m`` streamed rows (so a batched matrix-vector product, such as decode attention
  over the KV cache, stays memory-bound, and a one-operand or uncontracted einsum is
  vector work); every collective adds ``hop_latency`` per ring step; every executed
  op but a view adds ``op_overhead``.  In a communication model the terms were not
  fitted in there is no estimate: the report gives the bound alone and says why.

HBM bytes are an op's traffic: the operands it reads *and* the result it
writes (collectives stream over the links and are charged to them instead).

Collectives add to the matmuls (default) or, with ``overlap``, run under the
einsum they feed or follow, looking through elementwise ops such as the parallel
block's ``o + f`` (the looped CollectiveEinsum of the paper's §3.5): the pair costs
``max(einsum, collectives)`` plus one ``op_overhead`` per ring-step chunk, or the
collectives after the einsum where that is cheaper.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

from shardc.cost.memory import MemoryPeak, memory_peak, resident_bytes
from shardc.errors import ShardcError
from shardc.hardware.comm import CommMode, comm_mode, fitted_in, ring_steps
from shardc.hardware.profile import ChipProfile, load_profile
from shardc.ir.graph import CollectiveAttrs, DeclKind, DType, Graph, Op, OpKind
from shardc.ir.transforms import with_weight_dtype
from shardc.sharding.counts import local_bytes, op_comm_bytes, op_flops
from shardc.sharding.replication import Replicated, replication, replication_factor
from shardc.sharding.sharded import verify_sharded
from shardc.sharding.timing import VIEWS, op_time, traffic_bytes


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
    calibrated: bool = True  # False: the profile's terms were fitted in another --comm model; latency is the bound
    bound_model: str = ""  # which model the bound uses
    estimate_model: str = ""  # which model the estimate uses (or why there is none)
    padding: dict[str, list[int]] = field(default_factory=dict)  # dim -> [real, padded] (params/MFU: real)
    padded_params: int = 0  # parameters of the padded program as timed
    ops: tuple[OpTime, ...] = ()
    memory_peak: MemoryPeak = field(default_factory=MemoryPeak)  # the op at the activation peak, its live set
    # Redundant compute (shardc.sharding.replication): the run's einsum FLOPs per chip x chips over the
    # unsharded einsum FLOPs (1.0: a perfect split), and every einsum whose own factor is above 1.
    replication_factor: float = 1.0
    replication: tuple[Replicated, ...] = ()

    def to_json(self) -> dict[str, object]:
        out = {k: v for k, v in self.__dict__.items() if k != "ops"}
        out["memory_peak"] = self.memory_peak.to_json()
        out["replication"] = [r.to_json() for r in self.replication]
        total = self.latency_s or 1.0
        out["breakdown"] = {
            "by_kind": {k: {"seconds": v, "share": v / total} for k, v in self.breakdown_by_kind.items()},
            "by_collective": {k: {"seconds": v, "share": v / total}
                              for k, v in self.breakdown_by_collective.items()},
        }
        del out["breakdown_by_kind"], out["breakdown_by_collective"]
        return out


def _producing_einsum(vid: int, defs: dict[int, Op], order: dict[int, int], depth: int) -> Op | None:
    """The einsum that produced value ``vid``, through up to ``depth`` elementwise ops (the latest one)."""
    src = defs.get(vid)
    if src is None or src.kind.is_collective:
        return None
    if src.kind is OpKind.EINSUM:
        return src
    if depth == 0:
        return None
    found = [e for e in (_producing_einsum(v.id, defs, order, depth - 1) for v in src.inputs) if e is not None]
    return max(found, key=lambda e: order[e.result.id]) if found else None


class _Model:
    def __init__(self, sg: Graph, chip: ChipProfile, mode: CommMode, overlap: bool) -> None:
        """Each op takes max(compute, memory); the bound is this model with no calibration terms."""
        assert sg.mesh is not None
        self.sg, self.chip, self.mode, self.overlap = sg, chip, mode, overlap
        self.mesh = sg.mesh
        self.sizes = sg.sizes
        self.decl_kind: dict[int, DeclKind] = {d.value.id: d.kind for d, _ in sg.decls()}

    def op_time(self, op: Op) -> tuple[float, float, float, float]:
        """(compute, memory, comm bandwidth, comm latency) seconds of one execution."""
        return op_time(op, self.sizes, self.mesh, self.chip, self.mode)

    def block(self, stmts: tuple, count: int, out: list[OpTime], buckets: dict[str, float]) -> float:
        """Seconds of ``count`` runs of a block, appending per-op times."""
        ops = [s for s in stmts if isinstance(s, Op)]
        times = {op.result.id: self.op_time(op) for op in ops}
        partner = self._overlap_partners(ops) if self.overlap else {}
        hidden: dict[int, float] = {}  # einsum id -> seconds of collectives running under it
        chunks: dict[int, int] = {}  # einsum id -> extra matmul chunks: one per ring step of those collectives
        for op in ops:
            if op.result.id in partner:
                *_, bw, lat = times[op.result.id]
                e = partner[op.result.id]
                hidden[e] = hidden.get(e, 0.0) + bw + lat
                assert isinstance(op.attrs, CollectiveAttrs)
                chunks[e] = chunks.get(e, 0) + ring_steps(op.kind, op.attrs.axes, self.mesh, self.chip)
        total = 0.0
        for op in ops:
            compute, memory, bw, lat = times[op.result.id]
            local = max(compute, memory)  # a kernel streams its operands under its arithmetic
            comm = bw + lat
            if op.result.id in partner:
                seconds = 0.0  # accounted under its einsum
            elif op.result.id in hidden:
                # A looped CollectiveEinsum: the matmul runs in one chunk per ring step, each chunk a
                # step of its own with the fixed per-op cost; where that costs more than running the
                # collectives after the matmul, the compiler does not loop.
                looped = max(local, hidden[op.result.id]) + chunks[op.result.id] * self.chip.calibration.op_overhead
                seconds = min(looped, local + hidden[op.result.id])
            else:
                seconds = local + comm
            if op.kind not in VIEWS:
                seconds += self.chip.calibration.op_overhead  # a launch, even for an overlapped collective
            self._bucket(op, compute, memory, comm, buckets, count)
            flops, _ = op_flops(op, self.sizes, self.mesh)
            out.append(OpTime(op.result.name or "", op.kind.value, op.loc.line, count, seconds * count,
                              compute * count, memory * count, comm * count, flops * count,
                              traffic_bytes(op, self.sizes, self.mesh) * count,
                              op_comm_bytes(op, self.sizes, self.mesh) * count))
            total += seconds
        return total * count

    def _bucket(self, op: Op, compute: float, memory: float, comm: float, buckets: dict[str, float],
                count: int) -> None:
        """Attribute an op's time to compute, weight loading, KV cache, activations or communication.

        An op counts wholly as what bounds it: compute, else the bytes it moves.
        """
        buckets["communication"] = buckets.get("communication", 0.0) + comm * count
        if compute and compute >= memory:
            buckets["compute"] = buckets.get("compute", 0.0) + compute * count
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
        """Collective id -> the einsum it runs under: the one it feeds, else the one it follows.

        "Follows" looks through elementwise ops (such as the parallel block's ``o + f``, which
        the compiler fuses into the reduce-scatter's loop) back to the latest einsum.
        """
        defs = {op.result.id: op for op in ops}
        order = {op.result.id: i for i, op in enumerate(ops)}
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
                src = _producing_einsum(op.inputs[0].id, defs, order, 2)  # reduce-scatters of its result
                if src is not None:
                    partner[op.result.id] = src.result.id
        return partner


def estimate(sg: Graph, chip: str | ChipProfile | None = None, comm: str | None = None,
             overlap: bool = False, real_sizes: Mapping[str, int] | None = None,
             gather_chunks: int | None = None, *, weights: str | DType | None = None) -> CostReport:
    """Cost one run of the sharded program ``sg`` (a decode step, or a whole prefill).

    ``chip``: a built-in profile name, a profile TOML path or a :class:`ChipProfile`
    (default tpu-v4); ``comm``: ``paper`` or ``torus`` (:mod:`shardc.hardware.comm`), by
    default the model the profile's terms were fitted in; in any other model the
    calibrated estimate is not computed (terms fitted in one model do not carry over) and
    the report gives the bound alone.  ``overlap``: collectives run under the einsums they
    feed or follow.  ``real_sizes``: when ``sg`` pads some dims (``shardc cost --pad H=64``),
    their real sizes (``{"H": 48}``): the padded program is timed, but parameters and MFU
    count the real sizes, and the report says what the padding costs.  ``gather_chunks``:
    chunks a weight-gathered matmul streams its gathered operand in, for peak memory
    (default one per chip of the gather; :mod:`shardc.cost.memory`).  ``weights``: a dtype
    (``"int8"``, ``"bf16"``, ...) every ``param`` is stored as for this estimate, the layouts kept
    as they are (``shardc cost --weights`` sets the dtype before sharding, so its layout search
    can choose other layouts for it: ``shard(with_weight_dtype(g, "int8"))`` does the same).
    """
    verify_sharded(sg)
    if weights is not None:
        sg = with_weight_dtype(sg, weights)
    profile = load_profile(chip)
    comm = comm if comm is not None else profile.default_comm
    mode = comm_mode(comm)
    assert sg.mesh is not None
    sizes = sg.sizes
    padding = _padding(sizes, real_sizes)
    cal = profile.calibration
    calibrated = fitted_in(profile, mode)  # terms apply only in the model they were fitted in
    bound, _, bound_buckets = _run(sg, profile.uncalibrated(), mode, overlap)
    if calibrated:
        latency, ops, buckets = _run(sg, profile, mode, overlap)
        estimate_model = (f"{profile.name} calibration fitted in --comm {mode.value}" if not cal.is_zero()
                          else f"{profile.name} has no fitted terms: the bound's model, per op, with no overlap "
                               "gained from collectives beyond --overlap")
    else:
        latency, ops, buckets = _run(sg, profile.uncalibrated(), mode, overlap)
        latency = bound
        estimate_model = (f"none: {profile.name}'s terms were fitted in --comm {cal.comm}, not --comm "
                          f"{mode.value}; the bound alone")
    chips = sg.mesh.num_chips
    tokens = sizes.get("B", 1) * sizes.get("L", 1)
    padded_params = param_count(sg)
    params = param_count(sg, {**sizes, **{d: real for d, (real, _) in padding.items()}})
    weight_bytes, caches = resident_bytes(sg)
    peak = memory_peak(sg, gather_chunks)
    activations = peak.bytes
    memory = weight_bytes + caches + activations
    by_kind: dict[str, float] = {}
    by_collective: dict[str, float] = {}
    for t in ops:
        by_kind[t.kind] = by_kind.get(t.kind, 0.0) + t.seconds
        if t.comm_s:
            key = t.kind if t.kind in {k.value for k in OpKind if k.is_collective} else f"{t.kind} statistics"
            by_collective[key] = by_collective.get(key, 0.0) + t.comm_s
    per_token = latency / max(sizes.get("L", 1), 1)
    return CostReport(
        chip=profile.name, mesh=sg.mesh.spec(), chips=chips, comm_mode=mode.value, overlap=overlap,
        latency_s=latency, bound_latency_s=bound, per_token_latency_s=per_token, tokens=tokens,
        mfu=mfu(params, tokens, chips, profile, latency),
        bound_mfu=mfu(params, tokens, chips, profile, bound),
        cost_chip_s_per_token=chips * latency / tokens,
        flops_per_chip=sum(t.flops for t in ops), comm_bytes_per_chip=sum(t.comm_bytes for t in ops),
        hbm_bytes_per_chip=sum(t.hbm_bytes for t in ops),
        weight_bytes_per_chip=weight_bytes, cache_bytes_per_chip=caches, activation_bytes_per_chip=activations,
        memory_bytes_per_chip=memory, hbm_capacity=profile.hbm_bytes, fits_hbm=memory <= profile.hbm_bytes,
        bound=max(bound_buckets, key=lambda k: bound_buckets[k]) if bound_buckets else "compute", params=params,
        breakdown_by_kind=by_kind, breakdown_by_collective=by_collective, buckets=buckets,
        bound_buckets=bound_buckets,
        calibration={**cal.terms(), "matmul_tile": cal.matmul_tile, "comm": cal.comm or None},
        calibrated=calibrated, bound_model=f"roofline (no fitted terms), --comm {mode.value}",
        estimate_model=estimate_model, padding={d: list(v) for d, v in padding.items()},
        padded_params=padded_params,
        ops=tuple(ops), memory_peak=peak,
        replication_factor=replication_factor(sg), replication=tuple(replication(sg)))


def _padding(sizes: Mapping[str, int], real_sizes: Mapping[str, int] | None) -> dict[str, tuple[int, int]]:
    """dim -> (real size, padded size) for the dims ``real_sizes`` names."""
    out: dict[str, tuple[int, int]] = {}
    for dim, real in (real_sizes or {}).items():
        if dim not in sizes:
            raise ShardcError(f"padding {dim}: the program has no dim {dim}")
        if not 0 < real <= sizes[dim]:
            raise ShardcError(f"padding {dim}: the real size {real} must be between 1 and the padded {sizes[dim]}")
        if real != sizes[dim]:
            out[dim] = (real, sizes[dim])
    return out


def _run(sg: Graph, chip: ChipProfile, mode: CommMode, overlap: bool) -> tuple[float, list[OpTime], dict[str, float]]:
    model = _Model(sg, chip, mode, overlap)
    ops: list[OpTime] = []
    buckets: dict[str, float] = {}
    total = model.block(sg.body.stmts, 1, ops, buckets)
    for rep in sg.repeats:
        total += model.block(rep.body.stmts, rep.count, ops, buckets)
    return total, ops, buckets


def mfu(params: int, tokens: int, chips: int, chip: ChipProfile, seconds: float) -> float:
    """Model FLOPs utilisation, the paper's: ``2 N_params tokens / (chips peak seconds)`` (0 for no time)."""
    return 2.0 * params * tokens / (chips * chip.peak_flops * seconds) if seconds else 0.0


def param_count(g: Graph, sizes: Mapping[str, int] | None = None) -> int:
    """Parameters of the program: the elements of every param, each repeat's times its trip count,
    at ``sizes`` (default the program's)."""
    total = 0
    sizes = sizes if sizes is not None else g.sizes
    for d, rep in g.decls():
        if d.kind is DeclKind.PARAM:
            total += math.prod(sizes[x] for x in d.value.dims) * (rep.count if rep else 1)
    return total
