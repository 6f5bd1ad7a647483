"""``shardc compile``: the sharded program, its collectives with reasons, the einsums computed redundantly,
the preset explained."""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from shardc.cli.common import (
    STDIN,
    chip_profile,
    emit_json,
    human_bytes,
    load_graph,
    preset_flags,
    print_warnings,
    replication_text,
    shard_as_asked,
    table,
    warnings_json,
    write_atomically,
)
from shardc.ir.graph import DeclKind, Graph, OpKind
from shardc.ir.mesh import Mesh
from shardc.language.lower import parse
from shardc.language.printer import format_graph
from shardc.planner.choose import Plan
from shardc.sharding.replication import replication, replication_factor
from shardc.sharding.search import Method
from shardc.sharding.sharded import CollectiveRecord, ShardResult, relocated
from shardc.units import human_seconds


def _compile_args(parser: argparse.ArgumentParser) -> None:
    preset_flags(parser)
    parser.add_argument("-o", "--output", metavar="OUT",
                        help="write the sharded program to OUT (atomically) and print only the "
                             "collectives table and the redundant compute")
    parser.add_argument("--explain", action="store_true",
                        help="first print the preset in the paper's notation and the layout of every "
                             "param and cache")


def cmd_compile(args: argparse.Namespace) -> int:
    """Shard FILE; print the sharded program and its collectives (or write the program to OUT)."""
    g, _ = load_graph(args)  # --mesh is applied here (and refused for an already-sharded FILE)
    # Recompiling a sharded file keeps the source its header names, and that source's digest.
    origin = header_source(g, args.file) if g.is_sharded else None
    if origin is not None:
        source, digest = str(origin.path), origin.digest
    else:
        source, digest = args.file, source_digest(g.source.text) if g.source is not None else None
    g = without_notes(g)
    if g.is_sharded and (args.ffn or args.attention) and not args.json:
        print("note: the program is already sharded; --ffn/--attention are ignored", file=sys.stderr)
    result, ranking = shard_as_asked(g, args)
    program = format_graph(result.graph)
    written = ""
    if args.output is not None:
        written = source_header(source, args.output, digest) + program
        write_atomically(Path(args.output), written)
    if args.json:  # lines are those of the "program" text
        emit_json(compile_json(relocated(result, parse(program, args.file)), program, args, ranking))
        return 0
    # On standard output the notes are comments, so the whole output is itself a .model file.
    prefix = "" if args.output is not None else "# "
    parts: list[str] = []
    if args.output is not None:
        lines = program.count("\n")
        parts.append(f"wrote the sharded program to {args.output} ({lines} lines)\n\n")
    if args.explain:
        parts.append(_commented(explain_text(result, args, ranking), prefix) + "\n")
    if args.output is None:
        parts.append(program + "\n")
    # Lines cited below are those of what was printed: the file written, or this output itself.
    shown = written if args.output is not None else "".join(parts)
    result = relocated(result, parse(shown, args.output or args.file))
    parts.append(_commented(collectives_text(result), prefix))
    redundant = redundant_text(result)
    if redundant:
        parts.append(_commented("\n" + redundant, prefix))
    if args.explain and result.method is Method.SEARCH:
        parts.append(_commented("\n" + choices_text(result, g, args), prefix))
    print_warnings(result)
    sys.stdout.write("".join(parts))
    return 0


_TABLE_HEAD = "# collectives on mesh "
SOURCE_HEAD = "# shardc: sharded from "
_HEADER_RE = re.compile(r"(?P<path>.+?)(?: \(sha256 (?P<digest>[0-9a-f]{16})\))?")


@dataclass(frozen=True)
class SourceHeader:
    """What the first line of a file ``compile -o`` wrote says: the unsharded program (resolved) and the
    digest of its text then (None in a header written before digests were recorded)."""

    path: Path
    digest: str | None


