"""Fit tpu-v4's ``[calibration]`` terms once to the paper's Table 2, and print the fit.

Usage::

    python benchmarks/calibrate.py            # fit and print (profile untouched)
    python benchmarks/calibrate.py --write    # ... and rewrite [calibration] in shardc/hardware/profiles/tpu-v4.toml
    python benchmarks/calibrate.py --check    # print the tables with the profile's current terms (no fit)

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

Each column is what ``shardc cost`` gives with the paper's flags only (``--set B=..``,
``--ffn``, ``--attention``, ``--weights``, ``--pad H=64``): heads are padded from 48 to 64
and the padded program is timed, while MFU counts the real 540,358,834,176 parameters
(``estimate(..., real_sizes={"H": 48})``).  A decode program is ONE step; the paper
times 64 generated tokens, so a decode column's latency is 64 x ``latency_s``.

The terms (shardc/cost/model.py, shardc/hardware/comm.py), each a named mechanism:

* ``hop_latency`` (alpha): seconds per ring step of a collective (one ICI hop);
* ``op_overhead`` (omega): seconds per executed op (a kernel launch; views excepted);
* ``mxu_fill``: rows of pipeline fill per pass of a 128 x 128 weight tile (a local matmul
  whose smaller free side is m runs at m / (m + fill) of the aligned rate);
* ``peak_fraction``: the fraction of peak a large, tile-aligned matmul sustains.

The fit minimises ``sum((log(predicted / paper latency) / 0.1)^2) + prior`` (MFU follows
from latency), with the prior ``(log(alpha / 1 us) / log 10)^2 + (log(fill / 16) / log 10)^2``:
log-normal priors one decade wide around the physical ~1 us of one TPU v4 ICI hop and 16
rows of pipeline fill (an eighth of the tile).  Table 2 alone cannot tell the fill from the
per-op cost (both scale the decode columns alike; the singular values say so), so the fill's
prior decides that direction.  It is a Nelder-Mead search on
the full :func:`shardc.estimate` from the physical starting point.  The Jacobian of the
four columns' log-ratios with respect to each term's log says which column identifies
which term; ``--check`` and the fit also print a leave-one-column-out check and the
paper's qualitative claims (paper / bound / calibrated).
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shardc import parse, shard  # noqa: E402
from shardc.cost.model import CostReport, estimate  # noqa: E402
from shardc.hardware.profile import PROFILE_DIR, Calibration, ChipProfile, load_profile  # noqa: E402
from shardc.ir.graph import DType, Graph  # noqa: E402
from shardc.ir.transforms import with_weight_dtype  # noqa: E402

CHIP = "tpu-v4"
FIT_COMM = "torus"
DECODE_STEPS = 64  # Table 2 times 64 generated tokens: 64 decode steps
PAD = {"H": 64}  # the paper pads PaLM 540B's 48 heads to 64 for 64-way head sharding
TILE = 128  # the TPU v4 MXU's systolic tile (hardware, not fitted)
SIGMA = 0.1  # the data's log-latency scale in the loss
HOP_PRIOR = 1e-6  # seconds: one TPU v4 ICI hop, the centre of alpha's prior (one decade wide)
FILL_PRIOR = 16.0  # rows: the centre of mxu_fill's prior (one decade wide)
TERMS = ("hop_latency", "op_overhead", "mxu_fill", "peak_fraction")
START = (1e-6, 2e-6, 16.0, 0.9)  # physical starting point of the search


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


def padded(text: str, name: str, sizes: dict[str, int], weights: str | None = None) -> tuple[Graph, dict[str, int]]:
    """The program with ``sizes`` and heads padded to 64 (``--pad H=64``), and the real sizes of the padded dims."""
    real = parse(text, name, sizes=sizes)
    g = parse(text, name, sizes={**sizes, **PAD})
    if weights == "int8":
        g = with_weight_dtype(g, DType.INT8)
    return g, {d: real.sizes[d] for d in PAD}


def sharded(col: Column) -> tuple[Graph, dict[str, int]]:
    """The column's sharded program (B set, heads padded, weights in its dtype) and the real head count."""
    text = (ROOT / "examples" / col.file).read_text(encoding="utf-8")
    g, real = padded(text, col.file, {"B": col.batch}, col.weights)
    return shard(g, None, col.ffn, col.attention), real


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


Programs = Sequence[tuple[Graph, dict[str, int]]]


def rows(chip: ChipProfile, comm: str | None = None, graphs: Programs | None = None) -> list[Row]:
    """Table 2 predicted with ``chip`` (its calibration as given; ``comm`` default: the profile's)."""
    graphs = graphs if graphs is not None else [sharded(c) for c in COLUMNS]
    out = []
    for col, (sg, real) in zip(COLUMNS, graphs):
        rep: CostReport = estimate(sg, chip, comm, real_sizes=real)
        out.append(Row(col, rep.bound_latency_s * col.steps, rep.latency_s * col.steps, rep.bound_mfu, rep.mfu))
    return out


