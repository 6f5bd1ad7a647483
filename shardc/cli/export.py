"""``shardc export``: the sharded program as a standalone program for another system (JAX), and
``--compare-xla``: its collectives and FLOPs beside those of XLA's own partitioner."""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from shardc.cli.common import chip_profile, emit_json, load_graph, preset_flags, shard_as_asked, write_atomically
from shardc.errors import ShardcError
from shardc.execute.verification import shrink
from shardc.export import export_jax
from shardc.hardware.comm import comm_mode
from shardc.ir.graph import Graph

TARGETS = ("jax",)


def _export_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", metavar="TARGET",
                        help=f"what to export to: {', '.join(TARGETS)} (a shard_map program); required "
                             "unless --compare-xla")
    preset_flags(parser)
    parser.add_argument("-o", "--output", metavar="OUT",
                        help="write the program to OUT (atomically) instead of standard output")
    parser.add_argument("--shrink", action="store_true",
                        help="first shrink every dim to the smallest size its layouts split "
                             "(the same layouts and collectives, small enough to run on one CPU)")
    parser.add_argument("--compare-xla", action="store_true",
                        help="compile the unsharded program with jax.jit given only the plan's input and "
                             "output shardings (XLA's Shardy and GSPMD partitioners; nothing runs) and print "
                             "its collectives, bytes per chip, dot FLOPs and estimated time beside shardc's "
                             "(needs jax)")


def cmd_export(args: argparse.Namespace) -> int:
    """Shard FILE (unless it is sharded already) and write it as a JAX program, or compare it with XLA."""
    if args.to is None and not args.compare_xla:
        raise ShardcError("say what to export to", hint="use --to jax (or --compare-xla)")
    if args.to is not None and args.to not in TARGETS:
        raise ShardcError(f"unknown export target {args.to!r}", hint=f"use --to {' or --to '.join(TARGETS)}")
    g, _ = load_graph(args)
    profile = chip_profile(args)
    sg = shard_as_asked(g, args, profile)[0].graph
    if args.shrink:
        sg = shrink(sg)
    assert sg.mesh is not None
    report: dict[str, object] = {"model": sg.name, "mesh": sg.mesh.spec(), "chips": sg.mesh.num_chips}
    if args.compare_xla:
        from shardc.export.vs_xla import compare_xla, format_table

        mode = comm_mode(args.comm if args.comm is not None else profile.default_comm)
        sides = compare_xla(sg, profile, mode)
        report["compare_xla"] = {"chip": profile.name, "comm": mode.value, "sides": [s.to_json() for s in sides]}
        if not args.json:
            print(f"{sg.name} on {sg.mesh.spec()} ({sg.mesh.num_chips} chips of {profile.name}, --comm {mode.value}), "
                  "per chip, one run:")
            sys.stdout.write(format_table(sides, sg.mesh))
    if args.to is not None:
        report.update(_write_program(args, sg))
    if args.json:
        emit_json(report)
    return 0


def _write_program(args: argparse.Namespace, sg: Graph) -> dict[str, object]:
    """Write the JAX program to ``-o`` (or standard output); what ``--json`` says of it."""
    assert sg.mesh is not None
    text = export_jax(sg)
    written: dict[str, object] = {"target": args.to, "output": args.output, "lines": text.count("\n")}
    if args.output is None:
        if args.json:
            written["program"] = text  # the program inside the JSON, so that stdout stays one object
        else:
            sys.stdout.write(text)
        return written
    write_atomically(Path(args.output), text)
    if not args.json:
        print(f"wrote {args.output} ({text.count(chr(10))} lines); run it with: "
              f"python {args.output} --devices {sg.mesh.num_chips} --check --time", file=sys.stderr)
        if importlib.util.find_spec("jax") is None:
            print('note: jax is not installed; to run the program: pip install "shardc[jax]"', file=sys.stderr)
    return written
