"""The correctness oracle: emulate a sharded program and compare it with the unsharded one.

:func:`verify` runs the reference executor (whole arrays, collectives as the
identity) and the emulator (per-chip arrays) on the same seeded data.  Every
intermediate value the emulator computes is assembled -- replicas from chip 0,
pending partial sums summed -- and compared with the reference's value of the
same op in the same layer, so a wrong layout is reported at the *first op
where the numbers diverge*, not only at the outputs.  The outputs are compared
too, with those of the source program when it is given.

Error measure: for each value, ``max |emulated - reference|`` divided by the
largest magnitude of the reference value (entries equal in both, such as the
``-inf`` of a causal mask, count as equal).  A value passes when that relative
error is at most the tolerance (default 1e-4 in f32, 1e-9 in f64).

:func:`shrink` makes a big program small enough to emulate: every dim becomes
the smallest size that all its layouts can split (at least ``floor``,
unless the dim was smaller), keeping every layout and collective as compiled.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import networkx as nx
import numpy as np

from shardc.errors import ShardcError
from shardc.execute import chips
from shardc.execute.emulate import Counters, ReplicaError, emulate, emulation_footprint
from shardc.execute.reference import (
    DEFAULT_MAX_BYTES,
    Inputs,
    SeededData,
    _np_dtype,
    reference,
    reference_footprint,
)
from shardc.ir.graph import Decl, Graph, Op, OpKind, RelabelAttrs, Value
from shardc.ir.transforms import with_sizes
from shardc.sharding.sharded import verify_sharded
from shardc.units import human_bytes

DEFAULT_TOLERANCE = {"f32": 1e-4, "f64": 1e-9}


@dataclass(frozen=True)
class Mismatch:
    """Where the emulated program first departs from the reference."""

    value: str
    op: str
    line: int
    layer: int
    abs_error: float
    rel_error: float
    message: str

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class VerifyReport:
    """The verdict of :func:`verify`."""

    passed: bool
    max_abs_error: float
    max_rel_error: float
    first_mismatch: Mismatch | None
    chips: int
    counters: Counters | None
    tolerance: float
    dtype: str
    sizes: Mapping[str, int]

    def to_json(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "max_abs_error": self.max_abs_error,
            "max_rel_error": self.max_rel_error,
            "first_mismatch": self.first_mismatch.to_json() if self.first_mismatch else None,
            "chips": self.chips,
            "tolerance": self.tolerance,
            "dtype": self.dtype,
            "dims": dict(self.sizes),
            "counters": self.counters.to_json() if self.counters else None,
        }


def compare(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    """(max absolute error, that error relative to the largest |want|) of two arrays."""
    if got.shape != want.shape:
        return math.inf, math.inf
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    with np.errstate(invalid="ignore"):  # inf - inf where both are masked: counted as equal
        diff = np.where(same, 0.0, np.abs(got.astype(np.float64) - want.astype(np.float64)))
    diff = np.nan_to_num(diff, nan=math.inf)
    abs_err = float(diff.max()) if diff.size else 0.0
    finite = np.abs(want[np.isfinite(want)])
    scale = float(finite.max()) if finite.size else 1.0
    return abs_err, abs_err / max(scale, 1e-30)


#: Layers of each repeat :func:`verify` runs unless told otherwise (``shardc verify``'s default too):
#: every layer of a repeat runs the same body, so two show a layer's values and what it carries
#: into the next, at a fraction of the time of all of them.
DEFAULT_LAYERS = 2


def verify(sg: Graph, seed: int = 0, dtype: str = "f32", layers: int | None = DEFAULT_LAYERS, *,
           tolerance: float | None = None, source: Graph | None = None,
           max_bytes: int = DEFAULT_MAX_BYTES, inputs: Inputs | None = None) -> VerifyReport:
    """Emulate ``sg`` and compare every value and output with the reference run.

    ``layers``: the layers of each repeat to run (default :data:`DEFAULT_LAYERS`, as ``shardc
    verify``; ``None``: all of them).
    ``source``: the unsharded program ``sg`` came from, whose outputs the emulated ones must also
    equal.  ``inputs``: arrays of one's own by declaration name (the rest drawn from ``seed``).
    """
    tol = DEFAULT_TOLERANCE.get(dtype, 1e-4) if tolerance is None else tolerance
    verify_sharded(sg)
    want: dict[tuple[int, int], np.ndarray] = {}

    def record(op: Op, layer: int, array: np.ndarray) -> None:
        want[(op.result.id, layer)] = array

    _check_memory(sg, source, dtype, layers, max_bytes)
    data = SeededData(sg, seed, dtype, inputs, keep=True)  # drawn once for both runs of sg
    expected = reference(sg, seed, dtype, layers, max_bytes=max_bytes, trace=record, inputs=data)
    if source is not None:
        expected = reference(source, seed, dtype, layers, max_bytes=max_bytes, inputs=inputs)
    first: list[Mismatch] = []
    worst = [0.0, 0.0]
    mesh = sg.mesh
    assert mesh is not None  # verify_sharded checked it

    def check(op: Op, layer: int, stacked: np.ndarray) -> None:
        assert op.result.layout is not None
        got = chips.assemble(stacked, op.result.layout, mesh)
        abs_err, rel_err = compare(got, want[(op.result.id, layer)])
        worst[0], worst[1] = max(worst[0], abs_err), max(worst[1], rel_err)
        if rel_err > tol and not first:
            first.append(Mismatch(
                op.result.name or "", op.kind.value, op.loc.line, layer, abs_err, rel_err,
                f"'{op.result.name}' = {op.kind} on line {op.loc.line} (layer {layer}) differs from the "
                f"reference: max abs error {abs_err:.3g}, relative {rel_err:.3g} > tolerance {tol:g}"))

    try:
        run = emulate(sg, seed, dtype, layers, max_bytes=max_bytes, on_value=check, inputs=data)
    except ReplicaError as err:
        mismatch = Mismatch("", "", 0, 0, math.inf, math.inf, err.message)
        return VerifyReport(False, math.inf, math.inf, first[0] if first else mismatch, mesh.num_chips, None,
                            tol, dtype, sg.sizes)
    for name, array in expected.items():
        abs_err, rel_err = compare(run.outputs.get(name, np.empty(0)), array)
        worst[0], worst[1] = max(worst[0], abs_err), max(worst[1], rel_err)
        if rel_err > tol and not first:
            first.append(Mismatch(name, "output", 0, 0, abs_err, rel_err,
                                  f"output '{name}' differs from the reference: relative error {rel_err:.3g}"))
    if source is not None and not first:
        first.extend(_layer_counts_differ(sg, source))
    return VerifyReport(not first, worst[0], worst[1], first[0] if first else None, mesh.num_chips,
                        run.counters, tol, dtype, sg.sizes)


def _layer_counts_differ(sg: Graph, source: Graph) -> list[Mismatch]:
    """A repeat of ``sg`` that runs another number of layers than the source's.

    Both runs stop after ``layers`` layers of each repeat, so their outputs can agree even when the
    full programs do not: ``repeat 31`` in a file compiled from ``repeat 32`` is still another program.
    """
    ours, theirs = sg.repeats, source.repeats
    for i, repeat in enumerate(ours):
        other = theirs[i].count if i < len(theirs) else 0
        if repeat.count != other:
            return [Mismatch("", "repeat", repeat.loc.line, 0, math.inf, math.inf,
                             f"the repeat on line {repeat.loc.line} runs {repeat.count} layers, the source's "
                             f"runs {other}: the whole programs compute different things")]
    if len(theirs) > len(ours):
        return [Mismatch("", "repeat", 0, 0, math.inf, math.inf,
                         f"the source has {len(theirs)} repeat blocks, the sharded program {len(ours)}")]
    return []


def _check_memory(sg: Graph, source: Graph | None, dtype: str, layers: int | None, max_bytes: int) -> None:
    """Refuse, before allocating anything, a verification that would not fit in ``max_bytes``.

    Both runs are held at once, the reference keeps every intermediate value
    (one per op and layer) to locate the first mismatch, and the seeded data
    of every layer run is kept for the emulator.
    """
    ref, biggest = reference_footprint(sg, dtype, layers)
    item = _np_dtype(dtype).itemsize
    kept = sum(math.prod(sg.sizes[d] for d in op.result.dims) * item * _runs(sg, op, layers)
               for op in sg.ops())
    kept += sum(math.prod(sg.sizes[d] for d in decl.value.dims) * item * _runs(sg, decl, layers)
                for decl, _ in sg.decls())
    need = ref + kept + emulation_footprint(sg, dtype, layers, fused=False)  # it watches every value
    if source is not None:
        need += reference_footprint(source, dtype, layers)[0]
    if need > max_bytes:
        raise ShardcError(
            f"verifying {sg.name} would need about {human_bytes(need)} of host memory, more than the limit of "
            f"{human_bytes(max_bytes)} (largest tensor: {biggest})",
            hint="--shrink makes every dim as small as its layouts allow; --set and --layers help too")


def _runs(g: Graph, stmt: Op | Decl, layers: int | None) -> int:
    for rep in g.repeats:
        if any(s is stmt for s in rep.body):
            return rep.count if layers is None else min(layers, rep.count)
    return 1


def shrink_sizes(sg: Graph, floor: int = 4) -> dict[str, int]:
    """The smallest size of each dim that every layout of ``sg`` can split (see module doc)."""
    need = _split_needs(sg)
    # relabel(a, L=S) needs equal sizes: the dims it ties (connected components) share one size.
    ties = nx.Graph()
    ties.add_nodes_from(need)
    for op in sg.ops():
        if op.kind is OpKind.RELABEL:
            assert isinstance(op.attrs, RelabelAttrs)
            ties.add_edges_from(op.attrs.renames)
    sizes = sg.sizes
    out = {}
    for dims in nx.connected_components(ties):
        step = math.lcm(*(need[d] for d in dims))
        for d in dims:
            out[d] = min(sizes[d], step * max(1, -(-floor // step)))
    for op in sg.ops():  # last(a, L=T) keeps at most size(L) positions
        if op.kind is OpKind.LAST:
            assert isinstance(op.attrs, RelabelAttrs)
            ((old, new),) = op.attrs.renames
            out[new] = min(out[new], out[old])
    return {d: out[d] for d in need}


def _split_needs(sg: Graph) -> dict[str, int]:
    """Dim -> the least common multiple of the group sizes its layouts in ``sg`` split it over."""
    mesh = sg.mesh
    assert mesh is not None
    need = {d: 1 for d, _ in sg.dims}
    for stmt, _ in sg.walk():
        values: list[Value] = []
        if isinstance(stmt, Op):
            values = [stmt.result, *stmt.inputs]
        elif isinstance(stmt, Decl):
            values = [stmt.value]
        for v in values:
            if v.layout is not None:
                for d, axes in v.layout.split:
                    need[d] = math.lcm(need[d], mesh.group_size(axes))
    return need


def shrink(sg: Graph, floor: int = 4) -> Graph:
    """``sg`` with every dim at its smallest splittable size (layouts and collectives unchanged)."""
    return with_sizes(sg, shrink_sizes(sg, floor))
