"""Lowering expressions and calls: an AST expression -> flat IR ops (a collaborator of :mod:`shardc.language.lower`).

A nested expression becomes a list of ops, operands before results, whose
temporaries are anonymous (``name=None``); only the top op gets the assigned
name.  A call is checked against its op's signature (:data:`~shardc.ir.ops.OP_DEFS`):
the number and kind of its positional arguments, its keywords, an einsum
spec; the result's dims and dtype come from the op's shape rule
(:func:`~shardc.ir.ops.result_dims`).  Every error points at the argument that
causes it, and a usage line (``layernorm(a, [g], over=DIM)``) says what was
expected.  The attributes of a call come from its op's attrs builder
(:func:`~shardc.ir.ops.build_attrs`).

:class:`ExprLowerer` is given what it needs by the program lowerer: the dim
sizes, whether the program is sharded, and the lowerer's name resolution, id
counter and token checks, as callables.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from shardc.errors import Loc, ShardcError, Source
from shardc.ir.graph import Attrs, Const, NoAttrs, Op, Operand, OpKind, TensorType, Value
from shardc.ir.ops import (
    CALLS,
    INFIX,
    OP_DEFS,
    ArgKind,
    CallArgs,
    OpTypeError,
    Signature,
    build_attrs,
    result_dims,
    result_dtype,
)
from shardc.language import syntax_tree as ast

_DIM_RE = re.compile(r"[A-Z]")
_SPEC_RE = re.compile(r"[A-Za-z]+(?:,[A-Za-z]+)*->[A-Za-z]*")
_NO_ATTRS = NoAttrs()  # it has no fields: one instance serves every op without attributes


def _operand_locs(node: ast.BinOp | ast.Neg) -> dict[str, Loc]:
    """Where the operands of an operator start, by the names type errors give them."""
    if isinstance(node, ast.Neg):
        return {"operand 0": ast.start_of(node.operand)}
    return {"operand 0": ast.start_of(node.left), "operand 1": ast.start_of(node.right)}


@dataclass
class ExprLowerer:
    """Lowers expressions and calls to ops; one per program, made once its header is lowered.

    ``new_id`` gives the next value id; ``lookup`` resolves a visible name
    (None if there is none) and ``undefined`` makes the error for a name that
    is not; ``check_number``, ``dim`` and ``axes`` check tokens (raising a
    located error) and return what they spell.
    """

    source: Source
    dims: Mapping[str, int]
    sharded: bool
    new_id: Callable[[], int]
    lookup: Callable[[str], tuple[Value, Loc] | None]
    undefined: Callable[[str, Loc], ShardcError]
    check_number: Callable[[ast.Num], None]
    dim: Callable[[ast.Name], str]
    axes: Callable[[ast.Name], tuple[str, ...]]

    def error(self, message: str, loc: Loc, hint: str | None = None) -> ShardcError:
        return ShardcError(message, self.source, loc, hint=hint)

    def lower_expr(self, expr: ast.Expr, ops: list[Op], name: str | None = None) -> Operand:
        """Lower ``expr``, appending its ops (operands first); ``name`` names the top op."""
        if isinstance(expr, ast.Ref):
            found = self.lookup(expr.name)
            if found is None:
                raise self.undefined(expr.name, expr.loc)
            return found[0]
        if isinstance(expr, ast.BinOp):
            left = self.lower_expr(expr.left, ops)
            right = self.lower_expr(expr.right, ops)
            return self.make_op(INFIX[expr.op], (left, right), _NO_ATTRS, ops, name, expr.loc, expr)
        if isinstance(expr, ast.Num):
            self.check_number(expr)
            value = float(expr.text)
            if value == float("inf"):
                raise self.error(f"the number {expr.text} is too large", expr.loc)
            return Const(value)
        if isinstance(expr, ast.Neg):
            operand = self.lower_expr(expr.operand, ops)
            if isinstance(operand, Const):  # -1, --1, -(2): a number, folded
                return Const(-operand.value)
            return self.make_op(OpKind.NEG, (operand,), _NO_ATTRS, ops, name, expr.loc, expr)
        assert isinstance(expr, ast.Call)
        return self.lower_call(expr, ops, name)

    def make_op(self, kind: OpKind, operands: tuple[Operand, ...], attrs: Attrs, ops: list[Op],
                name: str | None, loc: Loc, where: dict[str, Loc] | ast.BinOp | ast.Neg) -> Value:
        """The op's result, its op appended to ``ops``; a type error points at the operand or keyword
        that causes it: ``where`` maps them to places (a call's), or is the operator whose operands they are."""
        try:
            dims = result_dims(kind, operands, attrs, self.dims)
        except OpTypeError as err:
            locs = where if isinstance(where, dict) else _operand_locs(where)
            at = locs.get(f"operand {err.operand}") if err.operand is not None else None
            if at is None and err.keyword is not None:
                at = locs.get(err.keyword)
            raise self.error(err.message, at or loc) from None
        result = Value(self.new_id(), name, TensorType(result_dtype(kind, operands), dims))
        ops.append(Op(kind, result, operands, attrs, loc))
        return result

    def lower_call(self, call: ast.Call, ops: list[Op], name: str | None) -> Value:
        func = call.func.text
        if func not in CALLS:
            known = ", ".join(sorted(k for k, v in CALLS.items() if not v.is_collective))
            raise self.error(f"unknown op '{func}'; the ops are {known}", call.func.loc)
        kind = CALLS[func]
        sig = OP_DEFS[kind].signature
        usage = _usage(func, sig)
        if kind.is_collective and not self.sharded:
            raise self.error(f"'{func}' is a collective: collectives appear only in sharded programs, where "
                             "every declaration and statement carries @ LAYOUT", call.func.loc)
        positional = [a for a in call.args if not isinstance(a, ast.KwArg)]
        keywords = [a for a in call.args if isinstance(a, ast.KwArg)]
        self.check_arity(call, kind, sig, positional, usage)
        operands: list[Operand] = []
        locs: dict[str, Loc] = {}
        spec: ast.StrArg | None = None
        dim_args: list[str] = []
        for arg, want in zip(positional, sig.positional):
            if want is ArgKind.SPEC:
                if not isinstance(arg, ast.StrArg):
                    raise self.error(f"{func} expects a spec string first; usage: {usage}", ast.start_of(arg))
                spec = arg
                locs["spec"] = arg.loc
            elif want is ArgKind.DIM:
                if not isinstance(arg, ast.DimArg):
                    raise self.error(f"{func} expects a dim here; usage: {usage}", ast.start_of(arg))
                locs["query" if not dim_args else "key"] = arg.dim.loc
                dim_args.append(self.dim(arg.dim))
            else:
                locs[f"operand {len(operands)}"] = ast.start_of(arg)
                operands.append(self.lower_expr(self.tensor_arg(func, arg, want, usage), ops))
        dim_kw, axes_kw = self.lower_keywords(func, sig, keywords, usage, locs)
        letters = self.einsum_spec(spec) if spec is not None else None
        attrs = build_attrs(kind, CallArgs(letters, tuple(dim_args), dim_kw, axes_kw))
        return self.make_op(kind, tuple(operands), attrs, ops, name, call.func.loc, locs)

    def check_arity(self, call: ast.Call, kind: OpKind, sig: Signature, positional: Sequence[ast.Arg],
                    usage: str) -> None:
        """Keywords after the positional arguments, and as many of those as ``sig`` allows."""
        func = call.func.text
        seen_kw = False
        for a in call.args:
            if isinstance(a, ast.KwArg):
                seen_kw = True
            elif seen_kw:
                raise self.error(f"positional argument after a keyword argument; usage: {usage}", ast.start_of(a))
        low, high = len(sig.positional) - sig.optional, len(sig.positional)
        if low <= len(positional) <= high:
            return
        count = f"{low}" if low == high else f"{low} to {high}"
        plural = "s" if high > 1 else ""
        message = f"{func} takes {count} positional argument{plural}, got {len(positional)}"
        if kind is OpKind.EINSUM and positional and isinstance(positional[0], ast.StrArg):
            # Users count einsum's operands, not the spec string with them.
            message = f"einsum takes one or two operands after the spec, got {len(positional) - 1}"
        raise self.error(f"{message}; usage: {usage}",
                         ast.start_of(positional[high]) if len(positional) > high else call.func.loc)

    def tensor_arg(self, func: str, arg: ast.Arg, want: ArgKind, usage: str) -> ast.Expr:
        """``arg`` if it may be a tensor operand (an expression, not a number; a name for a gain)."""
        if isinstance(arg, (ast.StrArg, ast.DimArg)):
            raise self.error(f"{func} expects a tensor here; usage: {usage}", ast.start_of(arg))
        if isinstance(arg, ast.Num) or (isinstance(arg, ast.Neg) and isinstance(arg.operand, ast.Num)):
            raise self.error(f"{func} takes a tensor, not a number", ast.start_of(arg))
        if want is ArgKind.GAIN and not isinstance(arg, ast.Ref):
            raise self.error(f"the gain of {func} must be a name with dims of the over dim", ast.start_of(arg))
        assert not isinstance(arg, ast.KwArg)
        return arg

    def lower_keywords(self, func: str, sig: Signature, keywords: list[ast.KwArg], usage: str,
                       locs: dict[str, Loc]) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
        """The keywords of a call: (dim-valued ones, axes-valued ones)."""
        if sig.dim_keywords:
            return self.lower_renames(func, keywords, usage, locs), {}
        dims: dict[str, str] = {}
        axes: dict[str, tuple[str, ...]] = {}
        allowed = [k for k, _ in sig.keywords]
        kinds = dict(sig.keywords)
        for kw in keywords:
            key = kw.key.text
            if key not in kinds:
                expected = ", ".join(f"{k}=" for k in allowed) or "no keywords"
                raise self.error(f"unknown keyword argument '{key}' for {func}; expected {expected}", kw.key.loc)
            if key in dims or key in axes:
                raise self.error(f"keyword '{key}' is given twice", kw.key.loc)
            if self.sharded and func in CALLS and CALLS[func].is_collective:
                if any(allowed.index(k) > allowed.index(key) for k in (*dims, *axes)):
                    raise self.error(f"keyword arguments of {func} are written in the order "
                                     f"{', '.join(allowed)}", kw.key.loc)
            locs[key] = kw.value.loc
            if kinds[key] is ArgKind.DIM:
                dims[key] = self.dim(kw.value)
            else:
                axes[key] = self.axes(kw.value)
        for key in allowed:
            if key not in dims and key not in axes:
                raise self.error(f"{func} needs {key}=; usage: {usage}", Loc(*_end_of_call(self.source, locs)))
        return dims, axes

    def lower_renames(self, func: str, keywords: list[ast.KwArg], usage: str,
                      locs: dict[str, Loc]) -> dict[str, str]:
        """``relabel``'s OLD=NEW dim pairs, in order."""
        renames: dict[str, str] = {}
        for kw in keywords:
            if not _DIM_RE.fullmatch(kw.key.text):  # e.g. relabel(a, over=E)
                raise self.error(f"{func} takes OLD=NEW dim pairs such as L=S, not '{kw.key.text}='; "
                                 f"usage: {usage}", kw.key.loc)
            old = self.dim(kw.key)
            if not isinstance(kw.value, ast.Name) or not _DIM_RE.fullmatch(kw.value.text):
                raise self.error(f"{func} renames a dim to a dim: write {old}=S", kw.value.loc)
            if old in renames:
                raise self.error(f"dim {old} is relabelled twice", kw.key.loc)
            renames[old] = self.dim(kw.value)
            locs[old] = kw.key.loc
        if not renames:
            # Located like a missing keyword: at the ')' of the call (it had no location).
            raise self.error(f"{func} needs at least one OLD=NEW dim pair; usage: {usage}",
                             Loc(*_end_of_call(self.source, locs)))
        return renames

    def einsum_spec(self, spec: ast.StrArg) -> tuple[tuple[str, ...], str]:
        """A checked einsum spec: (operand letters, result letters)."""
        text = spec.text
        if not _SPEC_RE.fullmatch(text):
            raise self.error(f'malformed einsum spec "{text}": expected operand dims and the result, '
                             'e.g. "BLE,EF->BLF", with no spaces', spec.loc)
        lhs, _, rhs = text.partition("->")
        inputs = lhs.split(",")
        if len(inputs) > 2:
            raise self.error(f'einsum takes one or two operands, but "{text}" has {len(inputs)}', spec.loc)
        self.check_spec_letters(spec, inputs + [rhs])
        if not rhs:
            raise self.error("the einsum result has no dims; every value needs at least one dim",
                             _spec_loc(spec, len(text)))
        for i, letter in enumerate(rhs):
            if all(letter not in part for part in inputs):
                raise self.error(f"einsum output dim {letter} appears in no operand",
                                 _spec_loc(spec, len(lhs) + 2 + i))
        return tuple(inputs), rhs

    def check_spec_letters(self, spec: ast.StrArg, parts: list[str]) -> None:
        offset = 0
        for part in parts:
            for i, letter in enumerate(part):
                at = _spec_loc(spec, offset + i)
                if not letter.isupper():
                    raise self.error(f"einsum letters are dims (upper case), got '{letter}'", at)
                if letter not in self.dims:
                    raise self.error(f"undeclared dim {letter} in einsum spec", at,
                                     hint=f"declare its size with 'dims {letter}=N'")
                if letter in part[:i]:
                    raise self.error(f'dim {letter} appears twice in "{part}"', at)
            offset += len(part) + 1


def _spec_loc(spec: ast.StrArg, offset: int) -> Loc:
    """Where character ``offset`` of a spec string is (after its opening quote)."""
    return Loc(spec.loc.line, spec.loc.col + 1 + offset)


def _end_of_call(source: Source, locs: dict[str, Loc]) -> tuple[int, int]:
    """Best position for a 'missing keyword' caret: the ')' after the last argument."""
    if not locs:
        return (0, 0)
    last = max(locs.values(), key=lambda loc: (loc.line, loc.col))
    text = source.line_text(last.line)
    close = text.find(")", last.col - 1)
    return (last.line, close + 1 if close >= 0 else last.col)


def _usage(func: str, sig: Signature) -> str:
    words = {ArgKind.TENSOR: "a", ArgKind.GAIN: "g", ArgKind.SPEC: '"SPEC"', ArgKind.DIM: "DIM"}
    parts: list[str] = []
    tensors = iter("abc")
    for i, kind in enumerate(sig.positional):
        word = next(tensors) if kind is ArgKind.TENSOR else words[kind]
        if kind is ArgKind.DIM:
            word = "L" if "L" not in parts else "S"
        optional = i >= len(sig.positional) - sig.optional
        parts.append(f"[{word}]" if optional else word)
    for key, kind in sig.keywords:
        parts.append(f"{key}={'AXES' if kind is ArgKind.AXES else 'DIM'}")
    if sig.dim_keywords:
        parts.append("OLD=NEW")
    return f"{func}({', '.join(parts)})"
