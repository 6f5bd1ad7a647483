"""Lowering: the AST of a ``.model`` file -> the typed IR (:class:`~shardc.ir.graph.Graph`).

This is where names are resolved, dims and shapes are checked and every error
of docs/language.md gets its location.  This module lowers the program and its
statements; expressions and calls are lowered by the
:class:`~shardc.language.lower_exprs.ExprLowerer` it makes once the header is
read.  Nested expressions become a flat list of ops whose temporaries are
anonymous (``name=None``); the printer inlines them back.
Value ids are given in one canonical order -- declarations and op results in
program order, operands before results, a repeat's carried arguments before
its body and its results after it -- so that parsing printed text gives back
an equal graph.

Public entry points: :func:`parse` and :func:`load`.
"""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Mapping

from shardc.errors import Loc, ShardcError, Source
from shardc.ir.graph import (
    NO_TRIVIA,
    Block,
    Carry,
    Decl,
    DeclKind,
    DType,
    Graph,
    Op,
    Output,
    Repeat,
    Stmt,
    TensorType,
    Trivia,
    Value,
)
from shardc.ir.layout import Layout
from shardc.ir.mesh import Mesh
from shardc.ir.ops import CALLS
from shardc.language import syntax_tree as ast
from shardc.language.lower_exprs import _DIM_RE, ExprLowerer
from shardc.language.parser import gc_paused, parse_module
from shardc.language.trivia import attach_trivia
from shardc.units import whole_number

RESERVED = frozenset(
    {"model", "mesh", "dims", "input", "param", "cache", "repeat", "output"}
    | {d.value for d in DType}
    | set(CALLS)
    | {"over", "dim", "from", "to"}
)

# Token shapes; _DIM_RE (one upper-case letter) is shared with lower_exprs, which defines it.
_NAME_RE = re.compile(r"[a-z_][a-z0-9_]*")
_AXES_RE = re.compile(r"[a-z]+")
_INT_RE = re.compile(r"[0-9]+")
_DTYPES = {d.value: d for d in DType}  # a dict lookup: calling the enum is slow
_DECL_KINDS = {k.value: k for k in DeclKind}
_DECIMAL_RE = re.compile(r"[0-9]+\.[0-9]+(?:[eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+")


def parse(text: str, filename: str = "<string>", *, sizes: Mapping[str, int] | None = None,
          mesh: Mesh | None = None) -> Graph:
    """Parse and check ``.model`` text; return its :class:`Graph` or raise :class:`ShardcError`.

    ``sizes`` overrides declared dim sizes (``--set B=64``); ``mesh`` overrides
    the file's ``mesh`` line (``--mesh 4x4x4``), except in a sharded program.
    """
    with gc_paused():
        module = parse_module(text, filename)
        return _Lowerer(module, dict(sizes or {}), mesh).lower()


def read_text(path: str | Path) -> str:
    """The text of a ``.model`` file (UTF-8, a leading byte-order mark dropped), or a ShardcError."""
    path = Path(path)
    try:
        # newline="": the bytes as they are, so a lone '\r' reads as it does from stdin or parse()
        # (universal newlines would end a line there).
        with open(path, encoding="utf-8-sig", newline="") as f:
            return f.read()
    except FileNotFoundError:
        raise ShardcError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise ShardcError(f"{path} is a directory, not a .model file") from None
    except UnicodeDecodeError as err:
        raise ShardcError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise ShardcError(f"cannot read {path}: {err.strerror}") from None


def load(path: str | Path, *, sizes: Mapping[str, int] | None = None, mesh: Mesh | None = None) -> Graph:
    """Read and :func:`parse` a ``.model`` file."""
    return parse(read_text(path), str(path), sizes=sizes, mesh=mesh)


