"""The op table: for every :class:`~shardc.ir.graph.OpKind`, how it is spelled and typed.

Per-op behaviour lives in tables keyed by op kind (as in JAX's jaxpr
interpreters): this module holds the *signature* (how a call is written) and
the *shape rule* (result dims from operand dims).  The sharding rules, NumPy
implementations and costs live in their own tables in later modules; a test
checks that every op kind has an entry in every table.

Shape rules raise :class:`OpTypeError`, which says which operand or keyword is
wrong; the frontend turns it into a located :class:`~shardc.errors.ShardcError`
with the caret under that operand.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Mapping, Sequence, TypeVar

from shardc.ir.graph import (
    BINARY,
    Attrs,
    CausalAttrs,
    CollectiveAttrs,
    Const,
    DType,
    EinsumAttrs,
    NoAttrs,
    Operand,
    OpKind,
    OverAttrs,
    RelabelAttrs,
    Value,
)


class OpTypeError(Exception):
    """A shape-rule failure; ``operand`` (0-based) or ``keyword`` says where."""

    def __init__(self, message: str, operand: int | None = None, keyword: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.operand = operand
        self.keyword = keyword


class ArgKind(enum.Enum):
    """What a positional argument or keyword of a call must be."""

    TENSOR = "a tensor"
    GAIN = "a name"  # the optional gain of a norm: a plain name, not an expression
    SPEC = "an einsum spec string"
    DIM = "a dim"
    AXES = "mesh axes"


@dataclass(frozen=True)
class Signature:
    """How a call is written: positional args (the last ``optional`` may be left out) and keywords."""

    positional: tuple[ArgKind, ...]
    optional: int = 0
    keywords: tuple[tuple[str, ArgKind], ...] = ()
    dim_keywords: bool = False  # relabel(a, L=S): keywords are dims


def _dims_text(dims: tuple[str, ...]) -> str:
    return "[" + ", ".join(dims) + "]"


def _dims(operand: Operand) -> tuple[str, ...]:
    assert isinstance(operand, Value)
    return operand.dims


# --- shape rules: (operands, attrs, sizes) -> result dims ------------------------------
ShapeRule = Callable[[tuple[Operand, ...], Attrs, Mapping[str, int]], tuple[str, ...]]


def einsum_dims(operands: tuple[Operand, ...], attrs: Attrs, sizes: Mapping[str, int]) -> tuple[str, ...]:
    assert isinstance(attrs, EinsumAttrs)
    if len(attrs.inputs) != len(operands):
        raise OpTypeError(
            f'einsum spec "{attrs.spec}" has {len(attrs.inputs)} operand(s) but the call passes '
            f"{len(operands)}",
            keyword="spec",
        )
    for i, (letters, operand) in enumerate(zip(attrs.inputs, operands)):
        dims = _dims(operand)
        if tuple(letters) != dims:
            raise OpTypeError(
                f'einsum operand {i + 1} has dims {_dims_text(dims)} but the spec says "{letters}"',
                operand=i,
            )
    seen = {d for letters in attrs.inputs for d in letters}
    for d in attrs.output:
        if d not in seen:
            raise OpTypeError(f"einsum output dim {d} appears in no operand", keyword="spec")
    return tuple(attrs.output)


def broadcast_dims(operands: tuple[Operand, ...], attrs: Attrs, sizes: Mapping[str, int]) -> tuple[str, ...]:
    """Dims of the operand with more dims (left on a tie); the other's must be a subset."""
    left, right = operands
    if isinstance(left, Const):
        return _dims(right)
    if isinstance(right, Const):
        return _dims(left)
    big, small, small_index = (left, right, 1) if len(left.dims) >= len(right.dims) else (right, left, 0)
    missing = [d for d in small.dims if d not in big.dims]
    if missing:
        raise OpTypeError(
            f"cannot broadcast {_dims_text(small.dims)} against {_dims_text(big.dims)}: "
            f"dim{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"{'are' if len(missing) > 1 else 'is'} not in the larger operand",
            operand=small_index,
        )
    return big.dims


def same_dims(operands: tuple[Operand, ...], attrs: Attrs, sizes: Mapping[str, int]) -> tuple[str, ...]:
    return _dims(operands[0])


def _check_over(dims: tuple[str, ...], attrs: Attrs) -> str:
    assert isinstance(attrs, OverAttrs)
    if attrs.dim not in dims:
        raise OpTypeError(f"over={attrs.dim}, but the operand has dims {_dims_text(dims)}", keyword="over")
    return attrs.dim


