"""Helpers shared by the ``shardc`` subcommands: reading FILE, common flags, output.

Each subcommand module (:mod:`shardc.cli.main`, :mod:`shardc.cli.compile`,
:mod:`shardc.cli.verify`, :mod:`shardc.cli.cost`) defines ``_NAME_args(parser)`` and ``cmd_NAME(args)``;
:mod:`shardc.cli` registers them in one table.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import re
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, TextIO

from shardc.errors import NOLOC, ShardcError, render_diagnostic
from shardc.hardware.profile import ChipProfile, builtin_profiles, load_profile, profile_from_dict, read_toml
from shardc.ir.graph import Graph
from shardc.ir.mesh import Mesh
from shardc.language.lower import parse, read_text
from shardc.planner.choose import Plan
from shardc.planner.choose import plan as choose
from shardc.sharding.presets import ATTENTION_CHOICES, FFN_CHOICES, default_attention
from shardc.sharding.replication import Replicated, replication_warning
from shardc.sharding.search import Method
from shardc.sharding.shard import resolve_mesh, shard_program
from shardc.sharding.sharded import ShardResult
from shardc.units import human_bytes, human_flops, whole_number

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
        size = whole_number(m.group(2))
        if size is None:
            raise ShardcError(f"--set {m.group(1)}=N: N is too large (at most 10^18)")
        if size < 1:
            raise ShardcError(f"--set {item}: a dim size is a whole number of at least 1")
        sizes[m.group(1)] = size  # the last --set of a dim wins
    return sizes


def read_source(file: str) -> tuple[str, str]:
    """The text of FILE (standard input for ``-``) and the name to report it under."""
    if file == STDIN:
        return _read_stdin(), "<stdin>"
    return read_text(file), str(Path(file))


def _read_stdin() -> str:
    """Standard input as FILE reads: UTF-8 bytes as they are (no newline translation, a BOM dropped)."""
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:  # a text stream put in place of stdin (tests)
        return sys.stdin.read()
    data = buffer.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ShardcError(f"<stdin> is not UTF-8 text ({err.reason} at byte {err.start})") from None


def load_graph(args: argparse.Namespace, file: str | None = None) -> tuple[Graph, str]:
    """FILE (or ``file``, another positional) parsed and verified with the common flags applied, and its text."""
    sizes = parse_sets(args.set)
    mesh = Mesh.parse(args.mesh) if args.mesh is not None else None
    text, name = read_source(args.file if file is None else file)
    return parse(text, name, sizes=sizes, mesh=mesh), text


def emit_json(obj: object) -> None:
    """Print one JSON object on standard output: strict JSON, a non-finite number written as null."""
    print(json.dumps(finite_json(obj), indent=2, allow_nan=False))


def finite_json(obj: object) -> object:
    """``obj`` with every NaN or infinity replaced by None (JSON has no such numbers)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


_WHOLE_RE = re.compile(r"[+-]?[0-9]+")
_REAL_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:nan|inf|infinity)", re.I)


def whole_flag(text: str) -> int:
    """argparse type of a whole-number flag: ASCII digits only (``int()`` alone reads '٤' as 4, '1_000' as 1000)."""
    if not _WHOLE_RE.fullmatch(text.strip()):
        raise argparse.ArgumentTypeError(f"expected a whole number such as 4, got {text[:40]!r}")
    try:
        return int(text)
    except ValueError:  # more digits than Python converts
        raise argparse.ArgumentTypeError(f"the number is too long ({len(text)} characters)") from None


def real_flag(text: str) -> float:
    """argparse type of a number flag: ASCII digits only; nan and inf are left to the flag's own check."""
    if not _REAL_RE.fullmatch(text.strip()):
        raise argparse.ArgumentTypeError(f"expected a number such as 1e-4, got {text[:40]!r}")
    return float(text)


def write_atomically(path: Path, text: str) -> None:
    """Replace (or create) ``path`` with ``text`` so that a crash never leaves half a file.

    Only a regular file (or a new path) is replaced atomically: the text goes to a temporary file in
    the same folder, which is renamed over the target; the temporary is removed on every way out
    (an error, Ctrl-C).  A replaced file keeps its permissions and, where the process may set it, its
    owner; a new one gets the usual ``0o666 & ~umask``.  A symlink is written through, not replaced.
    The file behind the process's own standard output or error (``-o /dev/stdout``, whatever it is
    redirected to) is written through that stream, so that what the process prints next follows the
    text instead of overwriting it.  A device, FIFO or socket (``-o /dev/null``) is written into, never
    renamed over, and so is a name for another open file of the process (``/dev/fd/N``): it is
    appended to, as the process's stream would be.  A read-only file is an error, even for root.
    """
    try:
        st: os.stat_result | None = os.stat(path)  # follows symlinks: what the name points at
    except FileNotFoundError:
        st = None
    except OSError as err:
        raise ShardcError(f"cannot write {path}: {err.strerror}") from None
    stream = _own_stream(st) if st is not None else None
    if stream is not None:  # -o /dev/stdout > file: through the stream, or what it prints next would overwrite it
        stream.write(text)
        stream.flush()
        return
    if st is not None and not stat.S_ISREG(st.st_mode):
        _write_into(path, st, text)
        return
    if st is not None and _names_a_stream(path):
        _write_into(path, st, text, append=True)  # what the stream's file holds stays (a shell's >>)
        return
    target = path.resolve()  # write through a symlink rather than replacing it
    if not target.parent.is_dir():
        raise ShardcError(f"cannot write {path}: no such directory {target.parent}")
    if st is not None and not st.st_mode & 0o222:
        raise ShardcError(f"cannot write {path}: it is read-only",
                          hint="make it writable (chmod u+w) or write elsewhere with -o")
    _replace(target, st, text)


