"""Fit tpu-v4's ``[calibration]`` terms once to the paper's Table 2, and print the fit.

Usage::

    python benchmarks/calibrate.py            # fit and print (profile untouched)
    python benchmarks/calibrate.py --write    # ... and rewrite [calibration] in shardc/profiles/tpu-v4.toml
    python benchmarks/calibrate.py --check    # print the table with the profile's current terms (no fit)

The data are the four columns of Table 2 and nothing else: PaLM 540B on 64 TPU v4
chips (mesh 4x4x4), context 2048.

=========================  =========================  ===  ======  ==========  =====  =======  =====
column                     program                    B    FFN     attention   wts    latency  MFU
=========================  =========================  ===  ======  ==========  =====  =======  =====
low-latency prefill        palm_540b_prefill.model    1    2d-ws   heads       int8   0.29 s   43%
low-latency decode         palm_540b_decode.model     64   2d-ws   batch       int8   1.82 s   14%
high-throughput prefill    palm_540b_prefill.model    512  wg-xyz  batch       bf16   85.2 s   76%
high-throughput decode     palm_540b_decode.model     512  2d-ws   batch       bf16   6.0 s    33%
=========================  =========================  ===  ======  ==========  =====  =======  =====

How each column is built and read:

* A prefill program is one forward pass over the L = 2048 prompt tokens of every
  sequence: its latency is the column's latency.  A decode program is ONE step
  (L = 1, against a 2048-position KV cache); the paper times 64 generated tokens,
  so the column's latency is 64 x ``latency_s``.
* Heads are padded from 48 to 64 (``H=64``) in every column, as the paper does
  for 64-way head sharding (the paper's §3.3 and Table 2); prefill and decode share one
  copy of the weights, so the padded heads are there in every phase.  MFU is the
  paper's: ``2 * N * tokens / (chips * peak * latency)`` with N the real
  540,358,834,176 parameters of the unpadded model -- padded heads are work, not
  useful FLOPs.
* int8 columns store every param as int8 (``with_weight_dtype``): weights are
  read and moved at one byte; matmuls stay bf16.
* Communication is costed with ``--comm torus`` (a collective over some torus
  axes gets only those axes' links: 90 GB/s per axis).  ``--comm paper`` (270
  GB/s for every collective, the paper's §3.1) is the paper's analytic model and
  overstates the bandwidth of the 2D layouts' one- and two-axis collectives:
  fitted in paper mode, the best terms leave the low-latency prefill (whose
  collectives over x carry a third of its time) 15% short.  The mode is
  recorded in the profile (``comm = "torus"``).
* The calibrated estimate counts every op's HBM reads and writes and does not
  overlap them with its compute (the bound does); shardc/cost.py says why:
  with the overlap the best fit leaves the high-throughput decode 10% short
  and makes int8 weights irrelevant to the low-latency decode step.

The three terms (shardc/hardware.py, shardc/cost.py):

* ``matmul_half_size`` h: a local matmul whose smallest side is m runs at
  m / (m + h) of peak (the MXU's fixed cost per weight tile);
* ``collective_latency``: seconds per ring step of a collective;
* ``layer_overhead``: seconds per layer of a repeat.

The fit minimises the sum over the four columns of log(predicted / measured
latency)^2 (MFU follows from latency), with no dependency beyond numpy: a
log-spaced grid over the three terms (zero included), then a Nelder-Mead
refinement.  For speed the grid uses that, without --overlap, the estimate is
linear in the two latency terms for a fixed h; every reported number comes from
a full :func:`shardc.estimate`.
"""
from __future__ import annotations

import argparse
import functools
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shardc import parse, shard, summarize  # noqa: E402
from shardc.cost.model import CostReport, estimate  # noqa: E402
from shardc.hardware.profile import PROFILE_DIR, Calibration, ChipProfile, load_profile  # noqa: E402
from shardc.ir.graph import DType, Graph  # noqa: E402
from shardc.ir.transforms import with_weight_dtype  # noqa: E402

CHIP = "tpu-v4"
FIT_COMM = "torus"
DECODE_STEPS = 64  # Table 2 times 64 generated tokens: 64 decode steps
PADDED_HEADS = 64


