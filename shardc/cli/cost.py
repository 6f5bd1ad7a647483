"""``shardc cost``: latency, bound, MFU, memory per chip and a breakdown, from the analytical cost model."""
from __future__ import annotations

import argparse
import math
import sys

from shardc.cli.common import (
    chip_profile,
    emit_json,
    human_bytes,
    human_flops,
    load_graph,
    parse_sets,
    preset_flags,
    print_warnings,
    real_flag,
    replication_text,
    shard_as_asked,
    table,
    warnings_json,
    whole_flag,
)
from shardc.cost.memory import max_context
from shardc.cost.model import CostReport, estimate
from shardc.errors import ShardcError
from shardc.hardware.profile import ChipProfile
from shardc.ir.graph import DType, Graph
from shardc.ir.transforms import with_weight_dtype
from shardc.language.lower import parse
from shardc.sharding.sharded import ShardResult
from shardc.units import human_seconds

DEFAULT_KV_BUDGET = 30.0  # percent of HBM (the paper's Table 1)
_WEIGHTS = {"bf16": DType.BF16, "int8": DType.INT8}


def _cost_args(parser: argparse.ArgumentParser) -> None:
    preset_flags(parser)
    parser.add_argument("--weights", metavar="DTYPE",
                        help="store every param as bf16 or int8 before sharding (int8: weights are read and "
                             "moved at one byte, matmuls stay bf16)")
    parser.add_argument("--pad", metavar="DIM=N", action="append", default=[],
                        help="pad a dim to N before sharding, e.g. --pad H=64 (the paper pads PaLM 540B's 48 "
                             "heads to 64): the padded program is timed, parameters and MFU count the real "
                             "size (repeatable)")
    parser.add_argument("--overlap", action="store_true",
                        help="run each collective under the matmul it feeds or follows (looped "
                             "CollectiveEinsum): the pair costs the longer of the two")
    parser.add_argument("--gather-chunks", type=whole_flag, metavar="N",
                        help="peak memory: a weight-gathered matmul streams its gathered operand in N chunks, "
                             "two held at a time (default: one chunk per chip of the gather; 1: held whole)")
    parser.add_argument("--max-context", action="store_true",
                        help="also print the longest context whose KV cache fits in --kv-budget of HBM, "
                             "at the program's batch")
    parser.add_argument("--kv-budget", type=real_flag, default=None, metavar="PCT",
                        help=f"with --max-context: percent of HBM per chip for the KV cache "
                             f"(default {DEFAULT_KV_BUDGET:g})")


def _weights(g: Graph, args: argparse.Namespace) -> Graph:
    if args.weights is None:
        return g
    if args.weights not in _WEIGHTS:
        raise ShardcError(f"--weights {args.weights}: choose bf16 or int8")
    if g.is_sharded:
        raise ShardcError(f"--weights {args.weights}: {args.file} is already sharded, so its param dtypes are "
                          "part of the program; edit them in the file (or pass the unsharded program)",
                          g.source)
    return with_weight_dtype(g, _WEIGHTS[args.weights])


def _padded(g: Graph, text: str, args: argparse.Namespace) -> tuple[Graph, dict[str, int] | None]:
    """``--pad``: the program re-read with the padded sizes, and the real sizes of the padded dims."""
    if not args.pad:
        return g, None
    pad = {d: n for d, n in parse_sets(args.pad).items()}
    if g.is_sharded:
        raise ShardcError(f"--pad: {args.file} is already sharded; pad its dims in the file", g.source)
    for dim, size in pad.items():
        if dim not in g.sizes:
            raise ShardcError(f"--pad {dim}={size}: the program has no dim {dim}")
        if size < g.sizes[dim]:
            raise ShardcError(f"--pad {dim}={size}: padding cannot shrink {dim} (its size is {g.sizes[dim]}); "
                              "use --set to change a size")
    real = {d: g.sizes[d] for d in pad}
    padded = parse(text, g.source.filename if g.source is not None else str(args.file),
                   sizes={**parse_sets(args.set), **pad}, mesh=g.mesh)
    return padded, real


