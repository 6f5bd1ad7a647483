"""The reshard search over :mod:`shardc.sharding.reshard_graph` (layouts as tuples, each layout's
collectives built once per mesh and sizes) finds exactly the steps -- the same collectives, layouts,
bytes and tie-breaks -- as the plain search it replaced, kept here as the oracle: a Dijkstra that
builds each move as a Layout and CollectiveAttrs and applies it, on random layouts and meshes."""
from __future__ import annotations

import heapq
import itertools
import math
import random

import pytest

from shardc.ir.graph import CollectiveAttrs, OpKind
from shardc.ir.layout import Layout
from shardc.ir.mesh import Mesh
from shardc.sharding import reshard as rs
from shardc.sharding.reshard import Step, reshard

AG, RS, AR, A2A, SLICE = (
    OpKind.ALL_GATHER, OpKind.REDUCE_SCATTER, OpKind.ALL_REDUCE, OpKind.ALL_TO_ALL, OpKind.SLICE,
)
_RANK = {SLICE: 0, AR: 1, RS: 2, A2A: 3, AG: 4}


# --- the plain search (the implementation before reshard_graph), kept as the oracle -------------
def _apply(layout: Layout, kind: OpKind, attrs: CollectiveAttrs) -> Layout:
    gone = set(attrs.axes)
    target = attrs.dst if kind is A2A else attrs.dim
    split = []
    for d, held in layout.split:
        if kind is AG or (kind is A2A and d == attrs.src):
            held = tuple(a for a in held if a not in gone)
        if kind in (RS, SLICE, A2A) and d == target:
            held = held + tuple(attrs.axes)
        split.append((d, held))
    partial = layout.partial - gone if kind in (AR, RS) else layout.partial
    return Layout(tuple(split), partial)


