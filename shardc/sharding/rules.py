"""Sharding rules: what layout each op kind produces from its operands' layouts.

One rule per op kind (a table keyed by :class:`~shardc.ir.graph.OpKind`), each a
small function ``(ctx) -> Inferred`` that either derives the result layout or
raises :class:`ShardcError` saying why the operands' layouts cannot be
computed locally.  The sharding pass uses these rules to check candidate
layouts and to annotate results; the sharded-IR verifier uses the very same
rules to recompute every annotation of a sharded program.

The einsum rule is the factor rule of the paper (and of GSPMD/Shardy):

* operands agree on the split of every dim they share;
* a mesh axis splits at most one dim across both operands;
* an output dim keeps its split; the axes of a contracted dim become pending
  partial sums (``BLF_yz (partialsum-x)``);
* at most one operand may hold partial sums (einsum is linear in each operand),
  and the other must not use those axes.

Linearity decides where partial sums may flow: ``a * 2``, ``-a``, ``sum``,
``relabel``, ``last``, ``a + b`` with equal partial sums on both, a partial-sum factor of
``*`` or numerator of ``/`` keep them; every non-linear op (activations,
norms, softmax, causal) needs complete values.  Norms and softmax over a split
dim are legal: each chip computes partial row statistics, which are summed by
a small all-reduce over that dim's axes inside the op (``Inferred.stats_axes``,
:mod:`shardc.sharding.stats`),
as the paper's 2D layout does for layernorm over ``BLE_x``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from shardc.errors import ShardcError
from shardc.ir.graph import (
    CollectiveAttrs,
    Const,
    EinsumAttrs,
    Operand,
    OpKind,
    OverAttrs,
    RelabelAttrs,
    Value,
)
from shardc.ir.layout import Layout
from shardc.ir.mesh import Mesh
from shardc.ir.ops import OP_DEFS
from shardc.sharding.reshard import apply_collective
from shardc.sharding.stats import stats_axes


@dataclass(frozen=True)
class Inferred:
    """A result layout, and the axes of an implicit statistics all-reduce (norms, softmax)."""

    layout: Layout
    stats_axes: tuple[str, ...] = ()


@dataclass(frozen=True)
class RuleContext:
    """Everything a rule may look at: the op and the layouts its operands are in."""

    kind: OpKind
    attrs: object
    operands: tuple[Operand, ...]
    layouts: tuple[Layout | None, ...]  # None for constants
    result_dims: tuple[str, ...]
    mesh: Mesh
    sizes: Mapping[str, int]

    @property
    def tensor_layouts(self) -> tuple[Layout, ...]:
        return tuple(layout for layout in self.layouts if layout is not None)


def _fmt(layout: Layout, mesh: Mesh) -> str:
    return layout.format(mesh)


def _check_axis_dims(layouts: tuple[Layout, ...], what: str) -> dict[str, str]:
    """Axis -> the one dim it splits across all ``layouts`` (error if it splits two)."""
    axis_dim: dict[str, str] = {}
    for layout in layouts:
        for d, axes in layout.split:
            for a in axes:
                if axis_dim.setdefault(a, d) != d:
                    raise ShardcError(f"{what}: mesh axis '{a}' splits {axis_dim[a]} in one operand and "
                                      f"{d} in the other")
    return axis_dim


def _check_shared(layouts: tuple[Layout, ...], mesh: Mesh, what: str) -> None:
    """Operands agree on the split of every dim they share."""
    if len(layouts) < 2:
        return
    a, b = layouts
    for d in a.dims:
        if d in b.dims and a.axes_of(d) != b.axes_of(d):
            raise ShardcError(f"{what}: operands disagree on dim {d} ({_fmt(a, mesh)} vs {_fmt(b, mesh)})")


def _complete(layout: Layout, mesh: Mesh, what: str) -> None:
    if layout.partial:
        raise ShardcError(f"{what} needs complete values, but its operand holds partial sums "
                          f"({_fmt(layout, mesh)})")


# --- the rules ---------------------------------------------------------------------------
def einsum_rule(ctx: RuleContext) -> Inferred:
    assert isinstance(ctx.attrs, EinsumAttrs)
    layouts = ctx.tensor_layouts
    what = f'einsum "{ctx.attrs.spec}"'
    partial = [layout for layout in layouts if layout.partial]
    if len(partial) > 1:
        raise ShardcError(f"{what}: both operands hold partial sums")
    _check_shared(layouts, ctx.mesh, what)
    axis_dim = _check_axis_dims(layouts, what)
    pending = partial[0].partial if partial else frozenset()
    clash = pending & set(axis_dim)
    if clash:
        raise ShardcError(f"{what}: axis '{sorted(clash)[0]}' holds partial sums in one operand and "
                          "splits a dim in the other")
    split = {d: axes for layout in layouts for d, axes in layout.split}
    out = Layout(tuple((d, split[d]) for d in ctx.result_dims))
    contracted = {a for d, axes in split.items() if d not in ctx.result_dims for a in axes}
    return Inferred(out.with_partial(pending | contracted))


def _linear_positions(kind: OpKind) -> tuple[bool, bool]:
    """Which operands of ``+ - * /`` may hold partial sums on their own."""
    if kind is OpKind.MUL:
        return True, True  # one factor at a time: checked below
    if kind is OpKind.DIV:
        return True, False
    return False, False  # + and -: only when both hold the same partial sums


def binary_rule(ctx: RuleContext) -> Inferred:
    what = f"'{OP_DEFS[ctx.kind].spelling}'"
    a, b = ctx.operands
    la, lb = ctx.layouts
    if isinstance(a, Const) or isinstance(b, Const):
        layout = lb if isinstance(a, Const) else la
        assert layout is not None
        linear = ctx.kind is OpKind.MUL or (ctx.kind is OpKind.DIV and isinstance(b, Const))
        if layout.partial and not linear:
            raise ShardcError(f"{what} with a number needs complete values, but the operand holds partial "
                              f"sums ({_fmt(layout, ctx.mesh)})")
        return Inferred(layout)
    assert la is not None and lb is not None
    _check_shared((la, lb), ctx.mesh, what)
    axis_dim = _check_axis_dims((la, lb), what)
    split = {d: axes for layout in (la, lb) for d, axes in layout.split}
    out = Layout(tuple((d, split[d]) for d in ctx.result_dims))
    if ctx.kind in (OpKind.ADD, OpKind.SUB):
        if la.partial != lb.partial:
            raise ShardcError(f"{what}: both operands must hold the same partial sums or none "
                              f"({_fmt(la, ctx.mesh)} vs {_fmt(lb, ctx.mesh)})")
        pending = la.partial
    else:
        lin_a, lin_b = _linear_positions(ctx.kind)
        if la.partial and lb.partial:
            raise ShardcError(f"{what}: both operands hold partial sums")
        if (la.partial and not lin_a) or (lb.partial and not lin_b):
            raise ShardcError(f"{what}: the divisor needs complete values")
        pending = la.partial | lb.partial
    if pending & set(axis_dim):
        raise ShardcError(f"{what}: an axis holds partial sums in one operand and splits a dim in the other")
    return Inferred(out.with_partial(pending))


def neg_rule(ctx: RuleContext) -> Inferred:
    (layout,) = ctx.tensor_layouts
    return Inferred(layout)


def elementwise_rule(ctx: RuleContext) -> Inferred:
    (layout,) = ctx.tensor_layouts
    _complete(layout, ctx.mesh, str(ctx.kind))
    return Inferred(layout)


def norm_rule(ctx: RuleContext) -> Inferred:
    assert isinstance(ctx.attrs, OverAttrs)
    layout = ctx.tensor_layouts[0]
    _complete(layout, ctx.mesh, str(ctx.kind))
    over_axes = layout.axes_of(ctx.attrs.dim)
    if len(ctx.tensor_layouts) == 2:
        gain = ctx.tensor_layouts[1]
        want = Layout(((ctx.attrs.dim, over_axes),))
        if gain != want:
            raise ShardcError(f"{ctx.kind}: the gain must be split like the normalised dim "
                              f"({_fmt(want, ctx.mesh)}), but it is {_fmt(gain, ctx.mesh)}")
    return Inferred(layout, stats_axes(layout, ctx.attrs.dim))


def sum_rule(ctx: RuleContext) -> Inferred:
    assert isinstance(ctx.attrs, OverAttrs)
    (layout,) = ctx.tensor_layouts
    over = layout.axes_of(ctx.attrs.dim)
    out = Layout(tuple((d, a) for d, a in layout.split if d != ctx.attrs.dim))
    return Inferred(out.with_partial(layout.partial | set(over)))


def relabel_rule(ctx: RuleContext) -> Inferred:
    assert isinstance(ctx.attrs, RelabelAttrs)
    (layout,) = ctx.tensor_layouts
    return Inferred(layout.renamed(dict(ctx.attrs.renames)))


def last_rule(ctx: RuleContext) -> Inferred:
    """``last(a, L=T)`` slices L: it must be unsplit (every chip holds the last positions); partial sums pass."""
    assert isinstance(ctx.attrs, RelabelAttrs)
    (layout,) = ctx.tensor_layouts
    ((old, new),) = ctx.attrs.renames
    if layout.axes_of(old):
        raise ShardcError(f"last {old}={new}: {old} must be unsplit to keep its last positions, but the operand "
                          f"is {_fmt(layout, ctx.mesh)}")
    return Inferred(layout.renamed({old: new}))


def collective_rule(ctx: RuleContext) -> Inferred:
    assert isinstance(ctx.attrs, CollectiveAttrs)
    (layout,) = ctx.tensor_layouts
    return Inferred(apply_collective(layout, ctx.kind, ctx.attrs, ctx.mesh, ctx.sizes))


Rule = Callable[[RuleContext], Inferred]

RULES: dict[OpKind, Rule] = {
    OpKind.EINSUM: einsum_rule,
    OpKind.ADD: binary_rule,
    OpKind.SUB: binary_rule,
    OpKind.MUL: binary_rule,
    OpKind.DIV: binary_rule,
    OpKind.NEG: neg_rule,
    OpKind.GELU: elementwise_rule,
    OpKind.RELU: elementwise_rule,
    OpKind.SILU: elementwise_rule,
    OpKind.TANH: elementwise_rule,
    OpKind.EXP: elementwise_rule,
    OpKind.LAYERNORM: norm_rule,
    OpKind.RMSNORM: norm_rule,
    OpKind.SOFTMAX: norm_rule,  # a norm without a gain: complete values, statistics over its dim
    OpKind.SUM: sum_rule,
    OpKind.CAUSAL: elementwise_rule,  # the mask uses global positions: any split works
    OpKind.RELABEL: relabel_rule,
    OpKind.LAST: last_rule,
    OpKind.ALL_GATHER: collective_rule,
    OpKind.REDUCE_SCATTER: collective_rule,
    OpKind.ALL_REDUCE: collective_rule,
    OpKind.ALL_TO_ALL: collective_rule,
    OpKind.SLICE: collective_rule,
}


def infer(kind: OpKind, attrs: object, operands: tuple[Operand, ...], layouts: tuple[Layout | None, ...],
          result_dims: tuple[str, ...], mesh: Mesh, sizes: Mapping[str, int]) -> Inferred:
    """The result layout of one op from its operands' layouts (ShardcError if illegal)."""
    ctx = RuleContext(kind, attrs, operands, layouts, result_dims, mesh, sizes)
    return RULES[kind](ctx)


def operand_layouts(operands: tuple[Operand, ...]) -> tuple[Layout | None, ...]:
    """The layouts of an op's operands as annotated (None for constants)."""
    return tuple(o.layout if isinstance(o, Value) else None for o in operands)
