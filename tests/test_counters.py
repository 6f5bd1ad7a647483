"""The emulator's counters equal the paper's closed forms (the paper's §3.1-3.2).

One PaLM-like feed-forward stack (layernorm, ``gelu(h @ win) @ wout``, residual; bf16
storage, so 2 bytes an element) with B, L, E, F chosen so every split divides, sharded
2D weight-stationary and 1D weight-stationary on 4x4x4 and 2x2x2.  Per chip and layer,
with ``s = 2`` bytes, ``n = X·Y·Z`` chips and ring collectives ((K-1)/K of the big side):

2D weight-stationary (``BLE_xyz -AG(yz)-> BLE_x -> BLF_yz (partialsum-x) -RS(x)-> BLF_yzx
-gelu, AG(x)-> BLF_yz -> BLE_x (partialsum-yz) -RS(yz)-> BLE_xyz``)::

    all_gather(yz)      of BLE_xyz -> BLE_x                  (YZ-1)/YZ · s·B·L·E/X
    reduce_scatter(x)   of BLF_yz (partialsum-x) -> BLF_yzx  (X-1)/X   · s·B·L·F/(YZ)
    all_gather(x)       of BLF_yzx -> BLF_yz                 (X-1)/X   · s·B·L·F/(YZ)
    reduce_scatter(yz)  of BLE_x (partialsum-yz) -> BLE_xyz  (YZ-1)/YZ · s·B·L·E/X

1D weight-stationary: all_gather(xyz) and reduce_scatter(xyz) of BLE, ``(n-1)/n · s·B·L·E``
each.  Both: the layernorm over the split E all-reduces 2 f32 statistics per row,
``2 (n-1)/n · B·L · 2 · 4`` bytes.  FLOPs ``2·B·L·E·F · 2 matmuls / n``; HBM bytes read
include both weights' local bytes ``2 · s·E·F/n``; the peak live bytes hold them too.

Then, for every example and preset on 2x2x2 (shrunk): the emulator's bytes sent equal
the sum over ``shard_program(...).collectives`` of ``bytes_per_chip`` times the layers run.
"""
from __future__ import annotations

import itertools
from collections import defaultdict
from pathlib import Path

import pytest

import shardc
from shardc.execute.emulate import emulate
from shardc.execute.verification import shrink, verify
from shardc.hardware.profile import load_profile
from shardc.ir.graph import CollectiveAttrs, OpKind
from shardc.ir.mesh import Mesh
from shardc.sharding.shard import shard_program

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.model"))
S = 2  # bf16
STAT_BYTES = 4  # f32 statistics
B, L, E, F = 4, 8, 256, 1024
LAYERS = 2

FFN_TEXT = f"""\
model ffn_stack
dims B={B}, L={L}, E={E}, F={F}

input x : bf16[B, L, E]

repeat {LAYERS} {{
  param g    : bf16[E]
  param win  : bf16[E, F]
  param wout : bf16[F, E]
  h = layernorm(x, g, over=E)
  u = gelu(einsum("BLE,EF->BLF", h, win))
  f = einsum("BLF,FE->BLE", u, wout)
  x = x + f
}}

output x
"""


BANDWIDTH_ONLY = load_profile("tpu-v4").uncalibrated()


def ring(k: int, nbytes: float) -> float:
    """Bytes each chip sends in a ring all-gather / reduce-scatter over k chips of nbytes."""
    return (k - 1) / k * nbytes


def expected_collectives(ffn: str, mesh: Mesh) -> dict[tuple[OpKind, tuple[str, ...], str | None], float]:
    """(kind, axes, dim) -> bytes each chip sends per layer, the paper's closed forms."""
    X, Y, Z = mesh.shape
    n, YZ = X * Y * Z, Y * Z
    if ffn == "2d-ws":
        return {
            (OpKind.ALL_GATHER, ("y", "z"), None): ring(YZ, S * B * L * E / X),
            (OpKind.REDUCE_SCATTER, ("x",), "F"): ring(X, S * B * L * F / YZ),
            (OpKind.ALL_GATHER, ("x",), None): ring(X, S * B * L * F / YZ),
            (OpKind.REDUCE_SCATTER, ("y", "z"), "E"): ring(YZ, S * B * L * E / X),
        }
    assert ffn == "1d-ws"
    return {
        (OpKind.ALL_GATHER, ("x", "y", "z"), None): ring(n, S * B * L * E),
        (OpKind.REDUCE_SCATTER, ("x", "y", "z"), "E"): ring(n, S * B * L * E),
    }