def cmd_cost(args: argparse.Namespace) -> int:
    """Shard FILE (unless already sharded) and print what one run of it costs."""
    if args.kv_budget is not None and not args.max_context:
        raise ShardcError("--kv-budget sets the KV-cache budget of --max-context; give --max-context too")
    if args.kv_budget is None:
        args.kv_budget = DEFAULT_KV_BUDGET
    if not (math.isfinite(args.kv_budget) and 0 < args.kv_budget <= 100):
        raise ShardcError(f"--kv-budget {args.kv_budget:g}: a percentage of HBM in (0, 100]")
    profile = chip_profile(args)
    g, text = load_graph(args)
    if g.is_sharded and (args.ffn or args.attention) and not args.json:
        print("note: the program is already sharded; --ffn/--attention are ignored", file=sys.stderr)
    g, real = _padded(g, text, args)
    g = _weights(g, args)
    if next(g.ops(), None) is None:
        raise ShardcError(f"{g.source.filename if g.source else args.file}: the program has no operations, so "
                          "there is nothing to cost")
    result, _ = shard_as_asked(g, args, profile)
    report = estimate(result.graph, profile, args.comm, args.overlap, real_sizes=real,
                      gather_chunks=args.gather_chunks)
    context = None
    if args.max_context:
        context = max_context(result.graph, args.kv_budget / 100, profile)
    if args.json:
        obj: dict[str, object] = {"model": result.graph.name, **_preset(result), "weights": args.weights}
        obj.update(report.to_json())
        if context is not None:
            obj["max_context"] = context
            obj["kv_budget_fraction"] = args.kv_budget / 100
        obj["warnings"] = warnings_json(result)
        emit_json(obj)
    else:
        print_warnings(result)
        sys.stdout.write(cost_text(report, result, profile, context, args))
    return 0


def _preset(result: ShardResult) -> dict[str, object]:
    s = result.strategy
    return {"ffn": s.ffn.value if s else None, "attention": s.attention.value if s else None}


def _peak_lines(r: CostReport) -> list[str]:
    """Where the activation peak is and what is live there (the largest buffers, the rest summed)."""
    p = r.memory_peak
    if not p.bytes:
        return []
    line = f" (line {p.line})" if p.line else ""
    out = [f"  activation peak  {human_bytes(p.bytes)} at {p.op} = {p.kind}{line}, {p.layer}; live there:"]
    shown = p.live[:8]
    rows = [[v.name, human_bytes(v.bytes), v.note] for v in shown]
    rest = p.live[len(shown):]
    if rest:
        rows.append([f"{len(rest)} more", human_bytes(sum(v.bytes for v in rest)), ""])
    return out + table(rows, {1}, "    ")


