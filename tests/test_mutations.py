"""The oracle can fail: broken sharded programs and broken collectives are caught.

An oracle that always says PASSED is worthless, so these tests break things on purpose.

* **Program mutations.**  ``shardc compile`` prints PaLM 8B decode (2D weight-stationary,
  attention by batch, H padded to 64, every other dim shrunk with ``--set`` so 4x4x4 splits
  divide, 2 layers).  Each mutation edits that text and runs ``shardc verify`` on it:

  - every collective statement deleted, its users rewired to its operand (later lines
    that read its result read the operand instead);
  - every ``reduce_scatter`` turned into a ``slice`` with the same ``over``/``dim``;
  - every param or cache annotation with a dim split over several axes gets that dim's
    axis order reversed (``F_yz`` -> ``F_zy``).

  A mutation is *caught* when ``shardc verify`` exits 1 (the emulated chips disagree with
  the reference) or exits 2 with a located error (``file:line:col: error:``) from the
  sharded-IR verifier.

* **Implementation mutations.**  One collective of :mod:`shardc.execute.chips` (or one op of
  :mod:`shardc.execute.local_ops`) is monkeypatched to be wrong; ``verify`` must fail and its
  ``first_mismatch`` must name the first op that uses the broken code.
"""
from __future__ import annotations

import io
import re
from collections import Counter
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import shardc
from shardc.cli.main import main
from shardc.execute import chips, local_ops
from shardc.execute.reference import EPS
from shardc.execute.verification import shrink, verify
from shardc.ir.graph import Op, OpKind
from shardc.sharding.shard import shard_program

ROOT = Path(__file__).resolve().parent.parent
PALM_8B = ROOT / "examples" / "palm_8b_decode.model"
SETS = ("H=64", "S=4", "E=64", "F=64", "D=4", "V=64")  # B=64 stays: attention by batch over 64 chips
LAYERS = 2

COLLECTIVE_RE = re.compile(
    r"^(?P<indent>\s*)(?P<name>[a-z_][a-z0-9_]*)\s*=\s*"
    r"(?P<kind>all_gather|reduce_scatter|all_reduce|all_to_all|slice)\((?P<operand>[a-z_][a-z0-9_]*),")
DECL_RE = re.compile(r"^\s*(param|cache) (?P<name>[a-z_][a-z0-9_]*)\s*:.*@ (?P<layout>\S+)")


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def compiled_text() -> str:
    """``shardc compile examples/palm_8b_decode.model --set H=64 ... --ffn 2d-ws``, 2 layers."""
    argv = ["compile", PALM_8B, "--ffn", "2d-ws", "--attention", "batch"]
    for s in SETS:
        argv += ["--set", s]
    code, out, err = run_cli(*argv)
    assert code == 0, err
    text, n = re.subn(r"^repeat 32 \{", f"repeat {LAYERS} {{", out, flags=re.M)
    assert n == 1
    return text


TEXT = compiled_text()
LINES = TEXT.split("\n")


# --- program mutations -----------------------------------------------------------------------
@dataclass(frozen=True)
class Mutation:
    id: str
    text: str
    line: int  # 1-based line of the edit
    users: tuple[int, ...] = ()  # lines rewired to the deleted collective's operand
    known_bug: str | None = None


def split_code(line: str) -> tuple[str, str, str]:
    """(statement, ' @ layout', '  # comment') of one line of a sharded program."""
    code, hash_, comment = line.partition("#")
    stmt, at, layout = code.partition("@")
    return stmt, (at + layout) if at else "", (hash_ + comment) if hash_ else ""


def rewire(line: str, old: str, new: str) -> str:
    """``line`` with every use of the name ``old`` read as ``new`` (not keyword values like over=x)."""
    stmt, layout, comment = split_code(line)
    lhs, eq, rhs = stmt.partition("=") if not stmt.lstrip().startswith("output") else ("", "", stmt)
    rhs = re.sub(rf"(?<![\w=]){re.escape(old)}(?!\w)", new, rhs)
    return lhs + eq + rhs + layout + comment


