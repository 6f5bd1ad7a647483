"""Hypothesis strategies for ``.model`` programs, meshes and layouts.

Shipped for anyone who property-tests a tool built on shardc (shardc's own tests
use them too).  Every strategy draws *valid* input: programs that parse and
type-check, meshes, and layouts that fit their mesh.

Usage::

    from hypothesis import given
    import shardc
    from shardc.testing import graphs, layouts, meshes, programs

    @given(programs())
    def test_fmt_round_trips(text):
        g = shardc.parse(text)
        assert shardc.parse(shardc.format(g)) == g

    @given(graphs(mesh=meshes(max_axes=2), max_size=16, max_repeats=0))
    def test_small_meshes(g): ...

A program is drawn as a small model first (:class:`ProgramModel`): the dim sizes,
an optional mesh, and a list of :class:`Stmt`, each knowing the value
(:class:`Tensor`: a name and its dims) it defines.  :func:`programs` renders the
model as text with random spacing, comments and blank lines; :func:`program_models`
gives the model itself, for strategies that need to know what a program defines.

Expressions are drawn *goal first*: ``_expr`` is asked for an expression with
exactly the dims ``(B, L, E)`` and picks an op whose result has them (an einsum
whose output is ``BLE``, a ``sum`` over an extra dim, a broadcast with a subset,
...), then asks for its operands' dims the same way.  Leaves are visible values
with those dims, or a fresh ``input``/``param``/``cache`` declared just before
the statement.  That makes every drawn program well typed by construction.
"""
from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

try:
    from hypothesis import strategies as st
except ImportError as err:  # the strategies are Hypothesis strategies: say how to get it
    raise ImportError("shardc.testing needs Hypothesis: pip install 'shardc[test]' (or pip install hypothesis)"
                      ) from err

from shardc.ir.graph import BINARY, DType, Graph, OpKind
from shardc.ir.layout import Layout
from shardc.ir.mesh import DEFAULT_AXIS_NAMES, Mesh
from shardc.ir.ops import (
    OP_DEFS,
    ArgKind,
    OpDef,
    ShapeRule,
    Signature,
    causal_dims,
    einsum_dims,
    last_dims,
    norm_dims,
    over_dims,
    relabel_dims,
    same_dims,
    sum_dims,
)
from shardc.language.lower import RESERVED, parse

__all__ = ["ProgramModel", "Stmt", "Tensor", "graphs", "layouts", "meshes", "program_models", "programs"]

Draw = st.DrawFn

DTYPES = tuple(d.value for d in DType)
# Binding strength of an expression's text, as in the printer: higher binds tighter.
ATOM, UNARY, MUL, ADD = 4, 3, 2, 1
_COMMENT_CHARS = string.ascii_letters + string.digits + " .,:;-+*/=()[]{}@#'\"_"
_NAMES = st.tuples(st.sampled_from(string.ascii_lowercase + "_"),
                   st.text(string.ascii_lowercase + string.digits + "_", max_size=5)).map("".join)
_COMMENTS = st.text(_COMMENT_CHARS, max_size=20)


# --- the model -------------------------------------------------------------------------
@dataclass(frozen=True)
class Tensor:
    """A value a program defines: its name and dims, in order."""

    name: str
    dims: tuple[str, ...]


@dataclass
class Stmt:
    """One statement: its text without pin or trivia, and the value it defines or outputs.

    ``kind`` is decl, assign, output or repeat; a repeat block has
    ``text == "repeat N {"`` and its statements in ``body``.
    """

    kind: str
    text: str
    defines: Tensor | None = None
    pin: Layout | None = None
    body: list["Stmt"] | None = None
    blank: bool = False  # a blank line before it
    comment: str | None = None  # a comment line before it
    trailing: str | None = None  # a comment ending its line
    style: str = "normal"  # spacing: normal, compact or wide


