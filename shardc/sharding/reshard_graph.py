"""The graph the reshard search walks: layouts as plain tuples, each one's collectives listed once.

:func:`shardc.sharding.reshard.reshard` is a uniform-cost search over layouts (its module
docstring gives the rules: which collectives are legal, their cost, the tie-break).  The
search asks, of every layout it settles, every collective legal there, the layout after it,
and its cost; that is the same question for every search on one mesh, dim sizes, frozen
partial axes and sliceable axes, so it is answered once, here, and kept (a :class:`Graph`).

A layout here is a :data:`Node`: one tuple of split axes per dim (the dims are the graph's),
then the frozenset of partial axes.  An edge is ``(cost, key, node)``: the cost times the
number of chips (an exact integer), the step's tie-break key (kind rank, axes, dim, from,
to; ``""`` for an attribute the kind has not), and the layout after it.  Only the path found
is turned back into :class:`~shardc.ir.layout.Layout` and
:class:`~shardc.ir.graph.CollectiveAttrs` objects (:meth:`Graph.replay`).
"""
from __future__ import annotations

import heapq
import itertools
import math
from typing import Iterator

from shardc.errors import ShardcError
from shardc.ir.graph import CollectiveAttrs, OpKind
from shardc.ir.layout import Layout
from shardc.ir.mesh import Mesh

__all__ = ["Graph", "Node", "PathSearch", "RANK"]

AG, RS, AR, A2A, SLICE = (
    OpKind.ALL_GATHER, OpKind.REDUCE_SCATTER, OpKind.ALL_REDUCE, OpKind.ALL_TO_ALL, OpKind.SLICE,
)
#: Tie-break between equally cheap sequences of equal length (first differing step decides).
RANK = {SLICE: 0, AR: 1, RS: 2, A2A: 3, AG: 4}
_KIND = {rank: kind for kind, rank in RANK.items()}

Node = tuple  # (axes of dim 0, ..., axes of dim n-1, partial axes)
Key = tuple[int, tuple[str, ...], str, str, str]
Edge = tuple[int, Key, Node]
Move = tuple[OpKind, CollectiveAttrs, Layout, Layout, int]  # kind, attrs, before, after, cost x chips


def node_of(layout: Layout) -> Node:
    return (*(held for _, held in layout.split), layout.partial)


