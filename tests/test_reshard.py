"""Tests of shardc.sharding.reshard: each collective's rules and cost, the paper's sequences,
and reshard against an independent brute-force search over every pair of layouts."""
from __future__ import annotations

import heapq
import itertools
import math
from fractions import Fraction

import pytest

from shardc.errors import ShardcError
from shardc.ir.graph import COLLECTIVES, CollectiveAttrs, OpKind
from shardc.ir.layout import Layout
from shardc.ir.mesh import Mesh
from shardc.sharding.reshard import Step, apply_collective, collective_bytes, describe, reshard

AG, RS, AR, A2A, SLICE = (
    OpKind.ALL_GATHER, OpKind.REDUCE_SCATTER, OpKind.ALL_REDUCE, OpKind.ALL_TO_ALL, OpKind.SLICE,
)
M222 = Mesh.parse("2x2x2")
M444 = Mesh.parse("4x4x4")
SIZES = {"B": 64, "L": 8, "E": 64, "F": 256, "H": 64, "D": 8}


def lay(text: str, partial: str = "") -> Layout:
    return Layout.parse(text, f"(partialsum-{partial})" if partial else None)


def ca(axes: str, dim: str | None = None, src: str | None = None, dst: str | None = None):
    return CollectiveAttrs(tuple(axes), dim, src, dst)


def apply(text, kind, attrs, partial="", mesh=M222, sizes=None):
    return apply_collective(lay(text, partial), kind, attrs, mesh, sizes)


def shape(steps):
    return [describe(s.kind, s.attrs) for s in steps]


def raises(match: str):
    return pytest.raises(ShardcError, match=match)


# --- all_gather ------------------------------------------------------------------------
def test_all_gather_removes_a_suffix():
    assert apply("BLE_xyz", AG, ca("z")) == lay("BLE_xy")
    assert apply("BLE_xyz", AG, ca("yz")) == lay("BLE_x")
    assert apply("BLE_xyz", AG, ca("xyz")) == lay("BLE")
    assert apply("BLE_xyz", AG, ca("z"), sizes=SIZES) == lay("BLE_xy")


def test_all_gather_may_span_dims():
    assert apply("E_xF_yz", AG, ca("xz")) == lay("EF_y")
    assert apply("B_xLE_yz", AG, ca("xyz")) == lay("BLE")


def test_all_gather_suffix_rule():
    with raises(r"all_gather\(over=y\) on BLE_xyz: y must be the most-minor axes of dim E"):
        apply("BLE_xyz", AG, ca("y"))
    with raises("most-minor"):
        apply("BLE_xyz", AG, ca("xy"))
    with raises("most-minor"):  # the layout holds yz, not zy
        apply("BLE_xyz", AG, ca("zy"))


def test_all_gather_partial_and_unused_axes():
    with raises("axis 'y' holds a pending partial sum"):
        apply("BLE_x", AG, ca("y"), partial="y")
    with raises("axis 'z' splits no dim"):
        apply("BLE_x", AG, ca("z"))


def test_bad_axes():
    with raises("has no axis 'w'"):
        apply("BLE_x", AG, ca("w"))
    with raises("appears twice"):
        apply("BLE_xy", AG, ca("yy"))
    with raises("names no mesh axes"):
        apply("BLE_x", AG, ca(""))
    with raises("not a collective"):
        apply("BLE_x", OpKind.EINSUM, ca("x"))


# --- reduce_scatter / all_reduce -------------------------------------------------------
def test_reduce_scatter_appends_in_the_given_order():
    assert apply("BLF_yz", RS, ca("x", dim="F"), partial="x") == lay("BLF_yzx")
    assert apply("BLE_x", RS, ca("zy", dim="E"), partial="yz") == lay("BLE_xzy")
    assert apply("BLE", RS, ca("x", dim="B"), partial="xyz") == lay("B_xLE", "yz")


def test_reduce_scatter_partial_rule():
    with raises("axis 'y' holds no pending partial sum"):
        apply("BLE_x", RS, ca("y", dim="E"), partial="z")
    with raises("has no dim F"):
        apply("BLE", RS, ca("x", dim="F"), partial="x")