def deletions() -> list[Mutation]:
    out = []
    for i, line in enumerate(LINES):
        m = COLLECTIVE_RE.match(line)
        if not m:
            continue
        name, operand = m.group("name"), m.group("operand")
        rest = [rewire(x, name, operand) for x in LINES[i + 1:]]
        # In the mutated text the deleted line is gone: LINES[i + 1 + k] is line i + 1 + k (1-based).
        changed = [k for k, (a, b) in enumerate(zip(LINES[i + 1:], rest)) if a != b]
        users = tuple(i + 1 + k for k in changed)
        assert users, f"{name} has no users"
        out.append(Mutation(f"delete-{m.group('kind')}-{name}", "\n".join(LINES[:i] + rest), i + 1, users))
    return out


def reduce_scatters_to_slices() -> list[Mutation]:
    out = []
    for i, line in enumerate(LINES):
        m = COLLECTIVE_RE.match(line)
        if m and m.group("kind") == "reduce_scatter":
            edited = line.replace("reduce_scatter(", "slice(", 1)
            out.append(Mutation(f"slice-for-reduce_scatter-{m.group('name')}",
                                "\n".join(LINES[:i] + [edited] + LINES[i + 1:]), i + 1))
    return out


def swapped_axes() -> list[Mutation]:
    out = []
    for i, line in enumerate(LINES):
        m = DECL_RE.match(line)
        if not m:
            continue
        layout = m.group("layout")
        for part in re.finditer(r"[A-Z]_([a-z]{2,})", layout):
            axes = part.group(1)
            new = layout[:part.start(1)] + axes[::-1] + layout[part.end(1):]
            edited = line.replace(f"@ {layout}", f"@ {new}", 1)
            out.append(Mutation(f"swap-{m.group('name')}-{layout}-to-{new}",
                                "\n".join(LINES[:i] + [edited] + LINES[i + 1:]), i + 1))
    return out


MUTATIONS = deletions() + reduce_scatters_to_slices() + swapped_axes()
LOCATED = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): error: (?P<message>.+)$")
_RESULTS: dict[str, tuple[int, str, str]] = {}


def verify_text(mutation: Mutation, tmp_dir: Path) -> tuple[int, str, str]:
    """``shardc verify`` of the mutated text (cached: the summary test reuses the results)."""
    if mutation.id not in _RESULTS:
        path = tmp_dir / f"{mutation.id}.model"
        path.write_text(mutation.text, encoding="utf-8")
        _RESULTS[mutation.id] = run_cli("verify", path)
    return _RESULTS[mutation.id]


def mechanism(mutation: Mutation, code: int, out: str, err: str, path: Path) -> str:
    """How a mutation was caught ('emulator' or 'verifier'), or 'missed'; checks the report."""
    if code == 1:
        assert "FAILED:" in out and "differs" in out, out
        return "emulator"
    if code == 2:
        first = err.splitlines()[0]
        m = LOCATED.match(first)
        assert m, f"exit 2 without a located error:\n{err}"
        assert m.group("file") == str(path)
        line = int(m.group("line"))
        assert line >= mutation.line, (mutation.id, err)
        if mutation.users:  # a deletion is reported where its result was used
            assert line in mutation.users, (mutation.id, err)
        # The error shows the offending line (after an indent, if any) and a caret under the column.
        source_line = mutation.text.split("\n")[line - 1].rstrip("\r")
        shown, caret = err.splitlines()[1:3]
        assert shown.endswith(source_line) and not shown[:len(shown) - len(source_line)].strip(), (shown, source_line)
        indent = len(shown) - len(source_line)
        assert caret.index("^") == indent + int(m.group("col")) - 1 and not caret.replace("^", "").strip()
        assert "Traceback" not in err
        return "verifier"
    assert code == 0, (code, out, err)
    return "missed"


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mutations")


def test_the_unmutated_program_verifies(tmp_dir: Path) -> None:
    path = tmp_dir / "original.model"
    path.write_text(TEXT, encoding="utf-8")
    code, out, err = run_cli("verify", path)
    assert code == 0, out + err
    assert "PASSED" in out and "(already sharded)" in out