def _replace(target: Path, st: os.stat_result | None, text: str) -> None:
    """Write ``text`` to a temporary beside ``target`` and rename it over ``target``."""
    if st is not None:
        mode = st.st_mode & 0o7777
    else:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    except OSError as err:
        raise ShardcError(f"cannot write {target}: {err.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, mode)
        if st is not None and (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
            with contextlib.suppress(OSError):  # only root may give a file away
                os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, target)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise ShardcError(f"cannot write {target}: {err.strerror}") from None
        raise


def _own_stream(st: os.stat_result) -> TextIO | None:
    """``sys.stdout`` or ``sys.stderr`` if ``st`` is the file behind it, else None."""
    for stream in (sys.stdout, sys.stderr):
        try:
            own = os.fstat(stream.fileno())
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            continue  # not backed by a file (a test's capture, a closed stream)
        if (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino):
            return stream
    return None


# Where a process's open files have names: /dev/stdout links to /proc/self/fd/1.
_STREAM_DIRS = ("/proc/", "/dev/fd/")


def _names_a_stream(path: Path) -> bool:
    """Whether ``path`` is, or links through symlinks to, a name of one of a process's open files.

    It resolves to the file behind the stream (``shardc ... -o /dev/stdout >> log.txt`` resolves to
    log.txt); renaming over that would replace the file, and what it held, instead of writing to it.
    """
    p = Path(os.path.abspath(path))
    for _ in range(40):  # the kernel's own limit on a chain of symlinks
        if str(p).startswith(_STREAM_DIRS):
            return True
        if not p.is_symlink():
            return False
        p = Path(os.path.abspath(p.parent / os.readlink(p)))
    return False


def _write_into(path: Path, st: os.stat_result, text: str, append: bool = False) -> None:
    """Write into a device, FIFO or socket (``-o /dev/null``, ``-o /dev/stdout``), or append to a
    process's open file by its name.

    Renaming a temporary file over it would replace the node itself, so it is opened and written.
    """
    if stat.S_ISDIR(st.st_mode):
        raise ShardcError(f"cannot write {path}: it is a directory")
    try:
        with open(path, "a" if append else "w", encoding="utf-8", newline="") as f:
            f.write(text)
    except OSError as err:
        raise ShardcError(f"cannot write {path}: {err.strerror}") from None


def table(rows: list[list[str]], right: set[int], indent: str = "  ") -> list[str]:
    """``rows`` in aligned columns (the columns in ``right`` right-aligned), each line indented."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.rjust(w) if i in right else c.ljust(w)
                               for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in rows]


# --- redundant compute (shardc compile and shardc cost) -------------------------------------
def replication_text(records: Sequence[Replicated], factor: float, mesh: Mesh) -> str:
    """The einsums whose work is repeated on several chips as a table, under the whole run's ``factor``;
    '' when every einsum splits (``records``: :func:`shardc.sharding.replication.replication`)."""
    if not records:
        return ""
    head = (f"redundant compute on mesh {mesh.spec()} ({mesh.num_chips} chips): the run's matmul FLOPs per chip "
            f"are {factor:.3g}x a perfect split")
    rows = [["value", "einsum", "line", "replicated", "FLOPs/chip", "ideal"]]
    rows += [[r.value, r.spec, str(r.line or "-"), f"{r.factor:.3g}x", human_flops(r.flops_per_chip),
              human_flops(r.ideal_flops_per_chip)] for r in records]
    note = "  (FLOPs per chip of one execution; in a repeat, of one layer)"
    return "\n".join([head, *table(rows, {2, 3, 4, 5}), note]) + "\n"


def warnings_json(result: ShardResult) -> list[dict[str, object]]:
    """``"warnings"`` of ``compile --json`` and ``cost --json``: the run-replicated warning, if any, in the
    form ``shardc check --json`` gives its warnings (no location here) plus its hint."""
    warning = replication_warning(result.graph, result.strategy)
    if warning is None:
        return []
    g = result.graph
    return [{"file": g.source.filename if g.source else None, "line": None, "col": None,
             "message": warning.message, "hint": warning.hint}]


def print_warnings(result: ShardResult) -> None:
    """On standard error, the warning of :func:`replication_warning` if the run is (nearly) replicated."""
    warning = replication_warning(result.graph, result.strategy)
    if warning is not None:
        print(render_diagnostic("warning", warning.message, result.graph.source, NOLOC, warning.hint),
              file=sys.stderr)


def preset_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that decide the plan: ``--ffn``, ``--attention``, ``--search`` and the chip it is
    planned for (``--chip``/``--chip-file``, ``--comm``).

    Left None so :func:`shard_program` applies its defaults.  Not argparse ``choices``: an
    unknown preset is a :class:`ShardcError` from the presets module (one message listing the
    valid ones, JSON under ``--json``).
    """
    parser.add_argument("--ffn", metavar="PRESET",
                        help=f"feed-forward layout: {', '.join(FFN_CHOICES)}, none (layouts from the "
                             "program's pins alone), or auto (the planner's choice on this mesh; compile "
                             "--explain shows its ranking); default 2d-ws")
    parser.add_argument("--attention", metavar="PRESET",
                        help=f"attention layout: {' or '.join(ATTENTION_CHOICES)}, or auto (the planner's "
                             "choice); default: batch when the program reads a KV cache and B divides over "
                             "the chips, else heads")
    parser.add_argument("--search", metavar="METHOD", default=None,
                        help="how the layouts within the preset are chosen: search (default: the plan of least "
                             "estimated time on --chip, exact over the candidate layouts of each op) or greedy "
                             "(op by op, the candidate moving the fewest bytes)")
    chip_flags(parser)


def chip_flags(parser: argparse.ArgumentParser) -> None:
    """``--chip``/``--chip-file`` and ``--comm``: the chip a plan is made and costed for."""
    chip = parser.add_mutually_exclusive_group()
    chip.add_argument("--chip", metavar="NAME",
                      help=f"built-in chip profile: {', '.join(builtin_profiles())} (default tpu-v4)")
    chip.add_argument("--chip-file", metavar="FILE.toml", help="a chip profile of your own (TOML, like "
                                                                "shardc/profiles/tpu-v4.toml)")
    parser.add_argument("--comm", default=None, metavar="MODE",
                        help="collective model: paper (every collective at all links' bandwidth, the paper's "
                             "formulas) or torus (only the links of the axes it spans); default: the model the "
                             "chip's terms were fitted in (tpu-v4: torus). In any other model the calibrated "
                             "estimate is not computed and the report gives the bound alone")


def chip_profile(args: argparse.Namespace) -> ChipProfile:
    """The profile of ``--chip`` or ``--chip-file`` (default tpu-v4), with clear errors."""
    if args.chip_file is None:
        if args.chip is not None and args.chip.endswith(".toml"):
            raise ShardcError(f"--chip {args.chip}: --chip takes a built-in name "
                              f"({', '.join(builtin_profiles())}); pass a TOML file with --chip-file")
        return load_profile(args.chip)
    path = Path(args.chip_file)
    data = read_toml(path, f"--chip-file {path}: no such file", f"--chip-file {path}: ")
    return profile_from_dict(data, str(path))


AUTO = "auto"


def shard_as_asked(g: Graph, args: argparse.Namespace,
                   profile: ChipProfile | None = None) -> tuple[ShardResult, Plan | None]:
    """Shard ``g`` as the command line says (the preset flags above; ``--explain`` adds the
    alternative each choice of the search beat).  ``--ffn auto`` / ``--attention auto`` let the
    planner choose that preset on the program's mesh; its ranking is returned beside the result
    (None when nothing was chosen)."""
    profile = profile or chip_profile(args)
    ffn, attention, ranking = args.ffn, args.attention, None
    if AUTO in (ffn, attention) and not g.is_sharded:
        mesh = resolve_mesh(g, None)
        ranking = choose(g, mesh=mesh, chip=profile, comm=args.comm,
                         ffn="any" if ffn == AUTO else (ffn or "2d-ws"),
                         attention="any" if attention == AUTO else (attention or default_attention(g, mesh).value))
        ffn, attention = ranking.best.candidate.ffn.value, ranking.best.candidate.attention.value
    result = shard_program(g, None, ffn, attention, method=args.search or Method.SEARCH.value, chip=profile,
                           comm=args.comm, explain=bool(getattr(args, "explain", False)))
    return result, ranking


__all__ = ["STDIN", "Command", "chip_profile", "emit_json", "human_bytes", "human_flops", "load_graph",
           "parse_sets", "preset_flags", "print_warnings", "read_source", "replication_text", "shard_as_asked",
           "table", "warnings_json", "write_atomically"]