def norm_dims(operands: tuple[Operand, ...], attrs: Attrs, sizes: Mapping[str, int]) -> tuple[str, ...]:
    dims = _dims(operands[0])
    over = _check_over(dims, attrs)
    if len(operands) == 2 and _dims(operands[1]) != (over,):
        raise OpTypeError(
            f"the gain must have dims [{over}] (the over dim), but it has {_dims_text(_dims(operands[1]))}",
            operand=1,
        )
    return dims


def over_dims(operands: tuple[Operand, ...], attrs: Attrs, sizes: Mapping[str, int]) -> tuple[str, ...]:
    dims = _dims(operands[0])
    _check_over(dims, attrs)
    return dims


def sum_dims(operands: tuple[Operand, ...], attrs: Attrs, sizes: Mapping[str, int]) -> tuple[str, ...]:
    dims = _dims(operands[0])
    over = _check_over(dims, attrs)
    if len(dims) == 1:
        raise OpTypeError(
            f"sum over {over}, the only dim, would leave no dims; every value needs at least one",
            keyword="over",
        )
    return tuple(d for d in dims if d != over)


def causal_dims(operands: tuple[Operand, ...], attrs: Attrs, sizes: Mapping[str, int]) -> tuple[str, ...]:
    assert isinstance(attrs, CausalAttrs)
    dims = _dims(operands[0])
    for key, d in (("query", attrs.query), ("key", attrs.key)):
        if d not in dims:
            raise OpTypeError(f"causal: dim {d} is not a dim of the operand {_dims_text(dims)}",
                              keyword=key)
    if attrs.query == attrs.key:
        raise OpTypeError("causal needs two different dims (query, key)", keyword="key")
    return dims


def relabel_dims(operands: tuple[Operand, ...], attrs: Attrs, sizes: Mapping[str, int]) -> tuple[str, ...]:
    assert isinstance(attrs, RelabelAttrs)
    dims = _dims(operands[0])
    renames = dict(attrs.renames)
    for old, new in attrs.renames:
        if old not in dims:
            raise OpTypeError(f"relabel {old}={new}: {old} is not a dim of the operand {_dims_text(dims)}",
                              keyword=old)
        if sizes[old] != sizes[new]:
            raise OpTypeError(
                f"relabel {old}={new}: sizes differ ({old}={sizes[old]}, {new}={sizes[new]})", keyword=old
            )
    result = tuple(renames.get(d, d) for d in dims)
    if len(set(result)) != len(result):
        raise OpTypeError(f"relabel would give dims {_dims_text(result)}, with a dim twice",
                          keyword=attrs.renames[0][0])
    return result


def last_dims(operands: tuple[Operand, ...], attrs: Attrs, sizes: Mapping[str, int]) -> tuple[str, ...]:
    """``last(a, L=T)``: the last size(T) positions along L, the dim renamed T."""
    assert isinstance(attrs, RelabelAttrs)
    dims = _dims(operands[0])
    if len(attrs.renames) != 1:
        raise OpTypeError("last keeps the end of one dim: write last(a, L=T), one OLD=NEW pair",
                          keyword=attrs.renames[1][0])
    ((old, new),) = attrs.renames
    if old not in dims:
        raise OpTypeError(f"last {old}={new}: {old} is not a dim of the operand {_dims_text(dims)}", keyword=old)
    if new in dims:
        raise OpTypeError(f"last {old}={new}: the operand already has the dim {new}", keyword=old)
    if sizes[new] > sizes[old]:
        raise OpTypeError(f"last {old}={new}: cannot keep {sizes[new]} positions of {old}={sizes[old]}",
                          keyword=old)
    return tuple(new if d == old else d for d in dims)


def collective_dims(operands: tuple[Operand, ...], attrs: Attrs, sizes: Mapping[str, int]) -> tuple[str, ...]:
    """Collectives change the layout, never the (global) shape."""
    assert isinstance(attrs, CollectiveAttrs)
    dims = _dims(operands[0])
    for key, d in (("dim", attrs.dim), ("from", attrs.src), ("to", attrs.dst)):
        if d is not None and d not in dims:
            raise OpTypeError(f"{key}={d}, but the operand has dims {_dims_text(dims)}", keyword=key)
    return dims


# --- attributes: built from a call's arguments, spelled back as arguments -------------
@dataclass(frozen=True)
class CallArgs:
    """The non-tensor arguments of a call, already checked by the frontend.

    ``spec``: an einsum spec as (operand letters, result letters); ``dims``: the
    positional dim arguments, in order; ``dim_keywords`` / ``axes_keywords``:
    keywords whose value is a dim / mesh axes (``relabel``'s OLD=NEW pairs are
    dim keywords).
    """

    spec: tuple[tuple[str, ...], str] | None = None
    dims: tuple[str, ...] = ()
    dim_keywords: Mapping[str, str] = field(default_factory=dict)
    axes_keywords: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


