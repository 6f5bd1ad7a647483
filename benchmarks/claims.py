"""The paper's qualitative claims about cost, as ``shardc cost`` reproduces them: paper / bound / calibrated.

Imported by ``benchmarks/calibrate.py`` (which prints the table after its fit) and by
``tests/test_cost.py`` (which checks each claim).  Nothing here is fitted: every figure is
:func:`shardc.estimate` with a chip profile as given.

* int8 weights make low-latency generation just over 2x cheaper (Figure 1): the cost in
  chip-seconds per token along the latency/cost frontier of PaLM 540B decode over the
  paper's chip counts (8 to 256, meshes 2x2x2 ... 4x8x8) at batches 1 to 64, bf16 against
  int8, for configurations whose weights and caches fit in HBM;
* int8 is about neutral at large batch (batch-512 decode on 64 chips);
* serial blocks are 14% slower per decode step than parallel ones (§3.4: 540B, 2D
  weight-stationary, 64 chips, batch 512), with and without ``--overlap``;
* batch-512 prefill costs about half of batch-512 generation per token (Figure 1);
* batch-1 decode latency flattens as chips grow (Figure 1: 64 to 512 chips);
* the two worked requests (``benchmarks/requests.py``, on the paper's mesh and presets): the
  chatbot's 1.9 s end to end and the offline request's 73% FLOPS efficiency.
"""
from __future__ import annotations

import importlib.util
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from shardc import ShardcError, parse, shard
from shardc.cost.model import CostReport, estimate
from shardc.hardware.profile import ChipProfile
from shardc.ir.graph import DType
from shardc.ir.transforms import with_weight_dtype

ROOT = Path(__file__).resolve().parent.parent
DECODE = ROOT / "examples" / "palm_540b_decode.model"
PREFILL = ROOT / "examples" / "palm_540b_prefill.model"
PAD = {"H": 64}
REAL = {"H": 48}
MESHES = ("2x2x2", "2x4x2", "4x2x4", "4x4x4", "8x4x4", "4x8x8")  # the authors' 8 ... 256 chips
BATCH1_MESHES = ("4x4x4", "8x4x4", "4x8x8", "8x8x8")  # 64 ... 512 chips
LOW_LATENCY_BATCHES = (1, 2, 4, 8, 16, 32, 64)


def serial_text(text: str) -> str:
    """A PaLM layer as a serial block: attention added to the residual, then a second layernorm feeding the MLP."""
    edits = [
        ("  param wout : bf16[F, E]\n", "  param wout : bf16[F, E]\n  param g2   : bf16[E]\n"),
        ('  u  = silu(einsum("BLE,EF->BLF", h, win1)) * einsum("BLE,EF->BLF", h, win2)',
         '  x1 = x + o\n  h2 = layernorm(x1, g2, over=E)\n'
         '  u  = silu(einsum("BLE,EF->BLF", h2, win1)) * einsum("BLE,EF->BLF", h2, win2)'),
        ("  x  = x + o + f", "  x  = x1 + f"),
    ]
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


def cost(chip: ChipProfile, text: str, batch: int, mesh: str | None = None, weights: str = "bf16",
         ffn: str = "2d-ws", attention: str | None = None, overlap: bool = False,
         must_fit: bool = False) -> CostReport | None:
    """``shardc cost`` with the paper's flags (``--pad H=64``); None if the layout does not split
    (or, with ``must_fit``, does not fit in HBM)."""
    g = parse(text, sizes={"B": batch, **PAD})
    if weights == "int8":
        g = with_weight_dtype(g, DType.INT8)
    try:
        sg = shard(g, mesh, ffn, attention)
    except ShardcError:
        return None
    report = estimate(sg, chip, overlap=overlap, real_sizes=REAL)
    return report if report.fits_hbm or not must_fit else None


@dataclass(frozen=True)
class Point:
    mesh: str
    batch: int
    latency: float  # seconds per generated token (one decode step)
    cost: float  # chip-seconds per token


def frontier(points: list[Point]) -> list[Point]:
    """The Pareto frontier: no other point is both faster and cheaper."""
    out: list[Point] = []
    for p in sorted(points, key=lambda p: (p.latency, p.cost)):
        if not out or p.cost < out[-1].cost:
            out.append(p)
    return out


def decode_points(chip: ChipProfile, weights: str, bound: bool) -> list[Point]:
    text = DECODE.read_text(encoding="utf-8")
    out = []
    for mesh in MESHES:
        for batch in LOW_LATENCY_BATCHES:
            r = cost(chip, text, batch, mesh, weights, must_fit=True)
            if r is not None:
                latency = r.bound_latency_s if bound else r.latency_s
                out.append(Point(mesh, batch, latency, r.chips * latency / r.tokens))
    return out


