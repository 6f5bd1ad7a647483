"""The paper's layouts as presets: data that tells the sharding pass where things live.

A :class:`Strategy` is what the pass asks about policy; everything else (which
collectives, in which order) follows from the op rules and :func:`reshard`.
It says:

* ``weights``: where each dim of a weight (``param``) is split, as an ordered
  map dim -> mesh axes.  ``E_x F_yz`` for 2D weight-stationary is ``{E: x,
  F: yz}``; heads (``H``, or ``K`` then ``G``) and the vocabulary ``V`` are
  split like ``F``.  Weight-gathered presets store weights like 2D-WS and
  *gather* the axes in ``gathered`` right before each matmul.
* ``activations``: where activations rest between layers (``BLE_xyz``,
  ``B_x L E_yz``...), and therefore the layout of every ``input``.
* ``reduce_into``: which dims a pending partial sum is reduce-scattered into,
  in order of preference (hidden dims first: the paper's design rule), when a
  non-linear op needs complete values.
* ``caches``: where the KV cache lives: over heads (``heads``) or over batch
  (``batch``, the paper's optimized multiquery layout).

Axis roles: on a mesh with axes ``(a0, a1, a2)``, ``x`` is ``a0`` and ``yz``
is ``(a1, a2)``; on smaller meshes the missing roles are simply empty.  A
preset touches only the dims it names, so a program without them is sharded
from its pins alone; ``--ffn none`` places nothing but what the pins say
(inputs replicated, weights where their first use needs them).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Mapping

from shardc.errors import ShardcError
from shardc.ir.graph import DeclKind, Graph
from shardc.ir.layout import Layout
from shardc.ir.mesh import Mesh


class FFN(enum.Enum):
    """Feed-forward layouts of the paper (§3.2)."""

    WS_1D = "1d-ws"
    WS_2D = "2d-ws"
    WG_X = "wg-x"
    WG_XY = "wg-xy"
    WG_XYZ = "wg-xyz"
    NONE = "none"  # pins only


class Attention(enum.Enum):
    """Attention layouts of the paper (§3.3)."""

    HEADS = "heads"
    BATCH = "batch"


FFN_CHOICES = tuple(f.value for f in FFN if f is not FFN.NONE)
ATTENTION_CHOICES = tuple(a.value for a in Attention)

# Dims a preset recognises (PAPER.md §1): model, hidden, heads, KV heads, query heads per KV head, vocab.
HEAD_DIMS = ("H", "K", "G")
WIDE_DIMS = ("F",) + HEAD_DIMS + ("V",)  # split like F in the weights


@dataclass(frozen=True)
class Strategy:
    """Policy for the sharding pass (see module docstring)."""

    ffn: FFN
    attention: Attention
    mesh: Mesh
    weights: tuple[tuple[str, tuple[str, ...]], ...]
    gathered: tuple[str, ...]
    activations: tuple[tuple[str, tuple[str, ...]], ...]
    reduce_into: tuple[str, ...]
    cache_batch_axes: tuple[str, ...]  # batch attention: the split of B in caches

    # -- the layouts ----------------------------------------------------------------------
    def weight_layout(self, dims: tuple[str, ...], sizes: Mapping[str, int], name: str) -> Layout | None:
        """Storage layout of a weight, or None when the preset does not cover it (1-dim gains)."""
        if len(dims) < 2 or not any(d in dict(self.weights) for d in dims):
            return None
        return _assign(dims, self.weights, sizes, self.mesh, f"weight '{name}'", strict=True)

    def compute_layout(self, stored: Layout) -> Layout:
        """The layout a weight takes for its matmul: ``stored`` minus the gathered axes.

        Only a suffix of each dim's axes can be gathered (block order), so
        gathered axes are stripped from the minor end of each dim.
        """
        if not self.gathered:
            return stored
        split = []
        for d, axes in stored.split:
            keep = list(axes)
            while keep and keep[-1] in self.gathered:
                keep.pop()
            split.append((d, tuple(keep)))
        return Layout(tuple(split))

    def activation_layout(self, dims: tuple[str, ...], sizes: Mapping[str, int]) -> Layout:
        """Where an activation with ``dims`` rests (inputs, loop carries)."""
        return _assign(dims, self.activations, sizes, self.mesh, "activation", strict=False)

    def cache_layout(self, dims: tuple[str, ...], sizes: Mapping[str, int], name: str) -> Layout:
        """Where a KV cache lives: split over batch, or over heads like the weights."""
        if self.attention is Attention.BATCH and "B" in dims:
            return _assign(dims, (("B", self.cache_batch_axes),), sizes, self.mesh, f"cache '{name}'",
                           strict=False)
        heads = tuple((d, a) for d, a in self.compute_weights() if d in HEAD_DIMS)
        return _assign(dims, heads, sizes, self.mesh, f"cache '{name}'", strict=True)

    def compute_weights(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """The weight map after gathering (where weights are when they are used)."""
        return tuple((d, self.compute_layout(Layout(((d, axes),))).axes_of(d)) for d, axes in self.weights)

    def complete(self, layout: Layout, sizes: Mapping[str, int]) -> Layout:
        """Where a partial sum goes when a non-linear op needs complete values.

        Its axes are reduce-scattered into the first dim of ``reduce_into`` that
        divides (appended as the most-minor axes), else all-reduced.
        """
        if not layout.partial:
            return layout
        pending = self.mesh.sort_axes(layout.partial)
        for d in self.reduce_into:
            if d in layout.dims:
                axes = layout.axes_of(d) + pending
                if sizes[d] % self.mesh.group_size(axes) == 0:
                    return layout.with_axes(d, axes).with_partial(frozenset())
        return layout.with_partial(frozenset())

    def describe(self, dims: frozenset[str] | set[str] | None = None) -> list[tuple[str, str]]:
        """The preset in the paper's notation, for ``shardc compile --explain``.

        ``dims``: the program's dims; the preset's other dims are left out.
        """
        def show(pairs: tuple[tuple[str, tuple[str, ...]], ...]) -> str:
            pairs = tuple((d, a) for d, a in pairs if dims is None or d in dims)
            return " ".join(f"{d}_{''.join(a)}" if a else d for d, a in pairs) or "(replicated)"

        rows = [("ffn", self.ffn.value), ("attention", self.attention.value),
                ("weights (stored)", show(self.weights))]
        if self.gathered:
            rows.append(("weights (gathered over " + "".join(self.gathered) + ")",
                         show(self.compute_weights())))
        rows.append(("activations rest as", show(self.activations)))
        rows.append(("partial sums reduce into",
                     ", ".join(d for d in self.reduce_into if dims is None or d in dims)))
        if self.attention is Attention.BATCH:
            rows.append(("KV cache", f"B_{''.join(self.cache_batch_axes)}" if self.cache_batch_axes else "B"))
        else:
            rows.append(("KV cache", "split over heads like the weights; replicated without a head dim"))
        return rows


def _assign(dims: tuple[str, ...], table: tuple[tuple[str, tuple[str, ...]], ...], sizes: Mapping[str, int],
            mesh: Mesh, what: str, strict: bool) -> Layout:
    """A layout over ``dims`` giving each dim in ``table`` its axes (each axis once).

    ``strict``: a dim whose size does not divide is an error (weights must
    follow the preset); otherwise the axes that do not divide are left out.
    """
    used: set[str] = set()
    split: dict[str, tuple[str, ...]] = {}
    heads_axes: tuple[str, ...] | None = None
    for d, axes in table:
        if d not in dims:
            continue
        if d in HEAD_DIMS and heads_axes is not None:
            axes = heads_axes  # K takes the head axes first, then G takes the rest
        axes = tuple(a for a in axes if a not in used)
        if d in ("K", "G"):
            taken = _divisible_prefix(axes, sizes[d], mesh)
            heads_axes = axes[len(taken):]
            axes = taken
        elif strict and sizes[d] % mesh.group_size(axes):
            product = mesh.group_size(axes)
            raise ShardcError(
                f"{what}: dim {d} of size {sizes[d]} is not divisible by {product} "
                f"(the {'·'.join(axes)} axes of mesh {mesh.spec()})",
                hint=f"pad it with --set {d}=N (a multiple of {product}), or use another mesh or preset")
        else:
            axes = _divisible_prefix(axes, sizes[d], mesh)
        split[d] = axes
        used.update(axes)
    return Layout.of(dims, split)


def _divisible_prefix(axes: tuple[str, ...], size: int, mesh: Mesh) -> tuple[str, ...]:
    out: list[str] = []
    for a in axes:
        if size % mesh.group_size(tuple(out) + (a,)):
            break
        out.append(a)
    return tuple(out)


def make_strategy(g: Graph, mesh: Mesh, ffn: str | None = None, attention: str | None = None) -> Strategy:
    """The strategy for ``g`` on ``mesh`` (defaults follow the paper's phase rule, PAPER.md §3)."""
    ffn_kind = _parse_choice(FFN, ffn or FFN.WS_2D.value, "--ffn", FFN_CHOICES + ("none",))
    if attention is None:
        attention = default_attention(g, mesh).value
    att = _parse_choice(Attention, attention, "--attention", ATTENTION_CHOICES)
    axes = mesh.names
    x, yz, all_axes = axes[:1], axes[1:], axes
    head = yz + x  # where heads (and F) land after reduce-scattering x into them (2D)
    weights: dict[str, tuple[str, ...]]
    gathered: tuple[str, ...] = ()
    if ffn_kind is FFN.WS_1D:
        weights = {d: all_axes for d in WIDE_DIMS}
        activations = {"E": all_axes}
        head = all_axes
        batch_rest: tuple[str, ...] = ()
    elif ffn_kind is FFN.NONE:
        weights, activations, batch_rest = {}, {}, ()
    else:
        weights = {"E": x, **{d: yz for d in WIDE_DIMS}}
        activations = {"E": all_axes}
        batch_rest = ()
        if ffn_kind in (FFN.WG_X, FFN.WG_XY, FFN.WG_XYZ):
            gathered = _gathered_axes(ffn_kind, axes)
            batch_rest = gathered
            activations = {"B": gathered, "E": tuple(a for a in axes if a not in gathered)}
            head = tuple(a for a in yz if a not in gathered)
    order = {"E": 0}
    weights_t = tuple(sorted(weights.items(), key=lambda kv: order.get(kv[0], 1)))
    reduce_into = ("F", "K", "G", "H", "V", "E")
    cache_batch = batch_rest + tuple(a for a in head if a not in batch_rest)
    if att is Attention.BATCH:
        reduce_into = reduce_into + ("B",)
    return Strategy(ffn_kind, att, mesh, weights_t, gathered, tuple(activations.items()), reduce_into,
                    cache_batch)


def _gathered_axes(ffn: FFN, axes: tuple[str, ...]) -> tuple[str, ...]:
    """The N-chip group a weight-gathered preset gathers weights over.

    Weights are stored ``E_x F_yz``; an all-gather removes a *suffix* of each
    dim's axes (the block order, LANGUAGE.md), so the gatherable axes are x
    (from E) and then z, y (from F, minor first).  X gathers x; XYZ gathers all;
    XY gathers two axes, which on a 3-axis mesh are x and z: the same N = X·Z
    chips as the paper's X·Y on its cubic meshes, reached by plain all-gathers.
    """
    x, yz = axes[:1], axes[1:]
    if ffn is FFN.WG_X:
        return x
    if ffn is FFN.WG_XY:
        return x + yz[-1:]
    return axes


def default_attention(g: Graph, mesh: Mesh) -> Attention:
    """``batch`` when the program reads a KV cache and B divides over the mesh, else ``heads``."""
    has_cache = any(d.kind is DeclKind.CACHE for d, _ in g.decls())
    sizes = g.sizes
    if has_cache and "B" in sizes and sizes["B"] % mesh.num_chips == 0:
        return Attention.BATCH
    return Attention.HEADS


def _parse_choice(enum_type: type, value: str, flag: str, choices: tuple[str, ...]):  # type: ignore[no-untyped-def]
    try:
        return enum_type(value)
    except ValueError:
        raise ShardcError(f"unknown {flag} preset '{value}'; choose one of {', '.join(choices)}") from None
