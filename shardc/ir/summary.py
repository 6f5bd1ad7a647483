"""What a program holds, computed symbolically: layers, ops, parameters, weight and cache bytes.

:func:`summarize` reads a :class:`~shardc.ir.graph.Graph` once, statement by
statement.  It never unrolls a ``repeat`` (a layer's numbers are multiplied by
its trip count) and never allocates anything proportional to a dim's size: the
element count of a tensor is the product of its dim sizes as a Python ``int``.
So a 10^6-layer stack with dims of 10^12 is summarised in microseconds, and
the numbers are exact.

The numbers come in three stretches of program, each a :class:`Counts`:
``top_level`` (statements outside every ``repeat``), ``per_layer`` of each
repeat (one layer of its body), and ``total`` (top level plus each layer times
its trip count).  Shapes are global shapes, so a sharded program reports the
same numbers as its source program (plus its collectives, which are ops).

``shardc check`` prints :meth:`Summary.to_text`; ``shardc check --json``
prints :meth:`Summary.to_json`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from shardc.ir.graph import Decl, DeclKind, DType, Graph, Op, Output, Repeat, Stmt, TensorType
from shardc.ir.mesh import Mesh
from shardc.units import human_bytes

_BATCH_DIM = "B"
_CONTEXT_DIM = "S"


@dataclass(frozen=True)
class Counts:
    """Ops, parameters (elements), weight bytes by dtype and KV-cache bytes of a stretch of program.

    ``weight_bytes`` holds ``(dtype, bytes)`` pairs in :class:`~shardc.ir.graph.DType`
    order, leaving out dtypes with no weights.
    """

    ops: int = 0
    params: int = 0
    weight_bytes: tuple[tuple[DType, int], ...] = ()
    cache_bytes: int = 0

    @property
    def weight_bytes_total(self) -> int:
        """Bytes of all weights, every dtype."""
        return sum(n for _, n in self.weight_bytes)

    def __add__(self, other: "Counts") -> "Counts":
        by_dtype = dict(self.weight_bytes)
        for dtype, n in other.weight_bytes:
            by_dtype[dtype] = by_dtype.get(dtype, 0) + n
        return Counts(
            self.ops + other.ops,
            self.params + other.params,
            _in_dtype_order(by_dtype),
            self.cache_bytes + other.cache_bytes,
        )

    def times(self, n: int) -> "Counts":
        """These counts ``n`` times over (``n`` identical layers)."""
        return Counts(
            self.ops * n,
            self.params * n,
            tuple((dtype, b * n) for dtype, b in self.weight_bytes),
            self.cache_bytes * n,
        )

    def to_json(self) -> dict[str, object]:
        return {
            "ops": self.ops,
            "params": self.params,
            "weight_bytes": self.weight_bytes_total,
            "weight_bytes_by_dtype": {str(d): n for d, n in self.weight_bytes},
            "kv_cache_bytes": self.cache_bytes,
        }


@dataclass(frozen=True)
class RepeatSummary:
    """One ``repeat`` block: its trip count, source line and the counts of one layer."""

    count: int
    line: int
    per_layer: Counts

    @property
    def total(self) -> Counts:
        """All ``count`` layers together."""
        return self.per_layer.times(self.count)

    def to_json(self) -> dict[str, object]:
        return {"count": self.count, "line": self.line or None, "per_layer": self.per_layer.to_json()}


@dataclass(frozen=True)
class TensorInfo:
    """An input or output: its name and type; ``per_layer`` for an output inside a repeat."""

    name: str
    type: TensorType
    per_layer: bool = False

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"name": self.name, "type": str(self.type)}
        if self.per_layer:
            out["per_layer"] = True
        return out


@dataclass(frozen=True)
class Summary:
    """The summary of one program (see the module docstring for what each stretch counts)."""

    model: str
    mesh: Mesh | None
    dims: tuple[tuple[str, int], ...]
    sharded: bool
    top_level: Counts
    repeats: tuple[RepeatSummary, ...]
    total: Counts
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    #: Cache bytes per token of context of one sequence, ``total / (size(B) * size(S))``,
    #: when every cache has dims B and S (an int when exact); else None.
    kv_cache_bytes_per_token: int | float | None = None

    @property
    def layers(self) -> int:
        """Layers in all repeat blocks together."""
        return sum(r.count for r in self.repeats)

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict (the object ``shardc check --json`` prints)."""
        reps = self.repeats
        mesh = None
        if self.mesh is not None:
            mesh = {"spec": self.mesh.spec(), "axes": dict(self.mesh.axes), "chips": self.mesh.num_chips}
        return {
            "model": self.model,
            "mesh": mesh,
            "dims": dict(self.dims),
            "sharded": self.sharded,
            "layers": {"total": self.layers, "repeats": [r.count for r in reps]},
            "ops": _stretches(self.top_level.ops, [r.per_layer.ops for r in reps], self.total.ops),
            "params": _stretches(self.top_level.params, [r.per_layer.params for r in reps], self.total.params),
            "weight_bytes": {
                **_stretches(self.top_level.weight_bytes_total,
                             [r.per_layer.weight_bytes_total for r in reps], self.total.weight_bytes_total),
                "by_dtype": {str(d): n for d, n in self.total.weight_bytes},
            },
            "kv_cache_bytes": _stretches(self.top_level.cache_bytes,
                                         [r.per_layer.cache_bytes for r in reps], self.total.cache_bytes),
            "kv_cache_bytes_per_token": self.kv_cache_bytes_per_token,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "repeats": [r.to_json() for r in reps],
        }

    def to_text(self) -> str:
        """The readable summary ``shardc check`` prints: one aligned row per fact."""
        rows: list[tuple[str, str]] = [("model", self.model)]
        if self.mesh is not None:
            chips = self.mesh.num_chips
            rows.append(("mesh", f"{self.mesh} ({chips:,} chip{'s' if chips != 1 else ''})"))
        else:
            rows.append(("mesh", "none (give one with --mesh)"))
        if self.sharded:
            rows.append(("sharded", "yes: every value carries its layout"))
        rows.append(("dims", ", ".join(f"{d}={n}" for d, n in self.dims)))
        rows.append(("layers", self._layers_text()))
        rows += [("inputs" if i == 0 else "", _tensor_text(t)) for i, t in enumerate(self.inputs)]
        rows += [("outputs" if i == 0 else "", _tensor_text(t)) for i, t in enumerate(self.outputs)]
        rows.append(("ops", self._ops_text()))
        rows.append(("parameters", _count_text(self.total.params)))
        for label, counts in self._stretch_rows():
            rows.append((f"  {label}", _count_text(counts.params)))
        for i, (dtype, n) in enumerate(self.total.weight_bytes):
            rows.append(("weights" if i == 0 else "", f"{dtype:<5} {human_bytes(n)} ({n:,} bytes)"))
        if not self.total.weight_bytes:
            rows.append(("weights", "none"))
        cache = self.total.cache_bytes
        rows.append(("kv cache", f"{human_bytes(cache)} ({cache:,} bytes)" if cache else "none"))
        per_token = self.kv_cache_bytes_per_token
        if per_token is not None:
            sizes = dict(self.dims)
            rows.append(("  per token", f"{human_bytes(per_token)} ({_number(per_token)} bytes) "
                         f"= total / (B={sizes[_BATCH_DIM]:,} x S={sizes[_CONTEXT_DIM]:,})"))
        width = max(len(label) for label, _ in rows)
        return "\n".join(f"{label:<{width}}  {text}".rstrip() for label, text in rows) + "\n"

    def _layers_text(self) -> str:
        if not self.repeats:
            return "0 (no repeat block)"
        blocks = ", ".join(f"repeat {r.count:,}" + (f" at line {r.line}" if r.line else "") for r in self.repeats)
        return f"{self.layers:,} ({blocks})"

    def _ops_text(self) -> str:
        parts = [f"{self.top_level.ops:,} top-level"]
        parts += [f"{r.per_layer.ops:,} per layer x {r.count:,}" for r in self.repeats]
        return " + ".join(parts) + f" = {self.total.ops:,} executed"

    def _stretch_rows(self) -> list[tuple[str, Counts]]:
        """(label, counts) for the top level and one layer of each repeat."""
        if not self.repeats:
            return []
        many = len(self.repeats) > 1
        out = [("top-level", self.top_level)]
        for r in self.repeats:
            out.append((f"per layer (line {r.line})" if many else "per layer", r.per_layer))
        return out