def int8_frontier_gain(chip: ChipProfile, bound: bool) -> tuple[float, float]:
    """(cheapest bf16 / cheapest int8 cost, geometric mean over the bf16 frontier of the gain at equal latency)."""
    bf16 = frontier(decode_points(chip, "bf16", bound))
    int8 = frontier(decode_points(chip, "int8", bound))
    cheapest = min(p.cost for p in bf16) / min(p.cost for p in int8)
    gains = []
    for p in bf16:  # the cheapest int8 point at no more latency
        faster = [q.cost for q in int8 if q.latency <= p.latency]
        if faster:
            gains.append(p.cost / min(faster))
    return cheapest, math.exp(sum(math.log(g) for g in gains) / len(gains))


@dataclass(frozen=True)
class Claim:
    name: str
    paper: str
    bound: float
    calibrated: float
    unit: str  # how to print: "x", "%", "ms"


def claims(chip: ChipProfile) -> list[Claim]:
    decode = DECODE.read_text(encoding="utf-8")
    out = []
    b_cheap, b_mean = int8_frontier_gain(chip, bound=True)
    c_cheap, c_mean = int8_frontier_gain(chip, bound=False)
    out.append(Claim("int8 gain, low-latency decode cost (cheapest point)", "just over 2x", b_cheap, c_cheap, "x"))
    out.append(Claim("int8 gain at equal latency (bf16 frontier mean)", "just over 2x", b_mean, c_mean, "x"))
    big = {w: cost(chip, decode, 512, weights=w) for w in ("bf16", "int8")}
    assert big["bf16"] and big["int8"]
    out.append(Claim("int8 gain, batch-512 decode cost", "about neutral",
                     big["bf16"].bound_latency_s / big["int8"].bound_latency_s,
                     big["bf16"].latency_s / big["int8"].latency_s, "x"))
    for overlap in (False, True):
        par = cost(chip, decode, 512, overlap=overlap)
        ser = cost(chip, serial_text(decode), 512, overlap=overlap)
        assert par and ser
        out.append(Claim(f"serial block, decode step (B=512){', --overlap' if overlap else ''}", "+14%",
                         ser.bound_latency_s / par.bound_latency_s - 1, ser.latency_s / par.latency_s - 1, "%"))
    prefill = cost(chip, PREFILL.read_text(encoding="utf-8"), 512, ffn="wg-xyz", attention="batch")
    assert prefill
    d, p = big["bf16"], prefill
    out.append(Claim("batch-512 prefill / generation cost per token", "about 0.5",
                     (p.chips * p.bound_latency_s / p.tokens) / (d.chips * d.bound_latency_s / d.tokens),
                     p.cost_chip_s_per_token / d.cost_chip_s_per_token, "x"))
    ll = cost(chip, decode, 64, weights="int8")
    assert ll
    out.append(Claim("weight loading in the int8 B=64 decode step", "7.0 of 28.4 ms",
                     ll.bound_buckets["weight loading"], ll.buckets.get("weight loading", 0.0), "ms"))
    lat = [cost(chip, decode, 1, mesh, "int8", attention="heads") for mesh in BATCH1_MESHES]
    for r in lat:
        if r is not None:
            out.append(Claim(f"batch-1 int8 decode latency, {r.chips} chips", "flattens (Figure 1)",
                             r.bound_latency_s, r.latency_s, "ms"))
    worked = _worked_requests()
    for req in worked.REQUESTS:
        r = worked.plan_worked(req, chip, paper_layouts=True)
        paper = worked._fmt(req, req.paper_value)
        out.append(Claim(f"{req.name} request, whole ({req.paper_figure})", paper, worked.ours(req, r, bound=True),
                         worked.ours(req, r), "s" if req.paper_figure == "latency" else "mfu"))
    return out


def _worked_requests():  # type: ignore[no-untyped-def]
    """benchmarks/requests.py, loaded by path (its name would otherwise find the HTTP library)."""
    spec = importlib.util.spec_from_file_location("worked_requests", Path(__file__).with_name("requests.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("worked_requests", module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return sys.modules["worked_requests"]


def claims_text(chip: ChipProfile) -> str:
    def fmt(v: float, unit: str) -> str:
        return {"x": f"{v:.2f}x", "%": f"{v:+.1%}", "ms": f"{v * 1e3:.2f} ms", "s": f"{v:.2f} s",
                "mfu": f"{v:.1%}"}[unit]

    rows = [["claim", "paper", "bound", "calibrated"]]
    rows += [[c.name, c.paper, fmt(c.bound, c.unit), fmt(c.calibrated, c.unit)] for c in claims(chip)]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
