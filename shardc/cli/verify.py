"""``shardc verify``: emulate the sharded program on chips and compare it with the unsharded one."""
from __future__ import annotations

import argparse
import math
import re
import sys

from shardc.cli.common import (
    emit_json,
    human_bytes,
    load_graph,
    preset_flags,
    real_flag,
    shard_as_asked,
    whole_flag,
)
from shardc.cli.compile import SOURCE_HEAD, SourceHeader, header_source, source_digest
from shardc.errors import NOLOC, ShardcError, render_diagnostic
from shardc.execute.reference import DEFAULT_MAX_BYTES
from shardc.execute.verification import DEFAULT_LAYERS, DEFAULT_TOLERANCE, VerifyReport, shrink_sizes, verify
from shardc.ir.graph import Graph
from shardc.ir.transforms import with_sizes
from shardc.sharding.sharded import ShardResult

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_FROM_HEADER = ""  # --against with no value: the source the compile -o header names


def parse_bytes(text: str) -> int:
    """``4GiB``, ``512MiB``, ``1e9``, ``1000000`` -> bytes."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    if m is None or m.group(2).lower() not in _UNITS:
        raise ShardcError(f"--max-memory {text}: expected a size such as 4GiB, 512MiB or 1000000000")
    size = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not math.isfinite(size) or size > 2**63:
        raise ShardcError(f"--max-memory {text}: too large; give a size such as 64GiB")
    return int(size)


def _verify_args(parser: argparse.ArgumentParser) -> None:
    preset_flags(parser)
    parser.add_argument("--shrink", action="store_true",
                        help="make every dim the smallest size its layouts can split (at least 4, unless "
                             "it was smaller), keeping the layouts and collectives as compiled for the "
                             "real sizes")
    parser.add_argument("--layers", type=whole_flag, metavar="N",
                        help=f"run N layers of each repeat (default: {DEFAULT_LAYERS}, or fewer if the "
                             "repeat has fewer)")
    parser.add_argument("--seed", type=whole_flag, default=0, help="seed of the inputs and weights (default 0)")
    parser.add_argument("--dtype", choices=("f32", "f64"), default="f32",
                        help="compute dtype of both runs (default f32)")
    parser.add_argument("--tolerance", type=real_flag, metavar="T",
                        help="largest relative error allowed per value (default: "
                             + ", ".join(f"{t:g} in {d}" for d, t in DEFAULT_TOLERANCE.items()) + ")")
    parser.add_argument("--max-memory", default="4GiB", metavar="SIZE",
                        help="refuse runs estimated to need more host memory (default 4GiB)")
    parser.add_argument("--against", nargs="?", const=_FROM_HEADER, metavar="SOURCE",
                        help="for an already-sharded FILE: also check that it computes what the unsharded "
                             "program SOURCE computes (its outputs against SOURCE's reference run, at FILE's "
                             "sizes); without SOURCE, the program named by the header 'shardc compile -o' wrote")


def cmd_verify(args: argparse.Namespace) -> int:
    """Emulate FILE (sharded here unless already sharded) and compare with the reference: exit 1 on mismatch."""
    g, _ = load_graph(args)
    if args.layers is not None and args.layers < 0:
        raise ShardcError(f"--layers {args.layers}: expected a number of layers, 0 or more")
    if args.seed < 0:
        raise ShardcError(f"--seed {args.seed}: expected a non-negative integer")
    if args.tolerance is not None and not (math.isfinite(args.tolerance) and args.tolerance >= 0):
        # nan would compare false against every error and pass any program
        raise ShardcError(f"--tolerance {args.tolerance}: expected a finite relative error, 0 or more "
                          "(such as 1e-4)")
    max_bytes = parse_bytes(args.max_memory) if args.max_memory else DEFAULT_MAX_BYTES
    result, _ = shard_as_asked(g, args)
    sg = result.graph
    source = None if g.is_sharded else g
    if args.against is not None:
        source = against(g, args)
    if args.shrink:
        sizes = shrink_sizes(sg)
        sg = with_sizes(sg, sizes)
        source = with_sizes(source, sizes) if source is not None else None
    layers = DEFAULT_LAYERS if args.layers is None else args.layers
    report = verify(sg, args.seed, args.dtype, layers, tolerance=args.tolerance, source=source,
                    max_bytes=max_bytes)
    if args.json:
        obj = report.to_json()
        obj["mesh"] = sg.mesh.spec() if sg.mesh else None
        obj["ffn"] = result.strategy.ffn.value if result.strategy else None
        obj["attention"] = result.strategy.attention.value if result.strategy else None
        obj["layers"] = layers
        if getattr(args, "against_path", None):
            obj["against"] = {"path": args.against_path, "changed_since_compile": args.against_changed}
        emit_json(obj)
    else:
        print(_report_text(report, sg, result, layers, args))
    return 0 if report.passed else 1


def against(g: Graph, args: argparse.Namespace) -> Graph:
    """The unsharded program ``--against`` names, at the sharded FILE's dim sizes."""
    if not g.is_sharded:
        raise ShardcError(f"--against: {args.file} is not sharded; verify already compares it with its own "
                          "unsharded run", hint="give --against a sharded FILE, such as compile -o's output")
    path = args.against
    header = header_source(g, args.file)
    if path == _FROM_HEADER:
        if header is None:
            raise ShardcError(f"--against: {args.file} names no source program (its first line is not the "
                              f"'{SOURCE_HEAD.strip()} ...' header shardc compile -o writes)",
                              hint="give the source: --against SOURCE.model")
        path = str(header.path)
    args.against_path = path
    source, _ = load_graph(argparse.Namespace(**{**vars(args), "mesh": None, "set": []}), path)
    if source.is_sharded:
        raise ShardcError(f"--against {path}: the program is sharded; give the unsharded source")
    args.against_changed = _changed_since_compile(header, source, path, args)
    missing = [d for d, _ in g.dims if d not in source.sizes]
    if missing:
        raise ShardcError(f"--against {path}: the source has no dim {missing[0]}, which {args.file} has; "
                          "it is not the program this file was sharded from")
    return with_sizes(source, dict(g.dims))