def source_digest(text: str) -> str:
    """The first 16 hex digits of the SHA-256 of a program's text (UTF-8), as the header records it."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def source_header(source: str, output: str, digest: str | None) -> str:
    """The first line of a file ``compile -o`` writes: where its unsharded program is, relative to
    the written file's folder when it can be, and the digest of that program's text
    (``shardc verify OUT --against`` reads both)."""
    if source == STDIN:
        return ""
    src, out_dir = Path(source).resolve(), Path(output).resolve().parent
    try:
        shown = os.path.relpath(src, out_dir)
    except ValueError:  # another drive
        shown = str(src)
    return f"{SOURCE_HEAD}{Path(shown).as_posix()}" + (f" (sha256 {digest})" if digest else "") + "\n"


def header_source(g: Graph, sharded_file: str) -> SourceHeader | None:
    """The unsharded program a ``compile -o`` header names (resolved against the sharded file's folder)."""
    head = g.trivia.before
    if not head or not head[0].startswith(SOURCE_HEAD):
        return None
    m = _HEADER_RE.fullmatch(head[0][len(SOURCE_HEAD):].strip())
    if m is None:
        return None
    return SourceHeader((Path(sharded_file).resolve().parent / m.group("path")).resolve(), m.group("digest"))
_EXPLAIN_HEAD = "# preset on mesh "


def without_notes(g: Graph) -> Graph:
    """``g`` without the notes an earlier ``shardc compile`` printed around the program.

    Compiling the output of ``shardc compile`` again prints fresh notes; the old collectives table
    (comments at the end of the file) and ``--explain`` block (comments before ``model``, up to the
    first blank line) would otherwise be kept as the file's own comments and printed twice.
    """
    end = g.end_trivia.before
    cut = next((i for i, line in enumerate(end) if line.startswith(_TABLE_HEAD)), len(end))
    while cut and end[cut - 1] == "":
        cut -= 1
    head = g.trivia.before
    skip = 0
    if head and head[0].startswith(SOURCE_HEAD):  # compile -o's header (a new one is written)
        skip = 1
        while skip < len(head) and head[skip] == "":
            skip += 1
    if skip < len(head) and head[skip].startswith(_EXPLAIN_HEAD):
        skip = next((i for i, line in enumerate(head) if i > skip and line == ""), len(head))
        while skip < len(head) and head[skip] == "":
            skip += 1
    if cut == len(end) and not skip:
        return g
    return replace(g, end_trivia=replace(g.end_trivia, before=end[:cut]),
                   trivia=replace(g.trivia, before=head[skip:], blank=False if skip else g.trivia.blank))


def _commented(text: str, prefix: str) -> str:
    return "".join(f"{prefix}{line}".rstrip() + "\n" for line in text.splitlines())


def _priced(result: ShardResult) -> list[CollectiveRecord]:
    """The collectives that move data (a slice is a free local op: it stays in the program only)."""
    return [c for c in result.collectives if c.kind is not OpKind.SLICE]


def _blocks(result: ShardResult) -> list[tuple[str, int | None, list[CollectiveRecord]]]:
    """(label, repeat count or None for the top level, records) for each block of the program."""
    records = _priced(result)
    repeats = result.graph.repeats
    blocks: list[tuple[str, int | None, list[CollectiveRecord]]] = [
        ("top level", None, [c for c in records if c.repeat is None])]
    for i, rep in enumerate(repeats):
        where = f" at line {rep.loc.line}" if len(repeats) > 1 and rep.loc.line else ""
        blocks.append((f"repeat {rep.count}{where} (per layer, ×{rep.count})", rep.count,
                       [c for c in records if c.repeat == i]))
    return blocks


def _row(c: CollectiveRecord, mesh: Mesh) -> list[str]:
    kind = c.kind.value + (" (in op)" if c.implicit else "")
    if c.kind is OpKind.ALL_TO_ALL:
        dim = f"{c.src_dim}->{c.dst_dim}"
    else:
        dim = c.dim or "-"
    before, after = c.before.format(mesh), c.after.format(mesh)
    move = before if c.implicit else f"{before} -> {after}"
    return [c.value, kind, "".join(c.axes), dim, move, human_bytes(c.bytes_per_chip), c.why]


def collectives_text(result: ShardResult) -> str:
    """The collectives table, one section per block, with totals (see ``shardc compile``)."""
    mesh = result.graph.mesh
    assert mesh is not None
    lines = [f"collectives on mesh {mesh.spec()} ({mesh.num_chips} chips); bytes are what each chip sends"]
    header = ["value", "collective", "axes", "dim", "from -> to", "bytes/chip", "reason"]
    run_total = 0.0
    for label, count, records in _blocks(result):
        lines += ["", label]
        if not records:
            lines.append("  (no collectives)")
            continue
        rows = [header] + [_row(c, mesh) for c in records]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
        for r in rows:
            cells = [cell.rjust(w) if i == 5 else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths))]
            lines.append("  " + "  ".join(cells + [r[-1]]).rstrip())
        once = sum(c.bytes_per_chip for c in records)
        per_run = sum(c.bytes_per_chip * c.count for c in records)
        run_total += per_run
        n = f"{len(records)} collective{'s' if len(records) != 1 else ''}"
        if count is None:
            lines.append(f"  total: {n}, {human_bytes(per_run)} per chip per run")
        else:
            lines.append(f"  total: {n}, {human_bytes(once)} per chip per layer, "
                         f"× {count:,} = {human_bytes(per_run)} per chip per run")
    slices = len(result.collectives) - len(_priced(result))
    lines += ["", f"program run: {human_bytes(run_total)} per chip"
              + (f" (plus {slices} slice{'s' if slices != 1 else ''}: free local ops)" if slices else "")]
    return "\n".join(lines) + "\n"


def redundant_text(result: ShardResult) -> str:
    """The einsums whose work is repeated on several chips, and the run's factor ('' when all split)."""
    sg = result.graph
    assert sg.mesh is not None
    return replication_text(replication(sg), replication_factor(sg), sg.mesh)