def test_reduce_scatter_divisibility_names_dim_size_and_axes():
    with raises(r"dim E of size 6 is not divisible by the 4 chips of x·y") as err:
        apply("BLE_x", RS, ca("y", dim="E"), partial="y", sizes={"B": 2, "L": 2, "E": 6})
    assert err.value.message.startswith("reduce_scatter(over=y, dim=E) on BLE_x (partialsum-y)")
    assert err.value.hint and "--set E=" in err.value.hint


def test_all_reduce():
    assert apply("BLE_yz", AR, ca("x"), partial="x") == lay("BLE_yz")
    assert apply("BLE", AR, ca("y"), partial="xy") == lay("BLE", "x")
    with raises("axis 'y' holds no pending partial sum"):
        apply("BLE_y", AR, ca("y"), partial="x")


# --- all_to_all / slice ----------------------------------------------------------------
def test_all_to_all_moves_a_suffix():
    assert apply("BLH_xD", A2A, ca("x", src="H", dst="B")) == lay("B_xLHD")
    assert apply("BLH_yzxD", A2A, ca("yzx", src="H", dst="B")) == lay("B_yzxLHD")
    assert apply("B_zLH_xyD", A2A, ca("y", src="H", dst="B")) == lay("B_zyLH_xD")


def test_all_to_all_rules():
    with raises("x must be the most-minor axes of dim B, which is split over xy"):
        apply("B_xyLHD", A2A, ca("x", src="B", dst="H"))
    with raises("most-minor"):
        apply("B_xyLHD", A2A, ca("yx", src="B", dst="H"))
    with raises("same dim"):
        apply("B_xLHD", A2A, ca("x", src="B", dst="B"))
    with raises("has no dim Q"):
        apply("B_xLHD", A2A, ca("x", src="B", dst="Q"))
    with raises("pending partial sum"):
        apply("BLHD", A2A, ca("x", src="B", dst="H"), partial="x")
    with raises("dim H of size 2 is not divisible by the 4 chips of y·x"):
        apply("B_xLH_yD", A2A, ca("x", src="B", dst="H"), sizes={"B": 4, "L": 1, "H": 2, "D": 1})


def test_slice():
    assert apply("BLE", SLICE, ca("yz", dim="E")) == lay("BLE_yz")
    assert apply("BLE_x", SLICE, ca("z", dim="E")) == lay("BLE_xz")
    with raises("axis 'x' already splits dim E"):
        apply("BLE_x", SLICE, ca("x", dim="B"))
    with raises("axis 'y' holds a pending partial sum"):
        apply("BLE", SLICE, ca("y", dim="B"), partial="y")
    with raises("dim L of size 1 is not divisible by the 2 chips of z"):
        apply("BLE", SLICE, ca("z", dim="L"), sizes={"B": 2, "L": 1, "E": 2})


# --- bytes -----------------------------------------------------------------------------
def test_one_d_weight_stationary_bytes():
    """The paper's 1D-WS: all_gather(xyz) of BLE_xyz in bf16 sends (n-1)/n * 2*B*L*E bytes."""
    B, L, E, n = SIZES["B"], SIZES["L"], SIZES["E"], 64
    expected = (n - 1) / n * 2 * B * L * E
    ag = collective_bytes(AG, ca("xyz"), lay("BLE_xyz"), lay("BLE"), SIZES, M444, 2)
    assert ag == pytest.approx(expected)
    assert [s.bytes_per_chip for s in reshard(lay("BLE_xyz"), lay("BLE"), SIZES, M444)] == [ag]
    (rs,) = reshard(lay("BLE", "xyz"), lay("BLE_xyz"), SIZES, M444)
    assert (rs.kind, rs.bytes_per_chip) == (RS, pytest.approx(expected))  # (K-1)/K of the input


def test_byte_formulas():
    local = 2 * SIZES["B"] * SIZES["L"] * SIZES["E"] // 16  # bf16 BLE_yz on 4x4x4
    assert collective_bytes(AR, ca("x"), lay("BLE_yz", "x"), lay("BLE_yz"), SIZES, M444, 2) \
        == pytest.approx(2 * 3 / 4 * local)
    assert collective_bytes(A2A, ca("z", src="E", dst="B"), lay("BLE_yz"), lay("B_zLE_y"),
                            SIZES, M444, 2) == pytest.approx(3 / 4 * local)
    assert collective_bytes(SLICE, ca("x", dim="B"), lay("BLE_yz"), lay("B_xLE_yz"),
                            SIZES, M444, 2) == 0
    assert collective_bytes(AG, ca("z"), lay("BLE_yz"), lay("BLE_y"), SIZES, M444, 4) \
        == pytest.approx(3 / 4 * (2 * local) * 4)  # f32 input is 2*local; output is 4x that