def summarize(g: Graph) -> Summary:
    """Summarise ``g`` without unrolling repeats or allocating anything the size of a tensor."""
    sizes = g.sizes
    top = _counts(g.body.stmts, sizes)
    repeats = tuple(
        RepeatSummary(s.count, s.loc.line, _counts(s.body.stmts, sizes)) for s in g.body if isinstance(s, Repeat)
    )
    inputs: list[TensorInfo] = []
    outputs: list[TensorInfo] = []
    caches: list[TensorType] = []
    for stmt, rep in g.walk():
        if isinstance(stmt, Decl) and stmt.kind is DeclKind.INPUT:
            inputs.append(TensorInfo(stmt.value.name or "", stmt.value.type))
        elif isinstance(stmt, Decl) and stmt.kind is DeclKind.CACHE:
            caches.append(stmt.value.type)
        elif isinstance(stmt, Output):
            outputs += [TensorInfo(v.name or "", v.type, rep is not None) for v in stmt.values]
    total = top
    for layers in repeats:
        total = total + layers.total
    return Summary(
        model=g.name,
        mesh=g.mesh,
        dims=g.dims,
        sharded=g.is_sharded,
        top_level=top,
        repeats=repeats,
        total=total,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        kv_cache_bytes_per_token=_per_token(total.cache_bytes, caches, sizes),
    )