def scaled_cost(kind: OpKind, k: int, in_bytes: int, out_bytes: int, chips: int) -> int:
    """The cost formula times ``chips``: an exact integer because ``k`` divides ``chips``."""
    if kind is SLICE:
        return 0
    per_byte = (k - 1) * (chips // k)
    if kind is AG:
        return per_byte * out_bytes
    if kind is AR:
        return 2 * per_byte * in_bytes
    return per_byte * in_bytes  # reduce_scatter, all_to_all


class Graph:
    """Every layout's legal collectives on one mesh and dim sizes (one-byte elements), never
    summing ``frozen`` partial axes and slicing only ``sliceable`` axes; built as asked."""

    def __init__(self, dims: tuple[str, ...], sizes: tuple[int, ...], mesh: Mesh, frozen: frozenset[str],
                 sliceable: frozenset[str]) -> None:
        self.dims, self.sizes, self.mesh = dims, sizes, mesh
        self.frozen, self.sliceable = frozen, sliceable
        self.axis = dict(mesh.axes)
        self.names = mesh.names
        self.chips = mesh.num_chips
        self._edges: dict[Node, list[Edge]] = {}
        self._groups: dict[tuple[str, ...], int] = {}

    def group(self, axes: tuple[str, ...]) -> int:
        """Chips in the group of ``axes`` (memoised: the same few groups recur)."""
        k = self._groups.get(axes)
        if k is None:
            k = self._groups[axes] = math.prod(self.axis[a] for a in axes)
        return k

    def edges(self, node: Node) -> list[Edge]:
        """The collectives legal on ``node`` whose result still divides, in any order (each path's
        label is unique, so the order they are tried in cannot change what the search finds)."""
        found = self._edges.get(node)
        if found is None:
            split, partial = node[:-1], node[-1]
            in_bytes = math.prod(n // self.group(held) for n, held in zip(self.sizes, split))
            found = self._edges[node] = [*self._reductions(split, partial, in_bytes),
                                         *self._slices(split, partial), *self._gathers(split, partial, in_bytes),
                                         *self._all_to_alls(split, partial, in_bytes)]
        return found

    def _appended(self, split: tuple[tuple[str, ...], ...], d: int, group: tuple[str, ...]) -> tuple | None:
        """``split`` with ``group`` appended to dim ``d``, or None when the dim no longer divides."""
        held = split[d] + group
        if self.sizes[d] % self.group(held):
            return None
        return (*split[:d], held, *split[d + 1:])

    def _reductions(self, split: tuple, partial: frozenset[str], in_bytes: int) -> Iterator[Edge]:
        """all_reduce and reduce_scatter over every group of the partial axes not frozen."""
        reducible = [a for a in self.names if a in partial and a not in self.frozen]  # mesh order
        for r in range(1, len(reducible) + 1):
            for group in itertools.combinations(reducible, r):
                k = self.group(group)
                yield (scaled_cost(AR, k, in_bytes, in_bytes, self.chips), (RANK[AR], group, "", "", ""),
                       (*split, partial - set(group)))
            for group in itertools.permutations(reducible, r):  # the order lands in the dim
                k = self.group(group)
                cost = scaled_cost(RS, k, in_bytes, in_bytes // k, self.chips)
                left = partial - set(group)
                for d, name in enumerate(self.dims):
                    new = self._appended(split, d, group)
                    if new is not None:
                        yield cost, (RANK[RS], group, name, "", ""), (*new, left)

    def _slices(self, split: tuple, partial: frozenset[str]) -> Iterator[Edge]:
        """slice of every ordered group of the idle sliceable axes onto every dim."""
        used = {a for held in split for a in held} | partial
        unused = [a for a in self.names if a not in used and a in self.sliceable]
        for r in range(1, len(unused) + 1):
            for group in itertools.permutations(unused, r):
                for d, name in enumerate(self.dims):
                    new = self._appended(split, d, group)
                    if new is not None:
                        yield 0, (RANK[SLICE], group, name, "", ""), (*new, partial)

    def _gathers(self, split: tuple, partial: frozenset[str], in_bytes: int) -> Iterator[Edge]:
        """all_gather of any suffix of each dim at once (not all empty), axes in layout order."""
        for cut in itertools.product(*(range(len(held) + 1) for held in split)):
            group = tuple(a for n, held in zip(cut, split) for a in held[len(held) - n:])
            if group:
                k = self.group(group)
                after = tuple(held[:len(held) - n] for n, held in zip(cut, split))
                yield (scaled_cost(AG, k, in_bytes, in_bytes * k, self.chips), (RANK[AG], group, "", "", ""),
                       (*after, partial))

    def _all_to_alls(self, split: tuple, partial: frozenset[str], in_bytes: int) -> Iterator[Edge]:
        """all_to_all of every non-empty suffix of each dim's axes to every other dim."""
        for s, held in enumerate(split):
            for n in range(1, len(held) + 1):
                group = held[len(held) - n:]
                cost = scaled_cost(A2A, self.group(group), in_bytes, in_bytes, self.chips)
                rest = (*split[:s], held[:len(held) - n], *split[s + 1:])
                for d, name in enumerate(self.dims):
                    if d != s:
                        new = self._appended(rest, d, group)
                        if new is not None:
                            yield cost, (RANK[A2A], group, "", self.dims[s], name), (*new, partial)

    def layout(self, node: Node) -> Layout:
        return Layout(tuple(zip(self.dims, node[:-1])), node[-1])

    def replay(self, src: Node, keys: tuple[Key, ...]) -> tuple[Move, ...]:
        """The moves of the path that takes ``keys`` from ``src``, as layouts and attributes."""
        out: list[Move] = []
        node = src
        for key in keys:
            cost, after = next((c, n) for c, k, n in self.edges(node) if k == key)
            rank, axes, dim, frm, to = key
            attrs = CollectiveAttrs(axes, dim=dim or None, src=frm or None, dst=to or None)
            out.append((_KIND[rank], attrs, self.layout(node), self.layout(after), cost))
            node = after
        return tuple(out)


class PathSearch:
    """Dijkstra from one layout over a :class:`Graph`, run lazily: each query resumes it until its
    target is settled (it settles layouts in the same fixed order whatever it is asked).

    Invariant: ``done`` maps every settled node to the keys of its least-label path; the heap
    holds tentative labels ``(cost, steps, keys, node)``, ``best`` the least tentative label per
    node.  Two entries never tie on the label: equal keys mean the same moves from the source.
    """

    def __init__(self, graph: Graph, src: Node) -> None:
        self.graph, self.src = graph, src
        self.done: dict[Node, tuple[Key, ...]] = {}
        self.best: dict[Node, tuple] = {src: (0, 0, ())}
        self.heap: list[tuple] = [(0, 0, (), src)]

    def keys_to(self, dst: Node) -> tuple[Key, ...]:
        done, best, heap, edges = self.done, self.best, self.heap, self.graph.edges
        while dst not in done:
            if not heap:  # cannot happen for valid layouts: gather all, then slice
                raise ShardcError("no sequence of collectives reaches "
                                  f"{self.graph.layout(dst).format(self.graph.mesh)}")
            cost, count, keys, node = heapq.heappop(heap)
            if node in done:
                continue
            done[node] = keys
            count += 1
            for step_cost, key, after in edges(node):
                if after in done:
                    continue
                label = (cost + step_cost, count, keys + (key,))
                held = best.get(after)
                if held is not None and label >= held:
                    continue
                best[after] = label
                heapq.heappush(heap, (*label, after))
        return done[dst]
