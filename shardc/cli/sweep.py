"""``shardc sweep``: the planner's best layout over chip counts x batches x weight dtypes (Figure 1),
or, with ``--plot-layouts``, each feed-forward layout's communication against tokens per batch (Figure 3).

Output: a text table (default), ``--json`` (one object on standard output, errors included), ``--csv
OUT.csv``, and the figures ``--plot OUT.png`` / ``--plot-layouts OUT.png`` (matplotlib, the ``plot``
extra).  A progress bar is drawn on standard error when the sweep takes longer than a second and
standard error is a terminal (never with ``--json``).
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import time
from pathlib import Path
from typing import Sequence, TextIO

from shardc.cli.common import (
    chip_flags,
    chip_profile,
    emit_json,
    human_bytes,
    load_graph,
    table,
    whole_flag,
    write_atomically,
)
from shardc.cli.plot import plot_costs, plot_layouts, require_matplotlib
from shardc.errors import ShardcError
from shardc.ir.graph import Graph
from shardc.planner.sweep import (
    DEFAULT_BATCHES,
    DEFAULT_CHIPS,
    DEFAULT_WEIGHTS,
    LayoutPoint,
    SweepPoint,
    layout_sweep,
    pareto,
    sweep,
)
from shardc.units import human_seconds

_BAR = 30  # characters of the progress bar


def _sweep_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("more", nargs="*", metavar="FILE", help="further .model programs (one curve each)")
    parser.add_argument("--chips", default=",".join(map(str, DEFAULT_CHIPS)), metavar="LIST",
                        help="chip counts, comma-separated (default %(default)s)")
    parser.add_argument("--batch", default=",".join(map(str, DEFAULT_BATCHES)), metavar="LIST",
                        help="batch sizes, comma-separated (default %(default)s)")
    parser.add_argument("--weights", default=",".join(w.value for w in DEFAULT_WEIGHTS), metavar="LIST",
                        help="weight dtypes, comma-separated (default %(default)s)")
    parser.add_argument("--objective", default="latency", metavar="WHAT",
                        help="how the planner ranks layouts at each point: latency (default), throughput or "
                             "cost (at a fixed chip count and batch the three agree but for ties)")
    parser.add_argument("--pad", default="any", metavar="HOW",
                        help="the planner's padding: any (default: also heads padded to the next multiple of "
                             "the chip count) or none")
    parser.add_argument("--jobs", type=whole_flag, default=os.cpu_count() or 1, metavar="N",
                        help="worker processes (default: the core count, %(default)s; 1 runs in this process)")
    parser.add_argument("--csv", metavar="OUT.csv", help="also write every point as CSV")
    parser.add_argument("--plot", metavar="OUT.png",
                        help="draw the paper's Figure 1: cost per token against latency, the Pareto frontier of "
                             "each file and dtype (needs matplotlib: the plot extra)")
    parser.add_argument("--plot-layouts", metavar="OUT.png",
                        help="instead of the planner sweep, shard FILE with each feed-forward preset at each "
                             "--batch on one mesh (--mesh, default 4x4x4) and draw the paper's Figure 3: "
                             "communication time against tokens per batch")
    chip_flags(parser)


def _ints(text: str, flag: str) -> list[int]:
    try:
        out = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ShardcError(f"{flag} {text}: give whole numbers, comma-separated (e.g. {flag} 8,16,32)") from None
    if not out or any(v < 1 for v in out):
        raise ShardcError(f"{flag} {text}: every value must be at least 1")
    return out


class ProgressBar:
    """``\\r[####......] 12/154 points`` on ``stream``, once the sweep has run for ``after`` seconds."""

    def __init__(self, stream: TextIO, enabled: bool, after: float = 1.0) -> None:
        self.stream, self.enabled, self.after = stream, enabled, after
        self.start = time.monotonic()
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or (not self.shown and time.monotonic() - self.start < self.after):
            return
        filled = _BAR * done // max(total, 1)
        self.stream.write(f"\r[{'#' * filled}{'.' * (_BAR - filled)}] {done}/{total} points")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        """Clear the bar's line, if it was drawn."""
        if self.shown:
            self.stream.write("\r" + " " * (_BAR + 30) + "\r")
            self.stream.flush()


def _graphs(args: argparse.Namespace) -> list[Graph]:
    out = []
    for f in [args.file, *args.more]:
        g = load_graph(args, f)[0]
        if g.is_sharded:
            raise ShardcError(f"{f}: the program is already sharded; sweep the unsharded program")
        out.append(g)
    return out


def cmd_sweep(args: argparse.Namespace) -> int:
    """Sweep FILE [FILE...]: print (or write) the best layout at every point, and draw the figures."""
    for flag, out in (("--plot", args.plot), ("--plot-layouts", args.plot_layouts)):
        if out is not None:
            require_matplotlib(flag)  # before the sweep, not after it
    if args.plot and args.plot_layouts:
        raise ShardcError("--plot and --plot-layouts are two sweeps; run them one at a time")
    if args.jobs < 1:
        raise ShardcError(f"--jobs {args.jobs}: give at least 1")
    batches = _ints(args.batch, "--batch")
    profile = chip_profile(args)
    graphs = _graphs(args)
    if args.plot_layouts:
        return _layouts(args, graphs, batches, profile.name)
    if args.mesh:
        raise ShardcError("--mesh: the sweep tries every mesh of each chip count; --mesh is for --plot-layouts")
    chips = _ints(args.chips, "--chips")
    weights = [w for w in args.weights.split(",") if w.strip()]
    bar = ProgressBar(sys.stderr, sys.stderr.isatty() and not args.json)
    started = time.monotonic()
    try:
        points = sweep(graphs, chips, batches, weights, chip=profile, comm=args.comm, objective=args.objective,
                       pad=args.pad, jobs=args.jobs, progress=bar)
    finally:
        bar.close()
    seconds = time.monotonic() - started
    if args.csv:
        write_atomically(Path(args.csv), to_csv(points))
    if args.plot:
        plot_costs(points, args.plot, profile.name)
    if args.json:
        front = {id(p) for m in _curves(points) for p in pareto(m)}
        emit_json({"chip": profile.name, "seconds": seconds, "jobs": args.jobs,
                   "points": [{**p.to_json(), "pareto": id(p) in front} for p in points]})
    else:
        sys.stdout.write(sweep_text(points, profile.name, seconds, args.jobs))
    return 0


def _curves(points: Sequence[SweepPoint]) -> list[list[SweepPoint]]:
    """The points of each (model, weights), in order: one curve of the figure each."""
    groups: dict[tuple[str, str], list[SweepPoint]] = {}
    for p in points:
        groups.setdefault((p.model, p.weights), []).append(p)
    return list(groups.values())


def to_csv(rows: Sequence[SweepPoint] | Sequence[LayoutPoint]) -> str:
    """The points as CSV text, one column per field (an infeasible point's figures are empty cells)."""
    buf = io.StringIO()
    if not rows:
        return ""
    fields = list(rows[0].to_json())
    writer = csv.DictWriter(buf, fields, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if v is None else v for k, v in r.to_json().items()})
    return buf.getvalue()


