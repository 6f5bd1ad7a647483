"""The emulator, the project's correctness oracle (shardc.execute.chips, shardc.execute.local_ops, shardc.emulate,
shardc.execute.verification).

Four groups of tests:

* :mod:`shardc.execute.chips` on its own: ``scatter``/``assemble`` round trips for random
  layouts (partial sums included) on meshes 2x3, 2x2x2 and 4x1x2, each chip's block
  checked against a per-chip loop; every legal collective equals "the scatter of the
  target layout"; ``replica_mismatch`` names the two chips of an altered copy; the
  block order of docs/language.md on a tiny array.
* every example x every applicable preset x meshes 2x2x2 and 4x4x4, shrunk, 2 layers,
  f64: ``verify(..., source=...)`` passes.
* the tiny examples at their real sizes: the emulator's outputs equal the reference's;
  the same seed gives the same bytes.
* the memory guard: ``shardc verify`` of PaLM 540B without ``--shrink`` refuses at once.
"""
from __future__ import annotations

import io
import itertools
import re
import time
import tracemalloc
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import shardc
from shardc.cli.main import main
from shardc.execute import chips
from shardc.execute.emulate import emulate
from shardc.execute.footprint import emulation_footprint
from shardc.execute.reference import reference
from shardc.execute.verification import shrink, shrink_sizes, verify
from shardc.ir.graph import CollectiveAttrs, OpKind
from shardc.ir.layout import Layout
from shardc.ir.mesh import Mesh
from shardc.ir.transforms import with_sizes
from shardc.sharding.reshard import apply_collective
from shardc.sharding.shard import shard_program
from shardc.testing import layouts

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
ALL_EXAMPLES = sorted(EXAMPLES.glob("*.model"))
TINY = [EXAMPLES / "tiny_ffn.model", EXAMPLES / "tiny_layer.model"]
PALM_540B = EXAMPLES / "palm_540b_decode.model"

FFNS = ("1d-ws", "2d-ws", "wg-x", "wg-xy", "wg-xyz")
ATTENTIONS = ("heads", "batch")
NOT_DIVISIBLE = re.compile(r"dim [A-Z] of size \d+ is not divisible by \d+")


