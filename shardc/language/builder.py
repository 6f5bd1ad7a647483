"""Programs built from Python: :class:`Builder` makes the :class:`~shardc.ir.graph.Graph` that
parsing the same program's text would, with the language's rules and no text.

::

    b = Builder("ffn", dims={"B": 4, "L": 2, "E": 8, "F": 32}, mesh="2x2")
    x = b.input("x", "f32", "BLE")
    with b.repeat(2):                       # two layers, each with its own params
        g = b.param("g", "f32", "E")
        win, wout = b.param("win", "f32", "EF"), b.param("wout", "f32", "FE")
        h = b.let("h", b.layernorm(x, g, over="E"))
        f = b.einsum("BLF,FE->BLE", b.gelu(b.einsum("BLE,EF->BLF", h, win)), wout)
        x = b.let("x", x + f)               # rebinds the outer x: carried to the next layer
    b.output(x)
    g = b.graph()                           # == shardc.parse(shardc.format(g))

Calls return :class:`Tensor` handles, which combine with ``+ - * /`` (and numbers) as in the
language.  An expression becomes part of the program when :meth:`Builder.let` names it (or it is
an operand of one that does); nested calls become anonymous temporaries, as nested expressions
of the text do.  Names follow the language's rules (docs/language.md): assigned once, except that
``let`` of an outer name inside ``repeat`` rebinds it (a loop carry), and names made inside a
``repeat`` are local to it.  Every mistake is a :class:`~shardc.errors.ShardcError` raised by the
call that makes it, so the traceback points at the user's line.
"""
from __future__ import annotations

import contextlib
import re
from typing import Iterator, Mapping, Sequence, Union

from shardc.errors import ShardcError
from shardc.ir.graph import (
    BINARY,
    Attrs,
    CausalAttrs,
    CollectiveAttrs,
    Const,
    DeclKind,
    EinsumAttrs,
    Graph,
    NoAttrs,
    OpKind,
    OverAttrs,
    RelabelAttrs,
    TensorType,
    Value,
)
from shardc.ir.layout import Layout
from shardc.ir.mesh import Mesh
from shardc.ir.ops import OP_DEFS, OpTypeError, result_dims, result_dtype
from shardc.language.builder_record import Lowering, Node, Outputs, Record
from shardc.language.lower import RESERVED

__all__ = ["Builder", "Tensor"]

_NAME_RE = re.compile(r"[a-z_][a-z0-9_]*")
_SPEC_RE = re.compile(r"([A-Z]+)(?:,([A-Z]+))?->([A-Z]+)")
LayoutLike = Union[Layout, str, None]


class Tensor:
    """A value of the program being built: its ``name`` (``None`` for an expression not yet named),
    ``dims`` and ``dtype``.  ``a + b``, ``a * 0.5``, ``-a``, ... make the language's arithmetic."""

    __slots__ = ("_builder", "_node")

    def __init__(self, builder: Builder, node: Node) -> None:
        self._builder = builder
        self._node = node

    name = property(lambda self: self._node.name)
    dims = property(lambda self: self._node.type.dims)
    dtype = property(lambda self: self._node.type.dtype)

    def __repr__(self) -> str:
        return f"<Tensor {self.name or 'expression'} : {self._node.type}>"

    def _binary(self, kind: OpKind, left: object, right: object) -> Tensor:
        return self._builder._op(kind, (left, right))

    def __add__(self, other: object) -> Tensor:
        return self._binary(OpKind.ADD, self, other)

    def __radd__(self, other: object) -> Tensor:
        return self._binary(OpKind.ADD, other, self)

    def __sub__(self, other: object) -> Tensor:
        return self._binary(OpKind.SUB, self, other)

    def __rsub__(self, other: object) -> Tensor:
        return self._binary(OpKind.SUB, other, self)

    def __mul__(self, other: object) -> Tensor:
        return self._binary(OpKind.MUL, self, other)

    def __rmul__(self, other: object) -> Tensor:
        return self._binary(OpKind.MUL, other, self)

    def __truediv__(self, other: object) -> Tensor:
        return self._binary(OpKind.DIV, self, other)

    def __rtruediv__(self, other: object) -> Tensor:
        return self._binary(OpKind.DIV, other, self)

    def __neg__(self) -> Tensor:
        return self._builder._op(OpKind.NEG, (self,))


