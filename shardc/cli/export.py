"""``shardc export``: the sharded program as a standalone program for another system (JAX)."""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from shardc.cli.common import load_graph, preset_flags, shard_as_asked, write_atomically
from shardc.errors import ShardcError
from shardc.execute.verification import shrink
from shardc.export import export_jax

TARGETS = ("jax",)


def _export_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", metavar="TARGET", required=True,
                        help=f"what to export to: {', '.join(TARGETS)} (a shard_map program)")
    preset_flags(parser)
    parser.add_argument("-o", "--output", metavar="OUT",
                        help="write the program to OUT (atomically) instead of standard output")
    parser.add_argument("--shrink", action="store_true",
                        help="first shrink every dim to the smallest size its layouts split "
                             "(the same layouts and collectives, small enough to run on one CPU)")


def cmd_export(args: argparse.Namespace) -> int:
    """Shard FILE (unless it is sharded already) and write it as a JAX program."""
    if args.to not in TARGETS:
        raise ShardcError(f"unknown export target {args.to!r}", hint=f"use --to {' or --to '.join(TARGETS)}")
    g, _ = load_graph(args)
    sg = shard_as_asked(g, args)[0].graph
    if args.shrink:
        sg = shrink(sg)
    text = export_jax(sg)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    write_atomically(Path(args.output), text)
    assert sg.mesh is not None
    print(f"wrote {args.output} ({text.count(chr(10))} lines); run it with: "
          f"python {args.output} --devices {sg.mesh.num_chips} --check --time", file=sys.stderr)
    if importlib.util.find_spec("jax") is None:
        print('note: jax is not installed; to run the program: pip install "shardc[jax]"', file=sys.stderr)
    return 0
