"""What one op costs each chip: FLOPs, bytes sent, HBM bytes read; and value liveness.

FLOPs and bytes sent are the quantities the emulator counts while it runs
(:mod:`shardc.execute.emulate`) and the cost model predicts without running anything
(:mod:`shardc.cost`); both call these functions, so the two agree by
construction and a test checks the emulator's arrays really did that work.
(The cost model's HBM traffic adds the bytes each op writes to what it reads.)
All of them depend only on layouts and dim sizes (Python ints: no arrays).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, NamedTuple, Sequence

from shardc.ir.graph import CollectiveAttrs, Decl, Op, OpKind, Output, Repeat, Stmt, Value
from shardc.ir.layout import Layout
from shardc.ir.mesh import Mesh
from shardc.sharding.reshard import collective_bytes
from shardc.sharding.stats import op_stats


def _layout(v: Value) -> Layout:
    assert v.layout is not None, f"{v.name} has no layout"
    return v.layout


def local_bytes(v: Value, sizes: Mapping[str, int], mesh: Mesh) -> int:
    """Bytes of one chip's block of ``v`` at its declared dtype."""
    return _layout(v).local_numel(sizes, mesh) * v.dtype.bytes


class Flops(NamedTuple):
    """FLOPs per chip of one execution of an op: einsum (matrix-unit) and elementwise (vector-unit)."""

    einsum: float
    elementwise: float


#: A per-op rule: (op, global dim sizes, mesh) -> a count per chip.
FlopsRule = Callable[[Op, Mapping[str, int], Mesh], Flops]
HbmRule = Callable[[Op, Mapping[str, int], Mesh], int]


def einsum_flops(op: Op, sizes: Mapping[str, int], mesh: Mesh) -> Flops:
    """2 x the product of the local sizes of every dim the operands have (a multiply and an add)."""
    local: dict[str, int] = {}
    for v in op.inputs:
        local.update(zip(v.dims, _layout(v).local_sizes(sizes, mesh)))
    return Flops(2.0 * math.prod(local.values()), 0.0)


def elementwise_flops(op: Op, sizes: Mapping[str, int], mesh: Mesh) -> Flops:
    """One FLOP per element of the local result (norms, softmax and sum too)."""
    return Flops(0.0, float(_layout(op.result).local_numel(sizes, mesh)))


def no_flops(op: Op, sizes: Mapping[str, int], mesh: Mesh) -> Flops:
    """Moves data (collectives) or only renames dims (relabel)."""
    return Flops(0.0, 0.0)


def operand_bytes(op: Op, sizes: Mapping[str, int], mesh: Mesh) -> int:
    """Every operand's local block is read once."""
    return sum(local_bytes(v, sizes, mesh) for v in op.inputs)


def no_bytes(op: Op, sizes: Mapping[str, int], mesh: Mesh) -> int:
    """A view: nothing is read (relabel)."""
    return 0


def result_bytes(op: Op, sizes: Mapping[str, int], mesh: Mesh) -> int:
    """Only what is kept is read (``last``: the last positions of a dim)."""
    return local_bytes(op.result, sizes, mesh)


@dataclass(frozen=True)
class OpCost:
    """How one op kind's FLOPs and HBM bytes read are counted."""

    flops: FlopsRule
    hbm_bytes: HbmRule


ELEMENTWISE = OpCost(elementwise_flops, operand_bytes)
COLLECTIVE = OpCost(no_flops, operand_bytes)

#: Per op kind, its FLOPs and HBM-read rules.
COSTS: dict[OpKind, OpCost] = {
    OpKind.EINSUM: OpCost(einsum_flops, operand_bytes),
    OpKind.ADD: ELEMENTWISE,
    OpKind.SUB: ELEMENTWISE,
    OpKind.MUL: ELEMENTWISE,
    OpKind.DIV: ELEMENTWISE,
    OpKind.NEG: ELEMENTWISE,
    OpKind.GELU: ELEMENTWISE,
    OpKind.RELU: ELEMENTWISE,
    OpKind.SILU: ELEMENTWISE,
    OpKind.TANH: ELEMENTWISE,
    OpKind.EXP: ELEMENTWISE,
    OpKind.LAYERNORM: ELEMENTWISE,
    OpKind.RMSNORM: ELEMENTWISE,
    OpKind.SOFTMAX: ELEMENTWISE,
    OpKind.SUM: ELEMENTWISE,
    OpKind.CAUSAL: ELEMENTWISE,
    OpKind.RELABEL: OpCost(no_flops, no_bytes),
    OpKind.LAST: OpCost(no_flops, result_bytes),
    OpKind.ALL_GATHER: COLLECTIVE,
    OpKind.REDUCE_SCATTER: COLLECTIVE,
    OpKind.ALL_REDUCE: COLLECTIVE,
    OpKind.ALL_TO_ALL: COLLECTIVE,
    OpKind.SLICE: COLLECTIVE,
}


def op_flops(op: Op, sizes: Mapping[str, int], mesh: Mesh) -> Flops:
    """(einsum FLOPs, elementwise FLOPs) per chip for one execution of ``op``."""
    return COSTS[op.kind].flops(op, sizes, mesh)


def op_comm_bytes(op: Op, sizes: Mapping[str, int], mesh: Mesh) -> float:
    """Bytes each chip sends for one execution of ``op`` (collectives and split statistics)."""
    if op.kind.is_collective:
        operand = op.inputs[0]
        assert isinstance(op.attrs, CollectiveAttrs) and op.result.layout is not None
        return collective_bytes(op.kind, op.attrs, _layout(operand), op.result.layout, sizes, mesh,
                                operand.dtype.bytes)
    stats = op_stats(op, sizes, mesh)
    return stats.bytes_per_chip if stats is not None else 0.0


def op_hbm_bytes(op: Op, sizes: Mapping[str, int], mesh: Mesh) -> int:
    """Bytes of its operands one execution of ``op`` reads, per chip (weights, caches, activations)."""
    return COSTS[op.kind].hbm_bytes(op, sizes, mesh)


def last_uses(stmts: Sequence[Stmt], keep: frozenset[int] = frozenset()) -> dict[int, list[int]]:
    """Statement index -> ids of the block's values last used there (freed after it).

    The one liveness walk of shardc: the emulator frees arrays with it and the cost
    model counts peak activation bytes with it.

    ``keep``: values that outlive the block's statements (a repeat body's loop-carried
    results, read when the layer ends)."""
    last: dict[int, int] = {}
    defined: set[int] = set()
    for i, s in enumerate(stmts):
        if isinstance(s, Decl):
            defined.add(s.value.id)
        elif isinstance(s, Op):
            defined.add(s.result.id)
        for v in reads(s):
            last[v.id] = i
    out: dict[int, list[int]] = {}
    for vid, i in last.items():
        if vid in defined and vid not in keep:
            out.setdefault(i, []).append(vid)
    return out


def reads(s: Stmt) -> tuple[Value, ...]:
    """The values a statement reads; a repeat reads its inits and every outer value its body reads
    (they live until the repeat ends)."""
    if isinstance(s, Op):
        return s.inputs
    if isinstance(s, Output):
        return s.values
    if isinstance(s, Repeat):
        return tuple(c.init for c in s.carries) + tuple(v for inner in s.body for v in reads(inner))
    return ()
