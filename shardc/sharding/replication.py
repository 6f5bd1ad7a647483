"""Redundant compute: how many chips of the mesh repeat each einsum's work.

The **replication factor** of an einsum in a sharded program is its FLOPs per chip
times the number of chips, over the FLOPs of the same einsum unsharded: 1.0 is a
perfect split, 8.0 means every piece of the product is computed on 8 chips.  Both
counts come from :func:`shardc.sharding.counts.op_flops`, the cost model's own: the
unsharded count is the same rule on a one-chip view of the mesh (every axis of size 1),
so no FLOP formula is written twice.  A repeat body's einsum is one statement: its
factor does not depend on the trip count.

The whole program's factor weighs every einsum by its FLOPs in one run (a repeat
body's einsums times the trip count): einsum FLOPs per chip of the run, times the
chips, over the run's unsharded einsum FLOPs; the mesh does the distinct matmul work
of ``chips / factor`` chips.

:func:`replication_warning` says when that is a mistake rather than a detail: see
its docstring for the rule.
"""
from __future__ import annotations

from dataclasses import dataclass

from shardc.ir.graph import EinsumAttrs, Graph, Op, OpKind
from shardc.ir.mesh import Mesh
from shardc.sharding.counts import op_flops
from shardc.sharding.presets import FFN, Strategy

#: Relative slack on factors: FLOP counts are floats, so a perfect split may read 1.0000000001.
TOLERANCE = 1e-9


@dataclass(frozen=True)
class Replicated:
    """One einsum whose work is repeated on several chips (factor above 1).

    FLOPs are those of one execution (in a repeat: of one layer)."""

    value: str
    line: int
    kind: OpKind
    spec: str  # the einsum's subscripts, "BLE,EF->BLF"
    factor: float
    flops_per_chip: float
    ideal_flops_per_chip: float  # the unsharded FLOPs over the chips: a perfect split

    def to_json(self) -> dict[str, object]:
        """The record as JSON (``shardc compile --json`` and ``shardc cost --json``)."""
        return {"value": self.value, "line": self.line or None, "kind": self.kind.value, "spec": self.spec,
                "factor": self.factor, "flops_per_chip": self.flops_per_chip,
                "ideal_flops_per_chip": self.ideal_flops_per_chip}


@dataclass(frozen=True)
class ReplicationWarning:
    """The whole model runs (nearly) replicated: what happened and what to do about it."""

    message: str
    hint: str


def one_chip(mesh: Mesh) -> Mesh:
    """``mesh`` with every axis of size 1: layouts over it hold whole arrays (the unsharded view)."""
    return Mesh(tuple((name, 1) for name in mesh.names))


def _einsums(sg: Graph) -> list[tuple[Op, int]]:
    """Every einsum of the sharded program with its executions per run (a repeat's trip count)."""
    return [(op, rep.count if rep is not None else 1) for op, rep in sg.walk()
            if isinstance(op, Op) and op.kind is OpKind.EINSUM]


def _flops(op: Op, sg: Graph) -> tuple[float, float]:
    """(einsum FLOPs per chip, einsum FLOPs unsharded) of one execution of ``op``."""
    assert sg.mesh is not None, "a sharded program has a mesh"
    return op_flops(op, sg.sizes, sg.mesh).einsum, op_flops(op, sg.sizes, one_chip(sg.mesh)).einsum


def replication(sg: Graph) -> list[Replicated]:
    """The einsums of the sharded program ``sg`` whose factor is above 1, in program order."""
    assert sg.mesh is not None, "a sharded program has a mesh"
    chips = sg.mesh.num_chips
    out: list[Replicated] = []
    for op, _ in _einsums(sg):
        per_chip, total = _flops(op, sg)
        factor = per_chip * chips / total
        if factor > 1 + TOLERANCE:
            assert isinstance(op.attrs, EinsumAttrs)
            spec = f"{','.join(op.attrs.inputs)}->{op.attrs.output}"
            out.append(Replicated(op.result.name or "", op.loc.line, op.kind, spec, factor, per_chip,
                                  total / chips))
    return out


def replication_factor(sg: Graph) -> float:
    """The whole run's factor: einsum FLOPs per chip (repeats x count) x chips / unsharded einsum FLOPs.

    1.0 for a program without einsums (nothing is repeated)."""
    assert sg.mesh is not None, "a sharded program has a mesh"
    per_chip = total = 0.0
    for op, count in _einsums(sg):
        mine, whole = _flops(op, sg)
        per_chip += mine * count
        total += whole * count
    return per_chip * sg.mesh.num_chips / total if total else 1.0


def replication_warning(sg: Graph, strategy: Strategy | None) -> ReplicationWarning | None:
    """A warning when the mesh does the distinct matmul work of at most two chips, else None.

    The rule: the whole run's factor ``r`` (:func:`replication_factor`) is at least
    ``max(2, chips / 2)``.  ``chips / r`` is how many chips' worth of distinct matmul
    work the mesh does, so the run gains at most 2x from all its chips, and (``r >= 2``)
    at least half of every chip's matmul work is repeated elsewhere; a one-chip mesh
    never warns, a two-chip mesh only when fully replicated.  ``strategy`` (None for a
    program sharded as written) chooses the hint.
    """
    assert sg.mesh is not None, "a sharded program has a mesh"
    chips = sg.mesh.num_chips
    factor = replication_factor(sg)
    if factor < max(2.0, chips / 2) * (1 - TOLERANCE):
        return None
    work = f"{chips / factor:.3g}"
    message = (f"the matmuls run {factor:.3g}x replicated on mesh {sg.mesh.spec()}: its {chips} chips do the "
               f"distinct work of {work} chip{'' if work == '1' else 's'}")
    return ReplicationWarning(message, _hint(sg, strategy))


def _hint(sg: Graph, strategy: Strategy | None) -> str:
    """What to do about a replicated run, from the preset that caused it."""
    assert sg.mesh is not None
    if strategy is None:
        return ("the program's own layouts leave its matmuls unsplit; split their dims over the mesh, or "
                "compile the unsharded program with a preset (--ffn 2d-ws)")
    if strategy.ffn is FFN.NONE:
        return ("--ffn none places only the program's pins, so the other values stay replicated; a preset "
                "(--ffn 2d-ws) splits the work")
    if strategy.gathered:
        gathered = sg.mesh.group_size(strategy.gathered)
        batch = sg.sizes.get("B")
        if batch is not None and batch % gathered:
            return (f"batch B={batch:,} cannot split over the {gathered} chips {strategy.ffn.value} gathers "
                    f"over; a weight-stationary preset (--ffn 2d-ws) splits the work")
    return (f"the {strategy.ffn.value} layouts split few of the matmul dims at these sizes; compare the presets' "
            "layouts (shardc compile --explain)")
