"""Count what an XLA HLO module does per device: its collectives, the bytes they send, its dot FLOPs.

Reads HLO *text* (``compiled.as_text()``, or ``lowered.as_text(dialect="hlo")``); nothing here
imports jax.  :func:`parse_hlo` returns every collective with its replica groups and operand
shapes, and every dot with its FLOPs, each with the number of times one run of the module
executes it: a ``while`` body counts its known trip count times (a ``lax.scan`` over layers,
rolled or unrolled, gives the same totals), a fusion or call its caller's count.

Replica groups come in four spellings, all read here::

    replica_groups={{0,1},{2,3}}                         explicit device ids (``{}``: all devices)
    replica_groups=[2,2]<=[4]                            iota: arange(4) reshaped to 2 groups of 2
    replica_groups=[2,2]<=[2,2]T(1,0)                    iota, reshaped [2,2], transposed, regrouped
    replica_groups=mesh['a'=2,'b'=4] {'b'}               mesh axes: devices row-major over the mesh

A collective over groups of one device moves nothing and is not counted.
A combined (tuple) collective is one per operand: ``all-reduce(a, b)`` counts as two all-reduces
(an all-to-all's tuple form is one all-to-all: its operands are one array's blocks, one a device).
Bytes per device follow shardc's ring formulas (:func:`shardc.sharding.reshard.collective_bytes`)
for a group of ``k``: all-gather ``(k-1)/k`` of its result, reduce-scatter and all-to-all
``(k-1)/k`` of their operand, all-reduce twice that; a collective-permute that moves data sends
its operand.  A dot's FLOPs are ``2 x`` its result's elements ``x`` its contracted size.

XLA:CPU computes bf16 in f32: its compiled module carries a bf16 program's collectives as f32.
Count such a program on the module just before that promotion (:func:`shardc.export.vs_xla.compile_and_count`
reads it from XLA's dump), where the collectives are the compiled ones with the program's dtypes.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from shardc.errors import ShardcError
from shardc.ir.mesh import Mesh

__all__ = ["HloCollective", "HloCounts", "HloDot", "KINDS", "group_axes", "parse_hlo",
           "replica_groups"]

#: HLO opcode -> shardc's name of the collective (the async ``-start`` forms count; ``-done`` does not).
KINDS = {"all-gather": "all_gather", "all-reduce": "all_reduce", "reduce-scatter": "reduce_scatter",
         "all-to-all": "all_to_all", "collective-permute": "collective_permute"}

ITEMSIZE = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
            "f32": 4, "s64": 8, "u64": 8, "f64": 8}

Shape = tuple[str, tuple[int, ...]]  # (element type, dims)

_SHAPE_RE = re.compile(r"\b([a-z]+\d*)\[([\d,]*)\]")
_HEADER_RE = re.compile(r"^\s*(ENTRY\s+)?%?([\w.\-]+)\s*(\(.*\)\s*->.*)?\{\s*$")
_INSTR_RE = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
_CALLS_RE = re.compile(r"\b(?:calls|to_apply|body|condition|branch_computations|called_computations)="
                       r"(\{[^}]*\}|%?[\w.\-]+)")
_TRIP_RE = re.compile(r'"known_trip_count"\s*:\s*\{\s*"n"\s*:\s*"?(\d+)')


@dataclass(frozen=True)
class HloCollective:
    """One collective instruction: its kind, operands and results, replica groups, executions per run."""

    kind: str
    operands: tuple[Shape, ...]
    results: tuple[Shape, ...]
    groups: tuple[tuple[int, ...], ...]
    executions: int
    moves: bool = True  # a collective-permute whose pairs are all (i, i), or groups of one, move nothing

    @property
    def count(self) -> int:
        """Collectives this instruction stands for: one per operand of a combined (tuple) collective,
        but one for an all-to-all, whose tuple form is one array's blocks for the group's devices."""
        return 1 if self.kind == "all_to_all" else len(self.operands)

    @property
    def group_size(self) -> int:
        return len(self.groups[0]) if self.groups else 1

    def bytes_per_device(self) -> float:
        """Bytes each device sends in one execution (ring formulas)."""
        k = self.group_size
        if self.kind == "collective_permute":
            return self.larger_side_bytes() if self.moves else 0.0
        if k == 1:
            return 0.0
        return (2.0 if self.kind == "all_reduce" else 1.0) * (k - 1) / k * self.larger_side_bytes()

    def larger_side_bytes(self) -> float:
        """Bytes per device of the side shardc's comm model prices (all-gather: result; else operand)."""
        sides = self.results if self.kind == "all_gather" else self.operands
        return float(sum(math.prod(dims) * _itemsize(t) for t, dims in sides))


