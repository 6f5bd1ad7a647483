"""The ``shardc`` command line: one small function per subcommand, registered in :data:`COMMANDS`.

Every subcommand takes a FILE (``-`` reads standard input) and the common
flags ``--set DIM=N`` (repeatable), ``--mesh SPEC`` and ``--json``.  Exit
status: 0 success, 1 a check failed (``fmt --check`` found a file that is not
canonical), 2 bad input (a :class:`~shardc.errors.ShardcError` or a usage
error), 130 interrupted.  User errors print one message -- ``file:line:col:
error: ...`` with the source line and a caret, or under ``--json`` one
``{"error": {...}}`` object on standard output -- and never a traceback.

To add a subcommand, write ``_NAME_args(parser)`` (its own flags) and
``cmd_NAME(args) -> int``, and add one :class:`Command` row to :data:`COMMANDS`.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from . import __version__
from .errors import ShardcError
from .frontend import parse
from .ir import DeclKind, Graph, OpKind
from .mesh import Mesh
from .printer import format_graph
from .shard import CollectiveRecord, ShardResult, shard_program
from .strategies import ATTENTION_CHOICES, FFN_CHOICES
from .summary import summarize

STDIN = "-"
_SET_RE = re.compile(r"([A-Z])=([0-9]+)")


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, one-line description, an example, its flags and its body."""

    name: str
    help: str
    example: str
    add_args: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# --- shared helpers -------------------------------------------------------------------------
def parse_sets(items: Sequence[str]) -> dict[str, int]:
    """``["B=64", "S=2048"]`` -> ``{"B": 64, "S": 2048}``; a ShardcError for anything else."""
    sizes: dict[str, int] = {}
    for item in items:
        m = _SET_RE.fullmatch(item.strip())
        if m is None:
            raise ShardcError(f"--set {item}: expected DIM=N with DIM one upper-case letter and N a whole "
                              "number, e.g. --set B=64")
        size = int(m.group(2))
        if size < 1:
            raise ShardcError(f"--set {item}: a dim size is a whole number of at least 1")
        sizes[m.group(1)] = size  # the last --set of a dim wins
    return sizes


