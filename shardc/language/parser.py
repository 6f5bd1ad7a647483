"""Parsing ``.model`` text into an AST (the first stage of the pipeline).

The grammar lives in ``grammars/model.lark`` (installed with the package as the data of
``shardc.grammars``); lark builds an LALR(1) parser with a contextual lexer from
it.  A :class:`lark.Transformer`, given to lark so that it runs as rules are
reduced, builds the small frozen dataclasses of :mod:`shardc.language.syntax_tree`
directly, one method per grammar rule/alias (no parse tree is built).  Nothing
here knows about types or scopes: that is :mod:`shardc.language.lower`'s job.

Text is read by :class:`~shardc.language.lalr.FastParser` (lark's tables and
lexer, driven without lark's per-token overhead); text it cannot read is
parsed again by lark itself, whose error :mod:`shardc.language.parse_errors`
turns into words ("expected ',' or ']' after a dim") without lark's token names.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import importlib.resources
import threading
from dataclasses import dataclass
from typing import Iterator

import lark
from lark import Token, Transformer
from lark.exceptions import UnexpectedInput

from shardc.errors import Loc, ShardcError, Source
from shardc.language.lalr import FastParser, Miss
from shardc.language.lines import LineReader
from shardc.language.parse_errors import syntax_error
from shardc.language.syntax_tree import (
    AssignStmt,
    BinOp,
    Call,
    Comment,
    DeclStmt,
    DimArg,
    DimsStmt,
    Expr,
    KwArg,
    MeshStmt,
    ModelStmt,
    Module,
    Name,
    Neg,
    Num,
    OutputStmt,
    Pin,
    Ref,
    RepeatStmt,
    StrArg,
    negated,
    start_of,
    string_arg,
)

# The AST is re-exported: lowering and users read it as syntax.Name, syntax.Call...
__all__ = ["grammar_text", "parse_module"]


# --- the grammar's rules -> AST ---------------------------------------------------------
def _loc(tok: Token) -> Loc:
    return Loc(tok.line or 0, tok.column or 0)


def _name(tok: Token) -> Name:
    return Name(str(tok), _loc(tok))


class _ToAst(Transformer):
    """One method per grammar rule or alias; returns AST nodes.

    lark calls these methods as it reduces (the Transformer is given to ``Lark``, so no parse
    tree is built), and calls :meth:`comment` for each comment it lexes.  Both are fixed when the
    parser is built, and building the LALR tables is the slow part, so one instance serves every
    parse: :meth:`begin` gives it the source being read and the lock keeps parses apart.
    """

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.source = Source("<string>", "")
        self.comments: list[Comment] = []

    def begin(self, source: Source) -> None:
        """Start reading ``source`` (again, after a fast parse that lark must redo)."""
        self.source = source
        self.comments = []

    def comment(self, tok: Token) -> Token:
        self.add_comment(Comment(str(tok), _loc(tok)))
        return tok

    def add_comment(self, comment: Comment) -> None:
        """A comment read with its statement (:mod:`shardc.language.lines`)."""
        self.comments.append(comment)

    def _stmt_loc(self, line: int) -> Loc:
        """Statements start their line: point at its first non-blank character."""
        text = self.source.line_text(line)
        return Loc(line, len(text) - len(text.lstrip()) + 1)

    def start(self, items: list) -> tuple:
        return tuple(items)

    def model_stmt(self, items: list) -> ModelStmt:
        (name,) = items
        return ModelStmt(_name(name), self._stmt_loc(name.line))

    def axis_size(self, items: list) -> tuple[Name, Num]:
        name, size = items
        return _name(name), Num(str(size), _loc(size))

    def mesh_stmt(self, items: list) -> MeshStmt:
        return MeshStmt(tuple(items), self._stmt_loc(items[0][0].loc.line))

    def dim_size(self, items: list) -> tuple[Name, Num]:
        dim, size = items
        return _name(dim), Num(str(size), _loc(size))

    def dims_stmt(self, items: list) -> DimsStmt:
        return DimsStmt(tuple(items), self._stmt_loc(items[0][0].loc.line))

    def decl_kind(self, items: list) -> Token:
        return items[0]

    def dim_list(self, items: list) -> tuple[Name, ...]:
        return tuple([_name(t) for t in items])

    def decl(self, items: list) -> DeclStmt:
        kind, name, dtype, dims = items[:4]
        pin = items[4] if len(items) > 4 else None
        return DeclStmt(str(kind), _name(name), _name(dtype), dims, pin, _loc(kind))

    def assign(self, items: list) -> AssignStmt:
        target, expr = items[:2]
        pin = items[2] if len(items) > 2 else None
        return AssignStmt(_name(target), expr, pin, _loc(target))

    def output(self, items: list) -> OutputStmt:
        pin = items[-1] if isinstance(items[-1], Pin) else None
        names = tuple(_name(t) for t in items if isinstance(t, Token))
        return OutputStmt(names, pin, self._stmt_loc(names[0].loc.line))

    def repeat(self, items: list) -> RepeatStmt:
        count, *body, close = items
        return RepeatStmt(Num(str(count), _loc(count)), tuple(body), self._stmt_loc(count.line), _loc(close))

    def pin(self, items: list) -> Pin:
        layout = _name(items[0])
        partial = _name(items[1]) if len(items) > 1 else None
        return Pin(layout, partial, Loc(layout.loc.line, layout.loc.col))

    # expressions
    def _binop(self, op: str, items: list) -> BinOp:
        left, right = items
        return BinOp(op, left, right, start_of(left))

    def add(self, items: list) -> BinOp:
        return self._binop("+", items)

    def sub(self, items: list) -> BinOp:
        return self._binop("-", items)

    def mul(self, items: list) -> BinOp:
        return self._binop("*", items)

    def div(self, items: list) -> BinOp:
        return self._binop("/", items)

    def neg(self, items: list) -> Neg:
        (operand,) = items
        return negated(operand)

    def number(self, items: list) -> Num:
        (tok,) = items
        return Num(str(tok), _loc(tok))

    def ref(self, items: list) -> Ref:
        (tok,) = items
        return Ref(str(tok), _loc(tok))

    def call(self, items: list) -> Call:
        func, *args = items
        return Call(_name(func), tuple(a for a in args if a is not None), _loc(func))

    def string_arg(self, items: list) -> StrArg:
        (tok,) = items
        return string_arg(str(tok), _loc(tok))

    def dim_arg(self, items: list) -> DimArg:
        (tok,) = items
        return DimArg(_name(tok))

    def kwarg(self, items: list) -> KwArg:
        key, value = items
        return KwArg(_name(key), _name(value))


# --- the parser ---------------------------------------------------------------------
def grammar_text() -> str:
    """The text of ``grammars/model.lark``, installed with the package as ``shardc.grammars``."""
    return importlib.resources.files("shardc.grammars").joinpath("model.lark").read_text(encoding="utf-8")


@dataclass(frozen=True)
class _Front:
    """lark's parser for the grammar, with the AST builder inside it, and the fast driver of its tables."""

    builder: _ToAst
    lark: lark.Lark
    fast: FastParser | None  # None only if the installed lark is not laid out as lalr.py expects


