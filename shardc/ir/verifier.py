"""The IR verifier: checks that a Graph is well formed; run after every pass.

The frontend only builds valid graphs, but passes build graphs by hand, so
this re-derives every fact from scratch: single assignment, every operand
defined before use and visible in its block, every result type equal to its
op's shape rule and dtype rule, attrs of the class its kind takes, loop carries consistent, layouts valid on the
mesh.  Failures are :class:`~shardc.errors.ShardcError` located at the
offending statement when it has a source location.
"""
from __future__ import annotations

from shardc.errors import NOLOC, Loc, ShardcError
from shardc.ir.graph import Block, Const, Decl, Graph, Op, Output, Repeat, Value
from shardc.ir.ops import OP_DEFS, OpTypeError, result_dims, result_dtype


class _Verifier:
    def __init__(self, g: Graph) -> None:
        self.g = g
        self.sizes = g.sizes
        self.defined: set[int] = set()

    def fail(self, message: str, loc: Loc = NOLOC) -> ShardcError:
        return ShardcError(f"invalid IR: {message}", self.g.source, loc)

    def check_value(self, v: Value, loc: Loc) -> None:
        if v.id in self.defined:
            raise self.fail(f"value %{v.id} ({v.name}) is defined twice", loc)
        for d in v.dims:
            if d not in self.sizes:
                raise self.fail(f"value {v.name or '%' + str(v.id)} uses undeclared dim {d}", loc)
        if len(set(v.dims)) != len(v.dims):
            raise self.fail(f"value {v.name} repeats a dim in {v.type}", loc)
        if not v.dims:
            raise self.fail(f"value {v.name} has no dims", loc)
        if v.layout is not None:
            try:
                if self.g.mesh is not None:
                    v.layout.check(self.sizes, self.g.mesh, v.dims)
                elif v.layout.dims != v.dims:
                    raise ShardcError(f"layout {v.layout} does not match dims {v.type}")
            except ShardcError as err:
                raise self.fail(f"{v.name or '%' + str(v.id)}: {err.message}", loc) from None
        self.defined.add(v.id)

    def check_use(self, v: Value, visible: set[int], loc: Loc) -> None:
        if v.id not in visible:
            raise self.fail(f"value {v.name or '%' + str(v.id)} is used where it is not defined", loc)

    def check_op(self, stmt: Op, visible: set[int]) -> None:
        for o in stmt.operands:
            if isinstance(o, Value):
                self.check_use(o, visible, stmt.loc)
        if all(isinstance(o, Const) for o in stmt.operands) and stmt.operands:
            raise self.fail("an op needs at least one tensor operand", stmt.loc)
        want = OP_DEFS[stmt.kind].attrs.cls
        if type(stmt.attrs) is not want:
            raise self.fail(f"{stmt.kind} takes {want.__name__}, but its attrs are "
                            f"{type(stmt.attrs).__name__}", stmt.loc)
        try:
            dims = result_dims(stmt.kind, stmt.operands, stmt.attrs, self.sizes)
        except OpTypeError as err:
            raise self.fail(err.message, stmt.loc) from None
        if dims != stmt.result.dims:
            raise self.fail(f"{stmt.kind} should give dims [{', '.join(dims)}], "
                            f"result says {stmt.result.type}", stmt.loc)
        if result_dtype(stmt.kind, stmt.operands) != stmt.result.dtype:
            raise self.fail(f"{stmt.kind} result dtype should be {result_dtype(stmt.kind, stmt.operands)}",
                            stmt.loc)
        self.check_value(stmt.result, stmt.loc)
        visible.add(stmt.result.id)

    def check_repeat(self, stmt: Repeat, visible: set[int], in_repeat: bool) -> None:
        if in_repeat:
            raise self.fail("nested repeat", stmt.loc)
        if stmt.count < 1:
            raise self.fail("repeat count must be at least 1", stmt.loc)
        inner = set(visible)
        for c in stmt.carries:
            self.check_use(c.init, visible, stmt.loc)
            if not (c.init.dims == c.arg.dims == c.next.dims == c.result.dims):
                raise self.fail(f"loop-carried '{c.arg.name}' changes dims", stmt.loc)
            self.check_value(c.arg, stmt.loc)
            inner.add(c.arg.id)
            inner.discard(c.init.id)  # inside the body the name means the carried value
        self.block(stmt.body, inner, True)
        for c in stmt.carries:
            self.check_use(c.next, inner, stmt.loc)
            self.check_value(c.result, stmt.loc)
            visible.add(c.result.id)

    def block(self, block: Block, visible: set[int], in_repeat: bool) -> None:
        for stmt in block:
            if isinstance(stmt, Decl):
                self.check_value(stmt.value, stmt.loc)
                visible.add(stmt.value.id)
            elif isinstance(stmt, Op):
                self.check_op(stmt, visible)
            elif isinstance(stmt, Output):
                for v in stmt.values:
                    self.check_use(v, visible, stmt.loc)
            elif isinstance(stmt, Repeat):
                self.check_repeat(stmt, visible, in_repeat)
            else:
                raise self.fail(f"unknown statement {type(stmt).__name__}")


def verify_graph(g: Graph) -> Graph:
    """Check ``g`` is well formed (raise ShardcError otherwise) and return it, for chaining."""
    _Verifier(g).block(g.body, set(), False)
    return g
