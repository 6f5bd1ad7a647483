"""Sharded programs: what one is checked against, and how its collectives are recorded.

A sharded program is a :class:`~shardc.ir.graph.Graph` in which every value has a
layout and every collective is an op.  :func:`verify_sharded` checks one: the
IR is valid, every annotation is what its op's rule (:mod:`shardc.sharding.rules`)
derives from its operands' layouts, outputs hold complete values and a
loop-carried value keeps one layout.  Each collective is described by a
:class:`CollectiveRecord` -- what it moves, how many bytes each chip sends, how
often it runs and why it is there -- including the small statistics all-reduce
inside a norm or softmax over a split dim (:mod:`shardc.sharding.stats`).

The sharded graph is the one source of the records: :func:`collectives_of`
derives them from it.  The sharding pass (:mod:`shardc.sharding.shard`) adds only the
reason of each collective it inserted and returns a :class:`ShardResult`; a
program that arrives sharded already (printed sharded text, parsed back) gets
the same records with reasons saying they were written in it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping

from shardc.errors import ShardcError
from shardc.ir.graph import CollectiveAttrs, Decl, Graph, Op, OpKind, Output
from shardc.ir.layout import Layout
from shardc.ir.mesh import Mesh
from shardc.ir.verifier import verify_graph
from shardc.language.printer import format_graph
from shardc.sharding.presets import Strategy
from shardc.sharding.reshard import collective_bytes
from shardc.sharding.rules import infer, operand_layouts
from shardc.sharding.search import Method
from shardc.sharding.stats import describe_stats, op_stats


@dataclass(frozen=True, kw_only=True)
class CollectiveRecord:
    """One collective of a sharded program, and why it is there (built by :func:`collectives_of`)."""

    value: str  # the name of its result in the printed program
    kind: OpKind
    axes: tuple[str, ...]
    dim: str | None
    src_dim: str | None
    dst_dim: str | None
    before: Layout
    after: Layout
    bytes_per_chip: float  # bytes each chip sends, per execution
    count: int  # executions per program run (a repeat body's collectives run once per layer)
    repeat: int | None  # index of the repeat block it sits in
    line: int  # source line of the statement it serves (0 if none)
    reason: str
    implicit: bool = False  # statistics all-reduce inside a norm or softmax
    alternative: str = ""  # what the layout search's choice beat, and by how much (``--explain``)
    feeds: str = ""  # the ops its result flows into, past further collectives: "einsum -> q, einsum -> k"

    @property
    def why(self) -> str:
        """The reason and what it feeds, as the ``shardc compile`` table prints them."""
        return f"{self.reason}; feeds {self.feeds}" if self.feeds else self.reason

    mesh: Mesh | None = field(default=None, compare=False, repr=False)  # the program's, to print layouts

    def to_json(self, mesh: Mesh | None = None) -> dict[str, object]:
        """The record as JSON (stable keys, strings and numbers only); layouts printed on ``mesh``,
        by default the mesh of the program the record came from."""
        mesh = mesh or self.mesh
        if mesh is None:
            raise ShardcError("this record has no mesh to print its layouts on", hint="pass one: to_json(mesh)")
        return {
            "kind": self.kind.value,
            "axes": "".join(self.axes),
            "dim": self.dim if self.kind is not OpKind.ALL_TO_ALL else f"{self.src_dim}->{self.dst_dim}",
            "bytes_per_chip": self.bytes_per_chip,
            "count": self.count,
            "reason": self.reason,
            "value": self.value,
            "from": self.before.format(mesh),
            "to": self.after.format(mesh),
            "line": self.line,
            "repeat": self.repeat,
            "implicit": self.implicit,
            "alternative": self.alternative or None,
            "feeds": self.feeds or None,
        }


@dataclass(frozen=True)
class ShardResult:
    """The sharded program, the strategy that made it, and its collectives.

    ``method`` says how the pass chose layouts and ``seconds`` is the estimated time per
    program run it minimised (both None for a program that arrived sharded).
    """

    graph: Graph
    strategy: Strategy | None
    collectives: tuple[CollectiveRecord, ...] = field(default=())
    method: Method | None = None
    seconds: float | None = None

    @property
    def collective_ops(self) -> tuple[CollectiveRecord, ...]:
        """The records of the collective ops of ``graph``, in program order: as many as
        ``[op for op in graph.ops() if op.kind.is_collective]`` (slices included)."""
        return tuple(c for c in self.collectives if not c.implicit)

    @property
    def statistics(self) -> tuple[CollectiveRecord, ...]:
        """The statistics all-reduces inside norms and softmaxes over a split dim (``implicit``):
        collectives the program runs that are part of an op, not ops of their own."""
        return tuple(c for c in self.collectives if c.implicit)

    def to_json(self) -> dict[str, object]:
        """The result as JSON with stable keys (strings, numbers, lists and objects only)."""
        mesh = self.graph.mesh
        assert mesh is not None
        s = self.strategy
        return {
            "mesh": mesh.spec(),
            "ffn": s.ffn.value if s else None,
            "attention": s.attention.value if s else None,
            "preset": dict(s.describe(self.graph.sizes)) if s else None,
            "method": self.method.value if self.method else None,
            "seconds": self.seconds,
            "program": format_graph(self.graph),
            "collectives": [c.to_json(mesh) for c in self.collectives],
        }


def relocated(result: ShardResult, located: Graph) -> ShardResult:
    """``result`` with ``located`` as its graph and every record's ``line`` taken from it.

    ``located`` is the sharded program read back from the text it was printed as (an equal
    graph whose locations are the printed lines), so the records cite the lines a reader sees
    rather than those of the program the pass read.
    """
    if located != result.graph:
        raise ValueError("the located graph is not the result's graph")
    lines = []
    for op in located.ops():  # the order collectives_of makes records in
        if located.mesh is not None and op_stats(op, located.sizes, located.mesh) is not None:
            lines.append(op.loc.line)
        if op.kind.is_collective:
            lines.append(op.loc.line)
    assert len(lines) == len(result.collectives)
    return replace(result, graph=located,
                   collectives=tuple(replace(c, line=n) for c, n in zip(result.collectives, lines)))


def verify_sharded(g: Graph) -> Graph:
    """Check a sharded program: the IR is valid and every layout is what its op's rule derives.

    Declarations and outputs hold complete values, and a loop-carried value keeps one layout.
    """
    verify_graph(g)
    if not g.is_sharded:
        # The usual mistake from Python: an unsharded graph handed to emulate, verify or estimate.
        raise ShardcError("the program is not sharded (not every value has a layout, or it has no mesh)",
                          g.source, hint="shard it first: shardc.shard(g, mesh), or shardc compile FILE -o OUT")
    assert g.mesh is not None
    for stmt, _ in g.walk():
        if isinstance(stmt, Decl):
            _check_decl(stmt, g, g.mesh)
        elif isinstance(stmt, Op):
            _check_op(stmt, g, g.mesh)
        elif isinstance(stmt, Output):
            _check_output(stmt, g, g.mesh)
    # Loop carries last: an annotation that is wrong inside the body is reported at its own line.
    for rep in g.repeats:
        for c in rep.carries:
            if len({c.init.layout, c.arg.layout, c.next.layout}) != 1:
                raise ShardcError(
                    f"loop-carried '{c.arg.name}' enters the repeat as "
                    f"{c.init.layout.format(g.mesh) if c.init.layout else '?'} but leaves a layer as "
                    f"{c.next.layout.format(g.mesh) if c.next.layout else '?'}", g.source, rep.loc)
    return g


def _check_decl(d: Decl, g: Graph, mesh: Mesh) -> None:
    layout = d.value.layout
    if layout is None:
        raise ShardcError(f"'{d.value.name}' has no layout", g.source, d.loc)
    if layout.partial:  # the data a declaration names is whole: there is nothing to sum it with
        raise ShardcError(
            f"{d.kind} '{d.value.name}' is declared holding pending partial sums ({layout.format(mesh)}); "
            f"a declaration holds complete values", g.source, d.loc,
            hint=f"declare it {layout.with_partial(frozenset()).format(mesh)}: partial sums arise only from "
                 "ops of the program (einsum, sum)")


def _check_op(op: Op, g: Graph, mesh: Mesh) -> None:
    if op.result.layout is None:
        raise ShardcError(f"'{op.result.name}' has no layout", g.source, op.loc)
    try:
        got = infer(op.kind, op.attrs, op.operands, operand_layouts(op.operands), op.result.dims, mesh,
                    g.sizes).layout
    except ShardcError as err:
        raise ShardcError(err.message, g.source, op.loc, hint=err.hint) from None
    if got != op.result.layout:
        raise ShardcError(
            f"'{op.result.name}' is annotated {op.result.layout.format(mesh)} but its operands' "
            f"layouts give {got.format(mesh)}", g.source, op.loc)


def _check_output(out: Output, g: Graph, mesh: Mesh) -> None:
    for v in out.values:
        if v.layout is not None and v.layout.partial:
            raise ShardcError(
                f"output '{v.name}' holds pending partial sums ({v.layout.format(mesh)}); an output "
                "holds complete values: reduce them first (all_reduce or reduce_scatter)",
                g.source, out.loc)


def collectives_of(g: Graph, reasons: Mapping[int, str] | None = None,
                   alternatives: Mapping[int, str] | None = None) -> tuple[CollectiveRecord, ...]:
    """The collectives of the sharded program ``g``, in program order, derived from it alone.

    One record per collective op and one per statistics all-reduce inside a norm or
    softmax over a split dim (:mod:`shardc.sharding.stats`); everything in a record but
    its reason is read off the graph.  ``reasons`` maps the result id of a collective op
    (or of the norm or softmax, for its statistics) to why it is there -- what the
    sharding pass knows.  A collective without one is "written in the sharded program";
    statistics without one say what they are.
    """
    assert g.mesh is not None
    reasons = reasons or {}
    alternatives = alternatives or {}
    feeds = _feeds(g)
    out = []
    repeats = g.repeats
    for stmt, rep in g.walk():
        if not isinstance(stmt, Op):
            continue
        count, repeat, line = (rep.count if rep else 1), (repeats.index(rep) if rep else None), stmt.loc.line
        result = stmt.result
        stats = op_stats(stmt, g.sizes, g.mesh)
        if stats is not None:
            out.append(CollectiveRecord(
                value=result.name or "", kind=OpKind.ALL_REDUCE, axes=stats.axes, dim=None, src_dim=None,
                dst_dim=None, before=stats.layout, after=stats.layout, bytes_per_chip=stats.bytes_per_chip,
                count=count, repeat=repeat, line=line, implicit=True, mesh=g.mesh,
                reason=reasons.get(result.id, describe_stats(stmt.kind, stats.over, stats.axes))))
        if stmt.kind.is_collective:
            (operand,) = stmt.inputs
            a = stmt.attrs
            assert isinstance(a, CollectiveAttrs) and operand.layout is not None and result.layout is not None
            out.append(CollectiveRecord(
                value=result.name or "", kind=stmt.kind, axes=a.axes, dim=a.dim, src_dim=a.src, dst_dim=a.dst,
                before=operand.layout, after=result.layout,
                bytes_per_chip=collective_bytes(stmt.kind, a, operand.layout, result.layout, g.sizes, g.mesh,
                                                operand.dtype.bytes),
                count=count, repeat=repeat, line=line,
                reason=reasons.get(result.id, "written in the sharded program"), feeds=feeds.get(result.id, ""),
                mesh=g.mesh,
                alternative=alternatives.get(result.id, "")))
    return tuple(out)


def _feeds(g: Graph) -> dict[int, str]:
    """For each collective's result id, the ops it feeds, in the printed program's names
    (``einsum -> q, einsum -> kn``): the first ops past any further collectives that use it."""
    users: dict[int, list[Op]] = {}
    for op in g.ops():
        for v in dict.fromkeys(op.inputs):
            users.setdefault(v.id, []).append(op)

    def reached(vid: int, seen: set[int]) -> list[Op]:
        found: list[Op] = []
        for op in users.get(vid, []):
            if op.kind.is_collective:
                if op.result.id not in seen:
                    seen.add(op.result.id)
                    found += reached(op.result.id, seen)
            else:
                found.append(op)
        return found

    out = {}
    for op in g.ops():
        if op.kind.is_collective:
            targets = dict.fromkeys(f"{u.kind} -> {u.result.name or 'a temporary'}"
                                    for u in reached(op.result.id, set()))
            if targets:
                out[op.result.id] = ", ".join(targets)
    return out