# --- formatting -----------------------------------------------------------------------------
def cost_text(r: CostReport, result: ShardResult, profile: ChipProfile, context: int | None,
              args: argparse.Namespace) -> str:
    """The human report of ``shardc cost`` (see the module docstring)."""
    sg = result.graph
    preset = (f"{result.strategy.ffn.value} / attention by {result.strategy.attention.value}"
              if result.strategy else "as written (already sharded)")
    weights = f", {args.weights} weights" if args.weights else ""
    comm = f"--comm {r.comm_mode}" + (", collectives overlapped with matmuls" if r.overlap else "")
    run = "one decode step" if sg.sizes.get("L", 1) == 1 else f"one pass over L={sg.sizes['L']:,} tokens"
    lines = [f"cost of {sg.name} on {r.mesh} ({r.chips} chips of {r.chip}), {preset}{weights}; {comm}",
             f"one run = {run} for B={sg.sizes.get('B', 1):,} sequences: {r.tokens:,} tokens", ""]
    per = max(sg.sizes.get("L", 1), 1)
    figures = [("latency", human_seconds(r.latency_s), human_seconds(r.bound_latency_s)),
               ("latency per token", human_seconds(r.per_token_latency_s), human_seconds(r.bound_latency_s / per)),
               ("MFU", f"{r.mfu:.1%}", f"{r.bound_mfu:.1%}"),
               ("chip-seconds per token", human_seconds(r.cost_chip_s_per_token),
                human_seconds(r.chips * r.bound_latency_s / r.tokens))]
    if r.calibrated:
        rows = [["", "calibrated", "bound"]] + [list(f) for f in figures]
    else:
        rows = [["", "bound"]] + [[name, b] for name, _, b in figures]
    lines += table(rows, {1, 2}, "")
    lines.append(f"  bound: {r.bound_model}")
    lines.append(f"  calibrated: {r.estimate_model}")
    cal = r.calibration
    if r.calibrated and not profile.calibration.is_zero():
        lines.append(f"    hop_latency {human_seconds(float(cal['hop_latency']))} per ring step, op_overhead "  # type: ignore[arg-type]
                     f"{human_seconds(float(cal['op_overhead']))} per op, mxu_fill {float(cal['mxu_fill']):.3g} rows "  # type: ignore[arg-type]
                     f"per {cal['matmul_tile']}x{cal['matmul_tile']} tile pass, peak_fraction "
                     f"{float(cal['peak_fraction']):.3g}")  # type: ignore[arg-type]
    for dim, (real, size) in r.padding.items():
        extra = r.padded_params - r.params
        lines.append(f"  padding: {dim} {real} -> {size} is timed; parameters and MFU count {dim}={real}: "
                     f"{r.params:,} parameters, the padding adds {extra:,} ({extra / r.params:.1%}); "
                     f"counted as useful work it would read {r.mfu * r.padded_params / r.params:.1%} MFU")
    lines += ["", "per chip, one run",
              f"  FLOPs (matmuls)  {human_flops(r.flops_per_chip)}",
              f"  bytes sent       {human_bytes(r.comm_bytes_per_chip)}",
              f"  HBM traffic      {human_bytes(r.hbm_bytes_per_chip)} (reads and writes)",
              f"  memory           weights {human_bytes(r.weight_bytes_per_chip)} + KV caches "
              f"{human_bytes(r.cache_bytes_per_chip)} + peak activations {human_bytes(r.activation_bytes_per_chip)}"
              f" = {human_bytes(r.memory_bytes_per_chip)} of {human_bytes(r.hbm_capacity)} HBM: fits "
              f"{'yes' if r.fits_hbm else 'NO'}"]
    lines += _peak_lines(r)
    if context is not None:
        lines.append(f"  max context      {context:,} positions: the KV cache at B={sg.sizes.get('B', 1):,} fits in "
                     f"{args.kv_budget:g}% of HBM ({human_bytes(args.kv_budget / 100 * r.hbm_capacity)})")
    total = r.latency_s or 1.0
    kinds = sorted(((k, v) for k, v in r.breakdown_by_kind.items() if v), key=lambda kv: -kv[1])
    lines += ["", ("calibrated" if r.calibrated else "bound") + " time by op kind"]
    lines += table([[k, human_seconds(v), f"{v / total:.1%}"] for k, v in kinds], {1, 2})
    if r.breakdown_by_collective:
        lines += ["", "communication by collective" + (" (partly hidden under matmuls)" if r.overlap else "")]
        colls = sorted(r.breakdown_by_collective.items(), key=lambda kv: -kv[1])
        lines += table([[k, human_seconds(v), f"{v / total:.1%}"] for k, v in colls], {1, 2})
    roof = sum(v for k, v in r.bound_buckets.items())
    part = r.bound_buckets.get(r.bound, 0.0)
    lines += ["", f"bound by {r.bound}: {human_seconds(part)} of the {human_seconds(r.bound_latency_s)} roofline"
                  + (f" ({part / roof:.0%} of its time)" if roof else "")]
    assert sg.mesh is not None
    redundant = replication_text(r.replication, r.replication_factor, sg.mesh)
    return "\n".join(lines) + "\n" + ("\n" + redundant if redundant else "")