def examples(n: int) -> int:
    """``n`` examples in the default CI profile, proportionally more under ``--fuzz``."""
    return max(1, n * settings.default.max_examples // 100)


# --- helpers -------------------------------------------------------------------------------
CHIP_MESHES = {spec: Mesh.parse(spec) for spec in ("2x3", "2x2x2", "4x1x2")}
# Sizes that every split of these meshes can divide somewhere (2, 3, 4, 6, 8).
DIM_SIZES = {"A": 12, "B": 8, "C": 6, "D": 24}


@st.composite
def tensors(draw, mesh: Mesh, partial: bool = True) -> tuple[tuple[str, ...], dict[str, int], Layout]:
    """Dims (1-3 of A-D, in a random order), their sizes and a random layout on ``mesh``."""
    dims = tuple(draw(st.lists(st.sampled_from(sorted(DIM_SIZES)), min_size=1, max_size=3, unique=True)))
    sizes = {d: DIM_SIZES[d] for d in dims}
    return dims, sizes, draw(layouts(dims, sizes, mesh, partial=partial))


def global_array(dims: tuple[str, ...], sizes: dict[str, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(tuple(sizes[d] for d in dims))


def block_index(layout: Layout, dim: str, chip: tuple[int, ...], mesh: Mesh) -> int:
    """docs/language.md: on a dim split over (a1, ..., am), chip coordinates give block
    i_a1 * K_a2 * ... * K_am + ... + i_am."""
    index = 0
    for a in layout.axes_of(dim):
        index = index * mesh.size(a) + chip[mesh.index(a)]
    return index


def naive_block(array: np.ndarray, layout: Layout, mesh: Mesh, chip: tuple[int, ...]) -> np.ndarray:
    """Chip ``chip``'s block of a global array, one slice per dim (no reshapes)."""
    index = []
    for (d, axes), size in zip(layout.split, array.shape):
        local = size // mesh.group_size(axes)
        b = block_index(layout, d, chip, mesh)
        index.append(slice(b * local, (b + 1) * local))
    return array[tuple(index)]


def with_partials(array: np.ndarray, layout: Layout, mesh: Mesh, seed: int) -> np.ndarray:
    """A stacked array whose chips hold *partial sums* of ``array`` over ``layout.partial``:
    each chip holds its block / K plus noise that sums to zero over the partial axes.  Copies are
    materialised (every mesh dim at full size), as chips that computed them one by one hold them."""
    base = every_chip(chips.scatter(array, layout.with_partial(frozenset()), mesh), mesh)
    if not layout.partial:
        return base
    positions = tuple(mesh.index(a) for a in layout.partial)
    # The noise is the same on chips that hold copies (axes the layout does not use).
    shape = [1 if a not in layout.used_axes else k for a, k in mesh.axes] + list(base.shape[len(mesh.axes):])
    noise = np.random.default_rng(seed).standard_normal(shape)
    noise -= noise.mean(axis=positions, keepdims=True)
    return base / mesh.group_size(tuple(layout.partial)) + noise


def every_chip(stacked: np.ndarray, mesh: Mesh) -> np.ndarray:
    """A stacked array with every mesh dim at full size (copies held once made real)."""
    return np.array(chips.full(stacked, list(range(len(mesh.axes))), mesh))


def held_once_along(stacked: np.ndarray, layout: Layout, mesh: Mesh) -> list[str]:
    """The replicated axes along which ``stacked`` holds one copy (a mesh dim of size 1)."""
    return [a for p, a in enumerate(mesh.names) if a not in layout.used_axes and stacked.shape[p] == 1]


def legal_collectives(layout: Layout, sizes: dict[str, int],
                      mesh: Mesh) -> list[tuple[OpKind, CollectiveAttrs, Layout]]:
    """Every (collective, attrs) that ``reshard.apply_collective`` accepts on ``layout``, and its result."""
    out = []
    dims = layout.dims
    for r in range(1, len(mesh.names) + 1):
        for axes in itertools.permutations(mesh.names, r):
            candidates = [(OpKind.ALL_GATHER, CollectiveAttrs(axes)), (OpKind.ALL_REDUCE, CollectiveAttrs(axes))]
            for d in dims:
                candidates += [(OpKind.REDUCE_SCATTER, CollectiveAttrs(axes, dim=d)),
                               (OpKind.SLICE, CollectiveAttrs(axes, dim=d))]
                candidates += [(OpKind.ALL_TO_ALL, CollectiveAttrs(axes, src=d, dst=e)) for e in dims if e != d]
            for kind, attrs in candidates:
                try:
                    after = apply_collective(layout, kind, attrs, mesh, sizes)
                except shardc.ShardcError:
                    continue
                out.append((kind, attrs, after))
    return out


# --- chips: scatter and assemble -------------------------------------------------------------
@pytest.mark.parametrize("spec", sorted(CHIP_MESHES))
@settings(max_examples=examples(60))
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_scatter_puts_each_block_on_its_chip_and_assemble_inverts_it(spec, data, seed) -> None:
    mesh = CHIP_MESHES[spec]
    dims, sizes, layout = data.draw(tensors(mesh, partial=False))
    array = global_array(dims, sizes, seed)
    stacked = chips.scatter(array, layout, mesh)
    # Held once along the axes the layout replicates over, one block per chip along the others.
    assert stacked.shape == tuple(k if a in layout.used_axes else 1 for a, k in mesh.axes) + \
        layout.local_sizes(sizes, mesh)
    every = every_chip(stacked, mesh)
    for chip in itertools.product(*(range(k) for k in mesh.shape)):
        np.testing.assert_array_equal(every[chip], naive_block(array, layout, mesh, chip))
    assert np.array_equal(chips.assemble(stacked, layout, mesh), array)
    assert np.array_equal(chips.assemble(every, layout, mesh), array)
    assert chips.replica_mismatch(stacked, layout, mesh) is None
    assert chips.replica_mismatch(every, layout, mesh) is None


@pytest.mark.parametrize("spec", sorted(CHIP_MESHES))
@settings(max_examples=examples(60))
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_assemble_sums_partial_sums(spec, data, seed) -> None:
    mesh = CHIP_MESHES[spec]
    dims, sizes, layout = data.draw(tensors(mesh, partial=True))
    assume(mesh.group_size(tuple(layout.partial)) > 1)
    array = global_array(dims, sizes, seed)
    stacked = with_partials(array, layout, mesh, seed + 1)
    # Every chip holds something else than its block (the pieces are not copies) ...
    assert not np.allclose(stacked, chips.scatter(array, layout.with_partial(frozenset()), mesh))
    # ... and their sum over the partial axes is the value.
    np.testing.assert_allclose(chips.assemble(stacked, layout, mesh), array, rtol=1e-12, atol=1e-12)


# --- chips: collectives ----------------------------------------------------------------------
@pytest.mark.parametrize("spec", sorted(CHIP_MESHES))
@settings(max_examples=examples(150))
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_every_collective_is_the_scatter_of_its_target_layout(spec, data, seed) -> None:
    """For a random legal (source layout, collective) pair, run_collective on the source's chips
    gives, on every chip, the target layout's block of the same global value (summed over the
    target's remaining partial axes)."""
    mesh = CHIP_MESHES[spec]
    dims, sizes, before = data.draw(tensors(mesh, partial=True))
    moves = legal_collectives(before, sizes, mesh)
    assume(moves)
    kind, attrs, after = data.draw(st.sampled_from(moves))
    array = global_array(dims, sizes, seed)
    stacked = with_partials(array, before, mesh, seed + 1)
    got = chips.run_collective(stacked, kind, attrs, before, mesh)
    if kind in (OpKind.ALL_GATHER, OpKind.ALL_REDUCE):  # identical along the axes it went over: held once
        assert set(attrs.axes) <= set(held_once_along(got, after, mesh)), got.shape
    got = every_chip(got, mesh)
    assert got.shape == mesh.shape + after.local_sizes(sizes, mesh)
    want = every_chip(chips.scatter(array, after.with_partial(frozenset()), mesh), mesh)
    positions = tuple(mesh.index(a) for a in after.partial)
    summed = got.sum(axis=positions, keepdims=True) if positions else got
    want = want[tuple(slice(0, 1) if p in positions else slice(None) for p in range(len(mesh.axes)))]
    np.testing.assert_allclose(summed, want, rtol=1e-12, atol=1e-12,
                               err_msg=f"{kind.value}{attrs} on {before.format(mesh)} -> {after.format(mesh)}")
    if kind in (OpKind.ALL_GATHER, OpKind.SLICE, OpKind.ALL_TO_ALL) and not before.partial:
        assert np.array_equal(got, want)  # pure data movement: bit-exact
    np.testing.assert_allclose(chips.assemble(got, after, mesh), array, rtol=1e-12, atol=1e-12)
    assert chips.replica_mismatch(got, after, mesh) is None


@pytest.mark.parametrize("spec", sorted(CHIP_MESHES))
def test_every_collective_kind_is_legal_somewhere(spec) -> None:
    """The collective test above draws from all five kinds on every mesh."""
    mesh = CHIP_MESHES[spec]
    sizes = {"A": 12, "B": 8}
    kinds = set()
    for layout in (Layout.of(("A", "B"), {"A": mesh.names[:1]}, mesh.names[1:]),
                   Layout.of(("A", "B"), {"A": mesh.names[:1], "B": mesh.names[2:]})):
        kinds |= {k for k, _, _ in legal_collectives(layout, sizes, mesh)}
    assert kinds == {OpKind.ALL_GATHER, OpKind.REDUCE_SCATTER, OpKind.ALL_REDUCE, OpKind.ALL_TO_ALL,
                     OpKind.SLICE}


# --- chips: replicas ----------------------------------------------------------------------------
@pytest.mark.parametrize("spec", sorted(CHIP_MESHES))
@settings(max_examples=examples(40))
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_replica_mismatch_names_an_altered_copy(spec, data, seed) -> None:
    mesh = CHIP_MESHES[spec]
    dims, sizes, layout = data.draw(tensors(mesh, partial=False))
    replicated = [a for a in mesh.names if a not in layout.used_axes and mesh.size(a) > 1]
    assume(replicated)
    stacked = every_chip(chips.scatter(global_array(dims, sizes, seed), layout, mesh), mesh)
    assert chips.replica_mismatch(stacked, layout, mesh) is None
    chip = tuple(data.draw(st.integers(0, k - 1)) for k in mesh.shape)
    stacked[chip].flat[data.draw(st.integers(0, stacked[chip].size - 1))] += 1.0
    found = chips.replica_mismatch(stacked, layout, mesh)
    assert found is not None
    first, second = found
    assert chip in found and first != second
    assert not np.array_equal(stacked[first], stacked[second])
    # The two chips differ only along axes that hold copies.
    for p, a in enumerate(mesh.names):
        if first[p] != second[p]:
            assert a in replicated


def test_replica_mismatch_ignores_split_and_partial_axes() -> None:
    mesh = CHIP_MESHES["2x2x2"]
    layout = Layout.parse("A_xB", "(partialsum-y)")
    stacked = with_partials(global_array(("A", "B"), DIM_SIZES, 0), layout, mesh, 1)
    assert chips.replica_mismatch(stacked, layout, mesh) is None  # x: blocks, y: partial pieces, z: copies
    stacked[1, 1, 1, 0, 0] += 1.0
    assert chips.replica_mismatch(stacked, layout, mesh) == ((1, 1, 0), (1, 1, 1))


# --- chips: the block order of docs/language.md -------------------------------------------------------
def test_block_order_on_a_tiny_array() -> None:
    """Chip (i, j, k) of E_xyz holds block i*Y*Z + j*Z + k; with E_zyx, block k*Y*X + j*X + i."""
    mesh = Mesh.parse("2x2x2")
    e = np.arange(8.0)
    stacked = chips.scatter(e, Layout.parse("E_xyz"), mesh)
    for i, j, k in itertools.product(range(2), repeat=3):
        assert stacked[i, j, k].tolist() == [i * 4 + j * 2 + k]
    assert stacked[:, :, :, 0].tolist() == [[[0, 1], [2, 3]], [[4, 5], [6, 7]]]
    zyx = chips.scatter(e, Layout.parse("E_zyx"), mesh)
    for i, j, k in itertools.product(range(2), repeat=3):
        assert zyx[i, j, k].tolist() == [k * 4 + j * 2 + i]
    # Unequal axes, two elements per block: x=2, y=3, E_yx -> block j*X + i.
    mesh23 = Mesh.parse("2x3")
    e12 = np.arange(12.0)
    yx = chips.scatter(e12, Layout.parse("E_yx"), mesh23)
    for i, j in itertools.product(range(2), range(3)):
        b = j * 2 + i
        assert yx[i, j].tolist() == [2 * b, 2 * b + 1]
    # Two dims: E_x F_y on [E=4, F=3] -> chip (i, j) holds rows 2i..2i+1 of column j.
    m = np.arange(12.0).reshape(4, 3)
    ef = chips.scatter(m, Layout.parse("E_xF_y"), mesh23)
    for i, j in itertools.product(range(2), range(3)):
        assert ef[i, j].tolist() == m[2 * i:2 * i + 2, j:j + 1].tolist()
    # Gathering z (the minor axis) of E_xyz concatenates adjacent blocks: chip (i, j, *) gets
    # blocks [i*4 + j*2, i*4 + j*2 + 1].
    gathered = chips.all_gather(stacked, Layout.parse("E_xyz"), ("z",), mesh)
    assert gathered.shape == (2, 2, 1, 2)  # one copy along z, which every chip there sees
    gathered = every_chip(gathered, mesh)
    for i, j, k in itertools.product(range(2), repeat=3):
        assert gathered[i, j, k].tolist() == [i * 4 + j * 2, i * 4 + j * 2 + 1]


def test_block_offsets_follow_the_block_order() -> None:
    mesh = Mesh.parse("2x3")
    offsets = chips.block_offsets(Layout.parse("E_yx"), "E", 2, mesh)
    for i, j in itertools.product(range(2), range(3)):
        assert offsets[i, j] == (j * 2 + i) * 2


# --- every example, every preset -------------------------------------------------------------
def load_example(path: Path, ffn: str) -> shardc.Graph:
    sizes = {"H": 64} if path.stem.startswith("palm") and ffn == "1d-ws" else {}
    return shardc.parse(path.read_text(encoding="utf-8"), str(path), sizes=sizes)


def shard_or_skip(g: shardc.Graph, mesh: str, ffn: str, attention: str) -> shardc.ShardResult:
    try:
        return shard_program(g, mesh, ffn, attention)
    except shardc.ShardcError as err:
        assert NOT_DIVISIBLE.search(err.message), err.render()  # the only acceptable refusal
        pytest.skip(f"{ffn}/{attention} on {mesh}: {err.message}")


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("ffn", FFNS)
@pytest.mark.parametrize("mesh", ["2x2x2", "4x4x4"])
@pytest.mark.parametrize("path", ALL_EXAMPLES, ids=lambda p: p.stem)
def test_every_example_verifies_on_chips(path: Path, mesh: str, ffn: str, attention: str) -> None:
    g = load_example(path, ffn)
    r = shard_or_skip(g, mesh, ffn, attention)
    sizes = shrink_sizes(r.graph)
    report = verify(with_sizes(r.graph, sizes), 0, "f64", 2, source=with_sizes(g, sizes))
    assert report.passed, report.first_mismatch
    assert report.first_mismatch is None
    assert report.max_rel_error <= 1e-9
    assert report.chips == Mesh.parse(mesh).num_chips
    assert report.counters is not None and report.counters.flops > 0


def test_the_sweep_covers_every_preset() -> None:
    """At least one example shards under each (ffn, attention) on each mesh (nothing is all skips)."""
    for mesh, ffn, attention in itertools.product(["2x2x2", "4x4x4"], FFNS, ATTENTIONS):
        ok = 0
        for path in ALL_EXAMPLES:
            try:
                shard_program(load_example(path, ffn), mesh, ffn, attention)
                ok += 1
            except shardc.ShardcError:
                pass
        assert ok >= 4, (mesh, ffn, attention, ok)


# --- the tiny examples at their real sizes ------------------------------------------------------
TINY_CASES = [(p, mesh, ffn, att) for p in TINY for mesh in (None, "2x2x2") for ffn in FFNS
              for att in ATTENTIONS]


@pytest.mark.parametrize("path,mesh,ffn,attention", TINY_CASES,
                         ids=[f"{p.stem}-{m or 'file'}-{f}-{a}" for p, m, f, a in TINY_CASES])
def test_emulate_equals_reference_at_real_sizes(path: Path, mesh: str | None, ffn: str, attention: str) -> None:
    g = shardc.load(path)
    r = shard_or_skip(g, mesh or g.mesh.spec(), ffn, attention)
    want = reference(g, seed=3, dtype="f64")
    got = emulate(r.graph, seed=3, dtype="f64")
    assert sorted(got.outputs) == sorted(want)
    for name, array in want.items():
        assert got.outputs[name].shape == array.shape
        assert got.outputs[name].dtype == np.float64
        np.testing.assert_allclose(got.outputs[name], array, rtol=1e-9, atol=1e-12 * np.abs(array).max(),
                                   err_msg=name)


@pytest.mark.parametrize("path", TINY, ids=lambda p: p.stem)
@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_emulate_is_deterministic(path: Path, dtype: str) -> None:
    sg = shard_program(shardc.load(path), "2x2x2", "2d-ws", "heads").graph
    first = emulate(sg, seed=7, dtype=dtype)
    second = emulate(sg, seed=7, dtype=dtype)
    assert sorted(first.outputs) == sorted(second.outputs)
    for name in first.outputs:
        assert first.outputs[name].tobytes() == second.outputs[name].tobytes()
    assert first.counters.to_json() == second.counters.to_json()
    other = emulate(sg, seed=8, dtype=dtype)
    assert any(first.outputs[n].tobytes() != other.outputs[n].tobytes() for n in first.outputs)


def test_check_replicas_does_not_change_the_outputs() -> None:
    sg = shard_program(shardc.load(TINY[1]), "2x2x2", "wg-xy", "batch").graph
    on = emulate(sg, seed=1, dtype="f64", check_replicas=True)
    off = emulate(sg, seed=1, dtype="f64", check_replicas=False)
    for name in on.outputs:
        assert on.outputs[name].tobytes() == off.outputs[name].tobytes()


def test_gathered_weights_are_held_once_and_computed_copies_are_checked(monkeypatch) -> None:
    """An all-gather's result is one copy along the gathered axes (nothing to check); copies that
    chips computed one by one are checked: a corrupted copy raises ReplicaError."""
    from shardc.execute.emulate import ReplicaError

    sg = shard_program(shardc.load(TINY[1]), "2x2x2", "wg-xyz", "batch").graph
    shapes = {}
    emulate(sg, seed=1, on_value=lambda op, layer, a: shapes.setdefault(op, a.shape))
    gathers = [op for op in shapes if op.kind is OpKind.ALL_GATHER]
    assert gathers
    for op in gathers:
        assert all(shapes[op][sg.mesh.index(a)] == 1 for a in op.attrs.axes), (op.result.name, shapes[op])
    assert any(shapes[op][:3] == (1, 1, 1) for op in gathers)  # a weight gathered whole: one copy for 8 chips
    real = chips.all_gather

    def corrupted(stacked, layout, axes, mesh):
        once = real(stacked, layout, axes, mesh)
        copies = np.array(chips.full(once, [mesh.index(a) for a in axes], mesh))  # as if computed chip by chip
        copies[(-1,) * len(mesh.axes)].flat[0] += 1.0
        return copies

    monkeypatch.setattr(chips, "all_gather", corrupted)
    with pytest.raises(ReplicaError, match="differs between chips"):
        emulate(sg, seed=1)
    emulate(sg, seed=1, check_replicas=False)  # unchecked, the first chip's copy is kept


# --- the memory guard -----------------------------------------------------------------------------
def test_verify_refuses_palm_540b_without_shrink_at_once() -> None:
    out, err = io.StringIO(), io.StringIO()
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main(["verify", str(PALM_540B)])
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == 2
    message = err.getvalue()
    assert out.getvalue() == ""
    assert "Traceback" not in message
    assert re.search(r"would need about [\d.]+ GiB of host memory", message), message
    assert "--shrink" in message
    assert peak < 50 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    assert elapsed < 5.0


def test_emulate_refuses_before_allocating() -> None:
    g = shardc.load(PALM_540B)
    sg = shard_program(g, None, "2d-ws", "batch").graph
    tracemalloc.start()
    try:
        with pytest.raises(shardc.ShardcError, match="would need about"):
            emulate(sg, layers=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20


def traced_peak(run) -> int:
    """tracemalloc's peak during ``run()`` (NumPy reports its buffers to it), after a warm-up
    that imports what a first run imports (numpy.random alone is half a MiB)."""
    np.random.default_rng(0).standard_normal(1)
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_memory_estimate_bounds_the_real_peak() -> None:
    """Regression: the estimate left out the temporaries of collectives and replica checks."""
    sg = shardc.parse("""\
model gathered
mesh x=4, y=4, z=4
dims B=1, E=256, F=256
input h : f32[B, E] @ BE
param w : f32[E, F] @ E_xF_yz
w1 = all_gather(w, over=yz) @ E_xF
w2 = all_gather(w1, over=x) @ EF
y = einsum("BE,EF->BF", h, w2) @ BF
output y
""")
    peak = traced_peak(lambda: emulate(sg, 0, "f32"))
    bound = emulation_footprint(sg, "f32")
    assert peak <= bound, f"peak {peak / 2**20:.1f} MiB > estimate {bound / 2**20:.1f} MiB"


MEMORY_PRESETS = [(f, a) for f in ("1d-ws", "2d-ws", "wg-xyz") for a in ATTENTIONS]


@pytest.mark.parametrize("mesh", ["2x2x2", "4x4x4"])
@pytest.mark.parametrize("path", ALL_EXAMPLES, ids=lambda p: p.stem)
def test_the_memory_estimate_is_never_below_the_peak_and_close_to_it(path: Path, mesh: str) -> None:
    """For every example under the weight-stationary and weight-gathered presets (shrunk, dims at
    least 32, 2 layers, f32): tracemalloc's peak <= the estimate, and the estimate is within 1.5x
    of the peak wherever the run holds at least 1 MiB (below that, the fixed allowance for Python
    objects dominates)."""
    for ffn, attention in MEMORY_PRESETS:
        try:
            sg = shrink(shard_program(load_example(path, ffn), mesh, ffn, attention).graph, floor=32)
        except shardc.ShardcError:
            continue
        peak = traced_peak(lambda sg=sg: emulate(sg, 0, "f32", 2))
        bound = emulation_footprint(sg, "f32", 2)
        assert peak <= bound, (ffn, attention, peak, bound)
        if peak >= 2**20:
            assert bound <= 1.5 * peak, (ffn, attention, peak, bound)


def test_the_memory_estimate_of_a_benchmark_shaped_layer() -> None:
    """The benchmark's PaLM-shaped layer at a quarter of its width, on 4x4x4 (also f64, whose draw
    holds the float32 normals and their cast at once)."""
    text = re.sub(r"^repeat 118 \{", "repeat 1 {", PALM_540B.with_name("palm_540b_prefill.model").read_text(),
                  flags=re.M)
    sizes = {"E": 256, "F": 1024, "H": 16, "D": 16, "B": 4, "L": 64, "S": 64, "V": 256}
    g = shardc.parse(text, "palm_540b_prefill.model", sizes=sizes)
    for ffn, dtype in (("2d-ws", "f32"), ("wg-xyz", "f32"), ("2d-ws", "f64")):
        sg = shard_program(g, "4x4x4", ffn, "heads").graph
        peak = traced_peak(lambda sg=sg, dtype=dtype: emulate(sg, 0, dtype))
        bound = emulation_footprint(sg, dtype)
        assert peak <= bound <= 1.5 * peak, (ffn, dtype, peak / 2**20, bound / 2**20)


def test_an_unsharded_graph_is_refused_with_a_hint() -> None:
    """From Python, handing the source graph to the oracle or the cost model says to shard it first."""
    g = shardc.load(ROOT / "examples" / "tiny_ffn.model")
    for run in (shardc.verify, shardc.emulate, shardc.estimate):
        with pytest.raises(shardc.ShardcError, match="not sharded") as info:
            run(g)
        assert info.value.hint and "shardc.shard" in info.value.hint