def test_two_d_weight_stationary_layer():
    """The paper's 2D-WS: four collectives, comm 2*BLE/X + 2*BLF/(YZ) elements times (K-1)/K."""
    B, L, E, F = (SIZES[d] for d in "BLEF")
    X, YZ = 4, 16
    chain = [
        (lay("BLE_xyz"), lay("BLE_x"), ["all_gather(over=yz)"]),
        (lay("BLF_yz", "x"), lay("BLF_yzx"), ["reduce_scatter(over=x, dim=F)"]),
        (lay("BLF_yzx"), lay("BLF_yz"), ["all_gather(over=x)"]),
        (lay("BLE_x", "yz"), lay("BLE_xyz"), ["reduce_scatter(over=yz, dim=E)"]),
    ]
    total = 0.0
    for src, dst, expected in chain:
        steps = reshard(src, dst, SIZES, M444)
        assert shape(steps) == expected
        total += sum(s.bytes_per_chip for s in steps)
    expected = 2 * (2 * B * L * E / X) * (YZ - 1) / YZ + 2 * (2 * B * L * F / YZ) * (X - 1) / X
    assert total == pytest.approx(expected)


# --- reshard ---------------------------------------------------------------------------
def test_paper_sequences():
    assert shape(reshard(lay("BLE", "xyz"), lay("BLE_xyz"), SIZES, M444)) == [
        "reduce_scatter(over=xyz, dim=E)"]
    assert shape(reshard(lay("BLH_yzxD"), lay("B_yzxLHD"), SIZES, M444)) == [
        "all_to_all(over=yzx, from=H, to=B)"]
    assert shape(reshard(lay("B_yzxLHD"), lay("BLH_yzxD"), SIZES, M444)) == [
        "all_to_all(over=yzx, from=B, to=H)"]
    assert shape(reshard(lay("BLE_yz", "x"), lay("BLE_yz"), SIZES, M222)) == ["all_reduce(over=x)"]
    assert shape(reshard(lay("BLE"), lay("B_xLE_yz"), SIZES, M222)) == [
        "slice(over=x, dim=B)", "slice(over=yz, dim=E)"]


def test_identity_and_kept_partial_sums():
    assert reshard(lay("BLE_xy", "z"), lay("BLE_xy", "z"), SIZES, M222) == ()
    steps = reshard(lay("BLE_x", "yz"), lay("BLE_xz", "y"), SIZES, M222)
    assert shape(steps) == ["reduce_scatter(over=z, dim=E)"]


def test_no_detours_through_idle_axes():
    """all_reduce(x) over 4 chips sends 1.5 local bytes; slice(yz) + all_reduce(x) +
    all_gather(yz) would send fewer (1.5/16 + 15/16) but takes three collectives through
    axes neither layout uses, so reshard does not slice idle axes (module docstring)."""
    src, dst = lay("BLE", "x"), lay("BLE")
    for mesh in (M444, M222):
        assert shape(reshard(src, dst, SIZES, mesh)) == ["all_reduce(over=x)"]
    # A reduce-scatter into B does not detour through y, z either.
    assert shape(reshard(lay("BLE", "x"), lay("B_xLE"), SIZES, M444)) == ["reduce_scatter(over=x, dim=B)"]


def test_ties_prefer_all_reduce_first():
    """all_reduce(y) + all_gather(x) costs the same as reduce_scatter(y) + all_gather(xy)
    (two steps each); the fixed order picks the all_reduce."""
    for mesh, n in ((M222, 8), (Mesh.parse("2x3"), 6)):
        steps = reshard(lay("BLE_x", "y"), lay("BLE"), {"B": n, "L": n, "E": n}, mesh)
        assert shape(steps) == ["all_reduce(over=y)", "all_gather(over=x)"]


def test_itemsize_scales_bytes_and_results_are_cached():
    one = reshard(lay("BLE_xyz"), lay("B_xyzLE"), SIZES, M444, itemsize=1)
    four = reshard(lay("BLE_xyz"), lay("B_xyzLE"), SIZES, M444, itemsize=4)
    assert [4 * s.bytes_per_chip for s in one] == [s.bytes_per_chip for s in four]
    assert reshard(lay("BLE_xyz"), lay("B_xyzLE"), dict(SIZES), M444, 1) is one


