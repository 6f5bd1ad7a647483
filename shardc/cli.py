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
from .ir import Graph
from .mesh import Mesh
from .printer import format_graph
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
    """Replace ``path``'s contents with ``text`` so a crash never leaves half a file."""
    path = path.resolve()  # write through a symlink rather than replacing it
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        try:
            os.chmod(tmp, path.stat().st_mode & 0o7777)
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


# --- the registry ---------------------------------------------------------------------------
COMMANDS: tuple[Command, ...] = (
    Command("check", "parse and verify a .model program and summarise it "
                     "(dims, layers, ops, parameters, weights, KV cache)",
            "shardc check examples/palm_540b_decode.model --set B=128 --json", _check_args, cmd_check),
    Command("fmt", "print a .model program in canonical form (or check or rewrite it)",
            "shardc fmt examples/tiny_ffn.model\n  shardc fmt --check my.model || shardc fmt -i my.model",
            _fmt_args, cmd_fmt),
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
