"""Sum chains: the sharding pass adds terms holding the same partial sums first.

A chain ``t1 + t2 + ... + tn`` lowers to nested binary adds whose inner links
are anonymous and used once.  Sharded link by link, ``x + o + f`` with ``o``
and ``f`` both pending partial sums over the same axes would complete each of
them with its own reduce-scatter; grouped as ``x + (o + f)`` it needs one (the
parallel block of the paper's §3.4).  :class:`SumChains` is the collaborator of
the pass (:class:`shardc.sharding.shard._Sharder`) that finds such chains and
reassociates them, only when that groups partial sums: :meth:`SumChains.plan`
returns the adds to shard, in order, and the pass shards them one by one.
"""
from __future__ import annotations

from typing import Callable

from shardc.ir.graph import Graph, Op, Operand, OpKind, TensorType, Value
from shardc.ir.layout import Layout
from shardc.ir.ops import result_dims, result_dtype

LayoutSoFar = Callable[[Operand], Layout | None]
"""The layout the pass has given an operand so far (None: a constant, or not placed yet)."""


class SumChains:
    """The sums of a source program, planned as a whole for the sharding pass.

    :meth:`plan` sees the pass only through the ``layout_so_far`` it is given, and
    returns every add of a chain, reassociated or not, for the pass to shard.
    """

    def __init__(self, g: Graph) -> None:
        self.sizes = g.sizes
        self.defs: dict[int, Op] = {op.result.id: op for op in g.ops()}
        self.uses: dict[int, int] = g.use_counts()
        self.added = {v.id for op in g.ops() if op.kind is OpKind.ADD for v in op.inputs}  # operands of '+'
        self.synthetic = 0  # ids of ops the pass adds to the source program count down from -1

    def is_chain_link(self, op: Op) -> bool:
        """An anonymous ``+`` whose only use is another ``+`` (an inner link of ``a + b + c``)."""
        if op.kind is not OpKind.ADD or op.result.name is not None or op.result.layout is not None:
            return False
        return self.uses.get(op.result.id, 0) == 1 and op.result.id in self.added

    def is_chain_root(self, op: Op) -> bool:
        """A ``+`` whose operands include chain links: the sum :meth:`shard` shards as a whole."""
        return op.kind is OpKind.ADD and self.leaves(op) != list(op.operands)

    def leaves(self, op: Op) -> list[Operand]:
        out: list[Operand] = []
        for o in op.operands:
            if isinstance(o, Value) and o.id in self.defs and self.is_chain_link(self.defs[o.id]):
                out.extend(self.leaves(self.defs[o.id]))
            else:
                out.append(o)
        return out

    def plan(self, root: Op, layout_so_far: LayoutSoFar) -> list[Op]:
        """The adds computing ``t1 + t2 + ... + tn``, terms with the same pending partial sums first.

        ``x + o + f`` with ``o`` and ``f`` both ``BLE_x (partialsum-yz)`` becomes
        ``x + (o + f)``: one reduce-scatter instead of two (the parallel block of
        the paper's §3.4).  Addition is reassociated only when that groups partial
        sums; otherwise the chain is sharded as written.
        """
        leaves = self.leaves(root)
        layouts = [layout_so_far(v) for v in leaves]
        groups: dict[Layout, list[Operand]] = {}
        terms: list[Operand | Layout] = []
        for leaf, layout in zip(leaves, layouts, strict=True):
            if layout is not None and layout.partial:
                if layout not in groups:
                    groups[layout] = []
                    terms.append(layout)
                groups[layout].append(leaf)
            else:
                terms.append(leaf)
        if len(terms) == 1 or all(len(members) < 2 for members in groups.values()):
            # Nothing to regroup (one group is the whole sum: summing it as written is the same).
            return [*self.links_in_order(root), root]
        out: list[Op] = []
        summed: list[Operand] = []
        for term in terms:
            if isinstance(term, Layout):
                members = groups[term]
                acc = members[0]
                for m in members[1:]:
                    acc = self.synthetic_add(acc, m, root, out)
                summed.append(acc)
            else:
                summed.append(term)
        acc = summed[0]
        for term in summed[1:-1]:
            acc = self.synthetic_add(acc, term, root, out)
        out.append(Op(OpKind.ADD, root.result, (acc, summed[-1]), root.attrs, root.loc, root.trivia))
        return out

    def links_in_order(self, root: Op) -> list[Op]:
        links: list[Op] = []
        for o in root.operands:
            if isinstance(o, Value) and o.id in self.defs and self.is_chain_link(self.defs[o.id]):
                links.extend(self.links_in_order(self.defs[o.id]))
                links.append(self.defs[o.id])
        return links

    def synthetic_add(self, a: Operand, b: Operand, root: Op, out: list[Op]) -> Value:
        """Append ``a + b`` (a new anonymous add, its id counting down from -1) to ``out``."""
        self.synthetic -= 1
        dims = result_dims(OpKind.ADD, (a, b), root.attrs, self.sizes)
        result = Value(self.synthetic, None, TensorType(result_dtype(OpKind.ADD, (a, b)), dims))
        out.append(Op(OpKind.ADD, result, (a, b), root.attrs, root.loc))
        return result