@dataclass(frozen=True)
class Column:
    """One column of the paper's Table 2."""

    name: str
    file: str
    batch: int
    ffn: str
    attention: str
    weights: str
    latency_s: float  # the paper's measured latency (decode: all 64 steps)
    mfu: float  # the paper's MFU

    @property
    def steps(self) -> int:
        """Program runs in the column's latency: 64 decode steps, or one prefill."""
        return DECODE_STEPS if "decode" in self.file else 1


COLUMNS = (
    Column("low-latency prefill", "palm_540b_prefill.model", 1, "2d-ws", "heads", "int8", 0.29, 0.43),
    Column("low-latency decode", "palm_540b_decode.model", 64, "2d-ws", "batch", "int8", 1.82, 0.14),
    Column("high-throughput prefill", "palm_540b_prefill.model", 512, "wg-xyz", "batch", "bf16", 85.2, 0.76),
    Column("high-throughput decode", "palm_540b_decode.model", 512, "2d-ws", "batch", "bf16", 6.0, 0.33),
)


def sharded(col: Column) -> Graph:
    """The column's sharded program: B set, heads padded to 64, weights in the column's dtype."""
    text = (ROOT / "examples" / col.file).read_text(encoding="utf-8")
    g = parse(text, col.file, sizes={"B": col.batch, "H": PADDED_HEADS})
    if col.weights == "int8":
        g = with_weight_dtype(g, DType.INT8)
    return shard(g, None, col.ffn, col.attention)


@functools.lru_cache(maxsize=None)
def _params(file: str) -> int:
    return summarize(parse((ROOT / "examples" / file).read_text(encoding="utf-8"), file)).total.params


def real_params(col: Column) -> int:
    """Parameters of the unpadded model (48 heads): the N of the paper's MFU."""
    return _params(col.file)


def paper_mfu(col: Column, sg: Graph, latency_s: float, chip: ChipProfile) -> float:
    """MFU as the paper counts it, for the column's latency (all its steps): real parameters only."""
    assert sg.mesh is not None
    tokens = sg.sizes["B"] * sg.sizes["L"] * col.steps
    return 2.0 * real_params(col) * tokens / (sg.mesh.num_chips * chip.peak_flops * latency_s)


@dataclass(frozen=True)
class Row:
    """One column's figures: the paper's, the bound's and the calibrated model's."""

    col: Column
    bound_s: float
    calibrated_s: float
    bound_mfu: float
    calibrated_mfu: float

    @property
    def latency_ratio(self) -> float:
        return self.calibrated_s / self.col.latency_s

    @property
    def mfu_ratio(self) -> float:
        return self.calibrated_mfu / self.col.mfu


def rows(chip: ChipProfile, comm: str = FIT_COMM, graphs: list[Graph] | None = None) -> list[Row]:
    """Table 2 predicted with ``chip`` (its calibration as given)."""
    graphs = graphs if graphs is not None else [sharded(c) for c in COLUMNS]
    out = []
    for col, sg in zip(COLUMNS, graphs):
        rep: CostReport = estimate(sg, chip, comm)
        bound, calibrated = rep.bound_latency_s * col.steps, rep.latency_s * col.steps
        out.append(Row(col, bound, calibrated, paper_mfu(col, sg, bound, chip), paper_mfu(col, sg, calibrated, chip)))
    return out


