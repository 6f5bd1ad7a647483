"""Graph -> Graph transforms that are not passes: other sizes, weight dtype, mesh, canonical numbering.

Each one returns a new :class:`~shardc.ir.graph.Graph` built with :func:`dataclasses.replace` (so no
caller spells the graph's fields out) and checked by the IR verifier (:func:`verify_graph`), so a
transform can never hand on an ill-formed program.  :func:`rebuild` is the one walk that rewrites
every defined value and rewires its uses; the transforms that change values are built on it.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Mapping

from shardc.errors import ShardcError
from shardc.ir.graph import (
    Block,
    Carry,
    Decl,
    DeclKind,
    DType,
    Graph,
    Op,
    Operand,
    Output,
    Repeat,
    Stmt,
    TensorType,
    Trivia,
    Value,
    dtype_of,
)
from shardc.ir.mesh import Mesh
from shardc.ir.ops import result_dtype
from shardc.ir.verifier import verify_graph

__all__ = ["rebuild", "renumber", "with_mesh", "with_sizes", "with_weight_dtype"]


def rebuild(g: Graph, define: Callable[[Value, Stmt], Value]) -> tuple[Graph, dict[int, Value]]:
    """``g`` with every defined value replaced by ``define(value, stmt)`` and uses rewired.

    Values are visited in canonical order (the order the frontend numbers them: a repeat's carried
    arguments before its body, its results after).  For an op, ``stmt`` already has the rewired
    operands, so ``define`` can derive the result from them.  Returns the new graph (not verified:
    callers verify what they build) and the map old id -> new value.
    """
    values: dict[int, Value] = {}

    def add(v: Value, stmt: Stmt) -> Value:
        values[v.id] = define(v, stmt)
        return values[v.id]

    def use(o: Operand) -> Operand:
        return values[o.id] if isinstance(o, Value) else o

    def block(b: Block) -> Block:
        out: list[Stmt] = []
        for s in b:
            if isinstance(s, Decl):
                out.append(replace(s, value=add(s.value, s)))
            elif isinstance(s, Op):
                rewired = replace(s, operands=tuple(use(o) for o in s.operands))
                out.append(replace(rewired, result=add(s.result, rewired)))
            elif isinstance(s, Output):
                out.append(replace(s, values=tuple(values[v.id] for v in s.values)))
            else:
                inits = [values[c.init.id] for c in s.carries]
                args = [add(c.arg, s) for c in s.carries]
                body = block(s.body)
                carries = tuple(Carry(i, a, values[c.next.id], add(c.result, s))
                                for i, a, c in zip(inits, args, s.carries))
                out.append(replace(s, carries=carries, body=body))
        return Block(tuple(out))

    return replace(g, body=block(g.body)), values


def renumber(g: Graph) -> tuple[Graph, dict[int, int]]:
    """``g`` with value ids in canonical order (the order the frontend gives).

    Passes allocate ids as they go; renumbering makes ``parse(format(g)) == g`` hold for their
    output.  Returns the new graph and the map old id -> new id.
    """
    counter = iter(range(1 << 62))
    new, values = rebuild(g, lambda v, stmt: replace(v, id=next(counter)))
    return verify_graph(new), {old: v.id for old, v in values.items()}


def with_weight_dtype(g: Graph, dtype: DType | str) -> Graph:
    """``g`` with every ``param`` stored as ``dtype`` (``--weights int8``); op dtypes follow."""
    dtype = dtype_of(dtype)

    def define(v: Value, stmt: Stmt) -> Value:
        if isinstance(stmt, Decl) and stmt.kind is DeclKind.PARAM:
            return replace(v, type=TensorType(dtype, v.dims))
        if isinstance(stmt, Op):
            return replace(v, type=TensorType(result_dtype(stmt.kind, stmt.operands), v.dims))
        return v  # declarations of other kinds, and loop carries, keep their dtype

    return verify_graph(rebuild(g, define)[0])


def with_sizes(g: Graph, sizes: Mapping[str, int]) -> Graph:
    """``g`` with other dim sizes (dims the map lacks keep theirs)."""
    return verify_graph(replace(g, dims=tuple((d, sizes.get(d, n)) for d, n in g.dims)))


def with_mesh(g: Graph, mesh: Mesh, verified: bool = False) -> Graph:
    """``g`` on another mesh; every pin is re-checked against it (an error points at its statement).

    ``verified``: ``g`` is known to pass :func:`verify_graph` (the planner's programs, each made by
    :func:`with_sizes`), so only what depends on the mesh -- the layouts of declarations and op
    results -- is checked, not the whole program again (a program whose loop carries have layouts
    is verified again: the verifier is what checks those)."""
    carried_pins = False
    for stmt, _ in g.walk():
        values = [stmt.value] if isinstance(stmt, Decl) else [stmt.result] if isinstance(stmt, Op) else []
        if isinstance(stmt, Repeat):
            carried_pins |= any(v.layout is not None for c in stmt.carries for v in (c.arg, c.result))
        for v in values:
            if v.layout is not None:
                try:
                    v.layout.check(g.sizes, mesh, v.dims)
                except ShardcError as err:
                    raise ShardcError(err.message, g.source, stmt.loc, hint=err.hint) from None
    # The mesh line's comment described the old mesh: it goes with it.
    moved = replace(g, mesh=mesh, mesh_trivia=Trivia(g.mesh_trivia.before, None, g.mesh_trivia.blank))
    return moved if verified and not carried_pins else verify_graph(moved)