def test_there_are_mutations_of_every_kind() -> None:
    kinds = Counter(m.id.split("-")[0] for m in MUTATIONS)
    deleted = Counter(m.id.split("-")[1] for m in MUTATIONS if m.id.startswith("delete"))
    assert kinds["delete"] >= 10 and kinds["slice"] >= 5 and kinds["swap"] >= 6, kinds
    assert set(deleted) >= {"all_gather", "reduce_scatter", "all_to_all"}, deleted
    assert len(MUTATIONS) == len({m.id for m in MUTATIONS})


@pytest.mark.parametrize(
    "mutation",
    [pytest.param(m, id=m.id, marks=[pytest.mark.xfail(strict=True, reason=m.known_bug)] if m.known_bug else [])
     for m in MUTATIONS])
def test_program_mutation_is_caught(mutation: Mutation, tmp_dir: Path) -> None:
    code, out, err = verify_text(mutation, tmp_dir)
    how = mechanism(mutation, code, out, err, tmp_dir / f"{mutation.id}.model")
    assert how != "missed", f"{mutation.id}: shardc verify passed the mutated program\n{out}"


def test_program_mutations_summary(tmp_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Count how each mutation was caught; every one is caught except the known bug's."""
    by: Counter[str] = Counter()
    missed = []
    for m in MUTATIONS:
        code, out, err = verify_text(m, tmp_dir)
        how = mechanism(m, code, out, err, tmp_dir / f"{m.id}.model")
        by[how] += 1
        by[f"{m.id.split('-')[0]}:{how}"] += 1
        if how == "missed":
            missed.append(m)
    print(f"\nprogram mutations: {len(MUTATIONS)}; " + ", ".join(f"{k} {v}" for k, v in sorted(by.items())))
    # Every miss is one the known bug explains (an xfail above); nothing else slips through.
    assert all(m.known_bug for m in missed), [m.id for m in missed]
    assert by["verifier"] + by["emulator"] == len(MUTATIONS) - len(missed)
    assert by["verifier"] + by["emulator"] >= 20


def test_an_output_holding_partial_sums_is_rejected_or_fails() -> None:
    """The final reduce_scatter left out: outputs hold complete values (regression: this verified
    as PASSED because assembling an output sums its partial sums)."""
    text = """\
model partial_output
mesh x=2
dims B=2, E=4, F=4
input h : f32[B, E] @ BE_x
param w : f32[E, F] @ E_xF
y = einsum("BE,EF->BF", h, w) @ BF (partialsum-x)
output y
"""
    g = shardc.parse(text)
    try:
        report = verify(g, 0, "f64")
    except shardc.ShardcError:
        return  # rejected by the verifier: fine
    assert not report.passed


# --- implementation mutations ------------------------------------------------------------------
def sharded(path: Path, mesh: str, ffn: str, attention: str) -> shardc.Graph:
    """The sharded, shrunk program, printed and parsed again so every op has its own line."""
    sg = shrink(shard_program(shardc.load(path), mesh, ffn, attention).graph)
    return shardc.parse(shardc.format(sg), f"{path.stem}.sharded.model")


PALM_SHARDED = sharded(PALM_8B, "2x2x2", "2d-ws", "batch")
CAUSAL_TEXT = """\
model causal_split
mesh x=2, y=2
dims B=2, L=4, S=8, D=4
input q : f32[B, L, D] @ BL_xD
input k : f32[B, S, D] @ BS_yD
s = einsum("BLD,BSD->BLS", q, k) @ BL_xS_y
m = causal(s, L, S)
p = softmax(m, over=S)
output p
"""


def first_op(g: shardc.Graph, want) -> Op:
    return next(op for op in g.ops() if want(op))


def reversed_all_gather(orig):
    def mutant(stacked, layout, axes, mesh):
        return orig(np.flip(stacked, axis=tuple(mesh.index(a) for a in axes)), layout, axes, mesh)
    return mutant


def unsummed_reduce_scatter(orig):
    def mutant(stacked, layout, axes, dim, mesh):
        positions = [mesh.index(a) for a in axes]
        piece = stacked[tuple(slice(0, 1) if p in positions else slice(None) for p in range(stacked.ndim))]
        return orig(chips.copy_to(piece, positions, mesh), layout, axes, dim, mesh) / mesh.group_size(axes)
    return mutant


def wrong_block_slice(orig):
    def mutant(stacked, layout, axes, dim, mesh):
        out = orig(stacked, layout, axes, dim, mesh)
        return np.roll(out, 1, axis=tuple(mesh.index(a) for a in axes))
    return mutant


def layernorm_without_statistics(ctx, op, args):
    """Mean and variance of each chip's own block only: the all-reduce over the split dim dropped."""
    a = args[0]
    axis, _, _ = local_ops._over(ctx, op)
    mean = a.mean(axis=axis, keepdims=True)
    centered = a - mean
    var = (centered * centered).mean(axis=axis, keepdims=True)
    return local_ops._gain(ctx, op, args, centered / np.sqrt(var + EPS), axis)


def zero_offsets(orig):
    def mutant(layout, dim, local_size, mesh):
        return np.zeros_like(orig(layout, dim, local_size, mesh))
    return mutant


def split_over(op: Op) -> bool:
    return bool(op.inputs[0].layout.axes_of(op.attrs.dim))


IMPLEMENTATION_MUTATIONS = {
    # name: (program, patch(monkeypatch), the first op that runs the broken code)
    "all_gather-reversed-blocks": (
        PALM_SHARDED, lambda mp: mp.setattr(chips, "all_gather", reversed_all_gather(chips.all_gather)),
        lambda op: op.kind in (OpKind.ALL_GATHER, OpKind.ALL_TO_ALL)),
    "reduce_scatter-without-sum": (
        PALM_SHARDED, lambda mp: mp.setattr(chips, "reduce_scatter", unsummed_reduce_scatter(chips.reduce_scatter)),
        lambda op: op.kind is OpKind.REDUCE_SCATTER),
    "slice-wrong-block": (
        PALM_SHARDED, lambda mp: mp.setattr(chips, "slice_blocks", wrong_block_slice(chips.slice_blocks)),
        lambda op: op.kind in (OpKind.ALL_TO_ALL, OpKind.SLICE)),
    "layernorm-without-statistics-all-reduce": (
        PALM_SHARDED,
        lambda mp: mp.setitem(local_ops.LOCAL_IMPLS, OpKind.LAYERNORM, layernorm_without_statistics),
        lambda op: op.kind is OpKind.LAYERNORM and split_over(op)),
    "causal-wrong-offset": (
        shardc.parse(CAUSAL_TEXT, "causal_split.model"),
        lambda mp: mp.setattr(chips, "block_offsets", zero_offsets(chips.block_offsets)),
        lambda op: op.kind is OpKind.CAUSAL),
}


@pytest.mark.parametrize("name", sorted(IMPLEMENTATION_MUTATIONS))
def test_implementation_mutation_is_caught_where_it_starts(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    program, patch, where = IMPLEMENTATION_MUTATIONS[name]
    sg = program if program.is_sharded else shard_program(program).graph
    assert verify(sg, 0, "f64", LAYERS).passed  # unpatched: the oracle agrees
    expected = first_op(sg, where)
    patch(monkeypatch)
    report = verify(sg, 0, "f64", LAYERS)
    assert not report.passed
    m = report.first_mismatch
    assert m is not None
    assert (m.op, m.line, m.value, m.layer) == (expected.kind.value, expected.loc.line, expected.result.name, 0), m
    assert m.rel_error > report.tolerance
    assert f"on line {expected.loc.line}" in m.message
    line = sg.source.line_text(m.line) if sg.source else ""
    assert line.lstrip().startswith(f"{expected.result.name} ") and expected.kind.value + "(" in line, line


def test_the_implementation_mutations_hit_different_ops() -> None:
    """Each mutation is located at a different statement (the test above is not trivially satisfied)."""
    lines = set()
    for program, _, where in IMPLEMENTATION_MUTATIONS.values():
        sg = program if program.is_sharded else shard_program(program).graph
        lines.add((sg.name, first_op(sg, where).loc.line))
    assert len(lines) == len(IMPLEMENTATION_MUTATIONS)