@dataclass
class ProgramModel:
    """A drawn program: header, statements, and how to print them."""

    name: str
    sizes: dict[str, int]
    mesh: Mesh | None
    stmts: list[Stmt]
    dims_lines: int = 1  # the dims may be declared over several lines
    newline: str = "\n"

    def values(self) -> list[Tensor]:
        """Every value visible at the end of the program (repeat-local ones excluded)."""
        out = {s.defines.name: s.defines for s in self.stmts
               if s.kind in ("decl", "assign") and s.defines is not None}
        return list(out.values())

    def text(self) -> str:
        lines = [f"model {self.name}"]
        if self.mesh is not None:
            lines.append(f"mesh {self.mesh}")
        items = [f"{d}={n}" for d, n in self.sizes.items()]
        step = -(-len(items) // self.dims_lines)
        lines += ["dims " + ", ".join(items[i:i + step]) for i in range(0, len(items), step)]
        lines += self._render(self.stmts, "")
        return self.newline.join(lines) + self.newline

    def _render(self, stmts: list[Stmt], indent: str) -> list[str]:
        lines: list[str] = []
        for s in stmts:
            if s.blank:
                lines.append("")
            if s.comment is not None:
                lines.append(f"{indent}# {s.comment}")
            text = s.text if s.pin is None else f"{s.text} @ {s.pin.format(self.mesh)}"
            line = indent + _respace(text, s.style)
            lines.append(line + (f"  # {s.trailing}" if s.trailing is not None else ""))
            if s.body is not None:
                lines += self._render(s.body, indent + "  ")
                lines.append(indent + "}")
        return lines


def _respace(text: str, style: str) -> str:
    """Spacing variants that parse the same (strings and layouts hold no spaces)."""
    if style == "compact":
        for spaced in (" = ", ", ", " + ", " - ", " * ", " / ", " : ", " @ "):
            text = text.replace(spaced, spaced.strip())
        return text
    if style == "wide" and not text.startswith("repeat"):
        return text.replace(" ", "  ")
    return text


# --- meshes and layouts ------------------------------------------------------------------
@st.composite
def meshes(draw: Draw, *, min_axes: int = 1, max_axes: int = 3, min_size: int = 1,
           max_size: int = 4) -> Mesh:
    """A :class:`Mesh` of ``min_axes``..``max_axes`` axes with sizes in ``min_size``..``max_size``.

    Axes are ``x, y, z`` (as ``--mesh 2x2`` gives) or other distinct letters.
    """
    n = draw(st.integers(min_axes, max_axes))
    letters = st.lists(st.sampled_from(string.ascii_lowercase), min_size=n, max_size=n, unique=True)
    names = letters if n > len(DEFAULT_AXIS_NAMES) else st.just(list(DEFAULT_AXIS_NAMES[:n])) | letters
    sizes = draw(st.lists(st.integers(min_size, max_size), min_size=n, max_size=n))
    return Mesh(tuple(zip(draw(names), sizes)))


@st.composite
def layouts(draw: Draw, dims: Sequence[str], sizes: Mapping[str, int], mesh: Mesh, *,
            partial: bool = False) -> Layout:
    """A :class:`Layout` of a tensor with ``dims`` that is valid on ``mesh``.

    Each mesh axis splits at most one dim (in a random major-to-minor order), and
    only where the dim's size stays divisible.  With ``partial=True`` some unused
    axes hold partial sums (as in a sharded program; never in a source pin).
    """
    split: dict[str, list[str]] = {d: [] for d in dims}
    unused: list[str] = []
    for axis in draw(st.permutations(mesh.names)):
        fits = [d for d in dims if sizes[d] % (mesh.group_size(tuple(split[d])) * mesh.size(axis)) == 0]
        dim = draw(st.sampled_from([None, *fits]))
        if dim is None:
            unused.append(axis)
        else:
            split[dim].append(axis)
    held = draw(st.lists(st.sampled_from(unused), unique=True)) if partial and unused else []
    return Layout.of(tuple(dims), {d: tuple(a) for d, a in split.items()}, frozenset(held))


# --- programs ------------------------------------------------------------------------------
@dataclass
class _Builder:
    """The state of one program while it is drawn: scopes, names, where statements go."""

    draw: Draw
    sizes: dict[str, int]
    mesh: Mesh | None
    pins: bool
    trivia: bool
    max_depth: int
    outer: dict[str, Tensor] = field(default_factory=dict)
    inner: dict[str, Tensor] | None = None  # inside a repeat block
    used: set[str] = field(default_factory=set)
    outputs: set[str] = field(default_factory=set)
    stmts: list[Stmt] = field(default_factory=list)  # where statements go now

    def visible(self) -> list[Tensor]:
        return list(self.outer.values()) + list((self.inner or {}).values())

    def fresh_name(self) -> str:
        """A new tensor name, unused so far and not a reserved word."""
        name = self.draw(_NAMES)
        while name in RESERVED or name in self.used:
            name += "_"
        self.used.add(name)
        return name

    def pin(self, dims: tuple[str, ...]) -> Layout | None:
        if not self.pins or self.mesh is None or self.draw(st.integers(0, 3)) != 0:
            return None
        return self.draw(layouts(dims, self.sizes, self.mesh))

    def emit(self, stmt: Stmt) -> None:
        if self.trivia:
            stmt.blank = self.draw(st.integers(0, 4)) == 0
            stmt.comment = self.draw(_COMMENTS) if self.draw(st.integers(0, 5)) == 0 else None
            stmt.trailing = self.draw(_COMMENTS) if self.draw(st.integers(0, 5)) == 0 else None
            stmt.style = self.draw(st.sampled_from(["normal", "normal", "compact", "wide"]))
        defines = stmt.defines
        if stmt.kind in ("decl", "assign") and defines is not None:  # a rebinding stays in the outer scope
            scope = self.inner if self.inner is not None and defines.name not in self.outer else self.outer
            scope[defines.name] = defines
        self.stmts.append(stmt)

    def declare(self, dims: tuple[str, ...]) -> str:
        """A fresh input/param/cache with ``dims``, declared before the current statement."""
        kinds = ["param", "cache"] + (["input"] if self.inner is None else [])
        kind = self.draw(st.sampled_from(kinds))
        dtype = self.draw(st.sampled_from(DTYPES))
        name = self.fresh_name()
        self.emit(Stmt("decl", f"{kind} {name} : {dtype}[{', '.join(dims)}]", Tensor(name, dims), self.pin(dims)))
        return name

    def leaf(self, dims: tuple[str, ...]) -> str:
        """The name of a visible value with exactly ``dims``, or of a new declaration."""
        found = [t.name for t in self.visible() if t.dims == dims]
        if found and self.draw(st.integers(0, 3)) > 0:
            return self.draw(st.sampled_from(found))
        return self.declare(dims)


def _subset(draw: Draw, dims: Sequence[str], min_size: int = 1, max_size: int = 6) -> tuple[str, ...]:
    """Some of ``dims`` (``min_size``..``max_size`` of them), in a random order."""
    if not dims:
        return ()
    return tuple(draw(st.lists(st.sampled_from(list(dims)), min_size=min_size,
                               max_size=min(max_size, len(dims)), unique=True)))


def _number(draw: Draw) -> tuple[str, int]:
    """A nonzero constant in one of the spellings the language allows, and its strength."""
    whole = draw(st.integers(1, 99))
    text = draw(st.sampled_from([
        str(whole), f"{whole}.{draw(st.integers(0, 999))}", f"0.{draw(st.integers(1, 99)):02d}",
        f"{whole}e{draw(st.sampled_from(['', '-', '+']))}{draw(st.integers(0, 6))}",
        f"{whole}.5E-{draw(st.integers(0, 3))}", "0.0625", "1e-6"]))
    return ("-" + text, UNARY) if draw(st.integers(0, 4)) == 0 else (text, ATOM)


def _binary(left: tuple[str, int], op: str, right: tuple[str, int]) -> tuple[str, int]:
    """``left op right`` with the parentheses the grammar needs to keep that tree."""
    prec = ADD if op in "+-" else MUL
    (lt, lp), (rt, rp) = left, right
    lt = f"({lt})" if lp < prec else lt
    rt = f"({rt})" if rp <= prec else rt
    return f"{lt} {op} {rt}", prec


# --- which generator draws which op kind --------------------------------------------------
def _form(opdef: OpDef) -> str | None:
    """The generator that writes calls of ``opdef``: ops with one shape rule are written alike.

    None for collectives (they appear only in sharded programs) and for an op
    no generator knows how to write yet (tests/test_tables.py reports it).
    """
    if opdef.kind.is_collective:
        return None
    if opdef.kind in BINARY:
        return "binary"
    if opdef.shape_rule is same_dims and opdef.signature == Signature((ArgKind.TENSOR,)):
        return "activation" if opdef.spelling.isidentifier() else "neg"
    rules: dict[ShapeRule, str] = {einsum_dims: "einsum", norm_dims: "norm", over_dims: "softmax",
                                   sum_dims: "sum", causal_dims: "causal", relabel_dims: "relabel",
                                   last_dims: "last"}
    return rules.get(opdef.shape_rule)


#: Op kind -> the generator that draws it (every non-collective kind the generators can write).
FUZZED: dict[OpKind, str] = {k: form for k, d in OP_DEFS.items() if (form := _form(d)) is not None}
#: Generator -> the spellings of its op kinds, in table order.
SPELLINGS: dict[str, tuple[str, ...]] = {
    form: tuple(OP_DEFS[k].spelling for k in FUZZED if FUZZED[k] == form) for form in dict.fromkeys(FUZZED.values())
}
ACTIVATIONS = SPELLINGS["activation"]


def _expr(draw: Draw, b: _Builder, dims: tuple[str, ...], depth: int, top: bool = False) -> tuple[str, int]:
    """Text and binding strength of an expression whose result has exactly ``dims``.

    ``top``: the whole right side of an assignment, which must be an op (not a
    bare name or number).
    """
    if depth <= 0 and not top:
        return b.leaf(dims), ATOM
    extra = [d for d in b.sizes if d not in dims]
    relabels = [(i, e) for i, d in enumerate(dims) for e in extra if b.sizes[e] == b.sizes[d]]
    usable = {"leaf": not top, "sum": bool(extra), "causal": len(dims) >= 2, "relabel": bool(relabels),
              "last": bool(_lasts(b, dims, extra))}
    kinds = [k for k in _KINDS if usable.get(k, True) and (k == "leaf" or _FORM_OF.get(k, k) in SPELLINGS)]
    kind = draw(st.sampled_from(kinds))

    def sub(sub_dims: tuple[str, ...]) -> tuple[str, int]:
        return _expr(draw, b, sub_dims, depth - 1)

    if kind == "leaf":
        return b.leaf(dims), ATOM
    spellings = SPELLINGS[_FORM_OF.get(kind, kind)]
    return _WRITERS[kind](_Call(draw, b, dims, extra, relabels, sub, spellings))


@dataclass(frozen=True)
class _Call:
    """What a writer of one op form gets: the goal dims, the dims not in them, how to draw operands."""

    draw: Draw
    b: _Builder
    dims: tuple[str, ...]
    extra: list[str]
    relabels: list[tuple[int, str]]
    sub: Callable[[tuple[str, ...]], tuple[str, int]]
    spellings: tuple[str, ...]  # the op kinds of this form

    def spelling(self) -> str:
        return self.draw(st.sampled_from(self.spellings))


def _write_activation(c: _Call) -> tuple[str, int]:
    return f"{c.spelling()}({c.sub(c.dims)[0]})", ATOM


def _write_neg(c: _Call) -> tuple[str, int]:
    spelling = c.spelling()
    text, prec = c.sub(c.dims)
    return spelling + (f"({text})" if prec <= UNARY else text), UNARY


def _write_binary(c: _Call) -> tuple[str, int]:
    op = c.spelling()
    part = _subset(c.draw, c.dims)
    whole, other = c.sub(c.dims), c.sub(part)
    # The result takes the dims of the operand with more dims, the left one on a tie.
    if len(part) < len(c.dims) and c.draw(st.booleans()):
        return _binary(other, op, whole)
    return _binary(whole, op, other)


def _write_constant(c: _Call) -> tuple[str, int]:
    op, const, operand = c.spelling(), _number(c.draw), c.sub(c.dims)
    return _binary(const, op, operand) if c.draw(st.booleans()) else _binary(operand, op, const)


def _write_einsum1(c: _Call) -> tuple[str, int]:
    letters = tuple(c.draw(st.permutations(c.dims + _subset(c.draw, c.extra, min_size=0, max_size=2))))
    return f'einsum("{"".join(letters)}->{"".join(c.dims)}", {c.sub(letters)[0]})', ATOM


def _write_einsum2(c: _Call) -> tuple[str, int]:
    return _einsum2(c.draw, c.b, c.dims, c.extra, c.sub), ATOM


def _write_norm(c: _Call) -> tuple[str, int]:
    over = c.draw(st.sampled_from(c.dims))
    gain = f", {c.b.leaf((over,))}" if c.draw(st.booleans()) else ""
    operand = c.sub(c.dims)[0]
    return f"{c.spelling()}({operand}{gain}, over={over})", ATOM


def _write_softmax(c: _Call) -> tuple[str, int]:
    over = c.draw(st.sampled_from(c.dims))
    return f"{c.spelling()}({c.sub(c.dims)[0]}, over={over})", ATOM


def _write_sum(c: _Call) -> tuple[str, int]:
    over, at = c.draw(st.sampled_from(c.extra)), c.draw(st.integers(0, len(c.dims)))
    return f"{c.spelling()}({c.sub(c.dims[:at] + (over,) + c.dims[at:])[0]}, over={over})", ATOM


def _write_causal(c: _Call) -> tuple[str, int]:
    query, key = c.draw(st.lists(st.sampled_from(c.dims), min_size=2, max_size=2, unique=True))
    return f"{c.spelling()}({c.sub(c.dims)[0]}, {query}, {key})", ATOM


def _write_relabel(c: _Call) -> tuple[str, int]:
    i, old = c.draw(st.sampled_from(c.relabels))
    return f"{c.spelling()}({c.sub(c.dims[:i] + (old,) + c.dims[i + 1:])[0]}, {old}={c.dims[i]})", ATOM


def _lasts(b: _Builder, dims: tuple[str, ...], extra: list[str]) -> list[tuple[int, str]]:
    """(position, dim) pairs for last(a, OLD=dims[position]): OLD not in dims and at least as large."""
    return [(i, e) for i, d in enumerate(dims) for e in extra if b.sizes[e] >= b.sizes[d]]


def _write_last(c: _Call) -> tuple[str, int]:
    i, old = c.draw(st.sampled_from(_lasts(c.b, c.dims, c.extra)))
    return f"{c.spelling()}({c.sub(c.dims[:i] + (old,) + c.dims[i + 1:])[0]}, {old}={c.dims[i]})", ATOM


# The expression kinds _expr chooses among, in this order (the order fixes what Hypothesis draws),
# and the form of op kinds each writes (when it is not the kind's own name).
_KINDS = ("activation", "neg", "binary", "constant", "einsum1", "einsum2", "norm", "softmax",
          "leaf", "sum", "causal", "relabel", "last")
_FORM_OF = {"constant": "binary", "einsum1": "einsum", "einsum2": "einsum"}
_WRITERS: dict[str, Callable[[_Call], tuple[str, int]]] = {
    "activation": _write_activation, "neg": _write_neg, "binary": _write_binary, "constant": _write_constant,
    "einsum1": _write_einsum1, "einsum2": _write_einsum2, "norm": _write_norm, "softmax": _write_softmax,
    "sum": _write_sum, "causal": _write_causal, "relabel": _write_relabel,
    "last": _write_last,
}


def _einsum2(draw: Draw, b: _Builder, dims: tuple[str, ...], extra: list[str],
             sub: Callable[[tuple[str, ...]], tuple[str, int]]) -> str:
    """A two-operand einsum with output ``dims``: batch, one-sided and contracted dims."""
    where = {d: draw(st.sampled_from([(0,), (1,), (0, 1)])) for d in dims}
    for d in _subset(draw, extra, min_size=0, max_size=2):
        where[d] = draw(st.sampled_from([(0, 1), (0, 1), (0,), (1,)]))  # usually contracted
    operands = [[d for d, sides in where.items() if i in sides] for i in (0, 1)]
    for letters in operands:
        if not letters:  # every operand has a dim: share an output dim
            letters.append(dims[0])
    left, right = (tuple(draw(st.permutations(letters))) for letters in operands)
    spec = f"{''.join(left)},{''.join(right)}->{''.join(dims)}"
    return f'einsum("{spec}", {sub(left)[0]}, {sub(right)[0]})'


def _target_dims(draw: Draw, b: _Builder) -> tuple[str, ...]:
    """Dims for a new assignment: those of a visible value, or a random few."""
    existing = [t.dims for t in b.visible()]
    if existing:
        if draw(st.booleans()):
            return draw(st.sampled_from(existing))
    return _subset(draw, list(b.sizes), max_size=3)


def _assign(draw: Draw, b: _Builder, rebind: Tensor | None = None) -> None:
    """``name = expr`` for a new name, or a rebinding of an outer name (same dims)."""
    dims = rebind.dims if rebind is not None else _target_dims(draw, b)
    depth = draw(st.integers(1, b.max_depth))
    if rebind is not None and draw(st.booleans()):  # a residual, like x = x + f
        text = _binary((rebind.name, ATOM), "+", _expr(draw, b, dims, depth - 1))[0]
    else:
        text = _expr(draw, b, dims, depth, top=True)[0]
    name = rebind.name if rebind is not None else b.fresh_name()
    b.emit(Stmt("assign", f"{name} = {text}", Tensor(name, dims), b.pin(dims)))


def _output(draw: Draw, b: _Builder, candidates: list[Tensor]) -> None:
    """``output a, b`` of values not yet output; a single name may carry a pin."""
    fresh = [t for t in candidates if t.name not in b.outputs]
    if not fresh:
        return
    chosen = draw(st.lists(st.sampled_from(fresh), min_size=1, max_size=3, unique_by=lambda t: t.name))
    b.outputs.update(t.name for t in chosen)
    pin = b.pin(chosen[0].dims) if len(chosen) == 1 else None
    b.emit(Stmt("output", "output " + ", ".join(t.name for t in chosen), chosen[0], pin))


def _repeat(draw: Draw, b: _Builder, max_statements: int) -> None:
    """``repeat N { ... }``: params, caches, assignments, rebindings and per-layer outputs."""
    body: list[Stmt] = []
    block = Stmt("repeat", f"repeat {draw(st.integers(1, 4))} {{", body=body)
    b.emit(block)
    outer_stmts, b.stmts, b.inner = b.stmts, body, {}
    for _ in range(draw(st.integers(1, max_statements))):
        what = draw(st.sampled_from(["assign", "assign", "rebind", "rebind", "declare", "output"]))
        if what == "rebind" and b.outer:
            _assign(draw, b, rebind=draw(st.sampled_from(list(b.outer.values()))))
        elif what == "declare":
            b.declare(_target_dims(draw, b))
        elif what == "output":
            _output(draw, b, b.visible())
        else:
            _assign(draw, b)
    b.stmts, b.inner = outer_stmts, None


def _all_pinned(stmts: list[Stmt]) -> list[Stmt]:
    """The declarations and assignments, when every one is pinned (else [])."""
    flat = [s for top in stmts for s in [top, *(top.body or [])] if s.kind in ("decl", "assign")]
    return flat if flat and all(s.pin is not None for s in flat) else []


_ANY_MESH = st.none() | meshes()


@st.composite
def program_models(draw: Draw, *, mesh: Mesh | st.SearchStrategy | None = _ANY_MESH,
                   min_dims: int = 2, max_dims: int = 6, min_size: int = 1, max_size: int = 8,
                   max_statements: int = 6, max_depth: int = 3, max_repeats: int = 1,
                   pins: bool = True, trivia: bool = True) -> ProgramModel:
    """A :class:`ProgramModel`; see :func:`programs` for the parameters."""
    chosen: Mesh | None = draw(mesh) if isinstance(mesh, st.SearchStrategy) else mesh
    letters = draw(st.lists(st.sampled_from(string.ascii_uppercase), min_size=min_dims,
                            max_size=max_dims, unique=True))
    sizes: dict[str, int] = {}
    for d in letters:  # reusing a size now and then makes relabel possible
        reuse = sizes and draw(st.integers(0, 2)) == 0
        sizes[d] = draw(st.sampled_from(sorted(set(sizes.values())))) if reuse else draw(
            st.integers(min_size, max_size))
    b = _Builder(draw, sizes, chosen, pins, trivia, max_depth)
    name = b.fresh_name()
    repeats = draw(st.integers(0, max_repeats))
    for i in range(repeats + 1):
        for _ in range(draw(st.integers(1 if i == 0 else 0, max_statements))):
            _assign(draw, b)
        if i < repeats:
            _repeat(draw, b, max_statements)
    if draw(st.booleans()):
        _output(draw, b, b.visible())
    # Pinning every declaration and assignment would make this a *sharded* program.
    pinned = _all_pinned(b.stmts)
    if pinned:
        draw(st.sampled_from(pinned)).pin = None
    return ProgramModel(name, sizes, chosen, b.stmts, dims_lines=draw(st.integers(1, 2)),
                        newline=draw(st.sampled_from(["\n"] * 5 + ["\r\n"])) if trivia else "\n")


def programs(**kwargs: object) -> st.SearchStrategy[str]:
    """Random well-typed ``.model`` programs, as text.

    Keyword arguments (all optional):

    * ``mesh`` -- a :class:`Mesh`, a strategy of ``Mesh | None``, or None (no
      ``mesh`` line).  Default: no mesh or one from :func:`meshes`.
    * ``min_dims``/``max_dims`` (2, 6) -- how many dims the program declares;
      ``min_size``/``max_size`` (1, 8) -- their sizes.
    * ``max_statements`` (6) -- assignments per block; ``max_depth`` (3) -- nesting
      of expressions; ``max_repeats`` (1) -- ``repeat`` blocks.
    * ``pins`` (True) -- pin some values ``@ LAYOUT`` (only with a mesh; never all
      of them, so the program stays a source program).
    * ``trivia`` (True) -- random comments, blank lines, spacing and CRLF endings.
    """
    return program_models(**kwargs).map(ProgramModel.text)  # type: ignore[arg-type]


def graphs(**kwargs: object) -> st.SearchStrategy[Graph]:
    """Random programs parsed into :class:`~shardc.ir.graph.Graph` (same arguments as :func:`programs`)."""
    return programs(**kwargs).map(parse)
