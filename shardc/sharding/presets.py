"""The paper's layouts as presets: one table in role letters, bound to a mesh to give a Strategy.

Two layers:

* :data:`PRESETS` -- the paper's feed-forward presets as frozen data (one
  :class:`Preset` per :class:`FFN`), written in *role* letters
  (:class:`Role`: ``x``, ``y``, ``z``) rather than mesh axes.  Each says

  - ``weights``: where each dim of a weight (``param``) is stored, as an
    ordered map dim -> roles.  ``E_x F_yz`` for 2D weight-stationary is
    ``{E: x, F: yz}``; heads (``H``, or ``K`` then ``G``) and the vocabulary
    ``V`` are split like ``F``.
  - ``gathered``: the roles whose axes weight-gathered presets *gather* right
    before each matmul (weights are stored like 2D-WS).
  - ``activations``: where activations rest between layers (``BLE_xyz``,
    ``B_x L E_yz``...), and therefore the layout of every ``input``.
  - ``reduce_into``: which dims a pending partial sum is reduce-scattered
    into, in order of preference (hidden dims first: the paper's design rule),
    when a non-linear op needs complete values.
  - ``cache_batch``: with attention by batch (:class:`Attention`, the paper's
    optimized multiquery layout), the roles B of a KV cache is split over;
    ``B`` then joins ``reduce_into`` last.  With attention by heads the cache
    is split over its head dims like the weights (after gathering).

* :func:`bind` -- a preset, a mesh, an attention layout and a *role
  assignment* (which mesh axes play ``x``, ``y``, ``z``) give the concrete
  :class:`Strategy` the sharding pass asks about policy; everything else
  (which collectives, in which order) follows from the op rules and
  :func:`reshard`.  The default assignment (:func:`default_roles`) on a mesh
  with axes ``(a0, a1, a2)`` is x = a0, y = a1, z = a2; on a 2-axis mesh
  x = a0 and z = a1 (y is empty, so ``yz`` is a1); on a 1-axis mesh only x is
  played; on a bigger mesh y takes the middle axes.  A role given no axis is
  empty, and a mesh axis that plays no role is not used by the preset.

:func:`make_strategy` is the convenience behind ``--ffn`` / ``--attention``:
names to a bound Strategy, with the paper's defaults (2d-ws; attention by
batch when the program reads a KV cache and B divides over the chips).

A preset touches only the dims it names, so a program without them is sharded
from its pins alone; ``--ffn none`` places nothing but what the pins say
(inputs replicated, weights where their first use needs them).  A custom
preset is a :class:`Preset` of one's own (often ``dataclasses.replace`` of a
row of the table), bound with :func:`bind` or handed to ``shardc.shard``.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping, Sequence, TypeVar, Union

from shardc.errors import ShardcError
from shardc.ir.graph import DeclKind, Graph
from shardc.ir.layout import Layout
from shardc.ir.mesh import Mesh


class FFN(enum.StrEnum):
    """Feed-forward layouts of the paper (§3.2)."""

    WS_1D = "1d-ws"
    WS_2D = "2d-ws"
    WG_X = "wg-x"
    WG_XY = "wg-xy"
    WG_XYZ = "wg-xyz"
    NONE = "none"  # pins only


class Attention(enum.StrEnum):
    """Attention layouts of the paper (§3.3)."""

    HEADS = "heads"
    BATCH = "batch"


class Role(enum.StrEnum):
    """The paper's axis roles; :func:`bind` says which mesh axes play each."""

    X = "x"
    Y = "y"
    Z = "z"


FFN_CHOICES = tuple(f.value for f in FFN if f is not FFN.NONE)
ATTENTION_CHOICES = tuple(a.value for a in Attention)

# Dims a preset recognises (the paper's notation): model, hidden, heads, KV heads, query heads per KV head, vocab.
HEAD_DIMS = ("H", "K", "G")
WIDE_DIMS = ("F",) + HEAD_DIMS + ("V",)  # split like F in the weights
REDUCE_INTO = ("F", "K", "G", "H", "V", "E")  # hidden dims first, the model dim last
BATCH_REDUCE_INTO = ("B",)  # attention by batch: partial sums may also land on the cache's batch split