A = TypeVar("A", NoAttrs, EinsumAttrs, OverAttrs, CausalAttrs, RelabelAttrs, CollectiveAttrs)
#: Argument texts an op's attributes print as: (before the operands, after them).
ArgTexts = tuple[tuple[str, ...], tuple[str, ...]]


@dataclass(frozen=True)
class AttrsForm(Generic[A]):
    """The attrs class of an op kind, how the frontend builds it and how it is spelled.

    ``spell`` gets the op's signature too: a collective spells exactly the
    keywords its signature has, in that order.
    """

    cls: type[A]
    build: Callable[[CallArgs], A]
    spell: Callable[[A, Signature], ArgTexts]


def _spell_collective(a: CollectiveAttrs, sig: Signature) -> ArgTexts:
    values = {"over": "".join(a.axes), "dim": a.dim, "from": a.src, "to": a.dst}
    return (), tuple(f"{key}={values[key]}" for key, _ in sig.keywords)


def _build_einsum(args: CallArgs) -> EinsumAttrs:
    assert args.spec is not None
    return EinsumAttrs(*args.spec)


NO_ATTRS = AttrsForm(NoAttrs, lambda args: NoAttrs(), lambda a, sig: ((), ()))
EINSUM_ATTRS = AttrsForm(EinsumAttrs, _build_einsum, lambda a, sig: ((f'"{a.spec}"',), ()))
OVER_ATTRS = AttrsForm(OverAttrs, lambda args: OverAttrs(args.dim_keywords["over"]),
                       lambda a, sig: ((), (f"over={a.dim}",)))
CAUSAL_ATTRS = AttrsForm(CausalAttrs, lambda args: CausalAttrs(*args.dims),
                         lambda a, sig: ((), (a.query, a.key)))
RELABEL_ATTRS = AttrsForm(RelabelAttrs, lambda args: RelabelAttrs(tuple(args.dim_keywords.items())),
                          lambda a, sig: ((), tuple(f"{old}={new}" for old, new in a.renames)))
COLLECTIVE_ATTRS = AttrsForm(
    CollectiveAttrs,
    lambda args: CollectiveAttrs(args.axes_keywords["over"], args.dim_keywords.get("dim"),
                                 args.dim_keywords.get("from"), args.dim_keywords.get("to")),
    _spell_collective,
)


# --- the table ---------------------------------------------------------------------
@dataclass(frozen=True)
class OpDef:
    """Spelling, signature, shape rule and attributes of one op kind."""

    kind: OpKind
    spelling: str  # the call name, or the infix symbol for + - * / and unary -
    signature: Signature
    shape_rule: ShapeRule
    attrs: AttrsForm[Any] = NO_ATTRS


_T, _G, _S, _D, _A = ArgKind.TENSOR, ArgKind.GAIN, ArgKind.SPEC, ArgKind.DIM, ArgKind.AXES
_UNARY_SIG = Signature((_T,))
_OVER_SIG = Signature((_T,), keywords=(("over", _D),))
_NORM_SIG = Signature((_T, _G), optional=1, keywords=(("over", _D),))

