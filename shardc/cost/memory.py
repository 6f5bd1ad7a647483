"""Memory per chip of a sharded program: resident weights and KV caches, peak activations, max context.

Nothing is allocated: every figure is a sum of local block sizes (layouts and dim sizes, Python ints)
over the program, a repeat's body counted once and its per-layer declarations multiplied by the trip
count.  Activations are freed after their last use (:func:`~shardc.sharding.counts.last_uses`, the
liveness walk the emulator frees its arrays with).
"""
from __future__ import annotations

from shardc.errors import ShardcError
from shardc.hardware.profile import ChipProfile, load_profile
from shardc.ir.graph import Decl, DeclKind, Graph, Op, Repeat
from shardc.sharding.counts import last_uses, local_bytes

__all__ = ["max_context", "peak_activation_bytes", "resident_bytes"]


def resident_bytes(sg: Graph) -> tuple[float, float]:
    """Per chip: bytes of all weights, and of all KV caches, held in HBM (every layer's)."""
    assert sg.mesh is not None
    weights = caches = 0.0
    for d, rep in sg.decls():
        nbytes = local_bytes(d.value, sg.sizes, sg.mesh) * (rep.count if rep else 1)
        if d.kind is DeclKind.PARAM:
            weights += nbytes
        elif d.kind is DeclKind.CACHE:
            caches += nbytes
    return weights, caches


def peak_activation_bytes(sg: Graph) -> float:
    """Most activation bytes alive at once per chip: op results freed after their last use."""
    assert sg.mesh is not None
    mesh, sizes = sg.mesh, sg.sizes

    def block_peak(stmts: tuple, outer_live: float) -> float:
        frees = last_uses(stmts)
        live: dict[int, float] = {}
        peak = outer_live
        for i, s in enumerate(stmts):
            if isinstance(s, Op):
                live[s.result.id] = local_bytes(s.result, sizes, mesh)
            elif isinstance(s, Decl) and s.kind is DeclKind.INPUT:
                live[s.value.id] = local_bytes(s.value, sizes, mesh)
            elif isinstance(s, Repeat):
                carried = sum(local_bytes(c.arg, sizes, mesh) for c in s.carries)
                peak = max(peak, block_peak(s.body.stmts, outer_live + sum(live.values()) + carried))
                for c in s.carries:
                    live[c.result.id] = local_bytes(c.result, sizes, mesh)
            peak = max(peak, outer_live + sum(live.values()))
            for vid in frees.get(i, []):
                live.pop(vid, None)
        return peak

    return block_peak(sg.body.stmts, 0.0)


def max_context(sg: Graph, budget_fraction: float = 0.3, chip: str | ChipProfile | None = None) -> int:
    """Longest context (size of the cache's S dim) whose KV cache fits in ``budget_fraction`` of HBM.

    Per chip, each position of context costs the caches' local bytes divided
    by their (global) S; the layouts decide how much of the cache a chip holds
    (replicated over heads, or split over batch).
    """
    if not 0 < budget_fraction <= 1:
        raise ShardcError(f"the KV-cache budget must be a fraction of HBM in (0, 1], got {budget_fraction}")
    profile = load_profile(chip)
    assert sg.mesh is not None
    per_position = 0.0
    for d, rep in sg.decls():
        if d.kind is DeclKind.CACHE:
            if "S" not in d.value.dims:
                raise ShardcError(f"cache '{d.value.name}' has no S dim: the context length is the size of S")
            per_position += local_bytes(d.value, sg.sizes, sg.mesh) * (rep.count if rep else 1) / sg.sizes["S"]
    if per_position == 0:
        raise ShardcError("the program declares no KV cache: nothing limits the context")
    return int(budget_fraction * profile.hbm_bytes // per_position)