Roles = tuple[Role, ...]
RoleMap = tuple[tuple[str, Roles], ...]
AxisMap = tuple[tuple[str, tuple[str, ...]], ...]
PlayedBy = Union[str, Sequence[str], None]  # one mesh axis, several (major first), or none
RoleAssignment = Union[Mapping[Role, PlayedBy], Mapping[str, PlayedBy], Mapping[Union[Role, str], PlayedBy]]
"""Which mesh axes play each role: ``{Role.X: "z", Role.Y: "x", Role.Z: "y"}`` (or
letters as keys, ``{"x": "z", ...}``); a role may be played by several axes (a
tuple, major first) or by none."""


@dataclass(frozen=True)
class Preset:
    """One of the paper's layouts in role letters (see module docstring); bind it with :func:`bind`.

    ``ffn`` labels it (``--explain`` prints it): a custom preset keeps the label
    of the row it was derived from, or uses ``FFN.NONE``.
    """

    ffn: FFN
    weights: RoleMap = ()
    gathered: Roles = ()
    activations: RoleMap = ()
    reduce_into: tuple[str, ...] = REDUCE_INTO
    cache_batch: Roles = ()

    def __post_init__(self) -> None:
        if not isinstance(self.ffn, FFN):
            raise ShardcError(f"a preset's ffn is an FFN (one of {', '.join(f.name for f in FFN)}), "
                              f"got {self.ffn!r}")
        where = f"preset {self.ffn.value}"
        for field, table in (("weights", self.weights), ("activations", self.activations)):
            dims = [d for d, _ in table]
            if len(set(dims)) != len(dims):
                raise ShardcError(f"{where}: {field} names a dim twice ({', '.join(dims)})")
            for d, roles in table:
                _check_roles(roles, f"{where}: {field} of {d}")
        _check_roles(self.gathered, f"{where}: gathered")
        _check_roles(self.cache_batch, f"{where}: cache_batch")


def _check_roles(roles: Roles, what: str) -> None:
    if not isinstance(roles, tuple):
        raise ShardcError(f"{what}: expected a tuple of roles, got {roles!r}")
    for r in roles:
        if not isinstance(r, Role):
            raise ShardcError(f"{what}: {r!r} is not a role; use Role.X, Role.Y or Role.Z")
    if len(set(roles)) != len(roles):
        raise ShardcError(f"{what}: a role appears twice in {''.join(r.value for r in roles)}")


# --- the table --------------------------------------------------------------------------------
X, Y, Z = Role.X, Role.Y, Role.Z
YZ = (Y, Z)
XYZ = (X, Y, Z)


def _wide(roles: Roles) -> RoleMap:
    """F, the head dims and V, all split over ``roles`` (they are split alike)."""
    return tuple((d, roles) for d in WIDE_DIMS)


_STORED_2D: RoleMap = (("E", (X,)),) + _wide(YZ)  # E_x F_yz

PRESETS: Mapping[FFN, Preset] = MappingProxyType({
    # 1D weight-stationary: E F_xyz; activations BLE_xyz.
    FFN.WS_1D: Preset(FFN.WS_1D, weights=_wide(XYZ), activations=(("E", XYZ),), cache_batch=XYZ),
    # 2D weight-stationary: E_x F_yz; activations BLE_xyz.  Heads land on yzx once x is
    # reduce-scattered into them, so a batch-split cache is B_yzx.
    FFN.WS_2D: Preset(FFN.WS_2D, weights=_STORED_2D, activations=(("E", XYZ),), cache_batch=(Y, Z, X)),
    # Weight-gathered: stored like 2D-WS and gathered over N chips before each matmul;
    # activations rest batch-split over the gathered roles (B_N E_rest), and so do caches.
    FFN.WG_X: Preset(FFN.WG_X, weights=_STORED_2D, gathered=(X,),
                     activations=(("B", (X,)), ("E", YZ)), cache_batch=XYZ),
    # An all-gather removes a *suffix* of a dim's axes (the block order, docs/language.md), so the
    # gatherable roles are x (from E) then z, y (from F, minor first): XY gathers x and z, the
    # same N = X·Z chips as the paper's X·Y on its cubic meshes, reached by plain all-gathers.
    FFN.WG_XY: Preset(FFN.WG_XY, weights=_STORED_2D, gathered=(X, Z),
                      activations=(("B", (X, Z)), ("E", (Y,))), cache_batch=(X, Z, Y)),
    FFN.WG_XYZ: Preset(FFN.WG_XYZ, weights=_STORED_2D, gathered=XYZ,
                       activations=(("B", XYZ), ("E", ())), cache_batch=XYZ),
    # Pins only: nothing placed; a batch-split cache follows 2D-WS.
    FFN.NONE: Preset(FFN.NONE, cache_batch=(Y, Z, X)),
})
"""The paper's presets, one row per :class:`FFN` (see module docstring)."""