# --- helpers ------------------------------------------------------------------------------
def _counts(stmts: tuple[Stmt, ...], sizes: dict[str, int]) -> Counts:
    """Counts of the statements of one block (nested repeats are left to the caller)."""
    ops = params = cache = 0
    by_dtype: dict[DType, int] = {}
    for stmt in stmts:
        if isinstance(stmt, Op):
            ops += 1
        elif isinstance(stmt, Decl) and stmt.kind is not DeclKind.INPUT:
            t = stmt.value.type
            n = math.prod(sizes[d] for d in t.dims)
            if stmt.kind is DeclKind.PARAM:
                params += n
                by_dtype[t.dtype] = by_dtype.get(t.dtype, 0) + n * t.dtype.bytes
            else:
                cache += n * t.dtype.bytes
    return Counts(ops, params, _in_dtype_order(by_dtype), cache)


def _in_dtype_order(by_dtype: dict[DType, int]) -> tuple[tuple[DType, int], ...]:
    return tuple((d, by_dtype[d]) for d in DType if by_dtype.get(d))


def _per_token(cache_bytes: int, caches: list[TensorType], sizes: dict[str, int]) -> int | float | None:
    """Cache bytes per sequence per token of context, when every cache has dims B and S."""
    if not caches or not all(_BATCH_DIM in t.dims and _CONTEXT_DIM in t.dims for t in caches):
        return None
    tokens = sizes[_BATCH_DIM] * sizes[_CONTEXT_DIM]
    whole, rest = divmod(cache_bytes, tokens)
    return whole if rest == 0 else cache_bytes / tokens


def _stretches(top: int, per_layer: list[int], total: int) -> dict[str, object]:
    return {"top_level": top, "per_layer": per_layer, "total": total}


def _tensor_text(t: TensorInfo) -> str:
    return f"{t.name} : {t.type}" + ("  (per layer)" if t.per_layer else "")


def _number(x: int | float) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:,.2f}"


def _count_text(n: int) -> str:
    """``540.4 B (540,358,834,176)``; just ``528`` when the short form would say the same."""
    short = _human_count(n)
    return short if short == str(n) else f"{short} ({n:,})"


def _human_count(n: int) -> str:
    """``540.4 B`` (thousand K, million M, billion B, trillion T); small counts as they are."""
    for unit, scale in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return str(n)
