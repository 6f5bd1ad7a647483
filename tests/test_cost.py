"""The cost model (shardc.cost, shardc.hardware.comm) and ``shardc cost``.

1. Its counters equal the emulator's, for every example under every preset.
2. the paper's Table 1 (maximum context per KV-cache layout) within 2%.
3. the paper's Table 2 (latency and MFU of four PaLM 540B configurations) within 10%
   with the calibrated tpu-v4 profile (``pytest -s`` prints the table).
4. The paper's analytic claims: the 2D weight-stationary communication formula, 2D
   beating 1D above 16 chips, the weight-gathered optimum N*, the parallel block.
5. A million-layer, 10^12-wide program costs in milliseconds, allocating nothing big.
6. The command line.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
import re
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

import shardc
from shardc.cli.main import main
from shardc.cost.memory import max_context
from shardc.cost.model import estimate
from shardc.execute.emulate import emulate
from shardc.execute.verification import shrink
from shardc.hardware.comm import ring_steps
from shardc.hardware.profile import load_profile
from shardc.ir.graph import OpKind
from shardc.ir.mesh import Mesh
from shardc.ir.transforms import with_weight_dtype
from shardc.sharding.presets import FFN_CHOICES

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
ALL_EXAMPLES = sorted(EXAMPLES.glob("*.model"))
PALM_DECODE = EXAMPLES / "palm_540b_decode.model"
PALM_PREFILL = EXAMPLES / "palm_540b_prefill.model"
TINY_LAYER = EXAMPLES / "tiny_layer.model"
GiB = 2**30


def load_calibrate():
    """benchmarks/calibrate.py as a module (the Table 2 columns and how they are built)."""
    spec = importlib.util.spec_from_file_location("calibrate", ROOT / "benchmarks" / "calibrate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("calibrate", module)
    spec.loader.exec_module(module)
    return module


# --- 1. counters: the cost model predicts what the emulator counts --------------------------
@pytest.mark.parametrize("mesh", ["2x2x2", "4x4x4"])
@pytest.mark.parametrize("path", ALL_EXAMPLES, ids=lambda p: p.stem)
def test_counters_match_the_emulator(path: Path, mesh: str) -> None:
    # Two layers per repeat keep the emulation quick; the model multiplies a repeat by its count,
    # so two layers check that as well as 118 would.
    text = re.sub(r"repeat \d+ \{", "repeat 2 {", path.read_text(encoding="utf-8"))
    checked = 0
    for ffn in FFN_CHOICES:
        for attention in ("heads", "batch"):
            sizes = {"H": 64} if ffn == "1d-ws" and path.stem.startswith("palm_") else {}
            try:
                sg = shardc.shard(shardc.parse(text, str(path), sizes=sizes), mesh, ffn, attention)
            except shardc.ShardcError as err:
                assert "divisible" in str(err) or "divide" in str(err), err
                continue  # a dim that does not split over this mesh under this preset
            small = shrink(sg)
            report = estimate(small)
            counters = emulate(small, layers=None).counters
            where = f"{path.stem} {mesh} {ffn}/{attention}"
            assert report.flops_per_chip == counters.flops, where
            assert report.comm_bytes_per_chip == counters.comm_bytes, where
            checked += 1
    if not checked:
        pytest.skip(f"no preset splits {path.stem}'s dims over {mesh}")


# --- 2. Table 1: maximum context -------------------------------------------------------------
LAYER = """
model palm_540b_{name}
mesh x=4, y=4, z=4
dims B={B}, L=1, S=2048, E=18432, F=73728, H=64, D={D}
input x : bf16[B, L, E]
repeat 118 {{
  param g    : bf16[E]
  param wq   : bf16[E, H, D]
  param wk   : bf16[E, {kv}D]
  param wv   : bf16[E, {kv}D]
  param wo   : bf16[H, D, E]
  param win1 : bf16[E, F]
  param win2 : bf16[E, F]
  param wout : bf16[F, E]
  cache k    : bf16[B, S, {kv}D]
  cache v    : bf16[B, S, {kv}D]
  h  = layernorm(x, g, over=E)
  q  = einsum("BLE,EHD->BLHD", h, wq)
  kn = einsum("BLE,E{h}D->BL{h}D", h, wk)
  vn = einsum("BLE,E{h}D->BL{h}D", h, wv)
  s  = einsum("BLHD,BS{h}D->BHLS", q, k) * 0.0625
  p  = softmax(s, over=S)
  a  = einsum("BHLS,BS{h}D->BLHD", p, v)
  o  = einsum("BLHD,HDE->BLE", a, wo)
  u  = silu(einsum("BLE,EF->BLF", h, win1)) * einsum("BLE,EF->BLF", h, win2)
  f  = einsum("BLF,FE->BLE", u, wout)
  x  = x + o + f
  output kn, vn
}}
output x
"""
# variant: (d_head, multihead?, ffn, attention, cache layout, paper's context at B=128 and 512)
TABLE1 = {
    "multihead": (128, True, "1d-ws", "heads", "BSH_xyzD", {128: 1320, 512: 330}),
    "baseline multiquery": (256, False, "2d-ws", "heads", "BSD", {128: 660, 512: 165}),
    "optimized multiquery": (256, False, "2d-ws", "batch", "B_yzxSD", {128: 43000, 512: 10700}),
}


def table1_program(variant: str, batch: int) -> shardc.Graph:
    """PaLM 540B decode on 64 chips: heads padded to 64 (one per chip), S is the context."""
    d_head, multihead, ffn, attention, _, _ = TABLE1[variant]
    text = LAYER.format(name=variant.replace(" ", "_"), B=batch, D=d_head, kv="H, " if multihead else "",
                        h="H" if multihead else "")
    return shardc.shard(shardc.parse(text), None, ffn, attention)


@pytest.mark.parametrize("batch", [128, 512])
@pytest.mark.parametrize("variant", list(TABLE1))
def test_table1_max_context(variant: str, batch: int) -> None:
    sg = table1_program(variant, batch)
    layout = TABLE1[variant][4]
    caches = [d.value for d, _ in sg.decls() if d.value.name in ("k", "v")]
    assert {v.layout.format(sg.mesh) for v in caches} == {layout}  # type: ignore[union-attr]
    got = max_context(sg, 0.30, "tpu-v4")
    want = TABLE1[variant][5][batch]
    assert abs(got / want - 1) <= 0.02, f"{variant} B={batch}: {got} vs the paper's {want}"
    # and the formula: 30% of 32 GiB over the bytes a chip holds per position of context --
    # K and V, 118 layers, one head of d_head (multihead: one of 64 heads per chip), bf16, for
    # every sequence (heads) or for its share of the batch (batch)
    per_sequence = 2 * 118 * TABLE1[variant][0] * 2
    sequences = batch / 64 if TABLE1[variant][3] == "batch" else batch
    assert got == int(0.3 * 32 * GiB // (per_sequence * sequences))


def test_table1_side_by_side() -> None:
    """``pytest -s -k table1`` prints Table 1 as the README shows it."""
    lines = ["\nthe paper's Table 1: longest context in 30% of 32 GiB per chip (paper / shardc)",
             f"{'variant':<22}{'B = 128':>18}{'B = 512':>18}"]
    for variant, spec in TABLE1.items():
        cells = [f"{spec[5][b]:,} / {max_context(table1_program(variant, b), 0.30, 'tpu-v4'):,}" for b in (128, 512)]
        lines.append(f"{variant:<22}{cells[0]:>18}{cells[1]:>18}")
    print("\n".join(lines))


def test_max_context_errors() -> None:
    prefill = shardc.shard(shardc.load(PALM_PREFILL))
    with pytest.raises(shardc.ShardcError, match="no KV cache"):
        max_context(prefill)
    with pytest.raises(shardc.ShardcError, match="fraction"):
        max_context(shardc.shard(shardc.load(PALM_DECODE)), 30)


# --- 3. Table 2: the calibrated model against the paper's measurements -----------------------
def load_claims():
    """benchmarks/claims.py as a module (the paper's qualitative claims)."""
    load_calibrate()
    spec = importlib.util.spec_from_file_location("claims", ROOT / "benchmarks" / "claims.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("claims", module)
    spec.loader.exec_module(module)
    return module


def test_table2_within_ten_percent_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    """``shardc cost`` with only the paper's flags, default everything else, reproduces each column."""
    calibrate = load_calibrate()
    lines = ["column                   latency: paper   bound  calibrated   MFU: paper  bound  calibrated"]
    for col in calibrate.COLUMNS:
        path = EXAMPLES / col.file
        obj = run_json(capsys, path, "--set", f"B={col.batch}", "--ffn", col.ffn, "--attention", col.attention,
                       "--weights", col.weights, "--pad", "H=64")
        assert obj["comm_mode"] == "torus" and obj["calibrated"] is True  # the profile's fitted model
        assert obj["padding"] == {"H": [48, 64]} and obj["params"] == 540_358_834_176
        latency, bound = obj["latency_s"] * col.steps, obj["bound_latency_s"] * col.steps
        lines.append(f"{col.name:<25}{col.latency_s:>13.3g} s{bound:>7.3g} s{latency:>10.3g} s"
                     f"{col.mfu:>12.0%}{obj['bound_mfu']:>7.0%}{obj['mfu']:>12.0%}")
        assert abs(latency / col.latency_s - 1) <= 0.10, f"{col.name}: latency {latency:.3g} s"
        assert abs(obj["mfu"] / col.mfu - 1) <= 0.10, f"{col.name}: MFU {obj['mfu']:.3g}"
        assert bound < latency  # the roofline is a bound
    with capsys.disabled():
        print("\nthe paper's Table 2, shardc cost by default (paper / bound / calibrated)\n" + "\n".join(lines))


def test_calibrate_py_rows_match_the_cli() -> None:
    calibrate = load_calibrate()
    rows = calibrate.rows(load_profile("tpu-v4"))
    for r in rows:
        assert abs(r.latency_ratio - 1) <= 0.10 and abs(r.mfu_ratio - 1) <= 0.10, r.col.name
    assert abs(rows[1].calibrated_s / 64 - 0.0284) < 0.1 * 0.0284  # 29 ms per generated token


def test_calibration_is_what_calibrate_py_fits() -> None:
    """The profile holds the fit (run ``python benchmarks/calibrate.py --write`` after changing the model)."""
    calibrate = load_calibrate()
    chip = load_profile("tpu-v4")
    assert chip.calibration.comm == calibrate.FIT_COMM and chip.calibration.matmul_tile == calibrate.TILE
    graphs = [calibrate.sharded(c) for c in calibrate.COLUMNS]
    base = chip.uncalibrated()
    cal = chip.calibration
    terms = [cal.hop_latency, cal.op_overhead, cal.mxu_fill, cal.peak_fraction]

    def loss(t: list[float]) -> float:
        return float(sum((calibrate.log_ratios(base, graphs, t) / calibrate.SIGMA) ** 2)) + calibrate.prior(t)

    here = loss(terms)
    for i in range(4):  # no nearby value of any term is better
        for factor in (0.9, 1.1):
            other = list(terms)
            other[i] = min(other[i] * factor, 1.0) if i == 3 else other[i] * factor
            assert loss(other) >= here - 1e-3, (calibrate.TERMS[i], factor)


def test_the_hop_latency_is_physical() -> None:
    """A TPU v4 ICI hop costs about a microsecond; the fit stays within a factor 3 of it."""
    cal = load_profile("tpu-v4").calibration
    assert 0.3e-6 < cal.hop_latency < 3e-6
    assert 0 < cal.peak_fraction <= 1 and cal.mxu_fill >= 0 and cal.op_overhead >= 0


def test_every_collective_costs_at_least_its_hops() -> None:
    chip = load_profile("tpu-v4")
    alpha = chip.calibration.hop_latency
    for path, ffn in ((PALM_DECODE, "2d-ws"), (PALM_PREFILL, "wg-xyz"), (TINY_LAYER, None)):
        sg = shardc.shard(shardc.parse(path.read_text(encoding="utf-8"), sizes={"H": 64}
                                       if path != TINY_LAYER else {}), None, ffn)
        for overlap in (False, True):
            report = estimate(sg, chip, overlap=overlap)
            times = {(t.value, t.line): t for t in report.ops}
            blocks = [(sg.body.stmts, 1)] + [(r.body.stmts, r.count) for r in sg.repeats]
            checked = 0
            for stmts, count in blocks:
                for op in stmts:
                    if isinstance(op, shardc.ir.graph.Op) and op.kind.is_collective and op.kind is not OpKind.SLICE:
                        steps = ring_steps(op.kind, op.attrs.axes, sg.mesh, chip)
                        t = times[(op.result.name or "", op.loc.line)]
                        assert t.comm_s >= count * steps * alpha * (1 - 1e-12), (path.stem, op.result.name)
                        checked += steps > 0
            assert checked or path == TINY_LAYER


def test_int8_makes_low_latency_decode_cheaper() -> None:
    """Figure 1: int8 weights make low-latency generation just over 2x cheaper (frontier of chips 8-256, B 1-64)."""
    claims = load_claims()
    chip = load_profile("tpu-v4")
    bound, _ = claims.int8_frontier_gain(chip, bound=True)
    calibrated, _ = claims.int8_frontier_gain(chip, bound=False)
    print(f"\nint8 gain on low-latency decode cost: paper just over 2x, bound {bound:.2f}x, "
          f"calibrated {calibrated:.2f}x")
    assert calibrated >= 1.7


@pytest.mark.parametrize("overlap", [False, True], ids=["additive", "overlap"])
def test_serial_block_is_slower_per_decode_step(overlap: bool) -> None:
    """the paper's §3.4: serial layers 14% slower per decode step (540B, 2D WS, 64 chips, B=512)."""
    claims = load_claims()
    chip = load_profile("tpu-v4")
    text = PALM_DECODE.read_text(encoding="utf-8")
    par = claims.cost(chip, text, 512, overlap=overlap)
    ser = claims.cost(chip, claims.serial_text(text), 512, overlap=overlap)
    bound = ser.bound_latency_s / par.bound_latency_s - 1
    calibrated = ser.latency_s / par.latency_s - 1
    print(f"\nserial block{' (--overlap)' if overlap else ''}: paper +14%, bound {bound:+.1%}, "
          f"calibrated {calibrated:+.1%}")
    assert 0.08 <= calibrated <= 0.20


def test_batch1_decode_latency_flattens_with_chips() -> None:
    """Figure 1: the latency of batch-1 generation stops falling as chips are added (64 -> 512)."""
    claims = load_claims()
    chip = load_profile("tpu-v4")
    text = PALM_DECODE.read_text(encoding="utf-8")
    reports = [claims.cost(chip, text, 1, mesh, "int8", attention="heads") for mesh in claims.BATCH1_MESHES]
    lat = [r.latency_s for r in reports]
    bound = [r.bound_latency_s for r in reports]
    print("\nbatch-1 int8 decode latency, 64/128/256/512 chips: bound "
          + ", ".join(f"{b * 1e3:.1f}" for b in bound) + " ms; calibrated " + ", ".join(f"{x * 1e3:.1f}" for x in lat)
          + " ms")
    assert bound[-1] < 0.25 * bound[0]  # the roofline keeps falling with the chip count
    assert lat[-1] > 0.6 * lat[0]  # the hop latencies and per-op costs set a floor


def test_claims_table_prints() -> None:
    claims = load_claims()
    print("\n" + claims.claims_text(load_profile("tpu-v4")))


def test_mfu_counts_the_real_heads() -> None:
    """Padding is work but not useful work: MFU and params count the file's 48 heads."""
    text = PALM_DECODE.read_text(encoding="utf-8")
    sg = shardc.shard(shardc.parse(text, sizes={"H": 64}))
    padded = estimate(sg)
    real = estimate(sg, real_sizes={"H": 48})
    assert real.latency_s == padded.latency_s and real.params == 540_358_834_176
    assert real.padded_params == padded.params and padded.padding == {}
    assert real.mfu == pytest.approx(padded.mfu * 540_358_834_176 / padded.params)
    with pytest.raises(shardc.ShardcError, match="between 1 and"):
        estimate(sg, real_sizes={"H": 80})


def test_default_comm_is_the_profiles() -> None:
    sg = shardc.shard(shardc.load(TINY_LAYER))
    assert estimate(sg).comm_mode == "torus"  # tpu-v4's terms were fitted in torus
    assert estimate(sg, "h100-nvlink").comm_mode == "paper"  # nothing fitted: the paper's formulas
    paper = estimate(sg, comm="paper")
    assert not paper.calibrated and paper.latency_s == paper.bound_latency_s
    assert "fitted in --comm torus" in paper.estimate_model and "paper" in paper.bound_model
    h100 = estimate(sg, "h100-nvlink", comm="torus")  # no fitted terms: nothing to refuse
    assert h100.calibrated and h100.latency_s == h100.bound_latency_s


# --- 4. the paper's analytic claims ----------------------------------------------------------
FFN = """
model ffn
dims B={B}, L={L}, E={E}, F={F}
input x : bf16[B, L, E]
repeat 1 {{
  param win  : bf16[E, F]
  param wout : bf16[F, E]
  u = gelu(einsum("BLE,EF->BLF", x, win))
  f = einsum("BLF,FE->BLE", u, wout)
  x = x + f
}}
output x
"""
BW = 270e9  # bytes/s of a chip on all six links: the paper's §3.1


def ffn_comm_seconds(mesh: str, ffn: str, B: int = 8, L: int = 128, E: int = 1024, F: int = 4096) -> float:
    """Seconds of the collectives of one FFN layer, paper mode, tpu-v4 bound."""
    sg = shardc.shard(shardc.parse(FFN.format(B=B, L=L, E=E, F=F)), mesh, ffn, "heads")
    report = estimate(sg, "tpu-v4", "paper")
    return sum(t.comm_s for t in report.ops)


def test_2d_weight_stationary_comm_formula() -> None:
    """the paper's §3.2: at X = sqrt(n)/2 and F = 4E, comm = 8 BLE / (sqrt(n) bw) (bytes, bf16)."""
    B, L, E = 8, 128, 1024
    n = 64  # 4x4x4: X = 4 = sqrt(64)/2, YZ = 16
    got = ffn_comm_seconds("4x4x4", "2d-ws", B, L, E, 4 * E)
    # The formula's 2 BLE/X + 2 BLF/YZ bytes, without (K-1)/K, is what paper mode charges.
    assert got == pytest.approx(2 * B * L * E * 2 / 4 / BW + 2 * B * L * 4 * E * 2 / 16 / BW, rel=1e-12)
    assert got == pytest.approx(8 * B * L * E * 2 / (math.sqrt(n) * BW), rel=1e-12)


def test_2d_beats_1d_above_16_chips() -> None:
    """F = 4E: 1D costs 2 BLE whatever n; 2D costs 3, 2, 1.5, 1 BLE on 8, 16, 32, 64 chips."""
    unit = 8 * 128 * 1024 * 2 / BW  # BLE bytes over bw
    ratios = {}
    for mesh in ("2x2x2", "2x4x2", "4x2x4", "4x4x4"):
        one, two = ffn_comm_seconds(mesh, "1d-ws"), ffn_comm_seconds(mesh, "2d-ws")
        assert one == pytest.approx(2 * unit, rel=1e-12)
        ratios[Mesh.parse(mesh).num_chips] = two / one
    assert ratios[8] == pytest.approx(1.5) and ratios[16] == pytest.approx(1.0)
    assert ratios[32] == pytest.approx(0.75) and ratios[64] == pytest.approx(0.5)


@pytest.mark.parametrize("L, best", [(4, "wg-x"), (64, "wg-xy"), (1024, "wg-xyz")])
def test_weight_gathered_optimum(L: int, best: str) -> None:
    """the paper's §3.2: comm 2EF N/n + 2BLE/N is least at N* = sqrt(BL n / F): X, XY, XYZ = 4, 16, 64."""
    B, E, F, n = 64, 256, 1024, 64
    n_star = math.sqrt(B * L * n / F)
    assert n_star == {"wg-x": 4, "wg-xy": 16, "wg-xyz": 64}[best]
    comm = {ffn: ffn_comm_seconds("4x4x4", ffn, B, L, E, F) for ffn in ("wg-x", "wg-xy", "wg-xyz")}
    assert min(comm, key=lambda k: comm[k]) == best
    for ffn, N in (("wg-x", 4), ("wg-xy", 16)):  # the formula exactly (XYZ has no activation collectives)
        assert comm[ffn] == pytest.approx((2 * E * F * N / n + 2 * B * L * E / N) * 2 / BW, rel=1e-12)
    assert comm["wg-xyz"] == pytest.approx(2 * E * F * 2 / BW, rel=1e-12)


def serial_palm_text() -> str:
    """The PaLM 540B decode layer as a serial block: attention, residual, layernorm, MLP, residual."""
    return load_claims().serial_text(PALM_DECODE.read_text(encoding="utf-8"))


def reduce_collectives_per_layer(text: str) -> int:
    sg = shardc.shard(shardc.parse(text), None, "2d-ws", "batch")
    (rep,) = sg.repeats
    return sum(1 for s in rep.body if getattr(s, "kind", None) in (OpKind.REDUCE_SCATTER, OpKind.ALL_REDUCE))


def test_parallel_block_saves_one_reduce_collective() -> None:
    parallel = reduce_collectives_per_layer(PALM_DECODE.read_text(encoding="utf-8"))
    serial = reduce_collectives_per_layer(serial_palm_text())
    assert parallel == serial - 1


def test_ring_steps_run_per_torus_axis() -> None:
    mesh = Mesh.parse("4x4x4")
    tpu, h100 = load_profile("tpu-v4"), load_profile("h100-nvlink")
    assert ring_steps(OpKind.ALL_GATHER, ("x", "y", "z"), mesh, tpu) == 9
    assert ring_steps(OpKind.ALL_REDUCE, ("y", "z"), mesh, tpu) == 12
    assert ring_steps(OpKind.ALL_GATHER, ("x", "y", "z"), mesh, h100) == 63


def test_bound_is_the_roofline() -> None:
    """Uncalibrated, the bound is the roofline; the estimate (no overlap within an op) is not below it."""
    sg = shardc.shard(shardc.load(PALM_DECODE))
    report = estimate(sg, load_profile("tpu-v4").uncalibrated())
    assert report.bound_latency_s <= report.latency_s
    assert report.bound == "weight loading"
    assert report.calibration["mxu_fill"] == 0.0
    # int8 weights, read once per step: 7.0 ms for PaLM 540B on 64 chips (the paper's hardware description)
    int8 = shardc.shard(with_weight_dtype(shardc.load(PALM_DECODE), shardc.DType.INT8))
    loading = estimate(int8, "tpu-v4").bound_buckets["weight loading"]
    assert loading == pytest.approx(7.0e-3, rel=0.08)


# --- 5. cost does not grow with layers or dim sizes -------------------------------------------
def test_a_huge_program_costs_instantly(tmp_path: Path) -> None:
    text = PALM_DECODE.read_text(encoding="utf-8").replace("repeat 118 {", "repeat 1000000 {")
    path = tmp_path / "palm_huge.model"
    path.write_text(text, encoding="utf-8")
    argv = ["cost", str(path), "--set", "E=1000000000000", "--max-context", "--json"]
    shardc.parse(TINY_LAYER.read_text(encoding="utf-8"))  # build the parser outside the measurement
    out = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    assert time.perf_counter() - start < 2.0
    obj = json.loads(out.getvalue())
    assert obj["params"] > 10**18 and obj["latency_s"] > 0
    tracemalloc.start()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(argv) == 0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20


def test_estimate_is_exported() -> None:
    assert "estimate" in shardc.__all__
    report = shardc.estimate(shardc.shard(shardc.load(TINY_LAYER)), chip="tpu-v4")
    assert report.latency_s > 0 and report.chips == 4  # tiny_layer: mesh 2x2


# --- 6. the command line -----------------------------------------------------------------------
def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main(["cost", *[str(a) for a in argv]])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: object) -> dict:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_cli_text(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, PALM_DECODE, "--set", "H=64", "--weights", "int8", "--comm", "torus")
    assert code == 0
    for text in ("calibrated", "bound", "latency per token", "MFU", "chip-seconds per token",
                 "FLOPs", "bytes sent", "HBM traffic", "weights", "KV caches", "peak activations",
                 "fits yes", "by op kind", "by collective", "reduce_scatter", "int8 weights"):
        assert text in out, text
    assert re.search(r"^latency\s+\d+(\.\d+)? ms\s+\d+(\.\d+)? ms$", out, re.M), out
    bound_lines = [line for line in out.splitlines() if line.startswith("bound by ")]
    assert bound_lines == [bound_lines[0]] and "weight loading" in bound_lines[0]
    assert "%" in out and "GiB" in out


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    obj = run_json(capsys, PALM_DECODE)
    report = estimate(shardc.shard(shardc.load(PALM_DECODE)))
    assert obj["latency_s"] == pytest.approx(report.latency_s)
    assert obj["bound_latency_s"] == pytest.approx(report.bound_latency_s)
    assert obj["ffn"] == "2d-ws" and obj["attention"] == "batch" and obj["chip"] == "tpu-v4"
    assert obj["bound"] in ("compute", "weight loading", "KV cache", "activations", "communication")
    shares = obj["breakdown"]["by_kind"]
    assert sum(v["share"] for v in shares.values()) == pytest.approx(1.0)
    assert "max_context" not in obj
    assert obj["memory_bytes_per_chip"] == pytest.approx(
        obj["weight_bytes_per_chip"] + obj["cache_bytes_per_chip"] + obj["activation_bytes_per_chip"])


def test_cli_max_context(capsys: pytest.CaptureFixture[str]) -> None:
    obj = run_json(capsys, PALM_DECODE, "--set", "B=128", "--max-context")
    assert obj["max_context"] == 42653 and obj["kv_budget_fraction"] == 0.3
    obj = run_json(capsys, PALM_DECODE, "--set", "B=128", "--max-context", "--kv-budget", "60")
    assert obj["max_context"] in (2 * 42653, 2 * 42653 + 1)
    code, out, _ = run(capsys, PALM_DECODE, "--set", "B=128", "--max-context")
    assert code == 0 and "max context      42,653 positions" in out and "30% of HBM" in out
    code, _, err = run(capsys, PALM_PREFILL, "--max-context")
    assert code == 2 and "no KV cache" in err
    code, _, err = run(capsys, PALM_DECODE, "--kv-budget", "0")
    assert code == 2 and "--kv-budget" in err


def test_cli_comm_modes_and_overlap(capsys: pytest.CaptureFixture[str]) -> None:
    default = run_json(capsys, PALM_DECODE)
    paper = run_json(capsys, PALM_DECODE, "--comm", "paper")
    torus = run_json(capsys, PALM_DECODE, "--comm", "torus")
    overlap = run_json(capsys, PALM_DECODE, "--overlap")
    assert default["comm_mode"] == torus["comm_mode"] == "torus" and overlap["overlap"] is True
    assert default["latency_s"] == torus["latency_s"] and default["calibrated"] is True
    assert paper["calibrated"] is False and paper["latency_s"] == paper["bound_latency_s"]
    assert "paper" in paper["bound_model"] and "torus" in paper["estimate_model"]
    assert torus["bound_buckets"]["communication"] > paper["bound_buckets"]["communication"]
    assert overlap["latency_s"] < default["latency_s"]
    assert overlap["bound_latency_s"] < default["bound_latency_s"]
    code, out, _ = run(capsys, PALM_DECODE, "--comm", "paper")
    assert code == 0 and "the bound alone" in out and "calibrated  " not in out
    code, _, err = run(capsys, PALM_DECODE, "--comm", "mesh")
    assert code == 2 and "paper or torus" in err


def test_cli_h100_is_switched(capsys: pytest.CaptureFixture[str]) -> None:
    tpu = run_json(capsys, TINY_LAYER, "--mesh", "2x2x2", "--comm", "torus")
    h100 = run_json(capsys, TINY_LAYER, "--mesh", "2x2x2", "--comm", "torus", "--chip", "h100-nvlink")
    assert h100["chip"] == "h100-nvlink" and h100["mesh"] == tpu["mesh"] == "2x2x2"
    for kind in tpu["breakdown"]["by_collective"]:
        t, h = tpu["breakdown"]["by_collective"][kind]["seconds"], h100["breakdown"]["by_collective"][kind]["seconds"]
        assert t != h
    # a switch gives every collective 450 GB/s; a one-axis torus ring 90 GB/s
    assert h100["buckets"]["communication"] < tpu["buckets"]["communication"]


def test_cli_chip_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    good = tmp_path / "fast.toml"
    good.write_text('name = "fast"\npeak_flops = 1e15\nhbm_bytes = 1e11\nhbm_bandwidth = 4e12\n'
                    'link_bandwidth = 1e11\nlinks = 6\ntopology = "torus"\n', encoding="utf-8")
    obj = run_json(capsys, PALM_DECODE, "--chip-file", good)
    base = run_json(capsys, PALM_DECODE)
    assert obj["chip"] == "fast" and obj["hbm_capacity"] == 1e11
    assert obj["bound_latency_s"] < base["bound_latency_s"]
    assert obj["latency_s"] >= obj["bound_latency_s"]  # no fitted terms, still no overlap within ops

    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\npeak_flops = -1\n', encoding="utf-8")
    code, _, err = run(capsys, PALM_DECODE, "--chip-file", bad)
    assert code == 2 and "bad.toml" in err and "peak_flops" in err and "Traceback" not in err
    broken = tmp_path / "broken.toml"
    broken.write_text("peak_flops = [", encoding="utf-8")
    code, _, err = run(capsys, PALM_DECODE, "--chip-file", broken)
    assert code == 2 and "not a valid TOML chip profile" in err
    huge = tmp_path / "huge.toml"  # tomllib reads integers with int(), which refuses 4,301 digits
    huge.write_text(good.read_text().replace("links = 6", "links = " + "9" * 4301), encoding="utf-8")
    code, _, err = run(capsys, PALM_DECODE, "--chip-file", huge)
    assert code == 2 and "too many digits" in err and "Traceback" not in err
    code, _, err = run(capsys, PALM_DECODE, "--chip-file", tmp_path / "missing.toml")
    assert code == 2 and "no such file" in err
    calibrated = tmp_path / "cal.toml"
    calibrated.write_text(good.read_text() + '[calibration]\nmxu_fill = "big"\ncomm = "torus"\n', encoding="utf-8")
    code, _, err = run(capsys, PALM_DECODE, "--chip-file", calibrated)
    assert code == 2 and "mxu_fill" in err
    uncommitted = tmp_path / "nocomm.toml"
    uncommitted.write_text(good.read_text() + '[calibration]\nhop_latency = 1e-6\n', encoding="utf-8")
    code, _, err = run(capsys, PALM_DECODE, "--chip-file", uncommitted)
    assert code == 2 and "'comm'" in err


def test_cli_unknown_chip(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, PALM_DECODE, "--chip", "tpu-v9")
    assert code == 2 and "tpu-v9" in err and "h100-nvlink" in err and "tpu-v4" in err
    code, out, _ = run(capsys, PALM_DECODE, "--chip", "tpu-v9", "--json")
    assert code == 2 and "tpu-v4" in json.loads(out)["error"]["message"]


def test_cli_pad(capsys: pytest.CaptureFixture[str]) -> None:
    obj = run_json(capsys, PALM_DECODE, "--pad", "H=64")
    padded = run_json(capsys, PALM_DECODE, "--set", "H=64")
    assert obj["latency_s"] == padded["latency_s"] and obj["padding"] == {"H": [48, 64]}
    assert obj["params"] == 540_358_834_176 and obj["padded_params"] == padded["params"]
    assert obj["mfu"] < padded["mfu"]
    code, out, _ = run(capsys, PALM_DECODE, "--pad", "H=64")
    assert code == 0 and "padding: H 48 -> 64" in out
    code, _, err = run(capsys, PALM_DECODE, "--pad", "H=32")
    assert code == 2 and "cannot shrink" in err
    code, _, err = run(capsys, PALM_DECODE, "--pad", "Q=4")
    assert code == 2 and "no dim Q" in err


def test_cli_weights(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bf16 = run_json(capsys, PALM_DECODE)
    int8 = run_json(capsys, PALM_DECODE, "--weights", "int8")
    assert int8["weight_bytes_per_chip"] == pytest.approx(bf16["weight_bytes_per_chip"] / 2)
    assert int8["latency_s"] < bf16["latency_s"]
    code, _, err = run(capsys, PALM_DECODE, "--weights", "fp4")
    assert code == 2 and "bf16 or int8" in err
    sharded = tmp_path / "sharded.model"
    assert main(["compile", str(TINY_LAYER), "-o", str(sharded)]) == 0
    capsys.readouterr()
    obj = run_json(capsys, sharded)  # an already-sharded program is costed as written
    assert obj["ffn"] is None and obj["latency_s"] > 0
    code, _, err = run(capsys, sharded, "--weights", "int8")
    assert code == 2 and "already sharded" in err


# --- switched nodes: traffic between nodes goes over the inter-node link ---------------------------
def test_h100_collectives_beyond_a_node_use_the_internode_link() -> None:
    """An all-gather over 16 GPUs (two nodes of 8) is slower per byte than over the 8 of one node."""
    from shardc.hardware.comm import CommMode, collective_time, spans_nodes
    from shardc.ir.mesh import Mesh

    h100 = load_profile("h100-nvlink")
    assert h100.node_size == 8 and h100.internode_bandwidth < h100.ici_bandwidth
    one_node, two_nodes = Mesh.parse("8"), Mesh.parse("16")
    assert not spans_nodes(("x",), one_node, h100) and spans_nodes(("x",), two_nodes, h100)
    nbytes = 1e9
    t8 = sum(collective_time(OpKind.ALL_GATHER, ("x",), nbytes, one_node, h100, CommMode.TORUS))
    t16 = sum(collective_time(OpKind.ALL_GATHER, ("x",), nbytes, two_nodes, h100, CommMode.TORUS))
    print(f"\nall-gather of 1 GB: 8 GPUs {t8 * 1e3:.2f} ms, 16 GPUs {t16 * 1e3:.2f} ms")
    assert t16 > 5 * t8  # 450 GB/s inside a node, 50 GB/s across
    # On a 2x8 mesh the minor axis stays inside a node; the major axis crosses nodes.
    mesh = Mesh.parse("2x8")
    assert not spans_nodes(("y",), mesh, h100) and spans_nodes(("x",), mesh, h100)
    assert spans_nodes(("x", "y"), mesh, h100)
    assert not spans_nodes(("x", "y", "z"), Mesh.parse("2x2x2"), h100)  # 8 GPUs: one node


def test_node_fields_are_checked(tmp_path: Path) -> None:
    from shardc.errors import ShardcError
    from shardc.hardware.profile import profile_from_dict

    base = {"peak_flops": 1e15, "hbm_bytes": 8e10, "hbm_bandwidth": 3e12, "link_bandwidth": 4.5e11, "links": 1,
            "topology": "switched"}
    assert profile_from_dict({**base, "node_size": 4, "internode_bandwidth": 2.5e10}).node_size == 4
    for bad, message in [({"node_size": 4}, "needs 'internode_bandwidth'"),
                         ({"node_size": 0, "internode_bandwidth": 1e9}, "at least 1"),
                         ({"node_size": 2.5, "internode_bandwidth": 1e9}, "whole number"),
                         ({"node_size": 4, "internode_bandwidth": float("nan")}, "positive number"),
                         ({"node_size": 4, "internode_bandwidth": 1e9, "internode_latency": -1}, ">= 0")]:
        with pytest.raises(ShardcError, match=message):
            profile_from_dict({**base, **bad})
    with pytest.raises(ShardcError, match="not a torus"):
        profile_from_dict({**base, "topology": "torus", "node_size": 4, "internode_bandwidth": 1e9})


def test_kv_budget_needs_max_context(capsys: pytest.CaptureFixture[str]) -> None:
    """A budget with nothing to budget was silently ignored."""
    assert main(["cost", str(PALM_DECODE), "--kv-budget", "20"]) == 2
    assert "give --max-context too" in capsys.readouterr().err
    assert main(["cost", str(PALM_DECODE), "--kv-budget", "nan", "--max-context"]) == 2
    assert main(["cost", str(PALM_DECODE), "--kv-budget", "20", "--max-context"]) == 0