# --- the fit --------------------------------------------------------------------------------
def fit(chip: ChipProfile, graphs: list[Graph], comm: str = FIT_COMM) -> tuple[Calibration, float]:
    """The three terms minimising sum(log(predicted / measured)^2) over Table 2, and that sum."""
    measured = np.array([c.latency_s for c in COLUMNS])
    steps = np.array([c.steps for c in COLUMNS], dtype=float)

    def latencies(h: float, alpha: float, layer: float) -> np.ndarray:
        p = chip.with_calibration(Calibration(h, alpha, layer))
        return np.array([estimate(sg, p, comm).latency_s for sg in graphs]) * steps

    def loss(terms: tuple[float, float, float]) -> float:
        return float(np.sum(np.log(latencies(*terms) / measured) ** 2))

    # 1. Grid.  For a fixed h the estimate (without overlap) is linear in alpha and the layer
    #    overhead: latency = base(h) + alpha * A + layer * Lc, with A and Lc measured once.
    zero = latencies(0.0, 0.0, 0.0)
    per_alpha = latencies(0.0, 1e-6, 0.0) - zero  # seconds per microsecond of ring-step latency
    per_layer = latencies(0.0, 0.0, 1e-6) - zero  # seconds per microsecond of layer overhead
    hs = np.concatenate([[0.0], np.geomspace(1.0, 1e5, 51)])
    alphas = np.concatenate([[0.0], np.geomspace(1e-3, 1e3, 61)])  # microseconds
    layers = np.concatenate([[0.0], np.geomspace(1e-3, 1e4, 71)])  # microseconds
    best = (math.inf, (0.0, 0.0, 0.0))
    for h in hs:
        base = latencies(h, 0.0, 0.0)
        grid = (base[None, None, :] + alphas[:, None, None] * per_alpha + layers[None, :, None] * per_layer)
        losses = np.sum(np.log(grid / measured) ** 2, axis=-1)
        i, j = np.unravel_index(int(np.argmin(losses)), losses.shape)
        if losses[i, j] < best[0]:
            best = (float(losses[i, j]), (float(h), float(alphas[i]) * 1e-6, float(layers[j]) * 1e-6))

    # 2. Nelder-Mead from the best grid point, on the full estimate, in scaled units (h in 100s,
    #    both latency terms in microseconds); a term is the absolute value of its coordinate, so
    #    the simplex can reach zero (where the fit may well end: the terms trade off along a
    #    shallow valley, and the data may prefer one at zero).
    scale = np.array([100.0, 1e-6, 1e-6])

    def objective(x: np.ndarray) -> float:
        return loss(tuple(float(t) for t in np.abs(x) * scale))  # type: ignore[arg-type]

    x0 = np.array(best[1]) / scale
    terms_x, value = nelder_mead(objective, x0, [max(0.2 * abs(v), 0.05) for v in x0])
    terms = [float(t) for t in np.abs(terms_x) * scale]
    for i in range(3):  # a term the simplex left a hair above zero is zero
        trial = terms.copy()
        trial[i] = 0.0
        v = loss(tuple(trial))  # type: ignore[arg-type]
        if v <= value + 1e-9:
            terms, value = trial, min(v, value)
    return Calibration(*terms, comm=comm), value


def nelder_mead(f, x0: np.ndarray, steps: list[float], iterations: int = 400,
                tolerance: float = 1e-9) -> tuple[np.ndarray, float]:
    """Minimise ``f`` from ``x0`` (the textbook method: reflect, expand, contract, shrink)."""
    n = len(x0)
    simplex = [x0.astype(float)] + [x0 + np.eye(n)[i] * steps[i] for i in range(n)]
    values = [f(x) for x in simplex]
    for _ in range(iterations):
        order = np.argsort(values)
        simplex, values = [simplex[i] for i in order], [values[i] for i in order]
        if values[-1] - values[0] < tolerance and max(np.abs(x - simplex[0]).max() for x in simplex) < 1e-4:
            break
        centre = np.mean(simplex[:-1], axis=0)
        reflected = centre + (centre - simplex[-1])
        fr = f(reflected)
        if fr < values[0]:
            expanded = centre + 2.0 * (centre - simplex[-1])
            fe = f(expanded)
            simplex[-1], values[-1] = (expanded, fe) if fe < fr else (reflected, fr)
        elif fr < values[-2]:
            simplex[-1], values[-1] = reflected, fr
        else:
            contracted = centre + 0.5 * (simplex[-1] - centre)
            fc = f(contracted)
            if fc < values[-1]:
                simplex[-1], values[-1] = contracted, fc
            else:  # shrink towards the best point
                simplex = [simplex[0]] + [simplex[0] + 0.5 * (x - simplex[0]) for x in simplex[1:]]
                values = [values[0]] + [f(x) for x in simplex[1:]]
    i = int(np.argmin(values))
    return simplex[i], values[i]


# --- output ---------------------------------------------------------------------------------
def _seconds(s: float) -> str:
    return f"{s * 1e3:.0f} ms" if s < 1 else f"{s:.2f} s"


