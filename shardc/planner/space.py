"""What the planner chooses among: meshes for a chip count, role assignments, presets, dtypes, padding.

A :class:`Candidate` is one complete choice -- a mesh shape, which of its axes play
the preset's roles x, y and z, the feed-forward and attention presets, the weight
dtype, the padding of dims and the batch -- and :func:`candidates` enumerates them
for a program and a chip count, with duplicates that cannot differ in cost left out:

* **Meshes.**  Every way to write the chip count as a product of at most as many
  axes as the chip's topology has (a torus: one axis per pair of links, TPU v4: 3;
  a switch: 3 logical axes), each axis at least 2 chips and a multiple of the
  profile's ``axis_multiple`` (TPU v4 slices: even axes).  Axis sizes are listed
  largest first; the order of the axes does not matter to the cost, the role
  assignment does.
* **Roles.**  Every assignment of those axes to the roles x, y and z, one axis per
  role (a role may go unplayed on a mesh of fewer axes), up to swapping axes of
  equal size, which cost the same on a symmetric torus.  Each assignment is a
  :class:`~shardc.ir.mesh.Mesh` whose axes are *named by their role*, in role order:
  ``8x4x2`` is x=8, y=4, z=2, and ``x=16,z=4`` leaves y unplayed, so the mesh says
  which axis plays what.  Candidates whose presets bind to the same concrete
  strategy are costed once (:func:`shardc.planner.choose.plan`).
* **Padding.**  ``pad`` ``"none"`` (default), ``"any"`` (also each padded dim at the
  next multiple of the chip count, the paper's 48 heads padded to 64) or a mapping
  ``{"H": 64}`` (that padding only).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

from shardc.errors import ShardcError
from shardc.hardware.profile import ChipProfile, Topology
from shardc.ir.graph import DType, Graph
from shardc.ir.mesh import Mesh
from shardc.sharding.presets import FFN, Attention, Role, default_roles

__all__ = ["Candidate", "PAD_DIMS", "candidates", "mesh_shapes", "meshes", "role_meshes"]

PAD_DIMS = ("H",)  # the dims padding may grow: heads (the paper pads PaLM 540B's 48 heads to 64)
_SWITCHED_AXES = 3


@dataclass(frozen=True)
class Candidate:
    """One complete choice of the planner."""

    mesh: Mesh  # the planner's own meshes name each axis by the role it plays (module docstring)
    ffn: FFN
    attention: Attention
    weights: DType
    pad: tuple[tuple[str, int], ...]  # dim -> padded size (empty: as written)
    batch: int

    roles_given: tuple[tuple[Role, tuple[str, ...]], ...] = ()  # a user's mesh: its default roles

    @property
    def roles(self) -> dict[Role, tuple[str, ...]]:
        """Which mesh axes play each role: on the planner's meshes the axis named after the role, if
        the mesh has it; on a mesh the user gave, :func:`~shardc.sharding.presets.default_roles`."""
        if self.roles_given:
            return dict(self.roles_given)
        return {r: ((r.value,) if self.mesh.has(r.value) else ()) for r in (Role.X, Role.Y, Role.Z)}

    def label(self) -> str:
        pad = ",".join(f"{d}={n}" for d, n in self.pad) or "none"
        return (f"mesh {self.mesh.spec()}, {self.ffn.value}/{self.attention.value}, {self.weights.value} weights, "
                f"pad {pad}, B={self.batch}")


def max_axes(profile: ChipProfile) -> int:
    """How many mesh axes the chip's interconnect offers: a torus has one per pair of links."""
    if profile.topology is Topology.TORUS:
        return max(profile.links // 2, 1)
    return _SWITCHED_AXES


def mesh_shapes(chips: int, profile: ChipProfile) -> list[tuple[int, ...]]:
    """Every shape of ``chips`` chips the profile's topology allows (module docstring), largest axes first."""
    if chips < 1:
        raise ShardcError(f"--chips {chips}: the number of chips must be at least 1")
    if chips == 1:
        return [(1,)]
    multiple = profile.axis_multiple
    return [sizes for n in range(1, max_axes(profile) + 1) for sizes in _factorisations(chips, n)
            if all(s >= 2 and s % multiple == 0 for s in sizes)]


def meshes(chips: int, profile: ChipProfile) -> list[Mesh]:
    """Every mesh of ``chips`` chips, one per shape and role assignment, its axes named by role."""
    return [m for shape in mesh_shapes(chips, profile) for m in role_meshes(shape)]


def _factorisations(n: int, parts: int, largest: int | None = None) -> Iterator[tuple[int, ...]]:
    """``n`` as a product of ``parts`` factors, non-increasing, each at most ``largest``."""
    largest = n if largest is None else largest
    if parts == 1:
        if n <= largest:
            yield (n,)
        return
    for f in range(min(n, largest), 1, -1):
        if n % f == 0:
            for rest in _factorisations(n // f, parts - 1, f):
                yield (f, *rest)


def role_meshes(shape: tuple[int, ...]) -> list[Mesh]:
    """The axes of ``shape`` given to the roles x, y, z in every way (each axis one role, each role at
    most one axis), up to swapping axes of equal size; each a mesh with axes named by role."""
    if shape == (1,):
        return [Mesh((("x", 1),))]
    roles = ("x", "y", "z")
    seen: set[tuple[tuple[str, int], ...]] = set()
    out: list[Mesh] = []
    for chosen in itertools.permutations(roles, len(shape)):
        axes = tuple(sorted(zip(chosen, shape, strict=True), key=lambda a: roles.index(a[0])))
        if axes not in seen:
            seen.add(axes)
            out.append(Mesh(axes))
    return out


def pad_options(g: Graph, pad: str | Mapping[str, int], chips: int) -> list[tuple[tuple[str, int], ...]]:
    """The paddings to try: none; with ``"any"`` also each of :data:`PAD_DIMS` at the next multiple
    of ``chips``; or the one mapping given."""
    if isinstance(pad, str):
        if pad == "none":
            return [()]
        if pad != "any":
            raise ShardcError(f"unknown padding '{pad}'; give none, any, or DIM=N (e.g. H=64)")
        out: list[tuple[tuple[str, int], ...]] = [()]
        for d in PAD_DIMS:
            if d in g.sizes and g.sizes[d] % chips:
                out.append(((d, math.ceil(g.sizes[d] / chips) * chips),))
        return out
    for d, n in pad.items():
        if d not in g.sizes:
            raise ShardcError(f"padding {d}: the program has no dim {d}")
        if n < g.sizes[d]:
            raise ShardcError(f"padding {d}={n}: smaller than the program's {d}={g.sizes[d]}")
    return [tuple(sorted(pad.items()))]


def candidates(g: Graph, meshes_: Sequence[Mesh], ffns: Sequence[FFN], attentions: Sequence[Attention],
               weights: Sequence[DType], pads: Sequence[tuple[tuple[str, int], ...]],
               batches: Sequence[int], user_mesh: bool = False) -> list[Candidate]:
    """Every combination, meshes first (the order ties are broken in).  ``user_mesh``: the meshes
    are the user's, whose axes play the roles by :func:`~shardc.sharding.presets.default_roles`."""
    out = []
    for mesh in meshes_:
        roles = tuple(default_roles(mesh).items()) if user_mesh else ()
        out += [Candidate(mesh, ffn, attention, dtype, pad, batch, roles) for ffn, attention, dtype, pad, batch
                in itertools.product(ffns, attentions, weights, pads, batches)]
    return out