@functools.lru_cache(maxsize=1)
def _front() -> _Front:
    builder = _ToAst()
    parser = lark.Lark(
        grammar_text(),
        parser="lalr",
        lexer="contextual",
        maybe_placeholders=True,
        transformer=builder,
        lexer_callbacks={"COMMENT": builder.comment},
    )
    try:
        fast: FastParser | None = FastParser(parser, lines=LineReader(parser, builder.add_comment).read)
    except (AttributeError, TypeError, KeyError):  # another lark's internals: lark alone reads
        fast = None
    return _Front(builder, parser, fast)


def parse_module(text: str, filename: str = "<string>") -> Module:
    """Parse ``.model`` text into a :class:`Module` (syntax only), or raise ShardcError."""
    source = Source(filename, text)
    front = _front()
    with front.builder.lock, gc_paused():
        front.builder.begin(source)
        try:
            stmts = _parse(front, text)
        except UnexpectedInput as err:
            raise syntax_error(err, source) from None
        finally:
            comments = tuple(front.builder.comments)
            front.builder.begin(Source("<string>", ""))
    _check_depth(stmts, source)
    return Module(stmts, comments, source)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector paused while a program is read.

    The front end allocates a few objects per token and frees none until it is done, so every
    full collection walks all of them: with the collector on, reading 10^5 statements took about
    twice as long as with it off, and the time per statement grew with the file.  Anything cyclic
    left behind is collected on the next collection after the parse.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _parse(front: _Front, text: str) -> tuple:
    """The statements of ``text``: by the fast driver, or by lark when the driver cannot read it."""
    if front.fast is not None:
        try:
            return front.fast.parse(text)
        except Miss:
            front.builder.begin(front.builder.source)  # lark reads it all again, comments too
    return front.lark.parse(text)  # type: ignore[return-value]


# How deeply an expression may nest: operators chained (a + b + ... is a left-nested tree), unary
# minus signs, parentheses and calls.  Far beyond any real program, and low enough that every later
# stage (lowering, printing, the executors) stays within Python's recursion limit.
MAX_DEPTH = 200


def _check_depth(stmts: tuple, source: Source) -> None:
    """A located ShardcError if an expression nests deeper than :data:`MAX_DEPTH` (checked without recursion).

    The error points at the start of the first subexpression that is one level too deep.
    """
    pending = list(reversed(stmts))  # popped in source order
    while pending:
        stmt = pending.pop()
        if isinstance(stmt, RepeatStmt):
            pending.extend(reversed(stmt.body))
        elif isinstance(stmt, AssignStmt) and isinstance(stmt.expr, (BinOp, Neg, Call)):
            _check_expr_depth(stmt.expr, source)


def _check_expr_depth(expr: Expr, source: Source) -> None:
    stack: list[tuple[object, int]] = [(expr, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ShardcError(f"the expression nests more than {MAX_DEPTH} levels deep (operators chained, "
                              "signs, parentheses or calls); split it into several assignments",
                              source, start_of(node))
        if isinstance(node, BinOp):
            stack.append((node.right, depth + 1))
            stack.append((node.left, depth + 1))
        elif isinstance(node, Neg):
            stack.append((node.operand, depth + 1))
        elif isinstance(node, Call):
            stack.extend((arg, depth + 1) for arg in reversed(node.args))