@dataclass(frozen=True)
class HloDot:
    """One dot instruction: its FLOPs per device per execution, and executions per run."""

    flops: float
    executions: int


@dataclass(frozen=True)
class HloCounts:
    """Every collective and dot of a module (see :func:`parse_hlo`)."""

    collectives: tuple[HloCollective, ...]
    dots: tuple[HloDot, ...]

    def counts(self) -> Counter:
        """Collectives per kind in one run: operands x executions (a combined all-reduce is several)."""
        out: Counter = Counter()
        for c in self.collectives:
            if c.moves:
                out[c.kind] += c.count * c.executions
        return out

    def bytes_by_kind(self) -> dict[str, float]:
        """Bytes each device sends in one run, per kind."""
        out: dict[str, float] = {}
        for c in self.collectives:
            if c.moves:
                out[c.kind] = out.get(c.kind, 0.0) + c.bytes_per_device() * c.executions
        return out

    def bytes_per_device(self) -> float:
        return float(sum(self.bytes_by_kind().values()))

    def dot_flops(self) -> float:
        """Dot FLOPs each device computes in one run."""
        return float(sum(d.flops * d.executions for d in self.dots))


def _itemsize(dtype: str) -> int:
    if dtype not in ITEMSIZE:
        raise ShardcError(f"HLO element type {dtype!r} has no known size")
    return ITEMSIZE[dtype]


def shapes(type_text: str) -> tuple[Shape, ...]:
    """Every array shape in an HLO type (a tuple type has several), layouts ignored."""
    return tuple((m.group(1), tuple(int(d) for d in m.group(2).split(",") if d))
                 for m in _SHAPE_RE.finditer(type_text) if m.group(1) in ITEMSIZE)


def _balanced(text: str, start: int) -> int:
    """Index just past the bracket group opening at ``text[start]``."""
    pairs = {"(": ")", "{": "}", "[": "]"}
    stack = []
    for i in range(start, len(text)):
        ch = text[i]
        if ch in pairs:
            stack.append(pairs[ch])
        elif stack and ch == stack[-1]:
            stack.pop()
            if not stack:
                return i + 1
    raise ShardcError(f"unbalanced brackets in HLO: {text[start:start + 80]!r}")


# --- replica groups -----------------------------------------------------------------------------
def replica_groups(attrs: str, num_devices: int) -> tuple[tuple[int, ...], ...]:
    """The device groups of a collective from its attribute text (any of the module doc's spellings)."""
    m = re.search(r"replica_groups=", attrs)
    if m is None:
        return (tuple(range(num_devices)),)
    rest = attrs[m.end():]
    if rest.startswith("{"):
        inner = rest[1:_balanced(rest, 0) - 1].strip()
        groups = tuple(tuple(int(x) for x in g.split(",") if x.strip())
                       for g in re.findall(r"\{([^{}]*)\}", inner))
        return groups or (tuple(range(num_devices)),)
    iota = re.match(r"\[([\d,]+)\]<=\[([\d,]+)\](?:T\(([\d,]+)\))?", rest)
    if iota:
        shape = [int(x) for x in iota.group(1).split(",")]
        dims = [int(x) for x in iota.group(2).split(",")]
        ids = np.arange(math.prod(dims)).reshape(dims)
        if iota.group(3):
            ids = ids.transpose([int(x) for x in iota.group(3).split(",")])
        return tuple(tuple(int(x) for x in row) for row in ids.reshape(shape[0], -1))
    mesh = re.match(r"mesh\[([^\]]*)\](?:,\s*device_ids=\(([^()]*(?:\([^()]*\))?)\))?\s*\{([^}]*)\}", rest)
    if mesh:
        return _mesh_groups(mesh.group(1), mesh.group(3), mesh.group(2))
    raise ShardcError(f"unknown replica_groups spelling: {rest[:80]!r}")


def _device_ids(text: str | None, n: int) -> np.ndarray:
    """The device at each mesh position: ``0,1,...`` explicit, ``[2,4]T(1,0)`` an iota, None: in order."""
    if text is None:
        return np.arange(n)
    iota = re.fullmatch(r"\s*\[([\d,]+)\](?:T\(([\d,]+)\))?\s*", text)
    if iota is None:
        return np.array([int(x) for x in text.split(",")])
    ids = np.arange(n).reshape([int(x) for x in iota.group(1).split(",")])
    if iota.group(2):
        ids = ids.transpose([int(x) for x in iota.group(2).split(",")])
    return ids.reshape(-1)