def test_reshard_errors():
    with raises(r"cannot reshard BLE to BLE \(partialsum-x\): a value cannot become a partial sum"):
        reshard(lay("BLE"), lay("BLE", "x"), SIZES, M222)
    with raises(r"different dims \[B, L, E\] and \[B, L, F\]"):
        reshard(lay("BLE"), lay("BLF"), SIZES, M222)
    with raises("dim L of size 8 is not divisible by the 16 chips of y·z"):
        reshard(lay("BLE"), lay("BL_yzE"), SIZES, M444)
    with raises("has no axis 'w'|axes x, y, z"):
        reshard(lay("BLE_w"), lay("BLE"), SIZES, M222)
    with raises("no size given for dim Q"):
        reshard(lay("BQ"), lay("BQ_x"), SIZES, M222)
    with raises("itemsize"):
        reshard(lay("BLE"), lay("BLE_x"), SIZES, M222, itemsize=0)


def test_step_str():
    (step,) = reshard(lay("BLF_yz", "x"), lay("BLF_yzx"), SIZES, M222)
    assert isinstance(step, Step)
    assert str(step) == "reduce_scatter(over=x, dim=F): BLF_yz (partialsum-x) -> BLF_yzx"


# --- exhaustive check against brute force -----------------------------------------------
DIMS = ("A", "B", "C")
CONFIGS = {
    "2x2x2": (Mesh.parse("2x2x2"), {"A": 8, "B": 8, "C": 8}),
    "2x3": (Mesh.parse("2x3"), {"A": 6, "B": 6, "C": 6}),
    "2x2x2-uneven": (Mesh.parse("2x2x2"), {"A": 2, "B": 4, "C": 8}),  # divisibility prunes
    "2x3-uneven": (Mesh.parse("2x3"), {"A": 2, "B": 3, "C": 12}),
}


