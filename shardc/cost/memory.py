"""Memory per chip of a sharded program: resident weights and KV caches, peak activations, max context.

Nothing is allocated: every figure is a sum of local block sizes (layouts and dim sizes, Python ints)
over the program, a repeat's body counted once and its per-layer declarations multiplied by the trip
count.

Peak activations come from a liveness walk over the statements (:func:`~shardc.sharding.counts.last_uses`,
the walk the emulator frees its arrays with), holding each value as the kernels of a serving system
would, not as the emulator does:

* **an op result is allocated when the op runs and freed after its last use**; inputs and the
  loop-carried values of a repeat are live from the start;
* **a weight-gathered matmul streams its gathered operand in chunks** (the paper's looped
  CollectiveEinsum): an ``all_gather`` whose only use is one einsum holds two chunks at a time (the
  one being multiplied and the one arriving), a chunk being ``1 / gather_chunks`` of the gathered
  block; the default is one chunk per chip of the gather (the block each chip already holds).  Any
  operand dim of an einsum can be chunked (a kept dim writes disjoint slices of the result, a
  contracted one accumulates into it), so every such gather qualifies; a gathered value with another
  use, or that is an output, is held whole;
* **an elementwise op writes into the buffer of an operand that dies there** when the two are the
  same size (scale, mask and softmax, norms, activations, residual adds): this is how the scores of
  attention are held -- ``s * c``, ``causal`` and ``softmax`` run as one fused kernel over a single
  ``B x H x L x S`` buffer (attention is not chunked over ``S``, so that buffer is whole);
* **a repeat's per-layer outputs accumulate**: ``output kn, vn`` inside the body stays live after its
  layer, so layer ``i`` runs with the outputs of the ``i`` layers before it, and all ``count`` of them
  outlive the repeat (a prefill's new KV cache entries).

The walk records the statement at the peak and every value live there (:class:`MemoryPeak`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from shardc.errors import ShardcError
from shardc.hardware.profile import ChipProfile, load_profile
from shardc.ir.graph import CollectiveAttrs, Decl, DeclKind, Graph, Op, OpKind, Output, Repeat, Stmt, Value
from shardc.sharding.counts import COSTS, ELEMENTWISE, last_uses, local_bytes, reads
from shardc.units import human_bytes

__all__ = ["LiveValue", "MemoryPeak", "max_context", "memory_peak", "peak_activation_bytes",
           "resident_bytes"]


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


@dataclass(frozen=True)
class LiveValue:
    """One buffer live at the peak: its value's name, bytes per chip and why it is that size."""

    name: str
    bytes: float
    note: str = ""


@dataclass(frozen=True)
class MemoryPeak:
    """The most activation bytes live at once per chip, the statement where, and what is live there."""

    bytes: float = 0.0
    op: str = ""  # the value the statement at the peak computes
    kind: str = ""
    line: int | None = None
    layer: str = ""  # "top level", or "layer 118 of 118 (repeat on line 30)"
    live: tuple[LiveValue, ...] = field(default_factory=tuple)
    gather_chunks: int | None = None

    def to_json(self) -> dict[str, object]:
        return {"bytes": self.bytes, "op": self.op, "kind": self.kind, "line": self.line, "layer": self.layer,
                "gather_chunks": self.gather_chunks,
                "live": [{"name": v.name, "bytes": v.bytes, "note": v.note} for v in self.live]}


_INPLACE_KINDS = frozenset(k for k, c in COSTS.items() if c is ELEMENTWISE and k is not OpKind.SUM)


def _label(op: Op) -> str:
    return op.result.name or f"({op.kind.value}, line {op.loc.line})"


def _uses(stmts: tuple[Stmt, ...]) -> dict[int, list[Stmt]]:
    """Value id -> the statements of the block that read it (as the liveness walk counts reads)."""
    uses: dict[int, list[Stmt]] = {}
    for s in stmts:
        for v in reads(s):
            uses.setdefault(v.id, []).append(s)
    return uses


def memory_peak(sg: Graph, gather_chunks: int | None = None) -> MemoryPeak:
    """The peak of the liveness walk of the module docstring, with the live set there.

    ``gather_chunks``: how many chunks a streamed all-gather is cut into (None: one per chip of the
    gather's group; 1: gathered whole, as the program is written).
    """
    if gather_chunks is not None and gather_chunks < 1:
        raise ShardcError(f"--gather-chunks {gather_chunks}: a weight-gathered matmul needs at least one chunk")
    walk = _Walk(sg, gather_chunks)
    walk.block(sg.body.stmts, [], "top level")
    return walk.best


def _frees(stmts: tuple[Stmt, ...]) -> dict[int, list[int]]:
    """:func:`last_uses`, and a repeat's carried-out results freed after their last use too."""
    frees = last_uses(stmts)
    for s in stmts:
        if isinstance(s, Repeat):
            for c in s.carries:
                reads = [j for j, t in enumerate(stmts) if isinstance(t, Op) and c.result in t.inputs]
                if reads:
                    frees.setdefault(max(reads), []).append(c.result.id)
    return frees


