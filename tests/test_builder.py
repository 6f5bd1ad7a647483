"""``shardc.Builder``: programs made from Python are the graphs their text parses to.

The oracle is the front end: every example (sharded programs included) and drawn programs are
rebuilt statement by statement with the builder, and the rebuilt graph must equal the parsed one
and print to text that parses back to it.  The builder's errors are checked one by one.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings

import shardc
from shardc.ir.graph import (
    CausalAttrs,
    CollectiveAttrs,
    Const,
    Decl,
    EinsumAttrs,
    Op,
    OpKind,
    Output,
    OverAttrs,
    RelabelAttrs,
    Repeat,
)
from shardc.testing import graphs

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.model"))


def rebuild(g: shardc.Graph) -> shardc.Graph:
    """``g`` made again with the builder, one call per statement and op."""
    b = shardc.Builder(g.name, g.dims, g.mesh)
    handles: dict[int, shardc.Tensor] = {}

    def operand(o: object) -> object:
        return o.value if isinstance(o, Const) else handles[o.id]  # type: ignore[attr-defined]

    def op(stmt: Op) -> shardc.Tensor:
        args = [operand(o) for o in stmt.operands]
        k, a = stmt.kind, stmt.attrs
        if k in (OpKind.ADD, OpKind.SUB, OpKind.MUL, OpKind.DIV):
            left, right = args
            t = {OpKind.ADD: lambda: left + right, OpKind.SUB: lambda: left - right,  # type: ignore[operator]
                 OpKind.MUL: lambda: left * right, OpKind.DIV: lambda: left / right}[k]()  # type: ignore[operator]
        elif k is OpKind.NEG:
            t = -args[0]  # type: ignore[operator]
        elif isinstance(a, EinsumAttrs):
            t = b.einsum(a.spec, *args)
        elif isinstance(a, OverAttrs):
            t = getattr(b, str(k))(*args, over=a.dim)
        elif isinstance(a, CausalAttrs):
            t = b.causal(args[0], a.query, a.key)
        elif isinstance(a, RelabelAttrs):
            t = getattr(b, str(k))(args[0], **dict(a.renames))
        elif isinstance(a, CollectiveAttrs):
            extra = {"dim": a.dim} if a.dim else {"from_": a.src, "to": a.dst} if a.src else {}
            t = getattr(b, str(k))(args[0], over="".join(a.axes), **extra)
        else:
            t = getattr(b, str(k))(*args)
        return b.let(stmt.result.name, t, stmt.result.layout) if stmt.result.name else t

    def block(stmts: tuple) -> None:
        for s in stmts:
            if isinstance(s, Decl):
                handles[s.value.id] = getattr(b, str(s.kind))(s.value.name, str(s.value.dtype), s.value.dims,
                                                              s.value.layout)
            elif isinstance(s, Op):
                handles[s.result.id] = op(s)
            elif isinstance(s, Output):
                b.output(*(handles[v.id] for v in s.values), layout=s.pin)
            elif isinstance(s, Repeat):
                for c in s.carries:  # in the body the carried name is the outer handle
                    handles[c.arg.id] = handles[c.init.id]
                with b.repeat(s.count):
                    block(s.body.stmts)
                for c in s.carries:  # after it, the handle of the last rebinding
                    handles[c.result.id] = handles[c.next.id]

    block(g.body.stmts)
    return b.graph()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_rebuilds_to_the_parsed_graph(path: Path) -> None:
    g = shardc.load(path)
    built = rebuild(g)
    assert built == g
    assert shardc.parse(shardc.format(built)) == built


@pytest.mark.parametrize("path", [ROOT / "examples" / "tiny_layer.model", ROOT / "examples" / "palm_8b_decode.model"],
                         ids=lambda p: p.stem)
def test_sharded_programs_rebuild_with_their_layouts_and_collectives(path: Path) -> None:
    sg = shardc.shard(shardc.load(path), "2x2x2")
    built = rebuild(sg)
    assert built == sg and built.is_sharded
    assert shardc.verify_sharded(built) is built


@settings(max_examples=60)
@given(graphs())
def test_drawn_programs_rebuild_to_the_parsed_graph(g: shardc.Graph) -> None:
    built = rebuild(g)
    assert built == g
    assert shardc.parse(shardc.format(built)) == built


def test_the_comparison_sees_a_different_program() -> None:
    """The oracle can fail: a builder program with one op changed is not the parsed graph."""
    g = shardc.load(ROOT / "examples" / "tiny_ffn.model")
    b = shardc.Builder(g.name, g.dims, g.mesh)
    x = b.input("x", "f32", "BLE")
    with b.repeat(2):
        gain = b.param("g", "f32", "E")
        win, wout = b.param("win", "f32", "EF"), b.param("wout", "f32", "FE")
        h = b.layernorm(x, gain, over="E")
        x = b.let("x", x + b.einsum("BLF,FE->BLE", b.relu(b.einsum("BLE,EF->BLF", h, win)), wout))
    b.output(x)
    assert b.graph() != g


def _tiny() -> tuple[shardc.Builder, shardc.Tensor]:
    b = shardc.Builder("m", {"B": 2, "E": 4, "F": 4})
    return b, b.input("x", "f32", "BE")


def test_carries_and_locals_follow_the_language() -> None:
    b, x = _tiny()
    with b.repeat(3):
        w = b.param("w", "f32", "EF")
        y = b.let("y", b.relabel(b.einsum("BE,EF->BF", x, w), F="E"))
        x = b.let("x", x + b.tanh(y))
        x = b.let("x", x * 0.5)  # rebound twice in a layer: this one flows on
        b.output(y)  # per layer
    b.output(x)
    g = b.graph()
    text = shardc.format(g)
    assert "  x = x * 0.5" in text and shardc.parse(text) == g
    (rep,) = g.repeats
    assert [c.arg.name for c in rep.carries] == ["x"]
    b.output(y)  # y is local to the block
    with pytest.raises(shardc.ShardcError, match="local to it"):
        b.graph()


def test_an_outer_handle_is_stale_after_its_name_is_rebound() -> None:
    b, x = _tiny()
    before = x
    with b.repeat(2):
        x = b.let("x", x * 2)
    b.let("z", before + 1)  # 'x' now means the last layer's value: the old handle names nothing
    with pytest.raises(shardc.ShardcError, match="rebound inside the repeat"):
        b.graph()


@pytest.mark.parametrize("make, message", [
    (lambda b, x: b.let("x", b.gelu(x)), "'x' is already defined"),
    (lambda b, x: b.let("y", x), "must be an expression"),
    (lambda b, x: b.einsum("BE,FE->BF", x, b.param("w", "f32", "EF")), 'operand 2 has dims \\[E, F\\]'),
    (lambda b, x: b.einsum("BE, EF->BF", x), "malformed einsum spec"),
    (lambda b, x: b.softmax(x, over="F"), "over=F, but the operand has dims"),
    (lambda b, x: b.param("w", "f8", "EF"), "unknown dtype 'f8'"),
    (lambda b, x: b.param("w", "f32", "EQ"), "dim 'Q' is not declared"),
    (lambda b, x: b.param("model", "f32", "E"), "reserved word"),
    (lambda b, x: b.output(b.gelu(x)), "name the expression first"),
    (lambda b, x: b.param("w", "f32", "EF", layout="EF_x"), "a layout needs a mesh"),
])
def test_mistakes_are_errors_of_the_call_that_makes_them(make, message: str) -> None:
    b, x = _tiny()
    with pytest.raises(shardc.ShardcError, match=message):
        make(b, x)


def test_rebinding_keeps_dims_and_an_expression_is_used_once() -> None:
    b, x = _tiny()
    with b.repeat(2):
        with pytest.raises(shardc.ShardcError, match="must keep its dims"):
            b.let("x", b.sum(x, over="E"))
        with pytest.raises(shardc.ShardcError, match="only let\\(\\) may rebind"):
            b.param("x", "f32", "BE")
    with pytest.raises(shardc.ShardcError, match="repeat blocks cannot be nested"):
        with b.repeat(2):
            with b.repeat(2):
                pass
    b, x = _tiny()
    t = b.gelu(x)
    b.let("y", t * t)
    with pytest.raises(shardc.ShardcError, match="used twice"):
        b.graph()