# --- the concrete strategy --------------------------------------------------------------------
@dataclass(frozen=True)
class Strategy:
    """Policy for the sharding pass: a :class:`Preset` bound to a mesh (:func:`bind`).

    The fields are the preset's, with each role replaced by the mesh axes that
    play it; one can also be built by hand (its axes must be the mesh's).
    """

    ffn: FFN
    attention: Attention
    mesh: Mesh
    weights: AxisMap
    gathered: tuple[str, ...]
    activations: AxisMap
    reduce_into: tuple[str, ...]
    cache_batch_axes: tuple[str, ...]  # batch attention: the split of B in caches

    def __post_init__(self) -> None:
        named = [a for _, axes in self.weights + self.activations for a in axes]
        for axis in named + list(self.gathered) + list(self.cache_batch_axes):
            if not self.mesh.has(axis):
                raise ShardcError(f"the strategy names axis '{axis}', which mesh {self.mesh.spec()} lacks "
                                  f"(its axes are {', '.join(self.mesh.names)})")

    # -- the layouts ----------------------------------------------------------------------
    def weight_layout(self, dims: tuple[str, ...], sizes: Mapping[str, int], name: str) -> Layout | None:
        """Storage layout of a weight, or None when the preset does not cover it (1-dim gains)."""
        if len(dims) < 2 or not any(d in dict(self.weights) for d in dims):
            return None
        return _assign(dims, self.weights, sizes, self.mesh, f"weight '{name}'", strict=True)

    def placement(self, kind: DeclKind, dims: tuple[str, ...], sizes: Mapping[str, int],
                  name: str) -> Layout | None:
        """Where the pass stores a declaration of ``kind`` (None: a weight its first use places)."""
        if kind is DeclKind.INPUT:
            return self.activation_layout(dims, sizes)
        if kind is DeclKind.CACHE:
            return self.cache_layout(dims, sizes, name)
        return self.weight_layout(dims, sizes, name)

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

    def completions(self, layout: Layout, sizes: Mapping[str, int]) -> list[Layout]:
        """Every way the pass may complete ``layout``'s pending partial sums, preferred first.

        :meth:`complete`'s choice, then a reduce-scatter of all the pending axes into each
        other dim they divide (in dim order), then an all-reduce.  The layout search weighs
        them; the preferred one wins ties.
        """
        if not layout.partial:
            return [layout]
        out = [self.complete(layout, sizes)]
        pending = self.mesh.sort_axes(layout.partial)
        for d in layout.dims:
            axes = layout.axes_of(d) + pending
            if sizes[d] % self.mesh.group_size(axes) == 0:
                out.append(layout.with_axes(d, axes).with_partial(frozenset()))
        out.append(layout.with_partial(frozenset()))
        return list(dict.fromkeys(out))

    def describe(self, sizes: Mapping[str, int] | None = None) -> list[tuple[str, str]]:
        """The preset in the paper's notation, for ``shardc compile --explain``.

        ``sizes``: the program's dims and sizes.  The preset's other dims are left out, and where a
        dim does not divide over the axes the preset gives it, the row shows the split the program
        gets (the axes that divide, as :meth:`activation_layout` and :meth:`cache_layout` place
        them) and says why, so the header agrees with the layouts listed under it.
        """
        def show(pairs: tuple[tuple[str, tuple[str, ...]], ...]) -> str:
            pairs = tuple((d, a) for d, a in pairs if sizes is None or d in sizes)
            return " ".join(f"{d}_{''.join(a)}" if a else d for d, a in pairs) or "(replicated)"

        def placed(pairs: tuple[tuple[str, tuple[str, ...]], ...]) -> str:
            if sizes is None:
                return show(pairs)
            got: list[tuple[str, tuple[str, ...]]] = []
            short: list[str] = []
            used: set[str] = set()
            for d, axes in pairs:
                if d not in sizes:
                    continue
                axes = tuple(a for a in axes if a not in used)
                fits = _divisible_prefix(axes, sizes[d], self.mesh)
                used.update(fits)
                got.append((d, fits))
                if fits != axes:
                    short.append(f"{d}={sizes[d]} does not divide over {''.join(axes)}")
            text = show(tuple(got))
            return text if not short else f"{text} (the preset's {show(pairs)}; {', '.join(short)})"

        rows = [("ffn", self.ffn.value), ("attention", self.attention.value),
                ("weights (stored)", show(self.weights))]
        if self.gathered:
            rows.append(("weights (gathered over " + "".join(self.gathered) + ")",
                         show(self.compute_weights())))
        rows.append(("activations rest as", placed(self.activations)))
        rows.append(("partial sums reduce into",
                     ", ".join(d for d in self.reduce_into if sizes is None or d in sizes)))
        if self.attention is Attention.BATCH:
            rows.append(("KV cache", placed((("B", self.cache_batch_axes),))))
        else:
            rows.append(("KV cache", "split over heads like the weights; replicated without a head dim"))
        return rows