class _Walk:
    """The liveness walk: one block at a time, the best peak so far in ``best``."""

    def __init__(self, sg: Graph, gather_chunks: int | None) -> None:
        assert sg.mesh is not None
        self.mesh, self.sizes, self.chunks = sg.mesh, sg.sizes, gather_chunks
        self.best = MemoryPeak(gather_chunks=gather_chunks)

    def nbytes(self, v: Value) -> float:
        return float(local_bytes(v, self.sizes, self.mesh))

    def streamed(self, op: Op, users: list[Stmt], outputs: set[int]) -> LiveValue | None:
        """What a streamed all-gather holds, or None if it is held whole."""
        if (op.kind is not OpKind.ALL_GATHER or op.result.id in outputs or len(users) != 1
                or not isinstance(users[0], Op) or users[0].kind is not OpKind.EINSUM):
            return None
        assert isinstance(op.attrs, CollectiveAttrs)
        n = self.chunks if self.chunks is not None else self.mesh.group_size(op.attrs.axes)
        whole = self.nbytes(op.result)
        return LiveValue(_label(op), whole * min(n, 2) / n,
                         f"{min(n, 2)} of {n} chunks streamed into the einsum (whole: {human_bytes(whole)})")

    def result(self, op: Op, live: dict[int, LiveValue], dying: list[int], users: list[Stmt],
               outputs: set[int]) -> LiveValue:
        """The buffer ``op`` allocates (a chunk, or none when it writes into a dying operand)."""
        streamed = self.streamed(op, users, outputs)
        if streamed is not None:
            return streamed
        nbytes = self.nbytes(op.result)
        if op.kind in _INPLACE_KINDS:
            for v in op.inputs:
                if v.id in dying and v.id in live and v.dims == op.result.dims and live[v.id].bytes == nbytes:
                    old = live.pop(v.id)
                    return LiveValue(_label(op), nbytes,
                                     f"in place of {old.name}" + (f" ({old.note})" if old.note else ""))
        return LiveValue(_label(op), nbytes)

    def check(self, s: Stmt, held: list[LiveValue], where: str) -> None:
        total = sum(v.bytes for v in held)
        if total > self.best.bytes:
            op, kind = (_label(s), s.kind.value) if isinstance(s, Op) else ("", type(s).__name__.lower())
            self.best = MemoryPeak(total, op, kind, s.loc.line or None, where,
                                   tuple(sorted(held, key=lambda v: -v.bytes)), self.chunks)

    def repeat(self, s: Repeat, live: dict[int, LiveValue], dying: list[int], around: list[LiveValue]
               ) -> list[LiveValue]:
        """Walk a repeat's body as its last layer runs; returns what outlives it (its per-layer outputs)."""
        for c in s.carries:  # an init that dies here becomes the carried arg (one buffer)
            if c.init.id in dying:
                live.pop(c.init.id, None)
        carried = [LiveValue(c.arg.name or "", self.nbytes(c.arg), "carried") for c in s.carries]
        outs = [v for inner in s.body.stmts if isinstance(inner, Output) for v in inner.values]
        per_layer = sum(self.nbytes(v) for v in outs)
        names = ", ".join(v.name or "" for v in outs)
        earlier = "layer 1" if s.count == 2 else f"layers 1-{s.count - 1}"
        before = [LiveValue(f"{names} of {earlier}", per_layer * (s.count - 1),
                            "per-layer outputs accumulate")] if per_layer and s.count > 1 else []
        kept = self.block(s.body.stmts, around + list(live.values()) + before + carried,
                          f"layer {s.count} of {s.count} (repeat on line {s.loc.line})")
        if per_layer:
            kept.append(LiveValue(f"{names} of all {s.count} layers", per_layer * s.count,
                                  "per-layer outputs of the repeat"))
        for c in s.carries:
            live[c.result.id] = LiveValue(c.result.name or "", self.nbytes(c.result), "carried out of the repeat")
        return kept

    def block(self, stmts: tuple[Stmt, ...], outer: list[LiveValue], where: str) -> list[LiveValue]:
        """Walk one block; returns what stays live after it (per-layer outputs of inner repeats)."""
        frees = _frees(stmts)
        uses = _uses(stmts)
        outputs = {v.id for s in stmts if isinstance(s, Output) for v in s.values}
        live: dict[int, LiveValue] = {}
        kept: list[LiveValue] = []  # outlive this block: outputs of repeats inside it
        for i, s in enumerate(stmts):
            dying = frees.get(i, [])
            if isinstance(s, Op):
                live[s.result.id] = self.result(s, live, dying, uses.get(s.result.id, []), outputs)
            elif isinstance(s, Decl) and s.kind is DeclKind.INPUT:
                live[s.value.id] = LiveValue(s.value.name or "", self.nbytes(s.value), "input")
            elif isinstance(s, Repeat):
                kept += self.repeat(s, live, dying, outer + kept)
            self.check(s, outer + kept + list(live.values()), where)
            for vid in dying:
                live.pop(vid, None)
        return kept


def peak_activation_bytes(sg: Graph, gather_chunks: int | None = None) -> float:
    """Most activation bytes alive at once per chip (:func:`memory_peak`)."""
    return memory_peak(sg, gather_chunks).bytes


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