class _Scope:
    """Names visible in a block: name -> (value, where it was defined)."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[Value, Loc]] = {}

    def get(self, name: str) -> tuple[Value, Loc] | None:
        return self.values.get(name)


class _Lowerer:
    def __init__(self, module: ast.Module, overrides: dict[str, int], mesh: Mesh | None) -> None:
        self.module = module
        self.source: Source = module.source
        self.overrides = overrides
        self.mesh_override = mesh
        self.mesh: Mesh | None = None
        self.dims: dict[str, int] = {}
        self.dim_lines: dict[str, int] = {}
        self.next_id = 0
        self.outer = _Scope()
        self.inner: _Scope | None = None  # set inside a repeat body
        self.carried: dict[str, Value] = {}  # outer names rebound in the current repeat -> arg
        self.local_names: dict[str, int] = {}  # names that were local to a finished repeat -> line
        self.outputs: dict[str, int] = {}
        self.sharded = False
        self.trivia = attach_trivia(module)
        self.exprs: ExprLowerer | None = None  # made when the header is lowered

    # -- helpers -------------------------------------------------------------------
    def error(self, message: str, loc: Loc, hint: str | None = None) -> ShardcError:
        return ShardcError(message, self.source, loc, hint=hint)

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def trivia_of(self, stmt: object) -> Trivia:
        return self.trivia.get(id(stmt), NO_TRIVIA)

    # -- the program ---------------------------------------------------------------
    def lower(self) -> Graph:
        stmts = self.module.stmts
        if not stmts or not isinstance(stmts[0], ast.ModelStmt):
            loc = stmts[0].loc if stmts else Loc(1, 1)
            raise self.error("a program starts with 'model NAME'", loc)
        model = stmts[0]
        self.check_name(model.name, "the model")
        mesh_stmt, dims_stmts = self.header(stmts)
        for dims_stmt in dims_stmts:
            self.declare_dims(dims_stmt)
        self.apply_overrides()
        file_mesh = self.lower_mesh(mesh_stmt) if mesh_stmt is not None else None
        self.sharded = _all_pinned(stmts)
        if self.sharded:
            if file_mesh is None:
                raise self.error("a sharded program (every statement carries @ LAYOUT) needs a 'mesh' line",
                                 stmts[0].loc)
            if self.mesh_override is not None and self.mesh_override != file_mesh:
                # Located at the mesh line it contradicts (it had no location).
                assert mesh_stmt is not None
                raise self.error(
                    f"--mesh {self.mesh_override.spec()} cannot change the mesh of a sharded program "
                    f"(mesh {file_mesh}); compile the source program for that mesh instead", mesh_stmt.loc)
        self.mesh = self.mesh_override or file_mesh
        self.exprs = ExprLowerer(self.source, self.dims, self.sharded, self.new_id, self.lookup, self.undefined,
                                 self.check_number, self.dim, self.axes)

        body: list[Stmt] = []
        for stmt in stmts[1:]:
            if isinstance(stmt, (ast.MeshStmt, ast.DimsStmt)):
                continue
            body.extend(self.lower_stmt(stmt))
        dims_trivia = _merge_trivia([self.trivia_of(s) for s in dims_stmts])
        mesh_trivia = self.trivia_of(mesh_stmt) if mesh_stmt is not None else Trivia()
        if self.mesh != file_mesh:  # the mesh line's own comment described the file's mesh
            mesh_trivia = replace(mesh_trivia, after=None)
        return Graph(
            name=model.name.text,
            mesh=self.mesh,
            dims=tuple(self.dims.items()),
            body=Block(tuple(body)),
            source=self.source,
            trivia=self.trivia_of(model),
            mesh_trivia=mesh_trivia,
            dims_trivia=dims_trivia,
            end_trivia=self.trivia.get(0, NO_TRIVIA),
        )

    # -- header -------------------------------------------------------------------
    def header(self, stmts: tuple[ast.Stmt, ...]) -> tuple[ast.MeshStmt | None, list[ast.DimsStmt]]:
        """The mesh and dims statements after ``model``, checked to come before everything else."""
        header_done = False
        mesh_stmt: ast.MeshStmt | None = None
        dims_stmts: list[ast.DimsStmt] = []
        for stmt in stmts[1:]:
            if isinstance(stmt, ast.ModelStmt):
                raise self.error("a program has one 'model' statement, and it comes first", stmt.loc)
            if isinstance(stmt, (ast.MeshStmt, ast.DimsStmt)):
                if header_done:
                    word = "mesh" if isinstance(stmt, ast.MeshStmt) else "dims"
                    raise self.error(f"'{word}' must come before every declaration and statement", stmt.loc)
                if isinstance(stmt, ast.MeshStmt):
                    if mesh_stmt is not None:
                        raise self.error(f"the mesh is already given on line {mesh_stmt.loc.line}", stmt.loc)
                    mesh_stmt = stmt
                else:
                    dims_stmts.append(stmt)
            else:
                header_done = True
        return mesh_stmt, dims_stmts

    def declare_dims(self, stmt: ast.DimsStmt) -> None:
        for dim, size in stmt.sizes:
            self.check_dim_name(dim)
            if dim.text in self.dims:
                raise self.error(f"dim {dim.text} is already declared on line {self.dim_lines[dim.text]}",
                                 dim.loc)
            self.dims[dim.text] = self.positive_int(size, f"the size of dim {dim.text}")
            self.dim_lines[dim.text] = dim.loc.line

    def apply_overrides(self) -> None:
        for dim, size in self.overrides.items():
            if dim not in self.dims:
                declared = ", ".join(self.dims) or "none"
                raise ShardcError(f"--set {dim}={size}: the program declares no dim {dim} "
                                  f"(it declares {declared})")
            if not isinstance(size, int) or size < 1:
                raise ShardcError(f"--set {dim}={size}: a dim size is a whole number of at least 1")
            self.dims[dim] = size

    def lower_mesh(self, stmt: ast.MeshStmt) -> Mesh:
        axes: list[tuple[str, int]] = []
        for name, size in stmt.axes:
            if not re.fullmatch(r"[a-z]", name.text):
                raise self.error(f"mesh axes are one lower-case letter, got '{name.text}'", name.loc)
            if any(a == name.text for a, _ in axes):
                raise self.error(f"mesh axis '{name.text}' is named twice", name.loc)
            axes.append((name.text, self.positive_int(size, f"the size of mesh axis {name.text}")))
        return Mesh(tuple(axes))

    # -- checks on tokens ------------------------------------------------------------
    def positive_int(self, num: ast.Num, what: str) -> int:
        self.check_number(num)
        if not _INT_RE.fullmatch(num.text):
            raise self.error(f"{what} must be a whole number of at least 1, got {num.text}", num.loc)
        size = whole_number(num.text)
        if size is None:
            raise self.error(f"{what} is too large: at most 10^18, got a number of {len(num.text)} "
                             "digits", num.loc)
        if size < 1:
            raise self.error(f"{what} must be a whole number of at least 1, got {num.text}", num.loc)
        return size

    def check_number(self, num: ast.Num) -> None:
        if not (_INT_RE.fullmatch(num.text) or _DECIMAL_RE.fullmatch(num.text)):
            raise self.error(
                f"malformed number '{num.text}': write an integer (4096) or a decimal (0.0625, 1e-6)",
                num.loc)

    def check_name(self, name: ast.Name, what: str = "a tensor") -> None:
        if name.text in RESERVED:
            raise self.error(f"'{name.text}' is a reserved word and cannot name {what}", name.loc)
        if not _NAME_RE.fullmatch(name.text):
            raise self.error(f"'{name.text}' is not a valid name: names are lower-case letters, digits "
                             "and '_', starting with a letter or '_'", name.loc)

    def check_dim_name(self, dim: ast.Name) -> None:
        if not _DIM_RE.fullmatch(dim.text):
            raise self.error(f"dim names are one upper-case letter, got '{dim.text}'", dim.loc)

    def dim(self, dim: ast.Name) -> str:
        """A declared dim (error otherwise)."""
        self.check_dim_name(dim)
        if dim.text not in self.dims:
            raise self.error(f"undeclared dim {dim.text}", dim.loc,
                             hint=f"declare its size with 'dims {dim.text}=N'")
        return dim.text

    def axes(self, name: ast.Name) -> tuple[str, ...]:
        if not _AXES_RE.fullmatch(name.text):
            raise self.error(f"expected mesh axes such as yz, got '{name.text}'", name.loc)
        axes = tuple(name.text)
        for i, a in enumerate(axes):
            if a in axes[:i]:
                raise self.error(f"mesh axis '{a}' is named twice in '{name.text}'", name.loc)
            if self.mesh is not None and not self.mesh.has(a):
                raise self.error(f"the mesh ({self.mesh}) has no axis '{a}'", name.loc)
        return axes

    # -- statements -----------------------------------------------------------------
    def lower_stmt(self, stmt: ast.Stmt) -> list[Stmt]:
        if isinstance(stmt, ast.DeclStmt):
            return [self.lower_decl(stmt)]
        if isinstance(stmt, ast.AssignStmt):
            return self.lower_assign(stmt)
        if isinstance(stmt, ast.OutputStmt):
            return [self.lower_output(stmt)]
        if isinstance(stmt, ast.RepeatStmt):
            return [self.lower_repeat(stmt)]
        raise AssertionError(stmt)

    def lookup(self, name: str) -> tuple[Value, Loc] | None:
        if self.inner is not None:
            found = self.inner.get(name)
            if found is not None:
                return found
            if name in self.carried:
                return self.carried[name], self.outer.values[name][1]
        return self.outer.get(name)

    def define(self, name: ast.Name, value: Value) -> None:
        scope = self.inner if self.inner is not None else self.outer
        scope.values[name.text] = (value, name.loc)

    def check_new_name(self, name: ast.Name) -> None:
        self.check_name(name)
        found = self.lookup(name.text)
        if found is not None:
            raise self.error(f"'{name.text}' is already defined on line {found[1].line}; "
                             "names are assigned once (only a repeat may rebind an outer name)", name.loc)

    def lower_pin(self, pin: ast.Pin | None, dims: tuple[str, ...], what: str) -> Layout | None:
        if pin is None:
            return None
        if pin.partial is not None and not self.sharded:
            raise self.error("partial sums cannot be pinned in a source program", pin.partial.loc)
        try:
            layout = Layout.parse(pin.layout.text, pin.partial.text if pin.partial else None)
            if layout.dims != dims:
                raise ShardcError(f"the layout {layout.format(self.mesh)} lists dims [{', '.join(layout.dims)}] "
                                  f"but {what} has dims [{', '.join(dims)}]")
            if self.mesh is not None:
                layout.check(self.dims, self.mesh)
        except ShardcError as err:
            raise self.error(err.message, pin.layout.loc, hint=err.hint) from None
        return layout

    def lower_decl(self, stmt: ast.DeclStmt) -> Decl:
        kind = _DECL_KINDS[stmt.kind]
        if self.inner is not None and kind is DeclKind.INPUT:
            raise self.error("'input' may not appear inside repeat; declare inputs before it", stmt.loc)
        self.check_new_name(stmt.name)
        dtype = _DTYPES.get(stmt.dtype.text)
        if dtype is None:
            raise self.error(f"unknown dtype '{stmt.dtype.text}'; expected f32, bf16, f16 or int8",
                             stmt.dtype.loc)
        dims: list[str] = []
        for d in stmt.dims:
            name = self.dim(d)
            if name in dims:
                raise self.error(f"dim {name} appears twice in {stmt.name.text}'s type; a tensor's dims "
                                 "are distinct", d.loc)
            dims.append(name)
        layout = self.lower_pin(stmt.pin, tuple(dims), f"'{stmt.name.text}'") if stmt.pin else None
        value = Value(self.new_id(), stmt.name.text, TensorType(dtype, tuple(dims)), layout)
        self.define(stmt.name, value)
        return Decl(kind, value, stmt.loc, self.trivia_of(stmt))

    def lower_assign(self, stmt: ast.AssignStmt) -> list[Stmt]:
        target = stmt.target
        rebinding = self.inner is not None and target.text in self.carried
        if rebinding:
            self.check_name(target)
        else:
            self.check_new_name(target)  # checks the name too
        ops: list[Op] = []
        expr = stmt.expr
        if isinstance(expr, ast.Num):
            raise self.error("a number alone is not a tensor: every value has at least one dim", expr.loc)
        if isinstance(expr, ast.Ref):
            raise self.error(f"an assignment needs an operation; '{target.text} = {expr.name}' would only "
                             "rename a value", expr.loc)
        if isinstance(expr, ast.Neg) and isinstance(expr.operand, ast.Num):
            raise self.error("a number alone is not a tensor: every value has at least one dim", expr.loc)
        assert self.exprs is not None
        result = self.exprs.lower_expr(expr, ops, name=target.text)
        if not isinstance(result, Value):  # --1: folded to a number
            raise self.error("a number alone is not a tensor: every value has at least one dim", expr.loc)
        assert isinstance(result, Value) and ops and ops[-1].result is result
        layout = self.lower_pin(stmt.pin, result.dims, f"'{target.text}'") if stmt.pin else None
        if rebinding:
            before = self.lookup(target.text)
            assert before is not None
            if result.dims != before[0].dims:
                raise self.error(
                    f"rebinding '{target.text}' changes its dims from [{', '.join(before[0].dims)}] to "
                    f"[{', '.join(result.dims)}]; a rebinding keeps the dims, in the same order", target.loc)
        top = ops[-1]
        if layout is not None:
            result = replace(result, layout=layout)
        # The top op gets the statement's place and comments (built directly: replace() is slow).
        ops[-1] = Op(top.kind, result, top.operands, top.attrs, stmt.loc, self.trivia_of(stmt))
        self.define(target, result)
        return list(ops)

    def lower_output(self, stmt: ast.OutputStmt) -> Output:
        values = []
        for name in stmt.names:
            found = self.lookup(name.text)
            if found is None:
                raise self.undefined(name.text, name.loc)
            if name.text in self.outputs:
                raise self.error(f"'{name.text}' is already an output (line {self.outputs[name.text]})",
                                 name.loc)
            self.outputs[name.text] = name.loc.line
            values.append(found[0])
        if stmt.pin is not None and len(values) > 1:
            raise self.error("a layout can pin only a single-name output", stmt.pin.layout.loc)
        pin = self.lower_pin(stmt.pin, values[0].dims, f"'{stmt.names[0].text}'") if stmt.pin else None
        return Output(tuple(values), pin, stmt.loc, self.trivia_of(stmt))

    def carried_names(self, stmt: ast.RepeatStmt) -> list[str]:
        """Outer names assigned in the body: loop-carried, in order of first rebinding."""
        carried: list[str] = []
        for inner in stmt.body:
            if isinstance(inner, (ast.MeshStmt, ast.DimsStmt, ast.ModelStmt)):
                word = {ast.MeshStmt: "mesh", ast.DimsStmt: "dims", ast.ModelStmt: "model"}[type(inner)]
                raise self.error(f"'{word}' may not appear inside repeat", inner.loc)
        for inner in stmt.body:
            if isinstance(inner, ast.AssignStmt) and inner.target.text in self.outer.values \
                    and inner.target.text not in carried:
                carried.append(inner.target.text)
        return carried

    def lower_repeat(self, stmt: ast.RepeatStmt) -> Repeat:
        if self.inner is not None:
            raise self.error("repeat blocks cannot be nested", stmt.loc)
        count = self.positive_int(stmt.count, "the repeat count")
        carried_names = self.carried_names(stmt)
        self.inner = _Scope()
        self.carried = {}
        inits: dict[str, Value] = {}
        for name in carried_names:
            init = self.outer.values[name][0]
            inits[name] = init
            self.carried[name] = Value(self.new_id(), name, init.type, init.layout)
        args = dict(self.carried)
        body: list[Stmt] = []
        try:
            for inner in stmt.body:
                body.extend(self.lower_stmt(inner))
            carries = []
            for name in carried_names:
                nxt = self.inner.values[name][0]
                result = Value(self.new_id(), name, nxt.type, nxt.layout)
                carries.append(Carry(inits[name], args[name], nxt, result))
        finally:
            inner_scope = self.inner
            self.inner = None
            self.carried = {}
        for name, (_, loc) in inner_scope.values.items():
            if name not in carried_names:
                self.local_names[name] = loc.line
        for carry in carries:
            loc = self.outer.values[carry.result.name or ""][1]
            self.outer.values[carry.result.name or ""] = (carry.result, loc)
        trivia = self.trivia_of(stmt)
        close = self.trivia.get(("close", id(stmt)), NO_TRIVIA)
        return Repeat(count, tuple(carries), Block(tuple(body)), stmt.loc, trivia, close)

    # -- names an expression reads ---------------------------------------------------
    def undefined(self, name: str, loc: Loc) -> ShardcError:
        if name in self.local_names:
            return self.error(f"'{name}' is local to the repeat block that defines it (line "
                              f"{self.local_names[name]}); only rebound outer names leave the block", loc)
        later = _find_definition(self.module.stmts, name)
        if later is not None and later > loc.line:
            return self.error(f"'{name}' is used before its definition on line {later}", loc)
        return self.error(f"undefined name '{name}'", loc)


def _all_pinned(stmts: tuple[ast.Stmt, ...]) -> bool:
    """A sharded program: every declaration and assignment carries @ LAYOUT."""
    found = False
    for stmt in stmts:
        inner = stmt.body if isinstance(stmt, ast.RepeatStmt) else (stmt,)
        for s in inner:
            if isinstance(s, (ast.DeclStmt, ast.AssignStmt)):
                found = True
                if s.pin is None:
                    return False
    return found


def _find_definition(stmts: tuple[ast.Stmt, ...], name: str) -> int | None:
    for stmt in stmts:
        inner = stmt.body if isinstance(stmt, ast.RepeatStmt) else (stmt,)
        for s in inner:
            if isinstance(s, ast.DeclStmt) and s.name.text == name:
                return s.loc.line
            if isinstance(s, ast.AssignStmt) and s.target.text == name:
                return s.loc.line
    return None


def _merge_trivia(items: list[Trivia]) -> Trivia:
    before: list[str] = []
    for t in items:
        before.extend(t.before)
        if t.after:
            before.append(t.after)
    if len(items) == 1:
        return items[0]
    return Trivia(tuple(before), None, bool(items and items[0].blank))