# --- the fit --------------------------------------------------------------------------------
def calibration(terms: Sequence[float]) -> Calibration:
    alpha, layer, fill, peak = terms
    return Calibration(hop_latency=alpha, op_overhead=layer, mxu_fill=fill, peak_fraction=peak,
                       matmul_tile=TILE, comm=FIT_COMM)


def log_ratios(chip: ChipProfile, graphs: Programs, terms: Sequence[float],
               columns: Sequence[int] = (0, 1, 2, 3)) -> np.ndarray:
    """log(predicted / paper latency) of the given columns."""
    p = chip.with_calibration(calibration(terms))
    out = []
    for i in columns:
        sg, real = graphs[i]
        out.append(math.log(estimate(sg, p, FIT_COMM, real_sizes=real).latency_s * COLUMNS[i].steps
                            / COLUMNS[i].latency_s))
    return np.array(out)


def prior(terms: Sequence[float]) -> float:
    """The stated priors: log-normal, one decade wide, around a 1 us hop latency and 16 rows of fill."""
    return ((math.log(max(terms[0], 1e-12) / HOP_PRIOR) / math.log(10)) ** 2
            + (math.log(max(terms[2], 1e-3) / FILL_PRIOR) / math.log(10)) ** 2)


def _terms(x: np.ndarray) -> tuple[float, float, float, float]:
    """Search coordinates -> terms: alpha = 1 us e^x0; omega = 1 us |x1|; fill = 16 e^x2; peak = 1 - |x3|."""
    return (HOP_PRIOR * math.exp(float(x[0])), 1e-6 * abs(float(x[1])), FILL_PRIOR * math.exp(float(x[2])),
            min(1.0, max(0.05, 1.0 - abs(float(x[3])))))


def _coords(terms: Sequence[float]) -> np.ndarray:
    alpha, layer, fill, peak = terms
    return np.array([math.log(alpha / HOP_PRIOR), layer / 1e-6, math.log(max(fill, 1e-3) / FILL_PRIOR), 1.0 - peak])


def fit(chip: ChipProfile, graphs: Programs, columns: Sequence[int] = (0, 1, 2, 3)) -> tuple[Calibration, float]:
    """The terms minimising the loss (module docstring) over ``columns`` of Table 2, and that loss."""
    def objective(x: np.ndarray) -> float:
        terms = _terms(x)
        return float(np.sum((log_ratios(chip, graphs, terms, columns) / SIGMA) ** 2)) + prior(terms)

    x0 = _coords(START)
    best, value = nelder_mead(objective, x0, [0.5, 1.0, 0.5, 0.05])
    best, value = nelder_mead(objective, best, [0.2, 0.3, 0.2, 0.02])  # restart: Nelder-Mead can stall
    return calibration(_terms(best)), value


def nelder_mead(f: Callable[[np.ndarray], float], x0: np.ndarray, steps: list[float], iterations: int = 400,
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


def jacobian(chip: ChipProfile, graphs: Programs, cal: Calibration) -> np.ndarray:
    """d log(predicted latency of each column) / d log(term): rows columns, columns TERMS."""
    terms = [cal.hop_latency, cal.op_overhead, cal.mxu_fill, cal.peak_fraction]
    base = log_ratios(chip, graphs, terms)
    out = np.zeros((len(COLUMNS), len(TERMS)))
    for j in range(len(TERMS)):
        trial = list(terms)
        trial[j] = terms[j] * 1.01 if terms[j] else 1e-9
        step = math.log(1.01) if terms[j] else 1.0
        out[:, j] = (log_ratios(chip, graphs, trial) - base) / step
    return out


# --- output ---------------------------------------------------------------------------------
def _seconds(s: float) -> str:
    return f"{s * 1e3:.0f} ms" if s < 1 else f"{s:.2f} s"


def _grid(head: list[str], body: list[list[str]]) -> str:
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(x, widths))).rstrip()
             for x in [head] + body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def table(result: list[Row]) -> str:
    """Table 2 side by side: paper, bound, calibrated and calibrated / paper, for latency and MFU."""
    head = ["column", "latency: paper", "bound", "calibrated", "ratio", "MFU: paper", "bound", "calibrated", "ratio"]
    body = [[r.col.name, _seconds(r.col.latency_s), _seconds(r.bound_s), _seconds(r.calibrated_s),
             f"{r.latency_ratio:.2f}", f"{r.col.mfu:.0%}", f"{r.bound_mfu:.0%}", f"{r.calibrated_mfu:.0%}",
             f"{r.mfu_ratio:.2f}"] for r in result]
    return _grid(head, body)