class Builder:
    """Builds a program: ``Builder(name, dims={"B": 8, ...}, mesh="4x4x4")`` (mesh optional: a
    :class:`~shardc.ir.mesh.Mesh`, a spec string or ``None``), then declarations, ops, ``let``,
    ``output`` and ``repeat``, then :meth:`graph`."""

    def __init__(self, name: str, dims: Mapping[str, int] | Sequence[tuple[str, int]],
                 mesh: Mesh | str | None = None) -> None:
        self._name = self._check_name(name, "model")
        pairs = tuple(dims.items()) if isinstance(dims, Mapping) else tuple(dims)
        for d, n in pairs:
            if not (isinstance(d, str) and len(d) == 1 and d.isupper() and d.isascii()):
                raise ShardcError(f"dim {d!r}: a dim is one upper-case letter (B, L, E, ...)")
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise ShardcError(f"dim {d}={n!r}: a size is a whole number of at least 1")
        if len({d for d, _ in pairs}) != len(pairs):
            raise ShardcError("a dim is declared twice")
        self._dims = pairs
        self._sizes = dict(pairs)
        self._mesh = Mesh.parse(mesh) if isinstance(mesh, str) else mesh
        self._top = Record()
        self._block = self._top

    # -- declarations and names ----------------------------------------------------------------
    def input(self, name: str, dtype: str, dims: str | Sequence[str], layout: LayoutLike = None) -> Tensor:
        """``input NAME : DTYPE[DIMS] [@ LAYOUT]`` (top level only); ``dims`` as ``"BLE"`` or a list."""
        if self._block is not self._top:
            raise ShardcError(f"input '{name}': inputs are declared at the top level, never inside repeat")
        return self._declare(DeclKind.INPUT, name, dtype, dims, layout)

    def param(self, name: str, dtype: str, dims: str | Sequence[str], layout: LayoutLike = None) -> Tensor:
        """``param NAME : DTYPE[DIMS] [@ LAYOUT]``: a weight (inside ``repeat``, one per layer)."""
        return self._declare(DeclKind.PARAM, name, dtype, dims, layout)

    def cache(self, name: str, dtype: str, dims: str | Sequence[str], layout: LayoutLike = None) -> Tensor:
        """``cache NAME : DTYPE[DIMS] [@ LAYOUT]``: state read every step, such as a KV cache."""
        return self._declare(DeclKind.CACHE, name, dtype, dims, layout)

    def let(self, name: str, value: Tensor, layout: LayoutLike = None) -> Tensor:
        """``NAME = EXPR [@ LAYOUT]``: name an expression, or rebind an outer name inside ``repeat``."""
        node = self._mine(value, f"let '{name}'")
        if not isinstance(node.kind, OpKind) or node.name is not None:
            raise ShardcError(f"let '{name}': the value must be an expression, not the name "
                              f"'{node.name}' (a mere rename is an error in the language)")
        self._bind(name, node, rebind=True)
        node.layout = self._layout(layout, node.type.dims, f"'{name}'")
        return value

    def output(self, *values: Tensor, layout: LayoutLike = None) -> None:
        """``output NAME, ... [@ LAYOUT]`` (inside ``repeat``: once per layer)."""
        if not values:
            raise ShardcError("output needs at least one value")
        if layout is not None and len(values) != 1:
            raise ShardcError("an output pin is allowed only when a single name is listed")
        nodes = [self._mine(v, "output") for v in values]
        for n in nodes:
            if n.name is None:
                raise ShardcError("output takes named values: name the expression first with let()")
        pin = self._layout(layout, nodes[0].type.dims, "the output") if layout is not None else None
        self._block.stmts.append(("output", Outputs(tuple(nodes), pin)))

    @contextlib.contextmanager
    def repeat(self, count: int) -> Iterator[None]:
        """``repeat N { ... }``: the statements made inside the ``with`` block are one layer."""
        if self._block is not self._top:
            raise ShardcError("repeat blocks cannot be nested")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ShardcError(f"repeat {count!r}: the count is a whole number of at least 1")
        self._block = Record(count=count)
        try:
            yield
        finally:
            block, self._block = self._block, self._top
        self._top.stmts.append(("repeat", block))
        for name in block.names:  # rebound outer names now mean the last layer's value
            if name in self._top.names:
                self._top.names[name] = block.names[name]

    # -- ops ---------------------------------------------------------------------------------------
    def einsum(self, spec: str, *operands: Tensor) -> Tensor:
        """``einsum("BLE,EF->BLF", a, b)`` (one or two operands)."""
        m = _SPEC_RE.fullmatch(spec) if isinstance(spec, str) else None
        if m is None:
            raise ShardcError(f'malformed einsum spec {spec!r}: expected e.g. "BLE,EF->BLF", no spaces')
        inputs = tuple(g for g in m.groups()[:2] if g)
        return self._op(OpKind.EINSUM, operands, EinsumAttrs(inputs, m.group(3)))

    def layernorm(self, a: Tensor, gain: Tensor | None = None, *, over: str) -> Tensor:
        return self._norm(OpKind.LAYERNORM, a, gain, over)

    def rmsnorm(self, a: Tensor, gain: Tensor | None = None, *, over: str) -> Tensor:
        return self._norm(OpKind.RMSNORM, a, gain, over)

    def softmax(self, a: Tensor, *, over: str) -> Tensor:
        return self._op(OpKind.SOFTMAX, (a,), OverAttrs(over))

    def sum(self, a: Tensor, *, over: str) -> Tensor:
        return self._op(OpKind.SUM, (a,), OverAttrs(over))

    def gelu(self, a: Tensor) -> Tensor:
        return self._op(OpKind.GELU, (a,))

    def relu(self, a: Tensor) -> Tensor:
        return self._op(OpKind.RELU, (a,))

    def silu(self, a: Tensor) -> Tensor:
        return self._op(OpKind.SILU, (a,))

    def tanh(self, a: Tensor) -> Tensor:
        return self._op(OpKind.TANH, (a,))

    def exp(self, a: Tensor) -> Tensor:
        return self._op(OpKind.EXP, (a,))

    def causal(self, a: Tensor, query: str, key: str) -> Tensor:
        """``causal(a, L, S)``: the causal mask of a prefill."""
        return self._op(OpKind.CAUSAL, (a,), CausalAttrs(query, key))

    def relabel(self, a: Tensor, **renames: str) -> Tensor:
        """``relabel(a, L="S")``: rename dims."""
        if not renames:
            raise ShardcError("relabel needs at least one OLD=NEW pair, e.g. relabel(a, L='S')")
        return self._op(OpKind.RELABEL, (a,), RelabelAttrs(tuple(renames.items())))

    def last(self, a: Tensor, **rename: str) -> Tensor:
        """``last(a, L="T")``: the last ``size(T)`` positions along ``L``."""
        return self._op(OpKind.LAST, (a,), RelabelAttrs(tuple(rename.items())))

    def all_gather(self, a: Tensor, *, over: str) -> Tensor:
        return self._op(OpKind.ALL_GATHER, (a,), CollectiveAttrs(tuple(over)))

    def all_reduce(self, a: Tensor, *, over: str) -> Tensor:
        return self._op(OpKind.ALL_REDUCE, (a,), CollectiveAttrs(tuple(over)))

    def reduce_scatter(self, a: Tensor, *, over: str, dim: str) -> Tensor:
        return self._op(OpKind.REDUCE_SCATTER, (a,), CollectiveAttrs(tuple(over), dim))

    def slice(self, a: Tensor, *, over: str, dim: str) -> Tensor:
        return self._op(OpKind.SLICE, (a,), CollectiveAttrs(tuple(over), dim))

    def all_to_all(self, a: Tensor, *, over: str, from_: str, to: str) -> Tensor:
        """``all_to_all(a, over=x, from=H, to=B)`` (``from`` is spelled ``from_`` in Python)."""
        return self._op(OpKind.ALL_TO_ALL, (a,), CollectiveAttrs(tuple(over), None, from_, to))

    # -- the program -----------------------------------------------------------------------------
    def graph(self) -> Graph:
        """The program built so far, checked and numbered as the front end numbers a parsed one."""
        if self._block is not self._top:
            raise ShardcError("graph() inside a repeat block: finish the block first")
        return Lowering(self._name, self._mesh, self._dims, self._top).run()

    # -- internals ---------------------------------------------------------------------------------
    def _check_name(self, name: object, what: str) -> str:
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise ShardcError(f"{what} name {name!r}: names are lower-case letters, digits and _, "
                              "starting with a letter or _")
        if name in RESERVED:
            raise ShardcError(f"{what} name '{name}' is a reserved word of the language")
        return name

    def _visible(self, name: str) -> Node | None:
        return self._block.names.get(name) or self._top.names.get(name)

    def _bind(self, name: str, node: Node, rebind: bool) -> None:
        """Name ``node`` in the current block: once, except a ``let`` of an outer name in a repeat."""
        self._check_name(name, "the")
        outer = self._top.names.get(name) if self._block is not self._top else None
        if outer is not None:
            if not rebind:
                raise ShardcError(f"'{name}' is already defined outside the repeat; only let() may rebind it")
            if outer.type.dims != node.type.dims:
                raise ShardcError(f"rebinding '{name}' must keep its dims [{', '.join(outer.type.dims)}], "
                                  f"not [{', '.join(node.type.dims)}]")
        elif name in self._block.names:
            raise ShardcError(f"'{name}' is already defined; names are assigned once (only an outer name "
                              "may be rebound, by let() inside repeat)")
        node.name = name
        self._block.names[name] = node
        self._block.stmts.append(("decl" if isinstance(node.kind, DeclKind) else "let", node))

    def _declare(self, kind: DeclKind, name: str, dtype: str, dims: str | Sequence[str],
                 layout: LayoutLike) -> Tensor:
        t = TensorType(dtype, tuple(dims))  # type: ignore[arg-type]
        for d in t.dims:
            if d not in self._sizes:
                raise ShardcError(f"{kind} '{name}': dim {d!r} is not declared (the dims are "
                                  f"{', '.join(self._sizes)})")
        if not t.dims or len(set(t.dims)) != len(t.dims):
            raise ShardcError(f"{kind} '{name}': a tensor has at least one dim, each once ({t})")
        node = Node(kind, t)
        self._bind(name, node, rebind=False)
        node.layout = self._layout(layout, t.dims, f"{kind} '{name}'")
        return Tensor(self, node)

    def _layout(self, layout: LayoutLike, dims: tuple[str, ...], what: str) -> Layout | None:
        if layout is None:
            return None
        if isinstance(layout, str):
            text, _, partial = layout.partition(" ")
            layout = Layout.parse(text, partial or None)
        if layout.dims != dims:
            raise ShardcError(f"{what}: layout {layout} does not match its dims [{', '.join(dims)}]")
        if self._mesh is None:
            raise ShardcError(f"{what}: a layout needs a mesh; give Builder(..., mesh=...)")
        layout.check(self._sizes, self._mesh, dims)
        return layout

    def _mine(self, value: object, what: str) -> Node:
        if not isinstance(value, Tensor) or value._builder is not self:
            raise ShardcError(f"{what}: expected a Tensor of this builder, got {value!r}")
        return value._node

    def _norm(self, kind: OpKind, a: Tensor, gain: Tensor | None, over: str) -> Tensor:
        if gain is not None and self._mine(gain, f"{kind}'s gain").name is None:
            raise ShardcError(f"{kind}: the gain is a name (a param), not an expression")
        return self._op(kind, (a,) if gain is None else (a, gain), OverAttrs(over))

    def _op(self, kind: OpKind, args: Sequence[object], attrs: Attrs | None = None) -> Tensor:
        attrs = NoAttrs() if attrs is None else attrs
        nodes: list[Node | float] = []
        for a in args:
            if isinstance(a, (int, float)) and not isinstance(a, bool) and kind in BINARY:
                nodes.append(float(a))
            else:
                nodes.append(self._mine(a, str(kind)))
        # The shape rule on stand-in values: the same checks (and messages) as the front end's.
        stand_in = tuple(Const(n) if isinstance(n, float) else Value(i, n.name, n.type)
                         for i, n in enumerate(nodes))
        for d in _named_dims(attrs):
            if d not in self._sizes:
                raise ShardcError(f"{OP_DEFS[kind].spelling}: dim {d!r} is not declared")
        try:
            dims = result_dims(kind, stand_in, attrs, self._sizes)
        except OpTypeError as err:
            raise ShardcError(f"{OP_DEFS[kind].spelling}: {err.message}") from None
        return Tensor(self, Node(kind, TensorType(result_dtype(kind, stand_in), dims), tuple(nodes), attrs))


def _named_dims(attrs: Attrs) -> list[str]:
    if isinstance(attrs, OverAttrs):
        return [attrs.dim]
    if isinstance(attrs, CausalAttrs):
        return [attrs.query, attrs.key]
    if isinstance(attrs, RelabelAttrs):
        return [d for pair in attrs.renames for d in pair]
    if isinstance(attrs, CollectiveAttrs):
        return [d for d in (attrs.dim, attrs.src, attrs.dst) if d is not None]
    return []