OP_DEFS: dict[OpKind, OpDef] = {
    OpKind.EINSUM: OpDef(OpKind.EINSUM, "einsum", Signature((_S, _T, _T), optional=1),
                         einsum_dims, EINSUM_ATTRS),
    OpKind.ADD: OpDef(OpKind.ADD, "+", Signature((_T, _T)), broadcast_dims),
    OpKind.SUB: OpDef(OpKind.SUB, "-", Signature((_T, _T)), broadcast_dims),
    OpKind.MUL: OpDef(OpKind.MUL, "*", Signature((_T, _T)), broadcast_dims),
    OpKind.DIV: OpDef(OpKind.DIV, "/", Signature((_T, _T)), broadcast_dims),
    OpKind.NEG: OpDef(OpKind.NEG, "-", _UNARY_SIG, same_dims),
    OpKind.GELU: OpDef(OpKind.GELU, "gelu", _UNARY_SIG, same_dims),
    OpKind.RELU: OpDef(OpKind.RELU, "relu", _UNARY_SIG, same_dims),
    OpKind.SILU: OpDef(OpKind.SILU, "silu", _UNARY_SIG, same_dims),
    OpKind.TANH: OpDef(OpKind.TANH, "tanh", _UNARY_SIG, same_dims),
    OpKind.EXP: OpDef(OpKind.EXP, "exp", _UNARY_SIG, same_dims),
    OpKind.LAYERNORM: OpDef(OpKind.LAYERNORM, "layernorm", _NORM_SIG, norm_dims, OVER_ATTRS),
    OpKind.RMSNORM: OpDef(OpKind.RMSNORM, "rmsnorm", _NORM_SIG, norm_dims, OVER_ATTRS),
    OpKind.SOFTMAX: OpDef(OpKind.SOFTMAX, "softmax", _OVER_SIG, over_dims, OVER_ATTRS),
    OpKind.SUM: OpDef(OpKind.SUM, "sum", _OVER_SIG, sum_dims, OVER_ATTRS),
    OpKind.CAUSAL: OpDef(OpKind.CAUSAL, "causal", Signature((_T, _D, _D)), causal_dims, CAUSAL_ATTRS),
    OpKind.RELABEL: OpDef(OpKind.RELABEL, "relabel", Signature((_T,), dim_keywords=True),
                          relabel_dims, RELABEL_ATTRS),
    OpKind.LAST: OpDef(OpKind.LAST, "last", Signature((_T,), dim_keywords=True), last_dims, RELABEL_ATTRS),
    OpKind.ALL_GATHER: OpDef(OpKind.ALL_GATHER, "all_gather",
                             Signature((_T,), keywords=(("over", _A),)), collective_dims, COLLECTIVE_ATTRS),
    OpKind.REDUCE_SCATTER: OpDef(OpKind.REDUCE_SCATTER, "reduce_scatter",
                                 Signature((_T,), keywords=(("over", _A), ("dim", _D))),
                                 collective_dims, COLLECTIVE_ATTRS),
    OpKind.ALL_REDUCE: OpDef(OpKind.ALL_REDUCE, "all_reduce",
                             Signature((_T,), keywords=(("over", _A),)), collective_dims, COLLECTIVE_ATTRS),
    OpKind.ALL_TO_ALL: OpDef(OpKind.ALL_TO_ALL, "all_to_all",
                             Signature((_T,), keywords=(("over", _A), ("from", _D), ("to", _D))),
                             collective_dims, COLLECTIVE_ATTRS),
    OpKind.SLICE: OpDef(OpKind.SLICE, "slice",
                        Signature((_T,), keywords=(("over", _A), ("dim", _D))),
                        collective_dims, COLLECTIVE_ATTRS),
}

#: Ops written as calls, by name.
CALLS: dict[str, OpKind] = {d.spelling: k for k, d in OP_DEFS.items() if d.spelling.isidentifier()}
#: Infix operators.
INFIX: dict[str, OpKind] = {OP_DEFS[k].spelling: k for k in BINARY}


def result_dtype(kind: OpKind, operands: tuple[Operand, ...]) -> DType:
    """f32 if any tensor operand is f32, else bf16 (int8 and f16 compute as bf16).

    Collectives move data without computing: they keep the dtype (an
    all-gather of int8 weights sends int8 bytes).
    """
    if kind.is_collective:
        first = operands[0]
        assert isinstance(first, Value)
        return first.dtype
    if any(isinstance(o, Value) and o.dtype is DType.F32 for o in operands):
        return DType.F32
    return DType.BF16


def result_dims(kind: OpKind, operands: tuple[Operand, ...], attrs: Attrs,
                sizes: Mapping[str, int]) -> tuple[str, ...]:
    """Apply ``kind``'s shape rule (raises OpTypeError)."""
    if kind in BINARY and all(isinstance(o, Const) for o in operands):
        raise OpTypeError("an arithmetic op needs at least one tensor operand")
    return OP_DEFS[kind].shape_rule(operands, attrs, sizes)


def spell_call(kind: OpKind, attrs: Attrs, operands: Sequence[str]) -> str:
    """A call as the language writes it, from its operands' texts: ``reduce_scatter(x, over=yz, dim=E)``.

    With no operands, the collective alone as the resharding log names it:
    ``reduce_scatter(over=yz, dim=E)``.
    """
    opdef = OP_DEFS[kind]
    before, after = opdef.attrs.spell(attrs, opdef.signature)
    return f"{opdef.spelling}({', '.join((*before, *operands, *after))})"


def build_attrs(kind: OpKind, args: CallArgs) -> Attrs:
    """The attributes of a ``kind`` call with these (checked) non-tensor arguments."""
    attrs: Attrs = OP_DEFS[kind].attrs.build(args)
    return attrs