def _mesh_groups(axes_text: str, group_text: str, device_text: str | None = None) -> tuple[tuple[int, ...], ...]:
    """Groups of ``mesh['a'=2,'b'=4][, device_ids=...] {'b', 'a':(1)2}``: a group varies over the
    listed axes (``'a':(pre)size`` is the middle of axis a viewed as [pre, size, rest]); the device
    at each mesh position is its row-major index, or the ``device_ids`` list."""
    axes = [(name, int(size)) for name, size in re.findall(r"'([^']+)'\s*=\s*(\d+)", axes_text)]
    # Split every axis into [pre, size, rest] sub-axes where a group names a sub-axis.
    refs = re.findall(r"'([^']+)'(?::\((\d+)\)(\d+))?", group_text)
    sub_axes: list[tuple[str, int]] = []  # (label, size), major to minor
    for name, size in axes:
        subs = [(int(pre), int(sz)) for n, pre, sz in refs if n == name and pre]
        if not subs:
            sub_axes.append((name, size))
            continue
        (pre, sz), = subs
        sub_axes += [(f"{name}<", pre), (f"{name}:{pre}:{sz}", sz), (f"{name}>", size // (pre * sz))]
    grouped = {n if not pre else f"{n}:{pre}:{sz}" for n, pre, sz in refs}
    n = math.prod(s for _, s in sub_axes)
    ids = _device_ids(device_text, n).reshape([s for _, s in sub_axes])
    inside = [i for i, (label, _) in enumerate(sub_axes) if label in grouped]
    outside = [i for i in range(len(sub_axes)) if i not in inside]
    ids = ids.transpose(outside + inside)
    k = math.prod(sub_axes[i][1] for i in inside)
    return tuple(tuple(int(x) for x in row) for row in ids.reshape(-1, k))


def group_axes(group: tuple[int, ...], mesh: Mesh) -> tuple[str, ...]:
    """The mesh axes a group of device ids spans (devices numbered row-major over the mesh), major first."""
    sizes = [s for _, s in mesh.axes]
    coords = np.array(np.unravel_index(np.array(group), sizes)).T
    return tuple(name for i, (name, _) in enumerate(mesh.axes) if len(set(coords[:, i])) > 1)


# --- the module -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Instr:
    name: str
    type_text: str
    opcode: str
    operands: tuple[str, ...]
    attrs: str
    root: bool = False


def _instruction(line: str) -> _Instr | None:
    m = _INSTR_RE.match(line)
    if m is None:
        return None
    name, rest = m.group(1), m.group(2)
    if rest.startswith("("):
        end = _balanced(rest, 0)
    else:
        end = rest.find(" ")
    type_text, rest = rest[:end], rest[end:].lstrip()
    op = re.match(r"([\w\-]+)\(", rest)
    if op is None:
        return None
    close = _balanced(rest, op.end() - 1)
    operand_text = rest[op.end():close - 1]
    operands = tuple(re.findall(r"%?([\w.\-]+)\s*(?:,|$)", operand_text.strip()))
    return _Instr(name, type_text, op.group(1), operands, rest[close:], line.lstrip().startswith("ROOT "))


def _parse_module(text: str) -> tuple[dict[str, list[_Instr]], str]:
    """Computation name -> its instructions, and the entry computation's name."""
    comps: dict[str, list[_Instr]] = {}
    entry, current = "", None
    for line in text.splitlines():
        header = _HEADER_RE.match(line)
        if header and "=" not in line.split("(")[0]:
            current = header.group(2)
            comps[current] = []
            if header.group(1):
                entry = current
            continue
        if current is not None and line.strip() == "}":
            current = None
            continue
        if current is not None:
            instr = _instruction(line)
            if instr is not None:
                comps[current].append(instr)
    if not entry:
        raise ShardcError("the HLO text has no ENTRY computation")
    return comps, entry


def _callees(instr: _Instr, defs: dict[str, _Instr], comps: dict[str, list[_Instr]]) -> list[tuple[str, int]]:
    """(computation, executions per execution of ``instr``) of everything it calls."""
    out = []
    for m in _CALLS_RE.finditer(instr.attrs):
        key = m.group(0).split("=")[0]
        for name in re.findall(r"%?([\w.\-]+)", m.group(1)):
            if key == "body":
                out.append((name, _trip_count(instr, defs, comps)))
            elif key != "condition":
                out.append((name, 1))
    return out


def _trip_count(loop: _Instr, defs: dict[str, _Instr], comps: dict[str, list[_Instr]]) -> int:
    """A while loop's trip count: XLA's ``known_trip_count``, or (an unoptimised module) read from a
    condition ``i < N`` on a tuple element that starts at a constant (a ``lax.scan``'s counter)."""
    trip = _TRIP_RE.search(loop.attrs)
    if trip is not None:
        return int(trip.group(1))
    cond = re.search(r"condition=%?([\w.\-]+)", loop.attrs)
    body = comps.get(cond.group(1), []) if cond else []
    cdefs = {x.name: x for x in body}
    root = next((x for x in body if x.root), None)
    if root is not None and root.opcode == "compare" and "direction=LT" in root.attrs and len(root.operands) == 2:
        index, limit = (cdefs.get(n) for n in root.operands)
        init = defs.get(loop.operands[0]) if loop.operands else None
        is_element = index is not None and index.opcode == "get-tuple-element"
        m = re.search(r"index=(\d+)", index.attrs) if index is not None and is_element else None
        if m and limit is not None and limit.opcode == "constant" and init is not None and init.opcode == "tuple":
            start = defs.get(init.operands[int(m.group(1))])
            if start is not None and start.opcode == "constant":
                return _constant(limit) - _constant(start)
    raise ShardcError(f"while loop {loop.name} has no known trip count; its collectives cannot be counted per run")


def _constant(x: _Instr) -> int:
    m = re.match(r"\s*(-?\d+)\s*$", ",".join(x.operands)) if x.operands else None
    if m is None:
        raise ShardcError(f"HLO constant {x.name} is not an integer scalar")
    return int(m.group(1))


def parse_hlo(text: str, num_devices: int) -> HloCounts:
    """Every collective and dot of an HLO module, with executions per run (module docstring)."""
    comps, entry = _parse_module(text)
    executions: Counter = Counter()

    def visit(comp: str, times: int) -> None:
        executions[comp] += times
        instrs = comps.get(comp, [])
        defs = {x.name: x for x in instrs}
        for instr in instrs:
            for callee, n in _callees(instr, defs, comps):
                visit(callee, times * n)

    visit(entry, 1)
    collectives: list[HloCollective] = []
    dots: list[HloDot] = []
    for comp, instrs in comps.items():
        times = executions[comp]
        if not times:
            continue
        types = {i.name: i.type_text for i in instrs}
        for i in instrs:
            base = i.opcode[:-len("-start")] if i.opcode.endswith("-start") else i.opcode
            if base in KINDS:
                collectives.append(_collective(i, KINDS[base], types, num_devices, times))
            elif i.opcode == "dot":
                dots.append(HloDot(_dot_flops(i, types), times))
    return HloCounts(tuple(collectives), tuple(dots))


def _operand_shapes(i: _Instr, types: dict[str, str]) -> tuple[Shape, ...]:
    out: list[Shape] = []
    for name in i.operands:
        if name not in types:
            raise ShardcError(f"HLO operand {name} of {i.name} is not defined in its computation")
        out += shapes(types[name])
    return tuple(out)


def _collective(i: _Instr, kind: str, types: dict[str, str], num_devices: int, times: int) -> HloCollective:
    operands = _operand_shapes(i, types)
    results = shapes(i.type_text)
    if i.opcode.endswith("-start") and len(results) > len(operands):
        # an async start's type is (operands, results[, context])
        results = results[len(operands):2 * len(operands)]
    if kind == "collective_permute":
        pairs = re.findall(r"\{(\d+),(\d+)\}", i.attrs.split("source_target_pairs=")[-1])
        return HloCollective(kind, operands, results, (), times, any(a != b for a, b in pairs))
    groups = replica_groups(i.attrs, num_devices)
    moves = any(len(g) > 1 for g in groups)  # groups of one device move nothing
    return HloCollective(kind, operands, results, groups, times, moves)


def _dot_flops(i: _Instr, types: dict[str, str]) -> float:
    (result,) = shapes(i.type_text) or (("f32", ()),)
    lhs = _operand_shapes(i, types)[0]
    m = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", i.attrs)
    contracted = [int(x) for x in m.group(1).split(",") if x] if m else []
    return 2.0 * math.prod(result[1]) * math.prod(lhs[1][d] for d in contracted)
