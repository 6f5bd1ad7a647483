"""Device meshes: named axes with sizes, major to minor.

A mesh is written ``4x4x4`` (axes ``x, y, z``), ``2x2`` (``x, y``), ``8`` (``x``)
or with names, ``p=2,q=3``.  Chips are numbered in row-major order of the axes,
so the first axis is the most major.  On a TPU-v4-like machine each axis is a
ring of the 3D torus (with wraparound links).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cached_property

from shardc.errors import ShardcError
from shardc.units import whole_number

DEFAULT_AXIS_NAMES = ("x", "y", "z")
_AXIS_RE = re.compile(r"[a-z]")
_DIGITS_RE = re.compile(r"[0-9]+")  # ASCII digits only: str.isdigit() also takes '²' and '٤'


def _axis_size(digits: str, text: str) -> int:
    size = whole_number(digits)
    if size is None:
        raise ShardcError(f"bad mesh '{text[:40]}{'...' if len(text) > 40 else ''}': an axis size is at most 10^18")
    return size


@dataclass(frozen=True)
class Mesh:
    """Named mesh axes and their sizes, major axis first."""

    axes: tuple[tuple[str, int], ...]

    def __hash__(self) -> int:
        # The dataclass's own hash (of the field), computed once: meshes key every memo table.
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash((self.axes,))
            object.__setattr__(self, "_hash", h)
        return h

    def __getstate__(self) -> dict[str, object]:
        # Not the hash: another process may hash strings with another seed.
        return {k: v for k, v in self.__dict__.items() if k != "_hash"}

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for name, size in self.axes:
            if not _AXIS_RE.fullmatch(name):
                raise ShardcError(f"mesh axis names are one lower-case letter, got '{name}'")
            if name in seen:
                raise ShardcError(f"mesh axis '{name}' is named twice")
            if not isinstance(size, int) or size < 1:
                raise ShardcError(f"mesh axis '{name}' must have a size of at least 1, got {size}")
            seen.add(name)

    @classmethod
    def parse(cls, text: str) -> "Mesh":
        """Parse ``4x4x4``, ``2x2``, ``8`` or ``p=2,q=3`` (spaces allowed after commas)."""
        spec = text.strip()
        if not spec:
            raise ShardcError("empty mesh; write e.g. 4x4x4, 2x2 or x=4,y=4")
        if "=" in spec:
            axes = []
            for part in spec.split(","):
                name, eq, size = part.strip().partition("=")
                if not eq or not _DIGITS_RE.fullmatch(size.strip()):
                    raise ShardcError(
                        f"bad mesh '{text}': expected AXIS=SIZE pairs such as x=4,y=4,z=4"
                    )
                axes.append((name.strip(), _axis_size(size.strip(), text)))
            return cls(tuple(axes))
        parts = spec.lower().split("x")
        if not all(_DIGITS_RE.fullmatch(p.strip()) for p in parts):
            raise ShardcError(f"bad mesh '{text}': expected sizes such as 4x4x4, 2x2 or 8")
        if len(parts) > len(DEFAULT_AXIS_NAMES):
            raise ShardcError(
                f"mesh '{text}' has {len(parts)} axes; name them instead, e.g. a=2,b=2,c=2,d=2"
            )
        return cls(tuple(zip(DEFAULT_AXIS_NAMES, (_axis_size(p.strip(), text) for p in parts))))

    # The queries below run in the layout search's inner loops: each is computed once per mesh
    # (cached_property keeps it on the instance, outside the fields that make equality and hash).
    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.axes)

    @cached_property
    def shape(self) -> tuple[int, ...]:
        return tuple(size for _, size in self.axes)

    @cached_property
    def num_chips(self) -> int:
        return math.prod(self.shape)

    @cached_property
    def _sizes(self) -> dict[str, int]:
        return dict(self.axes)

    def has(self, axis: str) -> bool:
        return axis in self._sizes

    def size(self, axis: str) -> int:
        """Size of one axis (ShardcError if the mesh lacks it)."""
        size = self._sizes.get(axis)
        if size is None:
            raise ShardcError(f"mesh {self} has no axis '{axis}'")
        return size

    def index(self, axis: str) -> int:
        """Position of ``axis`` in major-to-minor order."""
        return self.names.index(axis)

    def group_size(self, axes: tuple[str, ...] | frozenset[str]) -> int:
        """Number of chips in a group spanning ``axes`` (product of their sizes)."""
        sizes = self._sizes
        try:
            return math.prod(sizes[a] for a in axes)
        except KeyError:
            for a in axes:
                self.size(a)  # the error that names the missing axis
            raise

    def sort_axes(self, axes: tuple[str, ...] | frozenset[str] | set[str]) -> tuple[str, ...]:
        """``axes`` in mesh (major-to-minor) order."""
        return tuple(sorted(axes, key=self.index))

    def spec(self) -> str:
        """Short form: ``4x4x4`` for default axis names, else ``p=2,q=3``."""
        if self.names == DEFAULT_AXIS_NAMES[: len(self.axes)]:
            return "x".join(str(s) for s in self.shape)
        return ",".join(f"{n}={s}" for n, s in self.axes)

    def __str__(self) -> str:
        return ", ".join(f"{n}={s}" for n, s in self.axes)
