"""The printer: IR (sharded or not) -> canonical ``.model`` text.

``parse(format(g)) == g`` for every graph the frontend or a pass produces, so
printed IR is the test and debugging interface.  The canonical form:

* header ``model``, ``mesh``, one ``dims`` line; comments and (single) blank
  lines of the source are kept (:mod:`shardc.language.trivia`);
* anonymous single-use temporaries without a layout are inlined back into
  the expression that uses them, with the fewest parentheses that keep the
  tree (``a - (b - c)``);
* in runs of consecutive declarations or assignments the names are padded
  to one width, and ``@ LAYOUT`` pins and end-of-line comments line up;
* numbers print as integers when whole (``2``), else as Python's shortest
  round-trip form (``0.0625``, ``1e-06``);
* a body is indented by two spaces; one blank line goes before the first
  statement, around each ``repeat`` block, and wherever the source had one.
"""
from __future__ import annotations

from dataclasses import dataclass

from shardc.ir.graph import (
    Const,
    Decl,
    Graph,
    Op,
    Operand,
    OpKind,
    Output,
    Repeat,
    Stmt,
    Trivia,
    Value,
)
from shardc.ir.layout import Layout
from shardc.ir.mesh import Mesh
from shardc.ir.ops import OP_DEFS, spell_call

# Binding strength: higher binds tighter.
_PREC_ATOM = 4
_PREC_UNARY = 3
_PREC = {OpKind.ADD: 1, OpKind.SUB: 1, OpKind.MUL: 2, OpKind.DIV: 2}
INDENT = "  "


def format_number(value: float) -> str:
    """Canonical spelling of a constant: ``2``, ``0.0625``, ``1e-06``, ``-0.5``."""
    if value < 0:
        return "-" + format_number(-value)
    if value == int(value) and value < 1e16:
        return str(int(value))
    return repr(float(value))


@dataclass
class _Row:
    """One printed statement before alignment: ``lhs`` is padded, ``pin`` aligned."""

    head: str  # 'param' / 'input' / 'cache' for declarations, '' for assignments
    name: str
    rest: str  # ': bf16[E]' or '= expr'
    pin: str | None
    trivia: Trivia
    blank: bool


