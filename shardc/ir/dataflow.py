"""Graph questions about a program, through a networkx view of its dataflow.

:func:`dataflow` gives a :class:`networkx.DiGraph` whose nodes are value ids
(attributes: ``name``, ``type``, ``stmt``) and whose edges run from an operand
to the value computed from it, with loop carries as edges init -> arg and
next -> result.  The body of a repeat appears once, like the IR itself.
"""
from __future__ import annotations

import networkx as nx

from shardc.ir.graph import Decl, Graph, Op, Output, Repeat


def dataflow(g: Graph) -> nx.DiGraph:
    """The value-level dataflow graph of ``g``."""
    dag = nx.DiGraph()
    for stmt, _ in g.walk():
        if isinstance(stmt, Decl):
            v = stmt.value
            dag.add_node(v.id, name=v.name, type=v.type, stmt=stmt)
        elif isinstance(stmt, Op):
            v = stmt.result
            dag.add_node(v.id, name=v.name, type=v.type, stmt=stmt)
            for o in stmt.inputs:
                dag.add_edge(o.id, v.id)
        elif isinstance(stmt, Repeat):
            for c in stmt.carries:
                dag.add_node(c.arg.id, name=c.arg.name, type=c.arg.type, stmt=stmt)
                dag.add_edge(c.init.id, c.arg.id)
    for stmt, _ in g.walk():
        if isinstance(stmt, Repeat):
            for c in stmt.carries:
                dag.add_node(c.result.id, name=c.result.name, type=c.result.type, stmt=stmt)
                dag.add_edge(c.next.id, c.result.id)
    return dag


def unused(g: Graph) -> list[Decl | Op]:
    """Declarations and named assignments that no ``output`` depends on, in program order.

    ``shardc check`` warns about them: a weight nobody reads still takes memory on every chip, and a
    value nobody reads is usually a typo in a later statement.  Loop carries count as uses (a value
    carried into the next layer feeds that layer's outputs).
    """
    dag = dataflow(g)
    live: set[int] = set()
    for stmt, _ in g.walk():
        if isinstance(stmt, Output):
            for v in stmt.values:
                live.add(v.id)
                live |= nx.ancestors(dag, v.id)
    found: list[Decl | Op] = []
    for stmt, _ in g.walk():
        if isinstance(stmt, Decl) and stmt.value.id not in live:
            found.append(stmt)
        elif isinstance(stmt, Op) and stmt.result.name and stmt.result.id not in live:
            found.append(stmt)
    return found