def choices_text(result: ShardResult, source: Graph, args: argparse.Namespace) -> str:
    """``--explain``: the layout search's estimate against the greedy policy's, and for each
    collective a choice put in, the cheapest plan that chose otherwise there."""
    mesh = result.graph.mesh
    assert mesh is not None and result.seconds is not None
    profile = chip_profile(args)
    presets = {"ffn": result.strategy.ffn.value, "attention": result.strategy.attention.value} if result.strategy \
        else {}
    greedy, _ = shard_as_asked(source, argparse.Namespace(**{**vars(args), **presets, "search": Method.GREEDY.value,
                                                             "explain": False}), profile)
    assert greedy.seconds is not None
    lines = [f"layout search on {profile.name}: {human_seconds(result.seconds)} per run estimated "
             f"(op by op, --search greedy: {human_seconds(greedy.seconds)})"]
    rows = [["value", "collective", "axes", "the alternative it beat"]]
    rows += [[c.value, c.kind.value, "".join(c.axes), c.alternative] for c in _priced(result) if c.alternative]
    if len(rows) == 1:
        lines.append("  no collective was a choice: each op had one legal layout")
    else:
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines += ["  " + "  ".join([cell.ljust(w) for cell, w in zip(r, widths)] + [r[3]]).rstrip() for r in rows]
        lines.append("  (collectives not listed had no alternative: their op had one legal layout)")
    return "\n".join(lines) + "\n"


def ranking_text(ranking: Plan) -> list[str]:
    """``--ffn auto``/``--attention auto``: the planner's ranking on the mesh (the top five)."""
    rows = [["rank", "ffn", "attention", "latency"]]
    rows += [[str(i + 1), r.candidate.ffn.value, r.candidate.attention.value, human_seconds(r.figures.latency_s)]
             for i, r in enumerate(ranking.candidates[:5])]
    lines = [f"presets chosen by the planner ({len(ranking.candidates)} feasible of {ranking.considered}; "
             "shardc plan shows every one)", *table(rows, {3})]
    return lines + [f"  why: {ranking.why}"]


def explain_text(result: ShardResult, args: argparse.Namespace, ranking: Plan | None = None) -> str:
    """The preset in the paper's notation and where each param and cache lives (and, when the
    planner chose the presets, its ranking)."""
    g = result.graph
    assert g.mesh is not None
    lines = ranking_text(ranking) if ranking is not None else []
    lines.append(f"preset on mesh {g.mesh.spec()} ({g.mesh.num_chips} chips)")
    if result.strategy is None:
        lines.append("  none: the program was already sharded; its layouts are verified as written")
    else:
        given = {"ffn": args.ffn, "attention": args.attention}
        def note(k: str) -> str:
            if k not in given:
                return ""
            return " (default)" if given[k] is None else (" (chosen by the planner)" if given[k] == "auto" else "")
        rows = [(k, v + note(k)) for k, v in result.strategy.describe(g.sizes)]
        width = max(len(k) for k, _ in rows)
        lines += [f"  {k.ljust(width)}  {v}" for k, v in rows]
    lines.append("layouts of params and caches")
    decls = [(d, rep) for d, rep in g.decls() if d.kind in (DeclKind.PARAM, DeclKind.CACHE)]
    width = max((len(d.value.name or "") for d, _ in decls), default=0)
    current = None
    for d, rep in decls:
        if rep is not current:
            current = rep
            if rep is not None:
                lines.append(f"  repeat {rep.count} (each layer):")
        indent = "    " if rep is not None else "  "
        assert d.value.layout is not None
        lines.append(f"{indent}{(d.value.name or '').ljust(width)}  {d.value.layout.format(g.mesh)}")
    return "\n".join(lines) + "\n"


def compile_json(result: ShardResult, program: str, args: argparse.Namespace,
                 ranking: Plan | None = None) -> dict[str, object]:
    """``shardc compile --json``: the program, the preset, the collectives (slices left out), the einsums
    computed redundantly and the whole run's replication factor, and any warning."""
    g = result.graph
    assert g.mesh is not None
    obj: dict[str, object] = {
        "program": program,
        "mesh": g.mesh.spec(),
        "ffn": result.strategy.ffn.value if result.strategy else None,
        "attention": result.strategy.attention.value if result.strategy else None,
        "collectives": [c.to_json(g.mesh) for c in _priced(result)],
        "bytes_per_chip_per_run": sum(c.bytes_per_chip * c.count for c in _priced(result)),
        "replication": [r.to_json() for r in replication(g)],
        "replication_factor": replication_factor(g),
        "warnings": warnings_json(result),
    }
    if args.output is not None:
        obj["output"] = args.output
    if ranking is not None:  # --ffn auto / --attention auto
        obj["planner"] = {"why": ranking.why, "candidates": [r.to_json() for r in ranking.candidates]}
    if args.explain:
        obj["preset"] = dict(result.strategy.describe(g.sizes)) if result.strategy else None
        obj["layouts"] = {d.value.name: d.value.layout.format(g.mesh) for d, _ in g.decls()
                          if d.kind in (DeclKind.PARAM, DeclKind.CACHE) and d.value.layout is not None}
    return obj