def read_source(file: str) -> tuple[str, str]:
    """The text of FILE (standard input for ``-``) and the name to report it under."""
    if file == STDIN:
        return sys.stdin.read(), "<stdin>"
    path = Path(file)
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except FileNotFoundError:
        raise ShardcError(f"no such file: {file}") from None
    except IsADirectoryError:
        raise ShardcError(f"{file} is a directory, not a .model file") from None
    except UnicodeDecodeError as err:
        raise ShardcError(f"{file} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise ShardcError(f"cannot read {file}: {err.strerror}") from None


def load_graph(args: argparse.Namespace) -> tuple[Graph, str]:
    """FILE parsed and verified with the common flags applied, and its text."""
    sizes = parse_sets(args.set)
    mesh = Mesh.parse(args.mesh) if args.mesh is not None else None
    text, name = read_source(args.file)
    return parse(text, name, sizes=sizes, mesh=mesh), text


def emit_json(obj: object) -> None:
    """Print one JSON object on standard output."""
    print(json.dumps(obj, indent=2))


def write_atomically(path: Path, text: str) -> None:
    """Replace (or create) ``path`` with ``text`` so a crash never leaves half a file.

    An existing file keeps its permissions; a new one gets the usual ``0o666 & ~umask``
    (not the 0600 of the temporary file it is renamed from).
    """
    path = path.resolve()  # write through a symlink rather than replacing it
    if not path.parent.is_dir():
        raise ShardcError(f"cannot write {path}: no such directory {path.parent}")
    try:
        mode = path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as err:
        raise ShardcError(f"cannot write {path}: {err.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        try:
            os.chmod(tmp, mode)
        except OSError:
            pass
        os.replace(tmp, path)
    except OSError as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise ShardcError(f"cannot write {path}: {err.strerror}") from None


# --- shardc check ---------------------------------------------------------------------------
def _check_args(parser: argparse.ArgumentParser) -> None:
    """``check`` has only the common flags."""


def cmd_check(args: argparse.Namespace) -> int:
    """Parse and verify FILE; print its summary (text, or one JSON object)."""
    summary = summarize(load_graph(args)[0])
    if args.json:
        emit_json(summary.to_json())
    else:
        sys.stdout.write(summary.to_text())
    return 0


# --- shardc fmt -----------------------------------------------------------------------------
def _fmt_args(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true",
                      help="print nothing if FILE is canonical; else name it and exit 1")
    mode.add_argument("-i", "--in-place", action="store_true", help="rewrite FILE in canonical form")


def cmd_fmt(args: argparse.Namespace) -> int:
    """Print FILE in canonical form, check that it is canonical, or rewrite it."""
    if args.in_place and args.file == STDIN:
        raise ShardcError("-i/--in-place needs a file; standard input cannot be rewritten")
    g, text = load_graph(args)
    name = g.source.filename if g.source is not None else args.file
    canonical = format_graph(g)
    same = canonical == text
    if args.check:
        if args.json:
            emit_json({"file": name, "canonical": same})
        elif not same:
            fix = "" if args.file == STDIN else f" (run: shardc fmt -i {name})"
            print(f"{name}: not in canonical form{fix}")
        return 0 if same else 1
    if args.in_place:
        if not same:
            write_atomically(Path(args.file), canonical)
        if args.json:
            emit_json({"file": name, "changed": not same})
        return 0
    if args.json:
        emit_json({"file": name, "text": canonical})
    else:
        sys.stdout.write(canonical)
    return 0


# --- shardc compile -------------------------------------------------------------------------
def preset_flags(parser: argparse.ArgumentParser) -> None:
    """``--ffn`` and ``--attention``: left None so :func:`shard_program` applies its defaults.

    Not argparse ``choices``: an unknown preset is a :class:`ShardcError` from the
    strategies module (one message listing the valid ones, JSON under ``--json``).
    """
    parser.add_argument("--ffn", metavar="PRESET",
                        help=f"feed-forward layout: {', '.join(FFN_CHOICES)} "
                             "(default: chosen by the compiler, currently 2d-ws; --explain shows it)")
    parser.add_argument("--attention", metavar="PRESET",
                        help=f"attention layout: {' or '.join(ATTENTION_CHOICES)} (default: batch when "
                             "the program reads a KV cache and B divides over the chips, else heads)")


def _compile_args(parser: argparse.ArgumentParser) -> None:
    preset_flags(parser)
    parser.add_argument("-o", "--output", metavar="OUT",
                        help="write the sharded program to OUT (atomically) and print only the "
                             "collectives table")
    parser.add_argument("--explain", action="store_true",
                        help="first print the preset in the paper's notation and the layout of every "
                             "param and cache")


def cmd_compile(args: argparse.Namespace) -> int:
    """Shard FILE; print the sharded program and its collectives (or write the program to OUT)."""
    g, _ = load_graph(args)  # --mesh is applied here (and refused for an already-sharded FILE)
    if g.is_sharded and (args.ffn or args.attention) and not args.json:
        print("note: the program is already sharded; --ffn/--attention are ignored", file=sys.stderr)
    result = shard_program(g, None, args.ffn, args.attention)
    program = format_graph(result.graph)
    if args.output is not None:
        write_atomically(Path(args.output), program)
    if args.json:
        emit_json(compile_json(result, program, args))
        return 0
    # On standard output the notes are comments, so the whole output is itself a .model file.
    prefix = "" if args.output is not None else "# "
    parts: list[str] = []
    if args.output is not None:
        lines = program.count("\n")
        parts.append(f"wrote the sharded program to {args.output} ({lines} lines)\n\n")
    if args.explain:
        parts.append(_commented(explain_text(result, args), prefix) + "\n")
    if args.output is None:
        parts.append(program + "\n")
    parts.append(_commented(collectives_text(result), prefix))
    sys.stdout.write("".join(parts))
    return 0


def _commented(text: str, prefix: str) -> str:
    return "".join(f"{prefix}{line}".rstrip() + "\n" for line in text.splitlines())


def human_bytes(n: float) -> str:
    """``1008 B``, ``540.0 KiB``, ``1.5 MiB``, ``3.2 GiB``."""
    if n < 1024:
        return f"{n:,.0f} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024 or unit == "TiB":
            break
    return f"{n:,.1f} {unit}"


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
    return [c.value, kind, "".join(c.axes), dim, move, human_bytes(c.bytes_per_chip), c.reason]


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


def explain_text(result: ShardResult, args: argparse.Namespace) -> str:
    """The preset in the paper's notation and where each param and cache lives."""
    g = result.graph
    assert g.mesh is not None
    lines = [f"preset on mesh {g.mesh.spec()} ({g.mesh.num_chips} chips)"]
    if result.strategy is None:
        lines.append("  none: the program was already sharded; its layouts are verified as written")
    else:
        given = {"ffn": args.ffn, "attention": args.attention}
        rows = [(k, v + (" (default)" if k in given and given[k] is None else ""))
                for k, v in result.strategy.describe(set(g.sizes))]
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


def compile_json(result: ShardResult, program: str, args: argparse.Namespace) -> dict[str, object]:
    """``shardc compile --json``: the program, the preset and the collectives (slices left out)."""
    g = result.graph
    assert g.mesh is not None
    obj: dict[str, object] = {
        "program": program,
        "mesh": g.mesh.spec(),
        "ffn": result.strategy.ffn.value if result.strategy else None,
        "attention": result.strategy.attention.value if result.strategy else None,
        "collectives": [c.to_json(g.mesh) for c in _priced(result)],
        "bytes_per_chip_per_run": sum(c.bytes_per_chip * c.count for c in _priced(result)),
    }
    if args.output is not None:
        obj["output"] = args.output
    if args.explain:
        obj["preset"] = dict(result.strategy.describe(set(g.sizes))) if result.strategy else None
        obj["layouts"] = {d.value.name: d.value.layout.format(g.mesh) for d, _ in g.decls()
                          if d.kind in (DeclKind.PARAM, DeclKind.CACHE) and d.value.layout is not None}
    return obj


# --- the registry ---------------------------------------------------------------------------
COMMANDS: tuple[Command, ...] = (
    Command("check", "parse and verify a .model program and summarise it "
                     "(dims, layers, ops, parameters, weights, KV cache)",
            "shardc check examples/palm_540b_decode.model --set B=128 --json", _check_args, cmd_check),
    Command("fmt", "print a .model program in canonical form (or check or rewrite it)",
            "shardc fmt examples/tiny_ffn.model\n  shardc fmt --check my.model || shardc fmt -i my.model",
            _fmt_args, cmd_fmt),
    Command("compile", "shard a .model program: print the sharded program and a table of its "
                       "collectives with the reason for each",
            "shardc compile examples/palm_540b_decode.model --ffn 2d-ws --attention batch --explain\n"
            "  shardc compile examples/tiny_ffn.model --mesh 2x2x2 -o tiny_ffn.sharded.model\n"
            "  shardc compile examples/palm_540b_prefill.model --ffn wg-xyz --json",
            _compile_args, cmd_compile),
)


def common_flags() -> argparse.ArgumentParser:
    """The flags every subcommand takes (an argparse parent parser)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("file", metavar="FILE", help="a .model program; - reads standard input")
    common.add_argument("--set", metavar="DIM=N", action="append", default=[],
                        help="override the size of a dim, e.g. --set B=64 (repeatable)")
    common.add_argument("--mesh", metavar="SPEC",
                        help="device mesh, overriding the file's: 4x4x4, 2x2, 8 or x=4,y=4")
    common.add_argument("--json", action="store_true", help="machine-readable output (errors too)")
    return common


def build_parser() -> argparse.ArgumentParser:
    """The ``shardc`` parser with one subparser per row of :data:`COMMANDS`."""
    examples = "\n".join(f"  {c.example.splitlines()[0]}" for c in COMMANDS)
    parser = argparse.ArgumentParser(
        prog="shardc", description="shardc: a sharding compiler for transformer inference.",
        epilog=f"examples:\n{examples}\n\nRun 'shardc COMMAND --help' for a command's flags.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"shardc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = common_flags()
    for c in COMMANDS:
        p = sub.add_parser(c.name, help=c.help, description=c.help[0].upper() + c.help[1:] + ".",
                           epilog=f"example:\n  {c.example}", parents=[common],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        c.add_args(p)
        p.set_defaults(run=c.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``shardc`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version and usage errors (status 2)
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    if getattr(args, "run", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.run(args)
    except ShardcError as err:
        if args.json:
            emit_json(err.to_json())
        else:
            print(err.render(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 141  # 128 + SIGPIPE, as a shell reports a command killed by a closed pipe


def _silence_stdout() -> None:
    """After a closed pipe, point stdout at /dev/null so the exit-time flush stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main())
