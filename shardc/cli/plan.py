"""``shardc plan``: choose the partitioning for N chips, rank the candidates, say why the winner wins.

With a second file and ``--prompt``/``--generate``, ``shardc plan FILE_PREFILL FILE_DECODE`` plans a
whole request instead (:func:`shardc.planner.request.plan_request`): the prefill of the prompt and
the decode steps, each with its own layout and batch, and the request's totals.
"""
from __future__ import annotations

import argparse
import os
import re
import sys

from shardc.cli.common import (
    STDIN,
    chip_flags,
    chip_profile,
    emit_json,
    human_bytes,
    load_graph,
    parse_sets,
    table,
    whole_flag,
)
from shardc.errors import ShardcError
from shardc.planner.choose import Objective, Plan, Ranked, plan
from shardc.planner.request import RequestPlan, plan_request
from shardc.units import human_seconds

_DURATION = re.compile(r"\s*([0-9.eE+-]+)\s*(s|ms|us|µs|ns)?\s*")
_SCALE = {None: 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def _plan_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("decode_file", nargs="?", metavar="FILE_DECODE",
                        help="plan a whole request: FILE is then the prefill program and FILE_DECODE the decode "
                             "step (needs --prompt and --generate)")
    parser.add_argument("--chips", type=whole_flag, metavar="N",
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
    request = parser.add_argument_group("a whole request (FILE_PREFILL FILE_DECODE)")
    request.add_argument("--prompt", type=whole_flag, metavar="N",
                         help="new prompt tokens: the prefill runs at L=N, S=history+N")
    request.add_argument("--generate", type=whole_flag, metavar="M",
                         help="tokens to generate: M decode steps, step i attending to history+N+i positions")
    request.add_argument("--history", type=whole_flag, metavar="N",
                         help="tokens already in the KV cache before the prompt (default 0; the prefill must "
                              "read a cache over S)")
    request.add_argument("--prefill-batch", metavar="SIZES",
                         help="batch sizes for the prefill, as --batch (default: --batch, else the file's B)")
    request.add_argument("--decode-batch", metavar="SIZES",
                         help="batch sizes for the decode, as --batch (default: --batch, else the file's B); "
                              "--max-latency bounds the decode step")
    parser.add_argument("--top", type=whole_flag, default=10, metavar="K",
                        help="how many ranked candidates to print (default 10; --json lists every one)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, metavar="N",
                        help="worker processes for the layout searches (default: the core count, %(default)s; "
                             "1 runs in this process)")
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


def _is_request(args: argparse.Namespace) -> bool:
    """Whether the command line asks for a whole request; a ShardcError when it does so by halves."""
    given = [f for f, v in (("--prompt", args.prompt), ("--generate", args.generate)) if v is not None]
    if args.decode_file is None:
        if given:
            raise ShardcError(f"{' and '.join(given)} plan a whole request: give two files, the prefill and the "
                              "decode program (shardc plan FILE_PREFILL FILE_DECODE --prompt N --generate M)")
        extra = [f for f, v in (("--history", args.history), ("--prefill-batch", args.prefill_batch),
                                ("--decode-batch", args.decode_batch)) if v is not None]
        if extra:
            raise ShardcError(f"{', '.join(extra)}: only for a whole request (two files, --prompt and --generate)")
        return False
    if len(given) < 2:
        missing = " and ".join(f for f in ("--prompt", "--generate") if f not in given)
        raise ShardcError(f"a second file plans a whole request: give {missing} too "
                          "(--prompt N new tokens, --generate M decode steps)")
    if args.file == STDIN and args.decode_file == STDIN:
        raise ShardcError("only one of the two files can be standard input (-)")
    return True


def _jobs(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise ShardcError(f"--jobs {args.jobs}: give at least 1")
    return int(args.jobs)


def _pad(args: argparse.Namespace) -> str | dict[str, int]:
    return args.pad if args.pad in ("none", "any") else parse_sets(args.pad.split(","))


def cmd_plan(args: argparse.Namespace) -> int:
    """Plan FILE for --chips N: print the ranked candidates, the winner and why, and what was dropped.
    With FILE_DECODE, --prompt and --generate: plan the whole request (:func:`cmd_plan_request`)."""
    if _is_request(args):
        return cmd_plan_request(args)
    g, _ = load_graph(args)
    if g.is_sharded:
        raise ShardcError(f"{args.file}: the program is already sharded; plan the unsharded program")
    result = plan(g, args.chips, mesh=g.mesh if args.mesh else None, chip=chip_profile(args), comm=args.comm,
                  objective=args.objective, max_latency=parse_duration(args.max_latency) if args.max_latency else None,
                  ffn=args.ffn, attention=args.attention, weights=args.weights, pad=_pad(args), batch=args.batch,
                  jobs=_jobs(args))
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


def cmd_plan_request(args: argparse.Namespace) -> int:
    """``shardc plan FILE_PREFILL FILE_DECODE --prompt N --generate M``: each phase's layout, batch and
    latency, and the request's totals."""
    prefill, _ = load_graph(args)
    decode, _ = load_graph(args, args.decode_file)
    result = plan_request(
        prefill, decode, args.prompt, args.generate, args.chips, history=args.history or 0,
        mesh=prefill.mesh if args.mesh else None, chip=chip_profile(args), comm=args.comm,
        objective=args.objective, max_latency=parse_duration(args.max_latency) if args.max_latency else None,
        ffn=args.ffn, attention=args.attention, weights=args.weights, pad=_pad(args),
        prefill_batch=args.prefill_batch if args.prefill_batch is not None else args.batch,
        decode_batch=args.decode_batch if args.decode_batch is not None else args.batch, jobs=_jobs(args))
    if args.json:
        emit_json({"models": {"prefill": prefill.name, "decode": decode.name}, "chip": result.decode.chip,
                   "objective": result.decode.objective.value, **result.to_json()})
        return 0
    sys.stdout.write(request_text(result, prefill.name, decode.name))
    return 0


def request_text(r: RequestPlan, prefill: str, decode: str) -> str:
    """The request plan as ``shardc plan FILE_PREFILL FILE_DECODE`` prints it."""
    pre, dec = r.prefill.best, r.decode.best
    first, last = r.steps[0], r.steps[-1]
    history = f" after {r.history:,} cached" if r.history else ""
    rounded = [s for s in r.steps if s.costed_context != s.context]
    lines = [f"request plan for {prefill} + {decode} on {r.chips} chips of {r.decode.chip}; "
             f"objective: {r.decode.objective.value} (each phase)",
             f"  {r.prompt:,} prompt tokens{history}, then {r.generate:,} generated",
             "",
             f"prefill  {pre.candidate.label()}",
             f"         L={r.prompt}, S={r.history + r.prompt}: {human_seconds(r.prefill_latency_s)} "
             f"({human_bytes(pre.figures.memory_bytes_per_chip)} per chip)",
             f"decode   {dec.candidate.label()}",
             f"         layout chosen at context {r.decode_context:,} (the last step's, rounded up to a multiple "
             f"of {r.chips}), kept for every step",
             f"         {len(r.steps)} steps, context {first.context:,} -> {last.context:,}: first "
             f"{human_seconds(first.latency_s)}, last {human_seconds(last.latency_s)}; "
             f"{human_seconds(r.decode_latency_s)} in all, {human_seconds(r.decode_per_token_s)} per token"]
    if rounded:
        lines.append(f"         ({len(rounded)} steps costed at the next multiple of the layout's split of S)")
    lines += ["",
              f"request  {human_seconds(r.latency_s)} end to end (prefill + decode, one sequence)",
              f"         {r.chip_seconds_per_sequence:.4g} chip-s per sequence "
              f"(B={r.prefill_batch} prefill, B={r.decode_batch} decode share their runs), "
              f"{r.cost_chip_s_per_token * 1e3:.3g} chip-ms per token, MFU {r.mfu:.1%}",
              f"         (per token and MFU over the {r.tokens_per_sequence:,} prompt and generated tokens "
              "of each sequence)"]
    return "\n".join(lines) + "\n"


__all__ = ["Objective", "cmd_plan", "cmd_plan_request", "parse_duration", "plan_text", "request_text"]