_ASSIGNED: dict[tuple, Layout | ShardcError] = {}
_ASSIGNED_MAX = 1 << 16


def _assign(dims: tuple[str, ...], table: tuple[tuple[str, tuple[str, ...]], ...], sizes: Mapping[str, int],
            mesh: Mesh, what: str, strict: bool) -> Layout:
    """:func:`_layout_of`, memoised: the planner asks it for every declaration of every candidate, and
    the answer depends on the sizes of ``dims`` only."""
    key = (dims, table, tuple(sizes.get(d) for d in dims), mesh, what, strict)
    found = _ASSIGNED.get(key)
    if found is None:
        if len(_ASSIGNED) >= _ASSIGNED_MAX:
            _ASSIGNED.clear()
        try:
            found = _layout_of(dims, table, sizes, mesh, what, strict)
        except ShardcError as err:
            found = err
        _ASSIGNED[key] = found
    if isinstance(found, ShardcError):
        raise found.with_traceback(None)  # the same error again, not a longer traceback
    return found


def _layout_of(dims: tuple[str, ...], table: tuple[tuple[str, tuple[str, ...]], ...], sizes: Mapping[str, int],
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


# --- binding roles to a mesh ------------------------------------------------------------------
def default_roles(mesh: Mesh) -> dict[Role, tuple[str, ...]]:
    """The usual assignment: x the first axis, z the last, y the ones between (see module docstring)."""
    axes = mesh.names
    if not axes:
        return {X: (), Y: (), Z: ()}
    return {X: axes[:1], Y: axes[1:-1], Z: axes[1:][-1:]}


def _bind_roles(mesh: Mesh, roles: RoleAssignment | None) -> dict[Role, tuple[str, ...]]:
    """``roles`` checked against ``mesh`` and normalised (every role present, axes as tuples)."""
    if roles is None:
        return default_roles(mesh)
    if not isinstance(roles, Mapping):
        raise ShardcError(f"a role assignment maps roles to mesh axes, e.g. {{'x': 'z', 'y': 'x', 'z': 'y'}}; "
                          f"got {roles!r}")
    out: dict[Role, tuple[str, ...]] = {r: () for r in Role}
    played_by: dict[str, Role] = {}
    given: set[Role] = set()
    for key, value in roles.items():
        role = _role(key)
        if role in given:
            raise ShardcError(f"role {role.value} is assigned twice")
        given.add(role)
        axes = () if value is None else (value,) if isinstance(value, str) else tuple(value)
        for axis in axes:
            if not isinstance(axis, str) or not mesh.has(axis):
                raise ShardcError(f"role {role.value}: mesh {mesh.spec()} has no axis {axis!r} "
                                  f"(its axes are {', '.join(mesh.names)})")
            if axis in played_by:
                other = played_by[axis]
                twice = f"role {role.value} twice" if other is role else f"roles {other.value} and {role.value}"
                raise ShardcError(f"mesh axis '{axis}' plays {twice}; each axis plays at most one role, once")
            played_by[axis] = role
        out[role] = axes
    return out


def _role(key: Role | str) -> Role:
    if isinstance(key, Role):
        return key
    try:
        return Role(key)
    except ValueError:
        raise ShardcError(f"unknown role {key!r}; the roles are {', '.join(r.value for r in Role)}") from None


def bind(preset: Preset, mesh: Mesh | str, attention: Attention | str,
         roles: RoleAssignment | None = None) -> Strategy:
    """``preset`` on ``mesh`` with ``attention``, each role played by the axes ``roles`` gives it.

    ``roles`` defaults to :func:`default_roles`; an unknown role or axis, or an
    axis playing two roles, is a :class:`ShardcError`.
    """
    if isinstance(mesh, str):
        mesh = Mesh.parse(mesh)
    if not isinstance(preset, Preset):
        raise ShardcError(f"bind() takes a Preset (e.g. shardc.PRESETS[FFN.WS_2D]), got {preset!r}")
    att = attention if isinstance(attention, Attention) else _parse_choice(
        Attention, attention, "--attention", ATTENTION_CHOICES)
    played = _bind_roles(mesh, roles)

    def axes(rs: Roles) -> tuple[str, ...]:
        return tuple(a for r in rs for a in played[r])

    def split(table: RoleMap) -> AxisMap:
        return tuple((d, axes(rs)) for d, rs in table)

    reduce_into = preset.reduce_into + (BATCH_REDUCE_INTO if att is Attention.BATCH else ())
    return Strategy(preset.ffn, att, mesh, split(preset.weights), axes(preset.gathered),
                    split(preset.activations), reduce_into, axes(preset.cache_batch))


# --- the convenience behind --ffn / --attention -----------------------------------------------
PresetChoice = Union["Strategy", Preset, FFN, str, None]
"""What ``shardc.shard`` accepts as a preset: a bound :class:`Strategy`, a
:class:`Preset` (bound to the program's mesh), an :class:`FFN` or its name, or
None for the default (2d-ws)."""


def make_strategy(g: Graph, mesh: Mesh, ffn: PresetChoice = None, attention: Attention | str | None = None,
                  roles: RoleAssignment | None = None) -> Strategy:
    """The strategy for ``g`` on ``mesh`` (defaults follow the paper's phase rule, §3.2).

    ``ffn`` names a row of :data:`PRESETS` (default 2d-ws) or is a :class:`Preset`
    of one's own; ``attention`` defaults to :func:`default_attention`; ``roles``
    to :func:`default_roles`.  A :class:`Strategy` is already bound: it is
    returned as is, provided it is bound to ``mesh`` and nothing else is given.
    """
    if isinstance(ffn, Strategy):
        if attention is not None or roles is not None:
            raise ShardcError("a Strategy is already bound to its attention layout and roles; "
                              "give attention and roles to shardc.bind instead")
        if ffn.mesh != mesh:
            raise ShardcError(f"the strategy is bound to mesh {ffn.mesh.spec()}, but the program is sharded "
                              f"for {mesh.spec()}", hint="bind the preset to this mesh with shardc.bind")
        return ffn
    if isinstance(ffn, Preset):
        preset = ffn
    else:
        kind = ffn if isinstance(ffn, FFN) else _parse_choice(
            FFN, ffn or FFN.WS_2D.value, "--ffn", FFN_CHOICES + ("none",))
        preset = PRESETS[kind]
    if attention is None:
        attention = default_attention(g, mesh)
    return bind(preset, mesh, attention, roles)


def default_attention(g: Graph, mesh: Mesh) -> Attention:
    """``batch`` when the program reads a KV cache and B divides over the mesh, else ``heads``."""
    has_cache = any(d.kind is DeclKind.CACHE for d, _ in g.decls())
    sizes = g.sizes
    if has_cache and "B" in sizes and sizes["B"] % mesh.num_chips == 0:
        return Attention.BATCH
    return Attention.HEADS


E = TypeVar("E", FFN, Attention)


def _parse_choice(enum_type: type[E], value: str, flag: str, choices: tuple[str, ...]) -> E:
    try:
        return enum_type(value)
    except ValueError:
        raise ShardcError(f"unknown {flag} preset '{value}'; choose one of {', '.join(choices)}") from None
