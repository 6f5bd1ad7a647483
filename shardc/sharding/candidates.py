"""Candidate operand layouts for each op kind: the choices the sharding pass weighs.

For every op the pass asks this table (keyed by op kind) for a short list of
ways to lay out its operands so that the op's rule (:mod:`shardc.sharding.rules`) holds
-- e.g. for an einsum, "keep the weight where it is and move the activation to
agree with it".  The layout search (:mod:`shardc.sharding.search`) weighs every
legal candidate of every op together; between plans of equal estimated time, and
for the greedy policy between candidates moving equal bytes, the earlier candidate
wins, so the order below is the preference:

* a weight or KV cache (a *stationary* operand) sends nothing, except that a
  weight-gathered preset first gathers it into its compute layout;
* a pending partial sum is carried along while the consumer is linear, and
  otherwise completed into the strategy's preferred dim (a reduce-scatter into
  a hidden dim, the paper's rule) or into the layout of the other operand, or
  else into any other dim it divides or by an all-reduce
  (:meth:`~shardc.sharding.presets.Strategy.completions`); an einsum may also
  complete either operand first (q and k before QK^T);
* a replicated weight or cache may be cut to agree with the other operand when
  that is a local slice (a multiquery cache meeting a batch-split q);
* between two activations, the larger (then the left) operand stays put.

``None`` in the current layouts marks a *floating* operand: a weight the
preset does not place (a norm gain, a parameter of a program without the
preset's dims), which takes whatever layout its first use asks for, for free.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from shardc.ir.graph import Const, Op, OpKind, OverAttrs, RelabelAttrs, Value
from shardc.ir.layout import Layout
from shardc.ir.ops import OP_DEFS
from shardc.sharding.presets import Strategy


@dataclass(frozen=True)
class Candidate:
    """Target layout per operand (None for constants) and why each operand must move."""

    targets: tuple[Layout | None, ...]
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class OpView:
    """What the candidate functions see of an op and its operands."""

    op: Op
    current: tuple[Layout | None, ...]  # None: a constant, or a floating operand
    stationary: tuple[bool, ...]  # weights and caches: they do not move
    gatherable: tuple[bool, ...]  # weights: a weight-gathered preset gathers them before use
    names: tuple[str, ...]
    strategy: Strategy
    sizes: Mapping[str, int]

    def dims(self, i: int) -> tuple[str, ...]:
        operand = self.op.operands[i]
        assert isinstance(operand, Value)
        return operand.dims

    def tensor_indices(self) -> list[int]:
        return [i for i, o in enumerate(self.op.operands) if isinstance(o, Value)]

    def base(self, i: int) -> Layout:
        """The current layout, or replicated for a floating operand."""
        return self.current[i] or Layout.replicated(self.dims(i))


def agree(current: Layout | None, dims: tuple[str, ...], fixed: Layout, keep_partial: bool) -> Layout:
    """The layout closest to ``current`` that can meet ``fixed`` in one op.

    Shared dims take ``fixed``'s split; other dims keep the longest prefix of
    their axes that ``fixed`` does not use (dropping a suffix is one
    all-gather); pending partial sums stay only if ``keep_partial`` and
    ``fixed`` splits none of their axes.
    """
    used = fixed.used_axes
    split: dict[str, tuple[str, ...]] = {}
    for d in dims:
        if d in fixed.dims:
            split[d] = fixed.axes_of(d)
            continue
        kept: list[str] = []
        for a in (current.axes_of(d) if current is not None else ()):
            if a in used:
                break
            kept.append(a)
        split[d] = tuple(kept)
    taken = {a for axes in split.values() for a in axes}
    # Partial sums survive only on axes ``fixed`` does not split (for '+' they must equal
    # ``fixed``'s own partial sums, which the op's rule checks).
    partial = (current.partial - fixed.split_axes - taken) if (current is not None and keep_partial) \
        else frozenset()
    return Layout.of(dims, split, partial)


# --- per-kind candidate functions ------------------------------------------------------
def einsum_candidates(v: OpView) -> list[Candidate]:
    idx = v.tensor_indices()
    if len(idx) == 1:
        (i,) = idx
        return [Candidate((v.base(i),), ("",))]
    a, b = idx
    if v.stationary[a] != v.stationary[b]:
        order = [a] if v.stationary[a] else [b]
    else:
        order = [a, b]
    out: list[Candidate] = []
    for f in order:
        m = b if f == a else a
        if v.current[f] is None and v.current[m] is not None:
            continue  # a floating operand follows the other one
        fixed = v.base(f)
        reasons = ["", ""]
        if v.gatherable[f]:
            gathered = v.strategy.compute_layout(fixed)
            if gathered != fixed:
                reasons[f] = _gathered_reason(v, f, fixed, gathered)
            fixed = gathered
        fixed_choices = [(fixed, reasons[f])]
        if fixed.partial and not v.stationary[f]:
            # Or complete the fixed operand first (q and k both partial sums before QK^T).
            fixed_choices += [(c, "partial sums completed before the einsum")
                              for c in v.strategy.completions(fixed, v.sizes)]
        for fixed, why_fixed in fixed_choices:
            out.extend(_einsum_moves(v, f, m, fixed, why_fixed))
    if len(order) == 1:
        out.extend(_free_slices(v, order[0]))
    return out


def _gathered_reason(v: OpView, f: int, stored: Layout, gathered: Layout) -> str:
    """Why a weight-gathered preset all-gathers operand ``f``: the axes it really gathers (those
    its stored layout splits that the matmul layout does not), which are the preset's gathered
    axes only when the weight is split over all of them."""
    axes = "".join(a for d in stored.dims for a in stored.axes_of(d) if a not in gathered.axes_of(d))
    preset = "".join(v.strategy.gathered)
    why = f"weight-gathered ({v.strategy.ffn.value}): {v.names[f]} is gathered over {axes} before the matmul"
    if sorted(axes) != sorted(preset):
        why += f" (the preset gathers over {preset}; {v.names[f]} is split over {axes} of them)"
    return why


def _einsum_moves(v: OpView, f: int, m: int, fixed: Layout, why_fixed: str) -> list[Candidate]:
    """Operand ``f`` as ``fixed``; operand ``m`` moved to agree with it, keeping or completing its
    pending partial sums."""
    out: list[Candidate] = []
    target = agree(v.current[m], v.dims(m), fixed, keep_partial=not fixed.partial)
    reasons = ["", ""]
    reasons[f] = why_fixed
    reasons[m] = f"einsum operands agree on shared dims with {v.names[f]} ({fixed.format(v.strategy.mesh)})"
    targets: list[Layout | None] = [None, None]
    targets[f], targets[m] = fixed, target
    out.append(Candidate(tuple(targets), tuple(reasons)))
    if target.partial:
        # Or complete the moving operand first: cheaper when the result would be bigger
        # than the operand (q before QK^T).
        for completed in v.strategy.completions(v.base(m), v.sizes):
            moved = agree(completed, v.dims(m), fixed, keep_partial=False)
            targets = [None, None]
            targets[f], targets[m] = fixed, moved
            early = list(reasons)
            early[m] = (f"partial sums completed before the einsum (cheaper than completing its larger "
                        f"result); operands agree on shared dims with {v.names[f]}")
            out.append(Candidate(tuple(targets), tuple(early)))
    return out


def _free_slices(v: OpView, s: int) -> list[Candidate]:
    """The stationary operand ``s`` cut to agree with the other one, when that is a local slice.

    A weight or cache held replicated over some axes (a multiquery KV cache under attention
    by heads) can take the other operand's split over them for free, instead of the other
    operand being gathered to meet it.
    """
    m = 1 - s if len(v.op.operands) == 2 else None
    held = v.current[s]
    if m is None or held is None or v.current[m] is None:
        return []
    moving = v.base(m)
    target = agree(held, v.dims(s), moving, keep_partial=False)
    if target == held or target.partial or not _is_slice(held, target):
        return []
    targets: list[Layout | None] = [None, None]
    targets[s], targets[m] = target, moving
    reasons = ["", ""]
    reasons[s] = (f"{v.names[s]} is cut to agree with {v.names[m]} ({moving.format(v.strategy.mesh)}), "
                  "a local slice")
    return [Candidate(tuple(targets), tuple(reasons))]


def _is_slice(src: Layout, dst: Layout) -> bool:
    """Whether ``dst`` only splits further dims ``src`` holds whole or splits less (each chip keeps
    a block of what it has: no data moves)."""
    if src.partial != dst.partial:
        return False
    for d, axes in src.split:
        new = dst.axes_of(d)
        if new[:len(axes)] != axes:
            return False
    return True


def binary_candidates(v: OpView) -> list[Candidate]:
    kind = v.op.kind
    idx = v.tensor_indices()
    mesh = v.strategy.mesh
    if len(idx) == 1:  # with a number
        (i,) = idx
        other = v.op.operands[1 - i]
        assert isinstance(other, Const)
        linear = kind is OpKind.MUL or (kind is OpKind.DIV and i == 0)
        cur = v.base(i)
        target = cur if linear else v.strategy.complete(cur, v.sizes)
        targets: list[Layout | None] = [None, None]
        targets[i] = target
        reason = f"'{_symbol(kind)}' with a number needs complete values"
        return [Candidate(tuple(targets), tuple(reason if t is not None else "" for t in targets))]
    a, b = idx
    big_first = [a, b] if len(v.dims(a)) >= len(v.dims(b)) else [b, a]
    out: list[Candidate] = []
    for f in big_first:
        m = b if f == a else a
        if v.current[f] is None and v.current[m] is not None:
            continue
        cur_f = v.base(f)
        fixed_choices = [(cur_f, False)] + ([(c, True) for c in v.strategy.completions(cur_f, v.sizes)]
                                            if cur_f.partial else [])
        for fixed, complete_f in fixed_choices:
            if kind in (OpKind.ADD, OpKind.SUB):
                keep = bool(fixed.partial)
            elif kind is OpKind.MUL:
                keep = not fixed.partial
            else:  # DIV: only the numerator may stay a partial sum
                keep = m == a and not fixed.partial
            target = agree(v.current[m], v.dims(m), fixed, keep_partial=keep)
            reasons = ["", ""]
            reasons[m] = (f"operands of '{_symbol(kind)}' agree on shared dims with {v.names[f]} "
                          f"({fixed.format(mesh)})")
            if complete_f:
                reasons[f] = f"'{_symbol(kind)}' needs complete values"
            targets = [None, None]
            targets[f], targets[m] = fixed, target
            out.append(Candidate(tuple(targets), tuple(reasons)))
    return out


def _symbol(kind: OpKind) -> str:
    return OP_DEFS[kind].spelling


def keep_candidates(v: OpView) -> list[Candidate]:
    """Linear ops (neg, sum, relabel) and collectives: operands stay as they are."""
    targets = tuple(v.base(i) if isinstance(o, Value) else None for i, o in enumerate(v.op.operands))
    return [Candidate(targets, tuple("" for _ in targets))]


def complete_candidates(v: OpView) -> list[Candidate]:
    """Non-linear ops of one operand: the operand must hold complete values (each way of completing)."""
    why = f"{v.op.kind} needs complete values (no pending partial sums)"
    return [Candidate((target,), (why,)) for target in v.strategy.completions(v.base(0), v.sizes)]


def norm_candidates(v: OpView) -> list[Candidate]:
    assert isinstance(v.op.attrs, OverAttrs)
    out = []
    for x in v.strategy.completions(v.base(0), v.sizes):
        reasons = [f"{v.op.kind} needs complete values (no pending partial sums)"]
        targets: list[Layout | None] = [x]
        if len(v.op.operands) == 2:
            over = v.op.attrs.dim
            targets.append(Layout(((over, x.axes_of(over)),)))
            reasons.append(f"the gain of {v.op.kind} is split like {over} of its operand")
        out.append(Candidate(tuple(targets), tuple(reasons)))
    return out


def last_candidates(v: OpView) -> list[Candidate]:
    """``last(a, L=T)``: the operand with L unsplit (gathered first if it is split)."""
    assert isinstance(v.op.attrs, RelabelAttrs)
    ((old, new),) = v.op.attrs.renames
    cur = v.base(0)
    target = Layout(tuple((d, () if d == old else axes) for d, axes in cur.split)).with_partial(cur.partial)
    return [Candidate((target,), (f"last keeps the end of {old}, so {old} must be unsplit",))]


CandidateFn = Callable[[OpView], list[Candidate]]

CANDIDATES: dict[OpKind, CandidateFn] = {
    OpKind.EINSUM: einsum_candidates,
    OpKind.ADD: binary_candidates,
    OpKind.SUB: binary_candidates,
    OpKind.MUL: binary_candidates,
    OpKind.DIV: binary_candidates,
    OpKind.NEG: keep_candidates,
    OpKind.GELU: complete_candidates,
    OpKind.RELU: complete_candidates,
    OpKind.SILU: complete_candidates,
    OpKind.TANH: complete_candidates,
    OpKind.EXP: complete_candidates,
    OpKind.LAYERNORM: norm_candidates,
    OpKind.RMSNORM: norm_candidates,
    OpKind.SOFTMAX: complete_candidates,
    OpKind.SUM: keep_candidates,
    OpKind.CAUSAL: complete_candidates,
    OpKind.RELABEL: keep_candidates,
    OpKind.LAST: last_candidates,
    OpKind.ALL_GATHER: keep_candidates,
    OpKind.REDUCE_SCATTER: keep_candidates,
    OpKind.ALL_REDUCE: keep_candidates,
    OpKind.ALL_TO_ALL: keep_candidates,
    OpKind.SLICE: keep_candidates,
}
