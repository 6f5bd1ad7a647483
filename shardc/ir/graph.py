"""The typed IR: a flat single-assignment program over tensors with named dims.

A :class:`Graph` is a model name, an optional default :class:`~shardc.ir.mesh.Mesh`,
the dim sizes, and a :class:`Block` of statements.  Statements are
:class:`Decl` (input / param / cache), :class:`Op` (one op producing one
:class:`Value`), :class:`Output`, and :class:`Repeat` -- a stack of identical
layers kept as *one* body with a trip count, never unrolled, so a 10^6-layer
model is as cheap to hold as a one-layer model.

Values are SSA: each has a unique integer ``id``.  Source names may repeat
(a name defined outside a ``repeat`` and rebound inside it), so a name alone
does not identify a value; ``id`` does.  Anonymous temporaries from nested
source expressions have ``name=None``; the printer inlines them back.

Loop-carried names are explicit (:class:`Carry`), like block arguments in
MLIR's ``scf.for``: ``init`` (outside, before the loop) flows into ``arg``
(inside, at the start of a layer); ``next`` (the last rebinding inside) flows
into the next layer's ``arg`` and, after the last layer, into ``result``.

Every value may carry a :class:`~shardc.ir.layout.Layout`: in a source program a
pin (``@ BLE_xyz``), in a sharded program a fact for every value.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Iterator, TypeVar, Union

from shardc.errors import NOLOC, Loc, ShardcError, Source
from shardc.ir.layout import Layout
from shardc.ir.mesh import Mesh


class DType(enum.StrEnum):
    """Storage dtypes of the language."""

    F32 = "f32"
    BF16 = "bf16"
    F16 = "f16"
    INT8 = "int8"

    @property
    def bytes(self) -> int:
        return {"f32": 4, "bf16": 2, "f16": 2, "int8": 1}[self.value]


def dtype_of(name: DType | str) -> DType:
    """``name`` as a :class:`DType` (``"bf16"`` -> ``DType.BF16``), or a ShardcError naming the dtypes."""
    try:
        return DType(name)
    except ValueError:
        raise ShardcError(f"unknown dtype {name!r}; choose {', '.join(d.value for d in DType)}") from None


@dataclass(frozen=True)
class TensorType:
    """``dtype[dims]``: storage dtype and named dims, in order (global shape)."""

    dtype: DType
    dims: tuple[str, ...]

    def __post_init__(self) -> None:
        # From Python, TensorType("bf16", "BLE") is TensorType(DType.BF16, ("B", "L", "E")).
        if type(self.dtype) is not DType:
            object.__setattr__(self, "dtype", dtype_of(self.dtype))
        if type(self.dims) is not tuple:
            object.__setattr__(self, "dims", tuple(self.dims))

    def __str__(self) -> str:
        return f"{self.dtype}[{', '.join(self.dims)}]"


@dataclass(frozen=True)
class Value:
    """One SSA value.  ``name`` is the source name (None for a temporary)."""

    id: int
    name: str | None
    type: TensorType
    layout: Layout | None = None

    @property
    def dims(self) -> tuple[str, ...]:
        return self.type.dims

    @property
    def dtype(self) -> DType:
        return self.type.dtype


@dataclass(frozen=True)
class Const:
    """A number standing for an operand of ``+ - * /`` (broadcast to any shape)."""

    value: float


Operand = Union[Value, Const]


class OpKind(enum.StrEnum):
    """Every op of the language.  Tables keyed by OpKind give each its rules."""

    EINSUM = "einsum"
    ADD = "add"
    SUB = "sub"
    MUL = "mul"
    DIV = "div"
    NEG = "neg"
    GELU = "gelu"
    RELU = "relu"
    SILU = "silu"
    TANH = "tanh"
    EXP = "exp"
    LAYERNORM = "layernorm"
    RMSNORM = "rmsnorm"
    SOFTMAX = "softmax"
    SUM = "sum"
    CAUSAL = "causal"
    RELABEL = "relabel"
    LAST = "last"
    ALL_GATHER = "all_gather"
    REDUCE_SCATTER = "reduce_scatter"
    ALL_REDUCE = "all_reduce"
    ALL_TO_ALL = "all_to_all"
    SLICE = "slice"

    @property
    def is_collective(self) -> bool:
        return self in COLLECTIVES


COLLECTIVES = frozenset(
    {OpKind.ALL_GATHER, OpKind.REDUCE_SCATTER, OpKind.ALL_REDUCE, OpKind.ALL_TO_ALL, OpKind.SLICE}
)
BINARY = frozenset({OpKind.ADD, OpKind.SUB, OpKind.MUL, OpKind.DIV})


# --- per-kind attributes -------------------------------------------------------
@dataclass(frozen=True)
class NoAttrs:
    """Ops without attributes (arithmetic, activations)."""


@dataclass(frozen=True)
class EinsumAttrs:
    """``"BLE,EF->BLF"`` as operand letter strings and the output letters."""

    inputs: tuple[str, ...]
    output: str

    @property
    def spec(self) -> str:
        return f"{','.join(self.inputs)}->{self.output}"



@dataclass(frozen=True)
class OverAttrs:
    """The one dim a norm, softmax or sum works over."""

    dim: str


@dataclass(frozen=True)
class CausalAttrs:
    """``causal(a, L, S)``: query dim and key dim."""

    query: str
    key: str


@dataclass(frozen=True)
class RelabelAttrs:
    """``relabel(a, L=S)``: (old, new) dim pairs; ``last(a, L=T)``: the one pair (sliced dim, kept dim)."""

    renames: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class CollectiveAttrs:
    """Axes a collective runs over, and the dims it touches.

    ``dim`` for reduce_scatter and slice (where the axes are appended);
    ``src``/``dst`` for all_to_all (written ``from=``/``to=``).
    """

    axes: tuple[str, ...]
    dim: str | None = None
    src: str | None = None
    dst: str | None = None


Attrs = Union[NoAttrs, EinsumAttrs, OverAttrs, CausalAttrs, RelabelAttrs, CollectiveAttrs]
AttrsT = TypeVar("AttrsT", NoAttrs, EinsumAttrs, OverAttrs, CausalAttrs, RelabelAttrs, CollectiveAttrs)


# --- statements ------------------------------------------------------------------
@dataclass(frozen=True)
class Trivia:
    """What the formatter keeps of the layout of the source around a statement.

    ``before``: full-line comments above it; ``after``: a comment ending its
    line; ``blank``: a blank line separated it from what came before.
    """

    before: tuple[str, ...] = ()
    after: str | None = None
    blank: bool = False


NO_TRIVIA = Trivia()


class DeclKind(enum.StrEnum):
    INPUT = "input"
    PARAM = "param"
    CACHE = "cache"


@dataclass(frozen=True)
class Decl:
    """``input|param|cache NAME : DTYPE[DIMS] [@ LAYOUT]``."""

    kind: DeclKind
    value: Value
    loc: Loc = field(default=NOLOC, compare=False)
    trivia: Trivia = field(default=NO_TRIVIA, compare=False)


@dataclass(frozen=True)
class Op:
    """``result = kind(operands..., attrs)``; ``result.layout`` is its pin or layout."""

    kind: OpKind
    result: Value
    operands: tuple[Operand, ...]
    attrs: Attrs = NoAttrs()
    loc: Loc = field(default=NOLOC, compare=False)
    trivia: Trivia = field(default=NO_TRIVIA, compare=False)

    @property
    def inputs(self) -> tuple[Value, ...]:
        """The tensor operands (constants left out)."""
        return tuple(o for o in self.operands if isinstance(o, Value))

    def attrs_as(self, cls: type[AttrsT]) -> AttrsT:
        """``attrs`` as the class its kind takes (the IR verifier checks it), for rules typed by kind."""
        if not isinstance(self.attrs, cls):
            raise TypeError(f"{self.kind} has {type(self.attrs).__name__}, not {cls.__name__}")
        return self.attrs


@dataclass(frozen=True)
class Output:
    """``output a, b [@ LAYOUT]`` (inside a repeat: per-layer outputs)."""

    values: tuple[Value, ...]
    pin: Layout | None = None
    loc: Loc = field(default=NOLOC, compare=False)
    trivia: Trivia = field(default=NO_TRIVIA, compare=False)


@dataclass(frozen=True)
class Carry:
    """A name rebound inside a repeat: init -> arg -> ... -> next -> result."""

    init: Value
    arg: Value
    next: Value
    result: Value


@dataclass(frozen=True)
class Repeat:
    """``repeat count { body }`` with its loop-carried names."""

    count: int
    carries: tuple[Carry, ...]
    body: "Block"
    loc: Loc = field(default=NOLOC, compare=False)
    trivia: Trivia = field(default=NO_TRIVIA, compare=False)
    close_trivia: Trivia = field(default=NO_TRIVIA, compare=False)


Stmt = Union[Decl, Op, Output, Repeat]


@dataclass(frozen=True)
class Block:
    stmts: tuple[Stmt, ...]

    def __iter__(self) -> Iterator[Stmt]:
        return iter(self.stmts)


@dataclass(frozen=True)
class Graph:
    """A whole program.  ``dims`` keeps declaration order; sizes are exact ints."""

    name: str
    mesh: Mesh | None
    dims: tuple[tuple[str, int], ...]
    body: Block
    source: Source | None = field(default=None, compare=False)
    trivia: Trivia = field(default=NO_TRIVIA, compare=False)  # the model line's comments
    mesh_trivia: Trivia = field(default=NO_TRIVIA, compare=False)
    dims_trivia: Trivia = field(default=NO_TRIVIA, compare=False)
    end_trivia: Trivia = field(default=NO_TRIVIA, compare=False)  # comments at end of file

    @property
    def sizes(self) -> dict[str, int]:
        """Dim name -> size."""
        return dict(self.dims)

    @property
    def repeats(self) -> tuple[Repeat, ...]:
        return tuple(s for s in self.body if isinstance(s, Repeat))

    def walk(self) -> Iterator[tuple[Stmt, Repeat | None]]:
        """Every statement in program order, with the repeat it sits in (or None)."""
        for stmt in self.body:
            yield stmt, None
            if isinstance(stmt, Repeat):
                for inner in stmt.body:
                    yield inner, stmt

    def ops(self) -> Iterator[Op]:
        for stmt, _ in self.walk():
            if isinstance(stmt, Op):
                yield stmt

    def decls(self) -> Iterator[tuple[Decl, Repeat | None]]:
        for stmt, rep in self.walk():
            if isinstance(stmt, Decl):
                yield stmt, rep

    def use_counts(self) -> dict[int, int]:
        """How many times each value id is used: as an operand, an output, or a loop carry."""
        uses: dict[int, int] = {}
        for stmt, _ in self.walk():
            values: tuple[Value, ...] = ()
            if isinstance(stmt, Op):
                values = stmt.inputs
            elif isinstance(stmt, Output):
                values = stmt.values
            elif isinstance(stmt, Repeat):
                values = tuple(c.init for c in stmt.carries) + tuple(c.next for c in stmt.carries)
            for v in values:
                uses[v.id] = uses.get(v.id, 0) + 1
        return uses

    def names(self) -> set[str]:
        """Every source name the program declares or assigns."""
        names = {s.result.name for s in self.ops() if s.result.name}
        return names | {d.value.name for d, _ in self.decls() if d.value.name}

    @property
    def is_sharded(self) -> bool:
        """True when every declaration and op carries a layout (a sharded program)."""
        any_stmt = False
        for stmt, _ in self.walk():
            if isinstance(stmt, Decl):
                any_stmt = True
                if stmt.value.layout is None:
                    return False
            elif isinstance(stmt, Op):
                any_stmt = True
                if stmt.result.layout is None:
                    return False
        return any_stmt and self.mesh is not None