def _cost(kind: OpKind, k: int, in_bytes: int, out_bytes: int, chips: int) -> int:
    if kind is SLICE:
        return 0
    per_byte = (k - 1) * (chips // k)
    if kind is AG:
        return per_byte * out_bytes
    if kind is AR:
        return 2 * per_byte * in_bytes
    return per_byte * in_bytes


def _moves(layout, frozen, sliceable, names):
    dims = layout.dims
    reducible = [a for a in names if a in layout.partial and a not in frozen]
    unused = [a for a in names if a not in layout.used_axes and a in sliceable]
    for r in range(1, len(reducible) + 1):
        for group in itertools.combinations(reducible, r):
            yield AR, CollectiveAttrs(group)
        for group in itertools.permutations(reducible, r):
            for d in dims:
                yield RS, CollectiveAttrs(group, dim=d)
    for r in range(1, len(unused) + 1):
        for group in itertools.permutations(unused, r):
            for d in dims:
                yield SLICE, CollectiveAttrs(group, dim=d)
    for cut in itertools.product(*(range(len(held) + 1) for _, held in layout.split)):
        group = tuple(a for n, (_, held) in zip(cut, layout.split) for a in held[len(held) - n:])
        if group:
            yield AG, CollectiveAttrs(group)
    for s, held in layout.split:
        for n in range(1, len(held) + 1):
            for d in dims:
                if d != s:
                    yield A2A, CollectiveAttrs(held[len(held) - n:], src=s, dst=d)


def plain_reshard(src: Layout, dst: Layout, sizes: dict[str, int], mesh: Mesh, itemsize: int) -> tuple[Step, ...]:
    """The plain search at the exact sizes, each move built and applied as objects."""
    frozen, sliceable = dst.partial, src.used_axes | dst.split_axes
    axis, chips = dict(mesh.axes), mesh.num_chips

    def group(axes):
        return math.prod(axis[a] for a in axes)

    done: dict[Layout, tuple] = {}
    best = {src: (0, 0, ())}
    heap = [(0, 0, (), src, ())]
    while dst not in done:
        cost, count, keys, layout, path = heapq.heappop(heap)
        if layout in done:
            continue
        done[layout] = path
        in_bytes = math.prod(sizes[d] // group(held) for d, held in layout.split) * itemsize
        for kind, attrs in _moves(layout, frozen, sliceable, mesh.names):
            after = _apply(layout, kind, attrs)
            if after in done:
                continue
            if kind not in (AG, AR):
                dim = attrs.dst if kind is A2A else attrs.dim
                if sizes[dim] % group(after.axes_of(dim)):
                    continue
            k = group(attrs.axes)
            out_bytes = in_bytes * k if kind is AG else in_bytes // k if kind in (RS, SLICE) else in_bytes
            step_cost = _cost(kind, k, in_bytes, out_bytes, chips)
            key = (_RANK[kind], attrs.axes, attrs.dim or "", attrs.src or "", attrs.dst or "")
            label = (cost + step_cost, count + 1, keys + (key,))
            if label >= best.get(after, (math.inf,)):
                continue
            best[after] = label
            heapq.heappush(heap, (*label, after, path + (Step(kind, attrs, layout, after, step_cost / chips),)))
    return done[dst]


# --- random layouts -------------------------------------------------------------------------------
MESHES = ["2x2x2", "2x4", "4x4", "4x2x2", "8x4x2", "4x4x4", "x=2,z=4", "8x8"]
DIMS = ("B", "E", "F", "H")


def random_layout(rng: random.Random, mesh: Mesh, sizes: dict[str, int], dims: tuple[str, ...],
                  partial_ok: bool = True) -> Layout:
    """A valid layout: each axis splits a random dim, holds a partial sum or is idle."""
    while True:
        split: dict[str, list[str]] = {d: [] for d in dims}
        partial = set()
        names = list(mesh.names)
        rng.shuffle(names)
        for a in names:
            where = rng.choice([*dims, None, "+"] if partial_ok else [*dims, None])
            if where == "+":
                partial.add(a)
            elif where is not None:
                split[where].append(a)
        layout = Layout(tuple((d, tuple(split[d])) for d in dims), frozenset(partial))
        if all(sizes[d] % mesh.group_size(axes) == 0 for d, axes in layout.split):
            return layout


@pytest.mark.parametrize("spec", MESHES)
def test_same_steps_as_the_plain_search(spec):
    rng = random.Random(spec)
    mesh = Mesh.parse(spec)
    pairs = 0
    for _ in range(25):
        # Sizes that some groups of axes divide and some do not (divisibility prunes moves).
        sizes = {d: rng.choice([1, 2, 3, 4, 6, 8, 12, 16, 48, 64, 96, 128]) * rng.choice([1, 1, 2, 5])
                 for d in DIMS}
        dims = tuple(rng.sample(DIMS, rng.randint(1, 4)))
        for _ in range(12):
            src = random_layout(rng, mesh, sizes, dims)
            dst = random_layout(rng, mesh, sizes, dims, partial_ok=False)
            if rng.random() < 0.3:  # keep some of src's partial sums pending
                keep = frozenset(a for a in src.partial if rng.random() < 0.5)
                if not keep & dst.split_axes:
                    dst = Layout(dst.split, keep)
            itemsize = rng.choice([1, 2, 4])
            got = reshard(src, dst, sizes, mesh, itemsize=itemsize)
            want = plain_reshard(src, dst, sizes, mesh, itemsize)
            assert [(s.kind, s.attrs, s.before, s.after) for s in got] == \
                [(s.kind, s.attrs, s.before, s.after) for s in want], (src, dst, sizes)
            assert [s.bytes_per_chip for s in got] == pytest.approx([s.bytes_per_chip for s in want], rel=1e-12)
            pairs += 1
    assert pairs == 300


def test_a_cold_cache_finds_the_same_steps():
    """The graphs and searches are shared between queries: asked again on cleared caches, in another
    order, every answer is the same."""
    rng = random.Random(7)
    mesh = Mesh.parse("4x2x2")
    sizes = {"B": 8, "E": 16, "F": 12, "H": 4}
    queries = [(random_layout(rng, mesh, sizes, DIMS), random_layout(rng, mesh, sizes, DIMS, False))
               for _ in range(60)]
    first = [reshard(s, d, sizes, mesh) for s, d in queries]
    for cache in (rs._scaled, rs._reshard, rs._search, rs._graph):
        cache.cache_clear()
    again = [reshard(s, d, sizes, mesh) for s, d in reversed(queries)]
    assert again[::-1] == first