class _Printer:
    def __init__(self, g: Graph) -> None:
        self.g = g
        self.mesh: Mesh | None = g.mesh
        self.uses: dict[int, int] = g.use_counts()
        self.defs: dict[int, Op] = {op.result.id: op for op in g.ops()}
        self.names: dict[int, str] = {}
        self.inline: set[int] = set()
        self._choose_names()

    # -- analysis -----------------------------------------------------------------
    def _choose_names(self) -> None:
        """Inline anonymous single-use values; give the other anonymous values fresh names."""
        taken = self.g.names()
        counter = 0
        for op in self.g.ops():
            v = op.result
            if v.name is not None:
                continue
            if v.layout is None and self.uses.get(v.id, 0) == 1:
                self.inline.add(v.id)
                continue
            while f"t{counter}" in taken:
                counter += 1
            self.names[v.id] = f"t{counter}"
            taken.add(f"t{counter}")

    def name(self, v: Value) -> str:
        return v.name if v.name is not None else self.names[v.id]

    # -- expressions ----------------------------------------------------------------
    def operand(self, o: Operand) -> tuple[str, int]:
        """Text and binding strength of an operand."""
        if isinstance(o, Const):
            return format_number(o.value), (_PREC_UNARY if o.value < 0 else _PREC_ATOM)
        if o.id in self.inline:
            return self.expr(self.defs[o.id])
        return self.name(o), _PREC_ATOM

    def expr(self, op: Op) -> tuple[str, int]:
        """Text and binding strength of the expression computing ``op``."""
        if op.kind in _PREC:
            prec = _PREC[op.kind]
            (left, lp), (right, rp) = (self.operand(o) for o in op.operands)
            if lp < prec:
                left = f"({left})"
            if rp <= prec:  # right operands of the same strength keep their parentheses
                right = f"({right})"
            return f"{left} {OP_DEFS[op.kind].spelling} {right}", prec
        if op.kind is OpKind.NEG:
            text, p = self.operand(op.operands[0])
            return ("-" + (f"({text})" if p <= _PREC_UNARY else text)), _PREC_UNARY
        return spell_call(op.kind, op.attrs, [self.operand(o)[0] for o in op.operands]), _PREC_ATOM

    def layout(self, layout: Layout | None) -> str | None:
        return None if layout is None else "@ " + layout.format(self.mesh)

    # -- statements -----------------------------------------------------------------
    def row(self, stmt: Stmt, blank: bool) -> _Row | None:
        if isinstance(stmt, Decl):
            v = stmt.value
            return _Row(str(stmt.kind), self.name(v), f": {v.type}", self.layout(v.layout), stmt.trivia, blank)
        if isinstance(stmt, Op):
            if stmt.result.id in self.inline:
                return None
            return _Row("", self.name(stmt.result), "= " + self.expr(stmt)[0],
                        self.layout(stmt.result.layout), stmt.trivia, blank)
        if isinstance(stmt, Output):
            names = ", ".join(self.name(v) for v in stmt.values)
            return _Row("output", names, "", self.layout(stmt.pin), stmt.trivia, blank)
        raise AssertionError(stmt)

    def block(self, stmts: tuple[Stmt, ...], depth: int, first_blank: bool) -> list[str]:
        lines: list[str] = []
        rows: list[_Row] = []
        prev_repeat = False
        for i, stmt in enumerate(stmts):
            blank = stmt.trivia.blank or (i == 0 and first_blank) or isinstance(stmt, Repeat) or prev_repeat
            prev_repeat = isinstance(stmt, Repeat)
            if isinstance(stmt, Repeat):
                lines += self.rows(rows, depth)
                rows = []
                lines += self.repeat(stmt, depth, blank)
                continue
            row = self.row(stmt, blank)
            if row is not None:
                rows.append(row)
        lines += self.rows(rows, depth)
        return lines

    def repeat(self, rep: Repeat, depth: int, blank: bool) -> list[str]:
        pad = INDENT * depth
        lines = self.leading(rep.trivia, pad, blank)
        lines.append(self.trailing(f"{pad}repeat {rep.count} {{", rep.trivia))
        lines += self.block(rep.body.stmts, depth + 1, False)
        lines += self.leading(rep.close_trivia, pad + INDENT, rep.close_trivia.blank)
        lines.append(self.trailing(pad + "}", rep.close_trivia))
        return lines

    @staticmethod
    def leading(trivia: Trivia, pad: str, blank: bool) -> list[str]:
        return ([""] if blank else []) + [pad + c if c else "" for c in trivia.before]

    @staticmethod
    def trailing(line: str, trivia: Trivia) -> str:
        return f"{line}  {trivia.after}" if trivia.after else line

    def rows(self, rows: list[_Row], depth: int) -> list[str]:
        """Print rows, aligning names and pins within runs of the same statement kind."""
        lines: list[str] = []
        run: list[_Row] = []

        def kind(r: _Row) -> str:
            return "assign" if not r.head else ("output" if r.head == "output" else "decl")

        for r in rows:
            if run and (r.blank or r.trivia.before or kind(r) != kind(run[-1])):
                lines += self.run(run, depth)
                run = []
            run.append(r)
        return lines + self.run(run, depth)

    def run(self, run: list[_Row], depth: int) -> list[str]:
        """One run of rows of a kind: names padded to one width, pins and end-of-line comments aligned."""
        if not run:
            return []
        width = max(len(r.name) for r in run)
        texts = []
        for r in run:
            head = f"{r.head} " if r.head else ""
            name = r.name.ljust(width) if r.rest else r.name
            texts.append(f"{INDENT * depth}{head}{name}{' ' + r.rest if r.rest else ''}")
        pinned = [len(t) for t, r in zip(texts, run) if r.pin]
        pin_col = max(pinned) if len(pinned) > 1 else 0
        texts = [f"{t.ljust(pin_col)} {r.pin}" if r.pin else t for t, r in zip(texts, run)]
        # End-of-line comments on consecutive lines start in one column (as gofmt does).
        cols = [0] * len(run)
        i = 0
        while i < len(run):
            j = i
            while j < len(run) and run[j].trivia.after:
                j += 1
            if j > i:
                cols[i:j] = [max(len(t) for t in texts[i:j]) + 2] * (j - i)
            i = max(j, i + 1)
        lines: list[str] = []
        for text, r, col in zip(texts, run, cols):
            lines.extend(self.leading(r.trivia, INDENT * depth, r.blank))
            lines.append(f"{text.ljust(col)}{r.trivia.after}" if r.trivia.after else text)
        return lines

    # -- the program ----------------------------------------------------------------
    def program(self) -> str:
        g = self.g
        lines = self.leading(g.trivia, "", False)
        lines.append(self.trailing(f"model {g.name}", g.trivia))
        if g.mesh is not None:
            lines += self.leading(g.mesh_trivia, "", g.mesh_trivia.blank)
            lines.append(self.trailing(f"mesh {g.mesh}", g.mesh_trivia))
        if g.dims:
            lines += self.leading(g.dims_trivia, "", g.dims_trivia.blank)
            sizes = ", ".join(f"{d}={n}" for d, n in g.dims)
            lines.append(self.trailing(f"dims {sizes}", g.dims_trivia))
        lines += self.block(g.body.stmts, 0, True)
        lines += self.leading(g.end_trivia, "", g.end_trivia.blank and bool(g.end_trivia.before))
        return "\n".join(lines) + "\n"


def format_graph(g: Graph) -> str:
    """The canonical ``.model`` text of ``g`` (sharded or not); ``parse`` reads it back to ``g``."""
    return _Printer(g).program()
