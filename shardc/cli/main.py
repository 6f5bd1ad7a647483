"""The ``shardc`` command line: one small function per subcommand, registered in :data:`COMMANDS`.

Every subcommand takes a FILE (``-`` reads standard input) and the common
flags ``--set DIM=N`` (repeatable), ``--mesh SPEC`` and ``--json``.  Exit
status: 0 success, 1 a check failed (``fmt --check`` found a file that is not
canonical, ``verify`` found a mismatch), 2 bad input (a :class:`~shardc.errors.ShardcError` or a usage
error), 130 interrupted.  User errors print one message -- ``file:line:col:
error: ...`` with the source line and a caret, or under ``--json`` one
``{"error": {...}}`` object on standard output -- and never a traceback.

To add a subcommand, write ``_NAME_args(parser)`` (its own flags) and
``cmd_NAME(args) -> int``, and add one :class:`Command` row to :data:`COMMANDS`.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
import traceback
from pathlib import Path
from typing import NoReturn, Sequence

from shardc.cli.common import STDIN, Command, emit_json, load_graph, write_atomically
from shardc.cli.compile import _compile_args, cmd_compile
from shardc.cli.cost import _cost_args, cmd_cost
from shardc.cli.export import _export_args, cmd_export
from shardc.cli.plan import _plan_args, cmd_plan
from shardc.cli.sweep import _sweep_args, cmd_sweep
from shardc.cli.verify import _verify_args, cmd_verify
from shardc.errors import ShardcError, render_diagnostic
from shardc.ir.dataflow import unused
from shardc.ir.graph import Decl, Op
from shardc.ir.summary import summarize
from shardc.language.printer import format_graph
from shardc.sharding.sharded import verify_sharded


# --- shardc check ---------------------------------------------------------------------------
def _check_args(parser: argparse.ArgumentParser) -> None:
    """``check`` has only the common flags."""


def cmd_check(args: argparse.Namespace) -> int:
    """Parse and verify FILE; print its summary (text, or one JSON object)."""
    g = load_graph(args)[0]
    if g.is_sharded:  # a sharded file is checked as compile, verify and cost check it
        verify_sharded(g)
    summary = summarize(g)
    warnings = [_unused_warning(stmt) for stmt in unused(g)]
    if args.json:
        emit_json({**summary.to_json(), "warnings": [
            {"file": g.source.filename if g.source else None, "line": stmt.loc.line or None,
             "col": stmt.loc.col or None, "message": message} for stmt, message in warnings]})
    else:
        for stmt, message in warnings:
            print(render_diagnostic("warning", message, g.source, stmt.loc), file=sys.stderr)
        sys.stdout.write(summary.to_text())
    return 0


def _unused_warning(stmt: Decl | Op) -> tuple[Decl | Op, str]:
    if isinstance(stmt, Decl):
        return stmt, f"{stmt.kind} '{stmt.value.name}' is declared but no output depends on it"
    return stmt, f"'{stmt.result.name}' is computed but no output depends on it"


# --- shardc fmt -----------------------------------------------------------------------------
def _fmt_args(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true",
                      help="print nothing if FILE is canonical; else name it and exit 1")
    mode.add_argument("-i", "--in-place", action="store_true", help="rewrite FILE in canonical form")


def cmd_fmt(args: argparse.Namespace) -> int:
    """Print FILE in canonical form, check that it is canonical, or rewrite it."""
    if args.set or args.mesh:
        # fmt prints the program as written; -i with --set would silently rewrite the file's dims.
        flag = "--set" if args.set else "--mesh"
        raise ShardcError(f"fmt prints a program as written: {flag} does not apply to it",
                          hint="fmt the file as it is; --set and --mesh belong to check, compile, verify and cost")
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
    Command("compile", "shard a .model program: print the sharded program and a table of its "
                       "collectives with the reason for each",
            "shardc compile examples/palm_540b_decode.model --ffn 2d-ws --attention batch --explain\n"
            "  shardc compile examples/tiny_ffn.model --mesh 2x2x2 -o tiny_ffn.sharded.model\n"
            "  shardc compile examples/palm_540b_prefill.model --ffn wg-xyz --json",
            _compile_args, cmd_compile),
    Command("verify", "emulate the sharded program on chips and check it computes what the unsharded "
                      "program computes (exit 1 on a mismatch)",
            "shardc verify examples/palm_540b_decode.model --shrink\n"
            "  shardc verify examples/tiny_layer.model --mesh 2x2 --ffn 1d-ws --dtype f64 --json\n"
            "  shardc compile examples/tiny_ffn.model -o t.model && shardc verify t.model",
            _verify_args, cmd_verify),
    Command("cost", "estimate what one run of the sharded program costs: latency (calibrated and roofline "
                    "bound), MFU, memory per chip, a breakdown and what bounds it",
            "shardc cost examples/palm_540b_decode.model --set H=64 --weights int8 --comm torus\n"
            "  shardc cost examples/palm_540b_prefill.model --set B=512 --ffn wg-xyz --attention batch --json\n"
            "  shardc cost examples/palm_540b_decode.model --set B=128 --max-context --kv-budget 30\n"
            "  shardc cost examples/tiny_layer.model --mesh 2x2x2 --chip h100-nvlink --overlap\n"
            "  shardc cost my.model --chip-file my_chip.toml",
            _cost_args, cmd_cost),
    Command("plan", "choose the partitioning for N chips: try every mesh, role assignment and preset (and, "
                    "if asked, weight dtype, padding and batch), rank them, and say why the best wins; with a "
                    "prefill and a decode file, plan a whole request",
            "shardc plan examples/palm_540b_decode.model --chips 64\n"
            "  shardc plan examples/palm_8b_prefill.model --chips 16 --batch 1,512 --objective cost\n"
            "  shardc plan examples/palm_8b_decode.model --chips 16 --weights any --pad any --max-latency 15ms\n"
            "  shardc plan examples/tiny_layer.model --mesh 2x2x2 --json\n"
            "  shardc plan examples/palm_8b_prefill.model examples/palm_8b_decode.model --prompt 2048 --generate 64 "
            "--chips 8",
            _plan_args, cmd_plan),
    Command("sweep", "run the planner over chip counts, batches and weight dtypes and tabulate (or plot, "
                     "--plot) the best layout at each point: the paper's Figure 1; --plot-layouts: Figure 3",
            "shardc sweep examples/tiny_ffn.model --chips 2,4 --batch 1,2 --weights bf16,int8 --jobs 1\n"
            "  shardc sweep examples/tiny_ffn.model examples/tiny_layer.model --chips 4 --batch 2 --json\n"
            "  shardc sweep examples/tiny_ffn.model --chips 2,4 --batch 1,2 --csv sweep.csv",
            _sweep_args, cmd_sweep),
    Command("export", "write the sharded program as a standalone JAX program (shard_map, the plan's "
                      "mesh, layouts and collectives; python OUT --check compares it with shardc's reference)",
            "shardc export examples/tiny_layer.model --mesh 2x2x2 --to jax -o tiny_layer_jax.py\n"
            "  shardc export examples/tiny_ffn.model --mesh 2x4 --ffn 1d-ws --to jax\n"
            "  shardc export examples/palm_540b_prefill.model --to jax --shrink -o palm.py",
            _export_args, cmd_export),
)


class UsageError(Exception):
    """A command line argparse cannot read; ``usage`` is the usage line of the (sub)command."""

    def __init__(self, message: str, usage: str) -> None:
        super().__init__(message)
        self.message, self.usage = message, usage


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are raised, so ``--json`` can report them as JSON."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self.format_usage())


def common_flags() -> "_Parser":
    """The flags every subcommand takes (an argparse parent parser)."""
    common = _Parser(add_help=False)
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
    parser = _Parser(
        prog="shardc", description="shardc: a sharding compiler for transformer inference.",
        epilog=f"examples:\n{examples}\n\nRun 'shardc COMMAND --help' for a command's flags.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"shardc {importlib.metadata.version('shardc')}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
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
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # reported by the subcommand's parser, so the usage shown is the command's
            sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
            command = sub.choices.get(getattr(args, "command", None) or "", parser)
            command.error(f"unrecognized arguments: {' '.join(extra)}")
    except UsageError as err:  # one message; JSON when --json was asked for, whatever else is wrong
        if "--json" in argv:
            emit_json({"error": {"file": None, "line": None, "col": None, "message": err.message}})
        else:
            print(f"{err.usage}shardc: error: {err.message}", file=sys.stderr)
        return 2
    except SystemExit as exit_:  # --help and --version
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    if getattr(args, "run", None) is None:
        parser.print_help(sys.stderr)
        return 2
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    """Run the subcommand: a user's error is one message, a bug in shardc says so; never a bare traceback."""
    try:
        return args.run(args)
    except ShardcError as err:
        return _report(err, args.json)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 141  # 128 + SIGPIPE, as a shell reports a command killed by a closed pipe
    except (MemoryError, RecursionError) as err:  # the machine's limits, not a bug in the input's handling
        what = "out of memory" if isinstance(err, MemoryError) else "the program is nested too deeply"
        return _report(ShardcError(f"{what} (lower --max-memory or simplify the program)"), args.json)
    except Exception as err:  # a bug in shardc: say so, and how to report it
        return _internal_error(err, args.json)


def _report(err: ShardcError, as_json: bool) -> int:
    if as_json:
        emit_json(err.to_json())
    else:
        print(err.render(), file=sys.stderr)
    return 2


def _internal_error(err: Exception, as_json: bool) -> int:
    """An unexpected exception: under --json an error object, else the traceback with a note; exit 2."""
    # The executors note which statement was running ("while emulating 'h' = gelu (line 12)").
    notes = "".join(f" ({n.removeprefix('shardc: ')})" for n in getattr(err, "__notes__", ())
                    if isinstance(n, str) and n.startswith("shardc: "))
    message = (f"internal error: {type(err).__name__}: {err}{notes}. This is a bug in shardc; please report it "
               "with the command line and input that caused it")
    if as_json:
        emit_json({"error": {"file": None, "line": None, "col": None, "message": message, "internal": True}})
    else:
        traceback.print_exc(file=sys.stderr)
        print(f"shardc: {message}", file=sys.stderr)
    return 2


def _silence_stdout() -> None:
    """After a closed pipe, point stdout at /dev/null so the exit-time flush stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main())
