"""The SPMD emulator: run a sharded program on emulated chips in NumPy, and count its cost.

Every value lives on every chip as one stacked array ``[*mesh_shape, *local]``
(:mod:`shardc.execute.chips`); each op runs on all chips at once through its per-chip
implementation in :mod:`shardc.execute.local_ops` (vectorised NumPy over the stacked
arrays; a collective is a reshape/transpose/sum over mesh dims).  A value is
held once along every mesh axis it is replicated over (a mesh dim of size 1), so
replicas made by an all-gather, an all-reduce or an op on replicated values cost
neither copies nor work per chip.  This module walks the program, frees values
after their last use, checks replicas wherever they were computed chip by chip
(and so could differ) and counts.  Inputs, params and caches are the reference executor's seeded arrays
(:class:`~shardc.execute.reference.SeededData`), scattered into their layouts, so
:func:`emulate` and :func:`~shardc.execute.reference.reference` see the same numbers.

Counters (per chip; every chip does the same work under these layouts):

* ``flops``: einsums, 2 per multiply-add over the op's local dims;
* ``elementwise_flops``: one per local result element of every other compute op;
* ``comm_bytes``: bytes each chip sends, ring formulas of :mod:`shardc.sharding.reshard`
  (and :mod:`shardc.sharding.stats` for statistics all-reduces), at the
  declared dtype of the value (bf16: 2 bytes), not the emulator's f32;
* ``hbm_bytes``: bytes of operands read by every op (weights, caches and
  activations, at their declared dtype);
* ``peak_bytes``: the most bytes live at once (values freed after their last use).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from shardc.errors import ShardcError
from shardc.execute import chips, fusion
from shardc.execute.footprint import emulation_footprint
from shardc.execute.fusion import exclusive
from shardc.execute.local_ops import BINARY_UFUNCS, LOCAL_IMPLS, LocalCtx, _layout, binary_into
from shardc.execute.reference import DEFAULT_MAX_BYTES, Inputs, SeededData, _np_dtype, seeded_data, where
from shardc.ir.graph import Const, Decl, Graph, Op, OpKind, Output, Repeat, Stmt, Value
from shardc.ir.mesh import Mesh
from shardc.sharding.counts import last_uses, op_comm_bytes, op_flops, op_hbm_bytes
from shardc.sharding.sharded import verify_sharded
from shardc.units import human_bytes

__all__ = [
    "Counters",
    "Emulation",
    "OpCount",
    "ReplicaError",
    "emulate",
    "emulation_footprint",
]


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
    """Outputs (global arrays, as :func:`~shardc.execute.reference.reference` returns them) and counters."""

    outputs: dict[str, np.ndarray]
    counters: Counters
    mesh: Mesh

    @property
    def chips(self) -> int:
        return self.mesh.num_chips

    def to_json(self) -> dict[str, object]:
        """The run as JSON with stable keys: the mesh, the counters and each output's shape and values."""
        return {
            "mesh": self.mesh.spec(),
            "chips": self.chips,
            "counters": self.counters.to_json(),
            "outputs": {name: {"shape": list(a.shape), "values": a.tolist()} for name, a in self.outputs.items()},
        }


# --- the run ----------------------------------------------------------------------------
@dataclass
class _Ctx(LocalCtx):
    """The mesh and sizes the per-chip ops see, and the state of the run."""

    dtype: np.dtype
    counters: Counters
    check_replicas: bool
    on_value: Callable[[Op, int, np.ndarray], None] | None
    layer: int = 0
    live: dict[int, int] = field(default_factory=dict)

    def local_bytes(self, v: Value) -> int:
        assert v.layout is not None
        return v.layout.local_numel(self.sizes, self.mesh) * v.dtype.bytes

    def hold(self, v: Value) -> None:
        self.live[v.id] = self.local_bytes(v)
        self.counters.peak_bytes = max(self.counters.peak_bytes, sum(self.live.values()))

    def release(self, ids: Sequence[int]) -> None:
        for i in ids:
            self.live.pop(i, None)


def _run_op(ctx: _Ctx, op: Op, env: Mapping[int, np.ndarray], dying: Sequence[int]) -> np.ndarray:
    args = [o.value if isinstance(o, Const) else env[o.id] for o in op.operands]
    try:
        if op.kind in BINARY_UFUNCS:
            result = binary_into(ctx, op, args, _reusable(ctx, op, args, dying))
        else:
            result = LOCAL_IMPLS[op.kind](ctx, op, args)
    except Exception as err:  # a bug here: say which statement it was running
        err.add_note(f"shardc: while emulating {where(op)}")
        raise
    return _finish(ctx, op, result)


