"""Layouts of tensors on a device mesh, in the notation of Pope et al. (2022).

A :class:`Layout` says, for each dim of a tensor (in the tensor's own order),
which mesh axes split it (major first), and which axes hold *pending partial
sums*.  Written as one token: ``BLE_xyz`` (E split over x, y, z), ``E_xF_yz``,
``B_xLE`` (batch split over x, replicated over the rest), and with partial sums
``BLE_x (partialsum-yz)``.  ``BLE`` alone is fully replicated.

Block order (the invariant every collective relies on): on dim ``E`` split over
``(x, y, z)``, chip ``(i, j, k)`` holds block ``i*Y*Z + j*Z + k`` of ``E``.  So
axes are appended as the most-minor axes of a dim (reduce-scatter, slice) and
removed as a suffix (all-gather).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping

from shardc.errors import ShardcError
from shardc.ir.mesh import Mesh

_PART_RE = re.compile(r"([A-Z])(?:_([a-z]+))?")
_LAYOUT_RE = re.compile(r"(?:[A-Z](?:_[a-z]+)?)+")
_PARTIAL_RE = re.compile(r"\(partialsum-([a-z]+)\)")


@dataclass(frozen=True)
class Layout:
    """Per-dim split axes (major first) plus axes with pending partial sums.

    ``split`` has one entry per tensor dim, in the tensor's dim order:
    ``(("B", ()), ("L", ()), ("E", ("x", "y", "z")))`` is ``BLE_xyz``.
    """

    split: tuple[tuple[str, tuple[str, ...]], ...]
    partial: frozenset[str] = frozenset()

    def __hash__(self) -> int:
        # The dataclass's own hash (of the fields), computed once: layouts key every memo table.
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash((self.split, self.partial))
            object.__setattr__(self, "_hash", h)
        return h

    def __getstate__(self) -> dict[str, object]:
        # Not the hash: another process may hash strings with another seed.
        return {k: v for k, v in self.__dict__.items() if k != "_hash"}

    # -- construction -------------------------------------------------------
    @classmethod
    def replicated(cls, dims: tuple[str, ...]) -> "Layout":
        """Every dim whole on every chip, no partial sums."""
        return cls(tuple((d, ()) for d in dims))

    @classmethod
    def of(cls, dims: tuple[str, ...], split: Mapping[str, tuple[str, ...]] | None = None,
           partial: frozenset[str] | set[str] | tuple[str, ...] = ()) -> "Layout":
        """A layout over ``dims`` with ``split[dim]`` axes (missing dims unsplit)."""
        split = dict(split or {})
        unknown = set(split) - set(dims)
        if unknown:
            raise ShardcError(f"layout splits dims {sorted(unknown)} that the tensor lacks")
        return cls(tuple((d, tuple(split.get(d, ()))) for d in dims), frozenset(partial))

    @classmethod
    def parse(cls, text: str, partial: str | None = None) -> "Layout":
        """Parse ``BLE_xyz`` and an optional ``(partialsum-yz)``.

        Checks the notation only (each axis once, each dim once); use
        :meth:`check` for the mesh and the dim sizes.
        """
        if not _LAYOUT_RE.fullmatch(text):
            raise ShardcError(
                f"malformed layout '{text}': expected dims, each optionally followed by "
                "_ and mesh axes, e.g. BLE_xyz or E_xF_yz"
            )
        split = tuple((m.group(1), tuple(m.group(2) or "")) for m in _PART_RE.finditer(text))
        part: frozenset[str] = frozenset()
        if partial is not None:
            m = _PARTIAL_RE.fullmatch(partial.strip())
            if not m:
                raise ShardcError(f"malformed partial sum '{partial}': expected e.g. (partialsum-yz)")
            if len(set(m.group(1))) != len(m.group(1)):
                raise ShardcError(f"an axis appears twice in '{partial}'")
            part = frozenset(m.group(1))
        layout = cls(split, part)
        layout.check_notation()
        return layout

    # -- queries ------------------------------------------------------------
    # The queries below run in the layout search's inner loops: each is computed once per layout and
    # kept on the instance, outside the fields that make equality and hash (not functools'
    # cached_property, which takes a lock on every first use).
    @property
    def dims(self) -> tuple[str, ...]:
        found = self.__dict__.get("_dims")
        if found is None:
            found = self.__dict__["_dims"] = tuple(d for d, _ in self.split)
        return found

    def axes_of(self, dim: str) -> tuple[str, ...]:
        """The axes splitting ``dim`` (major first); () when unsplit."""
        for d, axes in self.split:
            if d == dim:
                return axes
        raise KeyError(dim)

    def dim_of(self, axis: str) -> str | None:
        """The dim ``axis`` splits, or None."""
        for d, axes in self.split:
            if axis in axes:
                return d
        return None

    @property
    def split_axes(self) -> frozenset[str]:
        """Every axis that splits some dim."""
        found = self.__dict__.get("_split_axes")
        if found is None:
            found = self.__dict__["_split_axes"] = frozenset(a for _, axes in self.split for a in axes)
        return found

    @property
    def used_axes(self) -> frozenset[str]:
        """Axes that split a dim or hold partial sums."""
        found = self.__dict__.get("_used_axes")
        if found is None:
            found = self.__dict__["_used_axes"] = self.split_axes | self.partial
        return found

    def local_sizes(self, sizes: Mapping[str, int], mesh: Mesh) -> tuple[int, ...]:
        """Per-chip shape of a tensor with global dim ``sizes``."""
        return tuple(sizes[d] // mesh.group_size(axes) if axes else sizes[d] for d, axes in self.split)

    def local_numel(self, sizes: Mapping[str, int], mesh: Mesh) -> int:
        return math.prod(self.local_sizes(sizes, mesh))

    # -- edits (each returns a new Layout; callers check invariants) ---------
    def with_axes(self, dim: str, axes: tuple[str, ...]) -> "Layout":
        """This layout with ``dim`` split over exactly ``axes``."""
        return Layout(tuple((d, axes if d == dim else a) for d, a in self.split), self.partial)

    def with_partial(self, partial: frozenset[str] | set[str]) -> "Layout":
        return Layout(self.split, frozenset(partial))

    def renamed(self, renames: Mapping[str, str]) -> "Layout":
        """Same split with dims renamed (``relabel``)."""
        return Layout(tuple((renames.get(d, d), a) for d, a in self.split), self.partial)

    # -- invariants ---------------------------------------------------------
    def check_notation(self) -> None:
        """Each dim once; each axis at most once (split or partial)."""
        dims = self.dims
        for d in dims:
            if dims.count(d) > 1:
                raise ShardcError(f"dim {d} appears twice in layout {self.format()}")
        seen: list[str] = [a for _, axes in self.split for a in axes]
        for a in seen:
            if seen.count(a) > 1:
                raise ShardcError(f"mesh axis '{a}' is used twice in layout {self.format()}")
        both = self.partial & set(seen)
        if both:
            raise ShardcError(
                f"axis '{sorted(both)[0]}' both splits a dim and holds partial sums in {self.format()}"
            )

    def check(self, sizes: Mapping[str, int], mesh: Mesh, dims: tuple[str, ...] | None = None) -> None:
        """Raise ShardcError unless this layout is valid for a tensor on ``mesh``.

        ``dims`` (the tensor's dims, in order) must match the layout's dims;
        every axis must exist on the mesh; each split dim must divide evenly.
        """
        self.check_notation()
        if dims is not None and tuple(dims) != self.dims:
            raise ShardcError(
                f"layout {self.format()} lists dims [{', '.join(self.dims)}] but the tensor has "
                f"dims [{', '.join(dims)}]"
            )
        for a in sorted(self.used_axes):
            if not mesh.has(a):
                raise ShardcError(
                    f"layout {self.format()} uses mesh axis '{a}' but the mesh ({mesh}) has "
                    f"axes {', '.join(mesh.names)}"
                )
        for d, axes in self.split:
            if not axes:
                continue
            parts = mesh.group_size(axes)
            if sizes[d] % parts:
                axes_text = "·".join(axes)
                raise ShardcError(
                    f"dim {d} of size {sizes[d]} is not divisible by the {parts} chips of "
                    f"{axes_text} ({' x '.join(str(mesh.size(a)) for a in axes)}) in layout "
                    f"{self.format(mesh)}",
                    hint=f"change the size with --set {d}=N or choose another mesh",
                )

    # -- printing -----------------------------------------------------------
    def format(self, mesh: Mesh | None = None) -> str:
        """The paper's notation: ``BLF_yz (partialsum-x)``; partial axes in mesh order."""
        text = "".join(d + ("_" + "".join(a) if a else "") for d, a in self.split)
        if self.partial:
            order = mesh.sort_axes(self.partial) if mesh is not None else tuple(sorted(self.partial))
            text += f" (partialsum-{''.join(order)})"
        return text

    def __str__(self) -> str:
        return self.format()
