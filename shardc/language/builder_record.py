"""What :class:`~shardc.language.builder.Builder` records, and its lowering to IR.

The builder records declarations, named expressions (``let``), outputs and repeat blocks as
they are made; :class:`Lowering` turns the record into the :class:`~shardc.ir.graph.Graph` the
front end would build from the same program's text: anonymous expressions become ops where the
statement using them stands (operands first), a ``let`` of an outer name inside a repeat becomes a
loop carry, and ids are numbered canonically.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from shardc.errors import ShardcError
from shardc.ir.graph import (
    Attrs,
    Block,
    Carry,
    Const,
    Decl,
    DeclKind,
    Graph,
    NoAttrs,
    Op,
    OpKind,
    Output,
    Repeat,
    Stmt,
    TensorType,
    Value,
)
from shardc.ir.layout import Layout
from shardc.ir.mesh import Mesh
from shardc.ir.transforms import renumber


@dataclass(eq=False)
class Node:
    """A declaration or an op recorded by the builder; lowered to IR by :meth:`Builder.graph`."""

    kind: OpKind | DeclKind
    type: TensorType
    operands: tuple["Node | float", ...] = ()
    attrs: Attrs = field(default_factory=NoAttrs)
    name: str | None = None
    layout: Layout | None = None


@dataclass(frozen=True)
class Outputs:
    nodes: tuple[Node, ...]
    pin: Layout | None


@dataclass(eq=False)
class Record:
    stmts: list[tuple[str, "Node | Outputs | Record"]] = field(default_factory=list)  # in order
    names: dict[str, Node] = field(default_factory=dict)  # bound here: name -> its latest binding
    count: int = 0  # repeat count (0: the top level)


class Lowering:
    """The recorded statements -> IR, resolving names as the language does (loop carries included)."""

    def __init__(self, name: str, mesh: Mesh | None, dims: tuple[tuple[str, int], ...], top: Record) -> None:
        self.name, self.mesh, self.dims, self.top = name, mesh, dims, top
        self.ids = iter(range(1 << 62))
        self.values: dict[int, Value] = {}  # id(node) -> its value, while it is visible
        self.bound: dict[str, Value] = {}  # top-level name -> the value it has now
        self.stale: dict[int, str] = {}  # id(node) -> why it may no longer be used

    def run(self) -> Graph:
        body = self.block(self.top, top=True)
        return renumber(Graph(self.name, self.mesh, self.dims, Block(tuple(body))))[0]

    def block(self, block: Record, top: bool) -> list[Stmt]:
        out: list[Stmt] = []
        for what, item in block.stmts:
            if isinstance(item, Record):
                out.append(self.repeat(item))
            elif isinstance(item, Node):
                v = self.define(item) if what == "decl" else self.emit(item, out)
                if what == "decl":
                    out.append(Decl(item.kind, v))  # type: ignore[arg-type]
                if top:
                    self.bound[v.name or ""] = v
            else:
                assert isinstance(item, Outputs)
                out.append(Output(tuple(self.use(n, out) for n in item.nodes), item.pin))
        return out

    def define(self, node: Node) -> Value:
        v = Value(next(self.ids), node.name, node.type, node.layout)
        self.values[id(node)] = v
        return v

    def use(self, node: Node, out: list[Stmt]) -> Value:
        if id(node) in self.stale:
            raise ShardcError(self.stale[id(node)])
        if id(node) in self.values:
            if node.name is None:  # printed, a second use would need a name the graph lacks
                raise ShardcError(f"an expression ({node.kind} giving {node.type}) is used twice; name it once "
                                  "with let() and use the name")
            return self.values[id(node)]
        if node.name is not None:
            raise ShardcError(f"'{node.name}' is used where it is not visible: before its let(), or after the "
                              "repeat it was made in (names made inside a repeat are local to it; only the "
                              "last rebinding of an outer name is seen after the block)")
        return self.emit(node, out)

    def emit(self, node: Node, out: list[Stmt]) -> Value:
        """The op of ``node``, after the ops of its anonymous operands (operands first, as parsed)."""
        assert isinstance(node.kind, OpKind)
        operands = tuple(Const(o) if isinstance(o, float) else self.use(o, out) for o in node.operands)
        op = Op(node.kind, self.define(node), operands, node.attrs)
        out.append(op)
        return op.result

    def repeat(self, block: Record) -> Repeat:
        lets = [n.name for w, n in block.stmts if w == "let" and isinstance(n, Node)]
        carried = [n for n in dict.fromkeys(lets) if n in self.bound]  # in order of first rebinding
        inits = {n: self.bound[n] for n in carried}
        args = {n: Value(next(self.ids), n, v.type, v.layout) for n, v in inits.items()}
        outer = [k for k, v in self.values.items() if v.name in inits and v is inits[v.name]]
        for k in outer:  # inside the body an outer name means the value carried into the layer
            self.values[k] = args[self.values[k].name or ""]
        before = set(self.values)
        body = self.block(block, top=False)
        carries = []
        for n in carried:
            nxt = self.values[id(block.names[n])]
            self.bound[n] = Value(next(self.ids), n, nxt.type, nxt.layout)
            carries.append(Carry(inits[n], args[n], nxt, self.bound[n]))
        for k in set(self.values) - before:  # the body's own values are local to it ...
            del self.values[k]
        for n in carried:  # ... but the last rebinding of an outer name is its value after the block
            self.values[id(block.names[n])] = self.bound[n]
        for k in outer:
            name = self.values.pop(k).name
            self.stale[k] = (f"'{name}' was rebound inside the repeat: after it, '{name}' is the last layer's "
                             "value (use the Tensor the last let() returned)")
        return Repeat(block.count, tuple(carries), Block(tuple(body)))
