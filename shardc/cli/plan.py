"""``shardc plan``: choose the partitioning for N chips, rank the candidates, say why the winner wins."""
from __future__ import annotations

import argparse
import re
import sys

from shardc.cli.common import chip_flags, chip_profile, emit_json, human_bytes, load_graph, parse_sets, table
from shardc.errors import ShardcError
from shardc.planner.choose import Objective, Plan, Ranked, plan
from shardc.units import human_seconds

_DURATION = re.compile(r"\s*([0-9.eE+-]+)\s*(s|ms|us|µs|ns)?\s*")
_SCALE = {None: 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def _plan_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chips", type=int, metavar="N",
                        help="how many chips: every mesh of N the chip's topology allows is tried "
                             "(or give one mesh with --mesh)")
    parser.add_argument("--objective", default="latency", metavar="WHAT",
                        help="rank by latency (one run: a decode step or a whole prefill; default), "
                             "throughput (tokens per second) or cost (chip-seconds per token)")
    parser.add_argument("--max-latency", metavar="TIME",
                        help="drop candidates slower than this per token (in decode: per step), e.g. 30ms")
    parser.add_argument("--ffn", default="any", metavar="PRESETS",
                        help="feed-forward presets to try, comma-separated (default any: 1d-ws, 2d-ws, wg-x, "
                             "wg-xy, wg-xyz)")
    parser.add_argument("--attention", default="any", metavar="PRESETS",
                        help="attention layouts to try: heads, batch or any (default)")
    parser.add_argument("--weights", default=None, metavar="DTYPES",
                        help="store params as bf16, int8, or any (both); default: as the program declares them")
    parser.add_argument("--pad", default="none", metavar="HOW",
                        help="none (default), any (also heads padded to the next multiple of the chip count, "
                             "as the paper pads 48 heads to 64), or DIM=N")
    parser.add_argument("--batch", default=None, metavar="SIZES",
                        help="batch sizes to try: one, a comma-separated list, or any (1, 2, 4, ..., 1024); "
                             "default: the program's B")
    parser.add_argument("--top", type=int, default=10, metavar="K",
                        help="how many ranked candidates to print (default 10; --json lists every one)")
    chip_flags(parser)


def parse_duration(text: str) -> float:
    """``30ms`` -> 0.03; plain numbers are seconds."""
    m = _DURATION.fullmatch(text)
    try:
        value = float(m.group(1)) if m else float("nan")
    except ValueError:
        value = float("nan")
    if m is None or not value > 0 or value == float("inf"):
        raise ShardcError(f"--max-latency {text}: give a positive time such as 30ms, 2.5s or 0.03")
    return value * _SCALE[m.group(2)]


def cmd_plan(args: argparse.Namespace) -> int:
    """Plan FILE for --chips N: print the ranked candidates, the winner and why, and what was dropped."""
    g, _ = load_graph(args)
    if g.is_sharded:
        raise ShardcError(f"{args.file}: the program is already sharded; plan the unsharded program")
    pad: str | dict[str, int] = args.pad if args.pad in ("none", "any") else parse_sets(args.pad.split(","))
    result = plan(g, args.chips, mesh=g.mesh if args.mesh else None, chip=chip_profile(args), comm=args.comm,
                  objective=args.objective, max_latency=parse_duration(args.max_latency) if args.max_latency else None,
                  ffn=args.ffn, attention=args.attention, weights=args.weights, pad=pad, batch=args.batch)
    if args.json:
        emit_json({"model": g.name, **result.to_json()})
        return 0
    sys.stdout.write(plan_text(result, g.name, args.top))
    return 0


def _row(rank: int, r: Ranked, best: Ranked) -> list[str]:
    c, f = r.candidate, r.figures
    same = "=" if rank > 1 and r.graph == best.graph else ""
    return [f"{rank}{same}", c.mesh.spec(), c.ffn.value, c.attention.value, c.weights.value,
            ",".join(f"{d}={n}" for d, n in c.pad) or "-", str(c.batch), human_seconds(f.latency_s),
            human_seconds(f.per_token_latency_s), f"{f.mfu:.1%}", f"{f.cost_chip_s_per_token * 1e3:.3g}",
            human_bytes(f.memory_bytes_per_chip)]


def plan_text(p: Plan, model: str, top: int) -> str:
    """The plan as ``shardc plan`` prints it."""
    lines = [f"plan for {model} on {p.chips} chips of {p.chip}; objective: {p.objective.value}"
             + (f", at most {human_seconds(p.max_latency_s)} per token" if p.max_latency_s else "")]
    feasible = len(p.candidates)
    lines.append(f"{p.considered} candidates considered, {feasible} feasible, "
                 f"{sum(d.count for d in p.dropped)} dropped")
    for d in p.dropped:
        lines.append(f"  dropped {d.count} that {d.reason}; {'the closest' if d.closest else 'e.g.'}: {d.example}")
    lines.append("")
    header = ["rank", "mesh", "ffn", "attention", "weights", "pad", "batch", "latency", "per token",
              "MFU", "chip-ms/token", "memory/chip"]
    rows = [_row(i + 1, r, p.best) for i, r in enumerate(p.candidates[:max(top, 1)])]
    lines += table([header, *rows], {7, 8, 9, 10, 11})
    if feasible > top:
        lines.append(f"  ... {feasible - top} more (--top N, or --json for every one)")
    if any(row[0].endswith("=") for row in rows):
        lines.append("  (= the same sharded program as rank 1: the choices differ only in name)")
    lines.append("  (a mesh XxYxZ gives the sizes of the axes playing the presets' roles x, y, z; x=..,z=.. "
                 "leaves a role unplayed)")
    lines += ["", f"best: {p.best.candidate.label()}", f"why: {p.why}"]
    return "\n".join(lines) + "\n"


__all__ = ["Objective", "cmd_plan", "parse_duration", "plan_text"]