def _reusable(ctx: _Ctx, op: Op, args: list[np.ndarray | float], dying: Sequence[int]) -> np.ndarray | None:
    """An operand's array a binary op may write its result into: nothing reads the operand
    afterwards, it has the result's dims and dtype, and no one else holds its memory (its
    shape is checked against the other operand's by :func:`binary_into`)."""
    for k, operand in enumerate(op.operands):
        arr = args[k]
        if (isinstance(operand, Value) and isinstance(arr, np.ndarray) and operand.id in dying
                and operand.dims == op.result.dims and arr.dtype == ctx.dtype):
            holders = 2 + sum(1 for a in args if a is arr)  # env's, ``arr`` and the args list's
            if exclusive(arr, holders):
                return arr
    return None


def _finish(ctx: _Ctx, op: Op, result: np.ndarray) -> np.ndarray:
    """Count ``op``, check the replicas of its result and keep one copy of them."""
    _count(ctx, op)
    return _keep(ctx, op, result)


def _keep(ctx: _Ctx, op: Op, result: np.ndarray) -> np.ndarray:
    """Check the replicas of ``op``'s result and keep one copy of them."""
    result = result.astype(ctx.dtype, copy=False)
    layout = op.result.layout
    assert layout is not None
    # A value replicated over an axis is held once along it when it was made that way (an
    # all-gather, an all-reduce, an op on such values); copies computed chip by chip can
    # diverge: check them, then keep one.
    if ctx.check_replicas:
        bad = chips.replica_mismatch(result, layout, ctx.mesh)
        if bad is not None:
            raise ReplicaError(
                f"after {op.kind} on line {op.loc.line}, value '{op.result.name}' ({layout.format(ctx.mesh)}) "
                f"differs between chips {bad[0]} and {bad[1]}, which should hold copies")
    result = chips.held_once(result, layout, ctx.mesh)
    if ctx.on_value is not None:
        ctx.on_value(op, ctx.layer, result)
    return result


def _count(ctx: _Ctx, op: Op) -> None:
    """Add ``op``'s per-chip counts (the same whether or not its result was held whole)."""
    flops, elementwise = op_flops(op, ctx.sizes, ctx.mesh)
    hbm = op_hbm_bytes(op, ctx.sizes, ctx.mesh)
    ctx.counters.add(op, flops, elementwise, op_comm_bytes(op, ctx.sizes, ctx.mesh), hbm)


def emulate(sg: Graph, seed: int = 0, dtype: str = "f32", layers: int | None = None, *,
            check_replicas: bool = True, max_bytes: int = DEFAULT_MAX_BYTES,
            on_value: Callable[[Op, int, np.ndarray], None] | None = None,
            inputs: Inputs | SeededData | None = None) -> Emulation:
    """Run the sharded program ``sg`` on emulated chips; outputs as global arrays, plus counters.

    ``layers`` runs ``min(layers, count)`` layers of each repeat (None: all).
    With ``check_replicas`` every result whose replicas were computed chip by
    chip is checked for diverging replicas (:class:`ReplicaError`); replicas
    held once (the result of an all-gather or all-reduce, an op on replicated
    values) cannot diverge and are not read again.  Then one copy is kept.  ``on_value(op, layer, stacked)`` sees
    every op's per-chip result.  Raises :class:`ShardcError` for a program that
    is not sharded, or one whose run needs more than ``max_bytes`` of host
    memory (estimated before anything is allocated).  ``inputs`` gives arrays of one's
    own by declaration name, or a shared ``SeededData``, as for
    :func:`~shardc.execute.reference.reference`.
    """
    np_dtype = _np_dtype(dtype)
    verify_sharded(sg)
    mesh = sg.mesh
    assert mesh is not None
    need = emulation_footprint(sg, dtype, layers, fused=on_value is None)
    if need > max_bytes:
        raise ShardcError(
            f"emulating this program would need about {human_bytes(need)} of host memory (limit "
            f"{human_bytes(max_bytes)})", hint="shrink the dims with --shrink or --set, or run fewer --layers")
    data = seeded_data(sg, seed, dtype, inputs)
    ctx = _Ctx(mesh, sg.sizes, np_dtype, Counters(), check_replicas, on_value)
    env: dict[int, np.ndarray] = {}
    outputs: dict[str, np.ndarray] = {}
    _run_block(ctx, sg.body.stmts, env, data, None, layers, outputs.__setitem__)
    return Emulation(outputs, ctx.counters, mesh)


def _fused(ctx: _Ctx, plan: fusion.Fusion, env: dict[int, np.ndarray],
           late: dict[int, list[np.ndarray]]) -> np.ndarray | None:
    try:
        return fusion.run(ctx, plan, env, ctx.dtype, late)
    except Exception as err:
        err.add_note(f"shardc: while emulating {where(plan.einsum)} with {where(plan.consumer)}")
        raise