def _changed_since_compile(header: SourceHeader | None, source: Graph, path: str,
                           args: argparse.Namespace) -> bool | None:
    """Whether the source's text differs from the one FILE was compiled from (None if FILE's header
    records no digest); a difference is warned about on standard error, and the check goes on
    against the source as it is now."""
    if header is None or header.digest is None or source.source is None:
        return None
    now = source_digest(source.source.text)
    if now == header.digest:
        return False
    message = (f"this is not the text {args.file} was compiled from (sha256 {header.digest} in its header, "
               f"{now} now): it was edited since, or it is another program")
    hint = f"{args.file} is checked against the source as it is now; compile it again to record this text"
    print(render_diagnostic("warning", message, source.source, NOLOC, hint), file=sys.stderr)
    return True


def _report_text(report: VerifyReport, sg: Graph, result: ShardResult, layers: int,
                 args: argparse.Namespace) -> str:
    assert sg.mesh is not None
    preset = (f"{result.strategy.ffn.value} / attention by {result.strategy.attention.value}"
              if result.strategy else "as written (already sharded)")
    repeats = ", ".join(f"{min(layers, r.count)} of {r.count} layers" for r in sg.repeats) or "no repeats"
    dims = ", ".join(f"{d}={n}" for d, n in sg.dims)
    lines = [
        f"verify {sg.name} on {sg.mesh.spec()} ({report.chips} chips), {preset}",
        f"  dims     {dims}{' (shrunk)' if args.shrink else ''}",
        f"  run      {repeats}, {report.dtype}, seed {args.seed}",
    ]
    if getattr(args, "against_path", None):
        edited = ", edited since the compile" if args.against_changed else ""
        lines.append(f"  against  {args.against_path} (its outputs, from its own unsharded run{edited})")
    if report.passed:
        lines.append(f"PASSED: every value matches the reference (max relative error "
                     f"{report.max_rel_error:.2g}, max absolute error {report.max_abs_error:.2g}; "
                     f"tolerance {report.tolerance:g})")
    else:
        assert report.first_mismatch is not None
        lines.append(f"FAILED: {report.first_mismatch.message}")
    c = report.counters
    if c is not None:
        lines += [
            "counters per chip (whole run):",
            f"  einsum FLOPs        {c.flops:,.0f}",
            f"  elementwise FLOPs   {c.elementwise_flops:,.0f}",
            f"  bytes sent          {human_bytes(c.comm_bytes)}",
            f"  HBM bytes read      {human_bytes(c.hbm_bytes)}",
            f"  peak live bytes     {human_bytes(c.peak_bytes)}",
        ]
    return "\n".join(lines)
