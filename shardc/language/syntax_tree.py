"""The AST of a ``.model`` file: what the parser (:mod:`shardc.language.parser`) produces.

Small frozen dataclasses, one per statement, expression and argument form of
docs/language.md, each with the position (:class:`~shardc.errors.Loc`) that error
messages point at.  They hold text as written: nothing here knows about
types, dims or scopes -- lowering (:mod:`shardc.language.lower`) checks those.
Comments are kept apart (:class:`Comment`) for the formatter.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from shardc.errors import Loc, Source


@dataclass(frozen=True)
class Name:
    """An identifier token with its position (a name, a dim, an axis list...)."""

    text: str
    loc: Loc


@dataclass(frozen=True)
class Num:
    text: str
    loc: Loc


@dataclass(frozen=True)
class Ref:
    name: str
    loc: Loc


@dataclass(frozen=True)
class BinOp:
    op: str  # one of + - * /
    left: "Expr"
    right: "Expr"
    loc: Loc  # where the expression starts: the start of its left operand


@dataclass(frozen=True)
class Neg:
    operand: "Expr"
    loc: Loc


@dataclass(frozen=True)
class StrArg:
    text: str  # without the quotes
    loc: Loc  # position of the opening quote


@dataclass(frozen=True)
class DimArg:
    dim: Name


@dataclass(frozen=True)
class KwArg:
    key: Name
    value: Name


@dataclass(frozen=True)
class Call:
    func: Name
    args: tuple["Arg", ...]
    loc: Loc


Expr = Union[Num, Ref, BinOp, Neg, Call]
Arg = Union[Num, Ref, BinOp, Neg, Call, StrArg, DimArg, KwArg]


@dataclass(frozen=True)
class Pin:
    layout: Name
    partial: Name | None
    loc: Loc  # position of '@'


@dataclass(frozen=True)
class ModelStmt:
    name: Name
    loc: Loc


@dataclass(frozen=True)
class MeshStmt:
    axes: tuple[tuple[Name, Num], ...]
    loc: Loc


@dataclass(frozen=True)
class DimsStmt:
    sizes: tuple[tuple[Name, Num], ...]
    loc: Loc


@dataclass(frozen=True)
class DeclStmt:
    kind: str  # input | param | cache
    name: Name
    dtype: Name
    dims: tuple[Name, ...]
    pin: Pin | None
    loc: Loc


@dataclass(frozen=True)
class AssignStmt:
    target: Name
    expr: Expr
    pin: Pin | None
    loc: Loc


@dataclass(frozen=True)
class OutputStmt:
    names: tuple[Name, ...]
    pin: Pin | None
    loc: Loc


@dataclass(frozen=True)
class RepeatStmt:
    count: Num
    body: tuple["Stmt", ...]
    loc: Loc
    close: Loc  # position of '}'


Stmt = Union[ModelStmt, MeshStmt, DimsStmt, DeclStmt, AssignStmt, OutputStmt, RepeatStmt]


@dataclass(frozen=True)
class Comment:
    text: str  # including the leading '#'
    loc: Loc


@dataclass(frozen=True)
class Module:
    stmts: tuple[Stmt, ...]
    comments: tuple[Comment, ...]
    source: Source


def negated(operand: Expr) -> Neg:
    """``-operand``, located one column before its operand (where the sign usually stands)."""
    loc = start_of(operand)
    return Neg(operand, Loc(loc.line, max(loc.col - 1, 1)))


def string_arg(quoted: str, loc: Loc) -> StrArg:
    """A string argument from its token (quotes included) at ``loc``."""
    return StrArg(quoted[1:-1], loc)


def start_of(node: object) -> Loc:
    """Where an expression or call argument starts (for carets under operands)."""
    if isinstance(node, Call):
        return node.func.loc
    if isinstance(node, DimArg):
        return node.dim.loc
    if isinstance(node, KwArg):
        return node.key.loc
    return node.loc  # type: ignore[attr-defined]