class BruteForce:
    """Every layout of [A, B, C] and every single collective between two of them, found by
    trying every kind x ordered tuple of axes x dim(s) against the rules, written out here
    independently of shardc.sharding.reshard.  Costs are exact fractions."""

    def __init__(self, mesh: Mesh, sizes: dict[str, int], itemsize: int = 2):
        self.mesh, self.sizes, self.itemsize = mesh, sizes, itemsize
        names = mesh.names
        self.layouts = []
        for where in itertools.product((None, "+") + DIMS, repeat=len(names)):
            partial = frozenset(a for a, w in zip(names, where) if w == "+")
            held = [[a for a, w in zip(names, where) if w == d] for d in DIMS]
            for orders in itertools.product(*(itertools.permutations(h) for h in held)):
                layout = self.make(dict(zip(DIMS, orders)), partial)
                if layout is not None:
                    self.layouts.append(layout)
        self.tuples = [t for r in range(1, len(names) + 1) for t in itertools.permutations(names, r)]
        self.edges = {u: self.successors(u) for u in self.layouts}

    def group(self, axes) -> int:
        return math.prod(self.mesh.size(a) for a in axes)

    def make(self, split: dict, partial: frozenset) -> Layout | None:
        if any(self.sizes[d] % self.group(split[d]) for d in DIMS):
            return None
        return Layout(tuple((d, tuple(split[d])) for d in DIMS), partial)

    def local_bytes(self, layout: Layout) -> int:
        return math.prod(self.sizes[d] // self.group(a) for d, a in layout.split) * self.itemsize

    def cost(self, kind: OpKind, axes, before: Layout, after: Layout) -> Fraction:
        k = self.group(axes)
        factor = {AG: 1, RS: 1, AR: 2, A2A: 1, SLICE: 0}[kind] * Fraction(k - 1, k)
        return factor * self.local_bytes(after if kind is AG else before)

    def successors(self, u: Layout) -> dict[Layout, Fraction]:
        split, part = dict(u.split), u.partial
        splitting = {a for axes in split.values() for a in axes}
        found: dict[Layout, Fraction] = {}

        def add(kind, axes, new_split, new_partial):
            v = self.make(new_split, new_partial)
            if v is not None:
                c = self.cost(kind, axes, u, v)
                found[v] = min(c, found.get(v, c))

        for axes in self.tuples:
            s = set(axes)
            if s <= part:
                add(AR, axes, split, part - s)
                for d in DIMS:
                    add(RS, axes, {**split, d: split[d] + axes}, part - s)
            if not s & (part | splitting):
                for d in DIMS:
                    add(SLICE, axes, {**split, d: split[d] + axes}, part)
            if s <= splitting:
                mine = {d: tuple(a for a in axes if a in split[d]) for d in DIMS}
                if all(not m or split[d][-len(m):] == m for d, m in mine.items()):
                    add(AG, axes, {d: split[d][: len(split[d]) - len(mine[d])] for d in DIMS}, part)
            for src in DIMS:
                if split[src][-len(axes):] == axes:
                    for dst in DIMS:
                        if dst != src:
                            new = {**split, src: split[src][: -len(axes)], dst: split[dst] + axes}
                            add(A2A, axes, new, part)
        return found

    def distances(self, src: Layout, keep: frozenset,
                  sliceable: frozenset) -> dict[Layout, tuple[Fraction, int]]:
        """Least (bytes, steps) from src to every layout, never summing the ``keep`` axes
        and never slicing an axis outside ``sliceable`` (slices are the free edges that
        add split axes)."""
        best = {src: (Fraction(0), 0)}
        heap = [(Fraction(0), 0, 0, src)]
        tiebreak = itertools.count(1)
        while heap:
            c, n, _, u = heapq.heappop(heap)
            if best[u] < (c, n):
                continue
            for v, w in self.edges[u].items():
                if (u.partial - v.partial) & keep:
                    continue
                if w == 0 and not (v.split_axes - u.split_axes) <= sliceable:
                    continue
                label = (c + w, n + 1)
                if v not in best or label < best[v]:
                    best[v] = label
                    heapq.heappush(heap, (*label, next(tiebreak), v))
        return best


def check_steps(bf: BruteForce, src: Layout, dst: Layout, steps) -> tuple[Fraction, int]:
    """The steps chain legally from src to dst; returns their (exact bytes, count)."""
    mesh, sizes = bf.mesh, bf.sizes
    layout, total = src, Fraction(0)
    for step in steps:
        assert step.kind in COLLECTIVES and step.before == layout
        after = apply_collective(layout, step.kind, step.attrs, mesh, sizes)
        assert step.after == after
        exact = bf.cost(step.kind, step.attrs.axes, layout, after)
        assert step.bytes_per_chip == pytest.approx(float(exact), abs=1e-9)
        assert step.bytes_per_chip == collective_bytes(step.kind, step.attrs, layout, after,
                                                       sizes, mesh, bf.itemsize)
        # over= lists axes in the order the layout holds them (partial sums: mesh order).
        if step.kind is AG:
            held = tuple(a for _, axes in layout.split for a in axes if a in step.attrs.axes)
            assert step.attrs.axes == held
        if step.kind is AR:
            assert step.attrs.axes == mesh.sort_axes(step.attrs.axes)
        total += exact
        layout = after
    assert layout == dst
    return total, len(steps)


@pytest.mark.parametrize("config", CONFIGS)
def test_every_pair_is_cheapest(config):
    mesh, sizes = CONFIGS[config]
    bf = BruteForce(mesh, sizes)
    by_partial: dict[frozenset, list[Layout]] = {}
    for layout in bf.layouts:
        by_partial.setdefault(layout.partial, []).append(layout)
    pairs = 0
    for src in bf.layouts:
        for r in range(len(src.partial) + 1):
            for keep in map(frozenset, itertools.combinations(sorted(src.partial), r)):
                searches: dict[frozenset, dict] = {}
                for dst in by_partial.get(keep, ()):
                    sliceable = src.used_axes | dst.split_axes
                    if sliceable not in searches:
                        searches[sliceable] = bf.distances(src, keep, sliceable)
                    best = searches[sliceable]
                    steps = reshard(src, dst, sizes, mesh)
                    assert check_steps(bf, src, dst, steps) == best[dst], (src, dst, shape(steps))
                    assert reshard(src, dst, sizes, mesh) is steps  # cached
                    pairs += 1
    print(f"{config}: {len(bf.layouts)} layouts, {pairs} pairs")
    assert pairs > {"2x2x2": 10000, "2x3": 300}.get(config, 100)