def layernorm_stats_bytes(mesh: Mesh) -> float:
    n = mesh.num_chips
    return 2 * (n - 1) / n * B * L * 2 * STAT_BYTES


def sharded_ffn(ffn: str, mesh: str) -> shardc.Graph:
    """The paper's closed forms count bandwidth alone, so the pass plans under the roofline (the
    chip without its fitted latency and per-op terms); at these toy sizes the calibrated chip
    prefers one all-reduce to a reduce-scatter and an all-gather (one launch instead of two)."""
    return shard_program(shardc.parse(FFN_TEXT, "ffn_stack.model"), mesh, ffn, chip=BANDWIDTH_ONLY).graph


@pytest.mark.parametrize("mesh_spec", ["4x4x4", "2x2x2"])
@pytest.mark.parametrize("ffn", ["2d-ws", "1d-ws"])
def test_each_collective_sends_its_ring_formula(ffn: str, mesh_spec: str) -> None:
    sg = sharded_ffn(ffn, mesh_spec)
    mesh = sg.mesh
    want = expected_collectives(ffn, mesh)
    run = emulate(sg, seed=0, dtype="f32")
    seen = set()
    for op in sg.ops():
        if not op.kind.is_collective:
            continue
        assert isinstance(op.attrs, CollectiveAttrs)
        key = (op.kind, op.attrs.axes, op.attrs.dim)
        assert key in want, f"unexpected {key} in the {ffn} program"
        assert key not in seen
        seen.add(key)
        count = run.counters.by_op[op.result.id]
        assert count.runs == LAYERS
        assert count.comm_bytes == pytest.approx(LAYERS * want[key], rel=1e-12), key
    assert seen == set(want), f"missing {set(want) - seen}"
    norm = [op for op in sg.ops() if op.kind is OpKind.LAYERNORM]
    assert len(norm) == 1
    assert run.counters.by_op[norm[0].result.id].comm_bytes == pytest.approx(
        LAYERS * layernorm_stats_bytes(mesh), rel=1e-12)


@pytest.mark.parametrize("mesh_spec", ["4x4x4", "2x2x2"])
def test_2d_weight_stationary_totals(mesh_spec: str) -> None:
    sg = sharded_ffn("2d-ws", mesh_spec)
    X, Y, Z = sg.mesh.shape
    n, YZ = X * Y * Z, Y * Z
    c = emulate(sg, seed=0).counters
    # The paper's 2D-WS communication, 2·BLE/X + 2·BLF/(YZ) with the ring factors kept.
    comm = ((YZ - 1) / YZ * 2 * S * B * L * E / X + (X - 1) / X * 2 * S * B * L * F / YZ
            + layernorm_stats_bytes(sg.mesh))
    assert c.comm_bytes == pytest.approx(LAYERS * comm, rel=1e-12)
    check_compute_and_memory(c, n, hbm_per_layer=(
        S * B * L * E / n + S * E / n        # layernorm reads x and g
        + S * B * L * E / n                  # all_gather(yz) reads h
        + S * B * L * E / X + S * E * F / n  # einsum reads h1 (BLE_x) and win
        + S * B * L * F / YZ                 # reduce_scatter(x) reads BLF_yz
        + S * B * L * F / n                  # gelu
        + S * B * L * F / n                  # all_gather(x) reads BLF_yzx
        + S * B * L * F / YZ + S * F * E / n  # einsum reads u1 (BLF_yz) and wout
        + S * B * L * E / X                  # reduce_scatter(yz) reads BLE_x
        + 2 * S * B * L * E / n))            # x + f1


@pytest.mark.parametrize("mesh_spec", ["4x4x4", "2x2x2"])
def test_1d_weight_stationary_totals(mesh_spec: str) -> None:
    sg = sharded_ffn("1d-ws", mesh_spec)
    n = sg.mesh.num_chips
    c = emulate(sg, seed=0).counters
    # (n-1)/n · 2·B·L·E · 2 bytes: one all_gather and one reduce_scatter of BLE.
    comm = (n - 1) / n * 2 * B * L * E * S + layernorm_stats_bytes(sg.mesh)
    assert c.comm_bytes == pytest.approx(LAYERS * comm, rel=1e-12)
    check_compute_and_memory(c, n, hbm_per_layer=(
        S * B * L * E / n + S * E / n        # layernorm
        + S * B * L * E / n                  # all_gather(xyz) reads h
        + S * B * L * E + S * E * F / n      # einsum reads BLE and win
        + S * B * L * F / n                  # gelu
        + S * B * L * F / n + S * F * E / n  # einsum reads u and wout
        + S * B * L * E                      # reduce_scatter(xyz) reads BLE (partialsum-xyz)
        + 2 * S * B * L * E / n))            # x + f1