def sweep_text(points: Sequence[SweepPoint], chip: str, seconds: float, jobs: int) -> str:
    """The sweep as ``shardc sweep`` prints it: one table per model and dtype, Pareto points starred."""
    feasible = sum(p.feasible for p in points)
    lines = [f"sweep on {chip}: {len(points)} points, {feasible} feasible, in {seconds:.1f} s with {jobs} "
             f"job{'s' if jobs != 1 else ''}"]
    header = ["", "chips", "batch", "mesh", "ffn", "attention", "pad", "latency", "per token", "chip-ms/token",
              "MFU", "memory/chip"]
    for curve in _curves(points):
        first = curve[0]
        front = {id(p) for p in pareto(curve)}
        lines += ["", f"{first.model} ({first.phase}), {first.weights} weights"]
        rows = [header]
        infeasible = []
        for p in curve:
            if not p.feasible:
                infeasible.append(p)
                continue
            rows.append(["*" if id(p) in front else "", str(p.chips), str(p.batch), p.mesh or "", p.ffn or "",
                         p.attention or "", p.pad or "-", human_seconds(p.latency_s or 0.0),
                         human_seconds(p.per_token_latency_s or 0.0), f"{p.cost_chip_ms_per_token:.3g}",
                         f"{p.mfu or 0.0:.1%}", human_bytes(p.memory_bytes_per_chip or 0.0)])
        if len(rows) > 1:
            lines += table(rows, {1, 2, 7, 8, 9, 10, 11})
        for p in infeasible:
            reason = (p.reason or "").splitlines()
            detail = reason[1].strip() if len(reason) > 1 else (reason[0] if reason else "")
            lines.append(f"  infeasible: {p.chips} chips, B={p.batch}: {detail}")
    lines += ["", "  (* on the Pareto frontier of latency and cost; latency is one run: a decode step, or the "
                  "whole prefill)"]
    return "\n".join(lines) + "\n"


def _layouts(args: argparse.Namespace, graphs: list[Graph], batches: list[int], chip: str) -> int:
    g = graphs[0]
    if len(graphs) > 1:
        raise ShardcError("--plot-layouts sweeps one program; give one FILE")
    mesh = g.mesh if args.mesh else "4x4x4"
    assert mesh is not None
    points = layout_sweep(g, mesh, batches, chip=chip, comm=args.comm)
    if args.csv:
        write_atomically(Path(args.csv), to_csv(points))
    what = f"{g.name}: d_model {g.sizes.get('E', '?')}, d_ff {g.sizes.get('F', '?')}"
    plot_layouts(points, args.plot_layouts, what, chip)
    if args.json:
        emit_json({"chip": chip, "layouts": [p.to_json() for p in points]})
        return 0
    ffns = list(dict.fromkeys(p.ffn for p in points))
    tokens = list(dict.fromkeys(p.tokens for p in points))
    cell = {(p.ffn, p.tokens): (human_seconds(p.comm_s) if p.feasible and p.comm_s is not None else "-")
            for p in points}
    rows = [["tokens", *ffns]] + [[str(t), *(cell[(f, t)] for f in ffns)] for t in tokens]
    out = [f"communication of one run of {what}, on {points[0].mesh if points else mesh} ({chip}):",
           *table(rows, set(range(len(ffns) + 1))), "  (- the preset does not divide at that batch)"]
    sys.stdout.write("\n".join(out) + "\n")
    return 0


__all__ = ["ProgressBar", "cmd_sweep", "sweep_text", "to_csv"]
