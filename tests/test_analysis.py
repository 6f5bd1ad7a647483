"""The networkx view of a program's dataflow: order, users, dead values."""
import shardc
from shardc.ir.dataflow import dataflow, dead_values, topological_order, users

PROGRAM = """\
model m
dims B=2, E=4
input x : f32[B, E]
param w : f32[E]
param unused : f32[E]
h = x * w
d = gelu(x)
repeat 2 {
  x = x + h
}
output x
"""


def names(g, ids):
    dag = dataflow(g)
    return [dag.nodes[i]["name"] for i in ids]


def test_topological_order_puts_operands_first():
    g = shardc.parse(PROGRAM)
    order = topological_order(g)
    pos = {i: n for n, i in enumerate(order)}
    for u, v in dataflow(g).edges:
        assert pos[u] < pos[v]


def test_users_and_dead_values():
    g = shardc.parse(PROGRAM)
    x = next(d.value for d, _ in g.decls() if d.value.name == "x")
    assert sorted(names(g, users(g, x))) == ["d", "h", "x"]  # h, gelu and the loop carry
    assert sorted(names(g, dead_values(g))) == ["d", "unused"]