def table(result: list[Row]) -> str:
    """Table 2 side by side: paper, bound, calibrated and calibrated / paper, for latency and MFU."""
    head = ["column", "latency: paper", "bound", "calibrated", "ratio", "MFU: paper", "bound", "calibrated", "ratio"]
    body = [[r.col.name, _seconds(r.col.latency_s), _seconds(r.bound_s), _seconds(r.calibrated_s),
             f"{r.latency_ratio:.2f}", f"{r.col.mfu:.0%}", f"{r.bound_mfu:.0%}", f"{r.calibrated_mfu:.0%}",
             f"{r.mfu_ratio:.2f}"] for r in result]
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(x, widths)))
             for x in [head] + body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def terms_text(cal: Calibration) -> str:
    return (f"matmul_half_size   = {cal.matmul_half_size:.6g}  (a local matmul of smallest side m runs at "
            f"m / (m + {cal.matmul_half_size:.0f}) of peak)\n"
            f"collective_latency = {cal.collective_latency:.6g} s  ({cal.collective_latency * 1e6:.3g} us per "
            f"ring step)\n"
            f"layer_overhead     = {cal.layer_overhead:.6g} s  ({cal.layer_overhead * 1e6:.3g} us per layer)")


def write_profile(path: Path, cal: Calibration) -> None:
    """Rewrite the values of the [calibration] table of ``path``, keeping every comment."""
    text = path.read_text(encoding="utf-8")
    start = re.search(r"^\[calibration\][^\n]*\n", text, re.M)
    if start is None:
        raise SystemExit(f"{path}: no [calibration] table")
    end = re.search(r"^\[", text[start.end():], re.M)
    stop = start.end() + end.start() if end else len(text)
    section = text[start.end():stop]
    def number(x: float) -> str:
        return repr(float(f"{x:.6g}"))  # 189.831, 0.0, 1.5e-05: always a TOML float

    values = {"matmul_half_size": number(cal.matmul_half_size),
              "collective_latency": number(cal.collective_latency),
              "layer_overhead": number(cal.layer_overhead),
              "comm": f'"{cal.comm}"'}
    notes = {"comm": "# the --comm mode the terms were fitted with (a note, not a term)"}
    for key, value in values.items():
        pattern = re.compile(rf"^{key}\s*=[^#\n]*(#.*)?$", re.M)
        m = pattern.search(section)
        if m is None:
            line = f"{key} = {value}".ljust(29) + notes.get(key, "")
            section = section.rstrip("\n") + "\n" + line.rstrip() + "\n"
            continue
        comment = m.group(1) or ""
        column = m.start(1) - m.start() if comment else 0
        line = f"{key} = {value}"
        line = (line.ljust(column) if len(line) < column else line + " ") + comment if comment else line
        section = section[:m.start()] + line.rstrip() + section[m.end():]
    path.write_text(text[:start.end()] + section + text[stop:], encoding="utf-8")
    check = load_profile(path).calibration
    assert math.isclose(check.matmul_half_size, cal.matmul_half_size, rel_tol=1e-5), "rewrite failed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help=f"rewrite [calibration] in profiles/{CHIP}.toml")
    mode.add_argument("--check", action="store_true", help="no fit: the table with the profile's current terms")
    args = parser.parse_args(argv)
    chip = load_profile(CHIP)
    graphs = [sharded(c) for c in COLUMNS]
    if args.check:
        cal, how = chip.calibration, f"current {CHIP} profile"
    else:
        cal, value = fit(chip.uncalibrated(), graphs)
        how = f"fitted (sum of squared log-ratios {value:.4f})"
    print(f"{CHIP} calibration, {how}; --comm {FIT_COMM}; decode latency = {DECODE_STEPS} x one step")
    print(terms_text(cal))
    print()
    print("The paper's Table 2 (PaLM 540B, 64 TPU v4 chips, 4x4x4, context 2048)")
    print(table(rows(chip.with_calibration(cal), FIT_COMM, graphs)))
    if args.write:
        path = PROFILE_DIR / f"{CHIP}.toml"
        write_profile(path, cal)
        print(f"\nwrote the [calibration] table of {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
