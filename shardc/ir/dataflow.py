"""Graph questions about a program, through a networkx view of its dataflow.

:func:`dataflow` gives a :class:`networkx.DiGraph` whose nodes are value ids
(attributes: ``name``, ``type``, ``stmt``) and whose edges run from an operand
to the value computed from it, with loop carries as edges init -> arg and
next -> result.  The body of a repeat appears once, like the IR itself.
"""
from __future__ import annotations

import networkx as nx

from shardc.ir.graph import Decl, Graph, Op, Output, Repeat, Value


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


def topological_order(g: Graph) -> list[int]:
    """Value ids so that every value comes after the values it is computed from."""
    return list(nx.lexicographical_topological_sort(dataflow(g)))


def users(g: Graph, value: Value) -> list[int]:
    """Ids of the values computed directly from ``value``."""
    return sorted(dataflow(g).successors(value.id))


def output_ids(g: Graph) -> set[int]:
    """Ids of every value named by an ``output`` statement."""
    return {v.id for stmt, _ in g.walk() if isinstance(stmt, Output) for v in stmt.values}


def dead_values(g: Graph) -> list[int]:
    """Ids of values that no output depends on (declarations included)."""
    dag = dataflow(g)
    live: set[int] = set()
    for out in output_ids(g):
        live.add(out)
        live |= nx.ancestors(dag, out)
    # A carried value feeds later layers, whose outputs are the same nodes.
    return sorted(n for n in dag.nodes if n not in live)
