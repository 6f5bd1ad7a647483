"""What an exported program's HLO must hold, from the sharded program alone (no jax here).

:func:`expected_hlo` counts, per collective kind and for one run, the collectives the exported
JAX program issues and the bytes each chip sends (shardc's own ring formulas), and the FLOPs of
its two-operand einsums, each repeat body times its layer count.  The exported program issues
shardc's collectives one to one, except that:

* one ``all_gather`` whose axes are suffixes of several dims is one tiled all-gather per dim (it
  counts as one per dim; its bytes are shardc's price of one collective, and the kind is marked
  ``unpriced``: the per-dim gathers send another total);
* an rmsnorm's statistics are one ``psum`` (one all-reduce); a layernorm's two (the row sums,
  then the squares of the centred rows: the emulator's sequence) and a softmax's two (a ``pmax``
  then a ``psum``), their bytes together those of shardc's statistics all-reduce;
* a ``slice`` sends nothing and is no collective, nor is a collective over a group of one chip.

The tests compare these with :func:`shardc.export.hlo.parse_hlo` of the compiled module.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from shardc.ir.graph import CollectiveAttrs, Graph, Op, OpKind
from shardc.sharding.counts import op_flops
from shardc.sharding.reshard import collective_bytes
from shardc.sharding.stats import op_stats

__all__ = ["ExpectedHlo", "expected_hlo"]


@dataclass(frozen=True)
class ExpectedHlo:
    """Per kind: collectives in one run and bytes per chip (shardc's prices; a kind in ``unpriced`` holds a
    multi-dim gather, whose exported form sends another total)."""

    counts: dict[str, int]
    bytes_by_kind: dict[str, float]
    unpriced: frozenset[str]
    einsum_flops: float  # per chip per run, two-operand einsums (a one-operand einsum is a reduce in HLO)


def expected_hlo(sg: Graph, itemsize: int | None = None) -> ExpectedHlo:
    """The HLO of ``export_jax(sg)`` (module docstring); ``itemsize`` overrides every value's dtype
    (4 when the program runs in f32, 2 in bf16); statistics are f32 in every dtype."""
    mesh = sg.mesh
    assert mesh is not None
    counts: Counter[str] = Counter()
    sent: dict[str, float] = {}
    unpriced: set[str] = set()
    flops = 0.0
    for op, rep in sg.walk():
        if not isinstance(op, Op):
            continue
        times = rep.count if rep is not None else 1
        if op.kind is OpKind.EINSUM and len(op.inputs) == 2:
            flops += op_flops(op, sg.sizes, mesh).einsum * times
        stats = op_stats(op, sg.sizes, mesh)
        if stats is not None and mesh.group_size(stats.axes) > 1:
            counts["all_reduce"] += (1 if op.kind is OpKind.RMSNORM else 2) * times
            sent["all_reduce"] = sent.get("all_reduce", 0.0) + stats.bytes_per_chip * times
        if not op.kind.is_collective or op.kind is OpKind.SLICE:
            continue
        a = op.attrs_as(CollectiveAttrs)
        if mesh.group_size(a.axes) == 1:
            continue  # a group of one chip: nothing moves (nor does XLA keep it)
        (v,) = op.inputs
        assert v.layout is not None and op.result.layout is not None
        kind = op.kind.value
        if op.kind is OpKind.ALL_GATHER:
            dims = [d for d, held in v.layout.split if set(held) & set(a.axes)]
            counts[kind] += len(dims) * times
            if len(dims) > 1:
                unpriced.add(kind)  # the per-dim gathers send another total than shardc's one gather
        else:
            counts[kind] += times
        item = itemsize if itemsize is not None else v.dtype.bytes
        sent[kind] = sent.get(kind, 0.0) + collective_bytes(op.kind, a, v.layout, op.result.layout, sg.sizes, mesh,
                                                            item) * times
    return ExpectedHlo(dict(counts), sent, frozenset(unpriced), flops)