@dataclass
class _Fusing:
    """A block's fused steps, and what they carry from one statement to the next."""

    plans: dict[int, fusion.Fusion]
    put_off: dict[int, fusion.Fusion]  # statement index -> the fusion that computes that einsum later
    ahead: dict[int, np.ndarray | None] = field(default_factory=dict)  # results computed early (None: never held)
    late: dict[int, list[np.ndarray]] = field(default_factory=dict)  # a put-off einsum's operands, by its result id


def _step(ctx: _Ctx, i: int, op: Op, env: dict[int, np.ndarray], dying: Sequence[int], fusing: _Fusing) -> None:
    """Run (or count) the op at statement ``i``, fused with its neighbours where planned."""
    if i in fusing.ahead:
        done = fusing.ahead.pop(i)
        if done is None:
            _count(ctx, op)  # a sum of partial sums reduced at once: never held whole
        else:
            env[op.result.id] = _finish(ctx, op, done)
        return
    if i in fusing.put_off:  # computed later, slice by slice, with the statements it is fused with
        fusing.late[op.result.id] = [env[v.id] for v in op.inputs]
        _count(ctx, op)
        return
    plan = fusing.plans.get(i)
    if plan is not None:
        done = _fused(ctx, plan, env, fusing.late)
        if plan.partner is not None and plan.late is not None:
            operands = fusing.late.pop(plan.partner.id)
            if done is None:  # not fused after all: the put-off einsum is needed whole now
                env[plan.partner.id] = _keep(ctx, plan.late, LOCAL_IMPLS[OpKind.EINSUM](ctx, plan.late, operands))
        if done is not None:
            _count(ctx, op)  # its result is never held whole
            if plan.reduce is not None:
                fusing.ahead[i + 1], fusing.ahead[i + 2] = None, done
            else:
                fusing.ahead[i + 1] = done
            return
    env[op.result.id] = _run_op(ctx, op, env, dying)


def _declare(ctx: _Ctx, decl: Decl, data: SeededData, repeat: int | None, layer: int) -> np.ndarray:
    layout = decl.value.layout
    assert layout is not None
    return chips.scatter(data(decl, repeat, layer), layout, ctx.mesh)


def _run_block(ctx: _Ctx, stmts: Sequence[Stmt], env: dict[int, np.ndarray], data: SeededData,
               repeat: int | None, layers: int | None, emit: Callable[[str, np.ndarray], None],
               keep: frozenset[int] = frozenset()) -> None:
    """Run ``stmts``; ``emit(name, array)`` receives each output (a repeat body's: once per layer)."""
    frees = last_uses(stmts, keep)
    # A caller watching every value sees each einsum's result whole: no fusion then.
    plans = fusion.plan(stmts, frees, ctx.mesh) if ctx.on_value is None else {}
    fusing = _Fusing(plans, {f.late_index: f for f in plans.values() if f.late_index is not None})
    repeat_index = 0
    for i, stmt in enumerate(stmts):
        if isinstance(stmt, Decl):
            env[stmt.value.id] = _declare(ctx, stmt, data, repeat, ctx.layer)
            ctx.hold(stmt.value)
        elif isinstance(stmt, Op):
            _step(ctx, i, stmt, env, frees.get(i, ()), fusing)
            ctx.hold(stmt.result)
        elif isinstance(stmt, Output):
            for v in stmt.values:
                emit(v.name or "", np.array(chips.assemble(env[v.id], _layout(v), ctx.mesh)))
        elif isinstance(stmt, Repeat):
            _run_repeat(ctx, stmt, repeat_index, env, data, layers, emit)
            repeat_index += 1
        for vid in frees.get(i, []):  # a value nothing reads any more leaves memory
            env.pop(vid, None)
        ctx.release(frees.get(i, []))


def _run_repeat(ctx: _Ctx, rep: Repeat, index: int, env: dict[int, np.ndarray], data: SeededData,
                layers: int | None, emit: Callable[[str, np.ndarray], None]) -> None:
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
        _run_block(ctx, rep.body.stmts, scope, data, index, None, lambda name, a: per_layer[name].append(a),
                   frozenset(c.next.id for c in rep.carries))
        carried = {c.arg.id: scope[c.next.id] for c in rep.carries}
        ctx.release([v for v in scope if v not in env])  # the next layer holds the carries as args
    ctx.layer = 0
    for name, arrays in per_layer.items():
        shape = (n,) + tuple(ctx.sizes[d] for d in _output_dims(rep, name))
        emit(name, np.stack(arrays) if arrays else np.empty(shape, ctx.dtype))
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