def terms_text(cal: Calibration) -> str:
    return (f"hop_latency    = {cal.hop_latency:.4g} s  ({cal.hop_latency * 1e6:.3g} us per ring step; prior 1 us, "
            f"one decade)\n"
            f"op_overhead    = {cal.op_overhead:.4g} s  ({cal.op_overhead * 1e6:.3g} us per executed op)\n"
            f"mxu_fill       = {cal.mxu_fill:.4g} rows  (prior 16 rows, one decade; m rows through a "
            f"{cal.matmul_tile}x{cal.matmul_tile} tile run at m / (m + {cal.mxu_fill:.0f}))\n"
            f"peak_fraction  = {cal.peak_fraction:.4g}  (of peak, a large aligned matmul)")


def jacobian_text(jac: np.ndarray) -> str:
    head = ["d log(latency) / d log(term)"] + list(TERMS)
    body = [[c.name] + [f"{v:+.3f}" for v in jac[i]] for i, c in enumerate(COLUMNS)]
    sv = np.linalg.svd(jac, compute_uv=False)
    return (_grid(head, body) + "\nsingular values " + ", ".join(f"{v:.3g}" for v in sv)
            + f" (condition {sv[0] / sv[-1]:.3g})" if sv[-1] > 0 else _grid(head, body))


def loo_text(chip: ChipProfile, graphs: Programs) -> str:
    """Fit on three columns, predict the fourth."""
    head = ["left out", "hop_latency", "op_overhead", "mxu_fill", "peak_fraction", "predicted", "paper",
            "ratio"]
    body = []
    for i, col in enumerate(COLUMNS):
        cal, _ = fit(chip, graphs, [j for j in range(len(COLUMNS)) if j != i])
        got = rows(chip.with_calibration(cal), FIT_COMM, graphs)[i]
        body.append([col.name, f"{cal.hop_latency * 1e6:.3g} us", f"{cal.op_overhead * 1e6:.3g} us",
                     f"{cal.mxu_fill:.3g}", f"{cal.peak_fraction:.3g}", _seconds(got.calibrated_s),
                     _seconds(col.latency_s), f"{got.latency_ratio:.2f}"])
    return _grid(head, body)


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
        return repr(float(f"{x:.4g}"))  # 1.5e-05, 0.0: always a TOML float

    values = {"hop_latency": number(cal.hop_latency), "op_overhead": number(cal.op_overhead),
              "mxu_fill": number(cal.mxu_fill), "peak_fraction": number(cal.peak_fraction),
              "matmul_tile": str(cal.matmul_tile), "comm": f'"{cal.comm}"'}
    for key, value in values.items():
        pattern = re.compile(rf"^{key}\s*=[^#\n]*(#.*)?$", re.M)
        m = pattern.search(section)
        if m is None:
            section = section.rstrip("\n") + f"\n{key} = {value}\n"
            continue
        comment = m.group(1) or ""
        column = m.start(1) - m.start() if comment else 0
        line = f"{key} = {value}"
        line = (line.ljust(column) if len(line) < column else line + " ") + comment if comment else line
        section = section[:m.start()] + line.rstrip() + section[m.end():]
    path.write_text(text[:start.end()] + section + text[stop:], encoding="utf-8")
    check = load_profile(path).calibration
    assert math.isclose(check.mxu_fill, float(number(cal.mxu_fill)), rel_tol=1e-6), "rewrite failed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help=f"rewrite [calibration] in profiles/{CHIP}.toml")
    mode.add_argument("--check", action="store_true", help="no fit: the tables with the profile's current terms")
    parser.add_argument("--no-claims", action="store_true", help="skip the table of the paper's claims")
    args = parser.parse_args(argv)
    chip = load_profile(CHIP)
    graphs = [sharded(c) for c in COLUMNS]
    if args.check:
        cal, how = chip.calibration, f"current {CHIP} profile"
    else:
        cal, value = fit(chip.uncalibrated(), graphs)
        terms = [cal.hop_latency, cal.op_overhead, cal.mxu_fill, cal.peak_fraction]
        how = f"fitted (loss {value:.4f}: sum of (log-ratio / {SIGMA})^2 + prior {prior(terms):.4f})"
    print(f"{CHIP} calibration, {how}; --comm {FIT_COMM}; decode latency = {DECODE_STEPS} x one step")
    print(terms_text(cal))
    print()
    print("The paper's Table 2 (PaLM 540B, 64 TPU v4 chips, 4x4x4, context 2048)")
    print(table(rows(chip.with_calibration(cal), FIT_COMM, graphs)))
    print()
    print("Sensitivity: which column identifies which term")
    print(jacobian_text(jacobian(chip.uncalibrated(), graphs, cal)))
    print()
    print("Leave one column out: fit on three columns, predict the fourth")
    print(loo_text(chip.uncalibrated(), graphs))
    if not args.no_claims:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from claims import claims_text  # noqa: E402  (the claims reuse this module's columns)
        print()
        print("The paper's qualitative claims (paper / bound / calibrated)")
        print(claims_text(chip.with_calibration(cal)))
    if args.write:
        path = PROFILE_DIR / f"{CHIP}.toml"
        write_profile(path, cal)
        print(f"\nwrote the [calibration] table of {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