def check_compute_and_memory(c, n: int, hbm_per_layer: float) -> None:
    weights = 2 * S * E * F / n  # win and wout, local bytes per chip
    assert c.flops == pytest.approx(LAYERS * 2 * B * L * E * F * 2 / n, rel=1e-12)
    # layernorm, gelu and the residual add: one per local result element.
    assert c.elementwise_flops == pytest.approx(LAYERS * (2 * B * L * E + B * L * F) / n, rel=1e-12)
    assert c.hbm_bytes == pytest.approx(LAYERS * hbm_per_layer, rel=1e-12)
    assert c.hbm_bytes >= LAYERS * weights
    assert c.peak_bytes >= weights
    assert c.peak_bytes <= hbm_per_layer + S * B * L * E / n  # never more than one layer's values and x


def test_2d_beats_1d_above_16_chips_as_the_paper_says() -> None:
    """the paper's §3.2: 2D-WS communication beats 1D-WS when n > 4F/E (here F = 4E: 16 chips)."""
    small = {"2x2x2": None, "4x4x4": None}
    for spec in small:
        one = emulate(sharded_ffn("1d-ws", spec)).counters.comm_bytes
        two = emulate(sharded_ffn("2d-ws", spec)).counters.comm_bytes
        small[spec] = two < one
    assert small == {"2x2x2": False, "4x4x4": True}


# --- counters = the compiler's collective records ---------------------------------------------
CASES = [(p, ffn, att) for p in EXAMPLES for ffn in ("1d-ws", "2d-ws", "wg-x", "wg-xy", "wg-xyz")
         for att in ("heads", "batch")]


@pytest.mark.parametrize("path,ffn,attention", CASES, ids=[f"{p.stem}-{f}-{a}" for p, f, a in CASES])
def test_comm_bytes_equal_the_collective_records(path: Path, ffn: str, attention: str) -> None:
    sizes = {"H": 64} if path.stem.startswith("palm") and ffn == "1d-ws" else {}
    g = shardc.parse(path.read_text(encoding="utf-8"), str(path), sizes=sizes)
    try:
        sg = shrink(shard_program(g, "2x2x2", ffn, attention).graph)
    except shardc.ShardcError as err:
        assert "is not divisible by" in err.message, err.render()
        pytest.skip(err.message)
    records = shard_program(sg).collectives  # the shrunk program's collectives, as shardc compile lists them
    c = emulate(sg, seed=0, layers=LAYERS).counters
    want: dict[str, float] = defaultdict(float)
    for r in records:
        runs = 1 if r.repeat is None else min(LAYERS, r.count)
        want[r.value] += r.bytes_per_chip * runs
    got: dict[str, float] = defaultdict(float)
    for entry in c.by_op.values():
        if entry.comm_bytes:
            got[entry.value] += entry.comm_bytes
    assert c.comm_bytes == pytest.approx(sum(want.values()), rel=1e-12)
    assert dict(got) == pytest.approx({k: v for k, v in want.items() if v}, rel=1e-12)
    # The records of the real-size compile name the same collectives.
    full = shard_program(g, "2x2x2", ffn, attention).collectives
    def key(r):
        return (r.value, r.kind.value, r.axes, r.dim, r.src_dim, r.dst_dim, r.before.format(), r.after.format(),
                r.implicit)
    assert sorted(map(key, full)) == sorted(map(key, records))


def test_verify_reports_the_emulators_counters() -> None:
    sg = sharded_ffn("2d-ws", "2x2x2")
    report = verify(sg, 0, "f64", LAYERS)
    assert report.passed
    assert report.counters.to_json() == emulate(sg, 0, "f64", LAYERS).counters.to_json()


def test_counters_do_not_depend_on_the_compute_dtype_or_seed() -> None:
    sg = sharded_ffn("2d-ws", "2x2x2")
    runs = [emulate(sg, seed, dtype).counters.to_json() for seed, dtype in itertools.product((0, 5), ("f32", "f64"))]
    assert all(r == runs[0] for r in runs)
