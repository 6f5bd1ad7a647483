"""Export a sharded program as a standalone JAX program (``shardc export --to jax``).

:func:`export_jax` writes a Python module that builds the plan's mesh (its axis names and
sizes), declares every input, param and cache with the ``PartitionSpec`` of its layout, and
runs the body inside ``shard_map``: one line per op of the sharded program, on each device's
block, with the shardc statement it came from as a comment, and exactly the plan's collectives.
A ``repeat`` becomes one ``lax.scan`` over its per-layer declarations stacked on a leading
layer axis, so the text does not grow with the layer count.

Every op kind has one row in :data:`JAX_OPS`.  The rules that are easy to get wrong:

* the order of a dim's axes is part of its layout: ``BLH_yzxD`` is ``P(None, None, ("y", "z",
  "x"), None)``, and every collective names its axes in the order shardc gives them;
* ``reduce_scatter(a, over=AXES, dim=D)`` is ``psum_scatter(a, AXES, scatter_dimension=i(D),
  tiled=True)`` (AXES appended as the most minor axes of D);
* one ``all_gather`` whose axes are suffixes of several dims is one tiled all-gather per dim,
  each told its result is replicated over the gathered axes;
* ``all_to_all(a, over=AXES, from=S, to=T)`` is ``all_to_all(a, AXES, split_axis=i(T),
  concat_axis=i(S), tiled=True)``;
* ``slice`` sends nothing: ``dynamic_slice_in_dim`` at ``axis_index(AXES) * local``;
* ``causal`` on a split dim uses global positions from ``axis_index``, as the emulator's block
  offsets do;
* a norm or softmax over a split dim all-reduces its per-row statistics as the emulator does:
  rmsnorm one ``psum``; layernorm the sums, then the squares of the centred rows (two ``psum``,
  numerically stable); softmax the max (``pmax``), then the sum of exponentials.

Result layouts are never computed here: each comes from the sharded program.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from shardc.errors import ShardcError
from shardc.execute.reference import fan_ins
from shardc.export.runtime import RUNTIME
from shardc.ir.graph import (
    BINARY,
    CausalAttrs,
    CollectiveAttrs,
    Const,
    Decl,
    EinsumAttrs,
    Graph,
    Op,
    Operand,
    OpKind,
    Output,
    OverAttrs,
    RelabelAttrs,
    Repeat,
    Value,
)
from shardc.ir.layout import Layout
from shardc.ir.mesh import Mesh
from shardc.ir.ops import OP_DEFS, spell_call
from shardc.language.printer import format_graph, format_number
from shardc.sharding.sharded import verify_sharded

__all__ = ["JAX_OPS", "export_jax", "partition_spec", "unsharded_body"]


@dataclass(frozen=True)
class _Ctx:
    """What a translation needs: the mesh, the dim sizes and the Python name of every value."""

    mesh: Mesh
    sizes: dict[str, int]
    names: dict[int, str]
    unsharded: bool = False  # translate to global arrays: no collectives, every dim whole

    def name(self, operand: Operand) -> str:
        if isinstance(operand, Const):
            return format_number(operand.value)
        return self.names[operand.id]

    def axes_of(self, v: Value, dim: str) -> tuple[str, ...]:
        """The mesh axes splitting ``dim`` of ``v`` (none in the unsharded translation)."""
        return () if self.unsharded else _layout(v).axes_of(dim)

    def local(self, v: Value, dim: str) -> int:
        return self.sizes[dim] // self.mesh.group_size(self.axes_of(v, dim))


def _layout(v: Value) -> Layout:
    assert v.layout is not None, f"{v.name} has no layout"
    return v.layout


def _axes(axes: tuple[str, ...]) -> str:
    """Mesh axes as a Python tuple literal, in the order given (never sorted)."""
    return "(" + ", ".join(f'"{a}"' for a in axes) + ("," if len(axes) == 1 else "") + ")"


def partition_spec(layout: Layout) -> str:
    """``P(...)`` text of a layout: per dim None, one axis name, or a tuple of names major first."""
    parts = []
    for _, axes in layout.split:
        if not axes:
            parts.append("None")
        elif len(axes) == 1:
            parts.append(f'"{axes[0]}"')
        else:
            parts.append("(" + ", ".join(f'"{a}"' for a in axes) + ")")
    return f"P({', '.join(parts)})"


Translate = Callable[[_Ctx, Op], str]


def _einsum(c: _Ctx, op: Op) -> str:
    spec = op.attrs_as(EinsumAttrs).spec
    return f'einsum("{spec}", {", ".join(c.name(o) for o in op.operands)})'


def _binary(symbol: str) -> Translate:
    def translate(c: _Ctx, op: Op) -> str:
        out = op.result.dims
        parts = []
        for o in op.operands:
            if isinstance(o, Value) and o.dims != out:
                parts.append(f'align({c.name(o)}, "{"".join(o.dims)}", "{"".join(out)}")')
            else:
                parts.append(c.name(o))
        return f" {symbol} ".join(parts)
    return translate


def _call(fn: str) -> Translate:
    return lambda c, op: f"{fn}({c.name(op.operands[0])})"


def _over(c: _Ctx, op: Op) -> tuple[int, tuple[str, ...]]:
    dim = op.attrs_as(OverAttrs).dim
    operand = op.inputs[0]
    return operand.dims.index(dim), c.axes_of(operand, dim)


def _norm(fn: str) -> Translate:
    def translate(c: _Ctx, op: Op) -> str:
        axis, axes = _over(c, op)
        gain = c.name(op.operands[1]) if len(op.operands) > 1 else "None"
        n = c.sizes[op.attrs_as(OverAttrs).dim]
        return f"{fn}({c.name(op.operands[0])}, {gain}, axis={axis}, n={n}, axes={_axes(axes)})"
    return translate


def _softmax(c: _Ctx, op: Op) -> str:
    axis, axes = _over(c, op)
    return f"softmax({c.name(op.operands[0])}, axis={axis}, axes={_axes(axes)})"


def _sum(c: _Ctx, op: Op) -> str:
    axis, _ = _over(c, op)
    return f"{c.name(op.operands[0])}.sum(axis={axis})"


def _causal(c: _Ctx, op: Op) -> str:
    a = op.attrs_as(CausalAttrs)
    v = op.inputs[0]
    return (f"causal({c.name(v)}, {v.dims.index(a.query)}, {v.dims.index(a.key)}, "
            f"{_axes(c.axes_of(v, a.query))}, {_axes(c.axes_of(v, a.key))}, "
            f"{c.sizes[a.query]}, {c.sizes[a.key]})")


def _relabel(c: _Ctx, op: Op) -> str:
    return c.name(op.operands[0])


def _last(c: _Ctx, op: Op) -> str:
    ((old, new),) = op.attrs_as(RelabelAttrs).renames
    v = op.inputs[0]
    local = c.local(v, old)
    return f"lax.slice_in_dim({c.name(v)}, {local - c.sizes[new]}, {local}, axis={v.dims.index(old)})"


def _collective(op: Op) -> tuple[Value, CollectiveAttrs]:
    return op.inputs[0], op.attrs_as(CollectiveAttrs)


def _all_gather(c: _Ctx, op: Op) -> str:
    v, a = _collective(op)
    if c.unsharded:
        return c.name(v)
    text = c.name(v)
    for i, (_, held) in enumerate(_layout(v).split):
        gathered = tuple(x for x in held if x in a.axes)  # a suffix of the dim's axes, in its order
        if gathered:
            text = f"all_gather({text}, {_axes(gathered)}, axis={i})"
    return text


def _reduce_scatter(c: _Ctx, op: Op) -> str:
    v, a = _collective(op)
    if c.unsharded:
        return c.name(v)
    assert a.dim is not None
    return f"lax.psum_scatter({c.name(v)}, {_axes(a.axes)}, scatter_dimension={v.dims.index(a.dim)}, tiled=True)"


def _all_reduce(c: _Ctx, op: Op) -> str:
    v, a = _collective(op)
    if c.unsharded:
        return c.name(v)
    return f"lax.psum({c.name(v)}, {_axes(a.axes)})"


def _all_to_all(c: _Ctx, op: Op) -> str:
    v, a = _collective(op)
    if c.unsharded:
        return c.name(v)
    assert a.src is not None and a.dst is not None
    return (f"lax.all_to_all({c.name(v)}, {_axes(a.axes)}, split_axis={v.dims.index(a.dst)}, "
            f"concat_axis={v.dims.index(a.src)}, tiled=True)")


def _slice(c: _Ctx, op: Op) -> str:
    v, a = _collective(op)
    if c.unsharded:
        return c.name(v)
    assert a.dim is not None
    local = c.local(op.result, a.dim)
    return f"local_slice({c.name(v)}, {_axes(a.axes)}, axis={v.dims.index(a.dim)}, local={local})"


#: The JAX expression of every op kind, on each device's block inside shard_map.
JAX_OPS: dict[OpKind, Translate] = {
    OpKind.EINSUM: _einsum,
    OpKind.ADD: _binary("+"),
    OpKind.SUB: _binary("-"),
    OpKind.MUL: _binary("*"),
    OpKind.DIV: _binary("/"),
    OpKind.NEG: lambda c, op: f"-{c.name(op.operands[0])}",
    OpKind.GELU: _call("gelu"),
    OpKind.RELU: lambda c, op: f"jnp.maximum({c.name(op.operands[0])}, 0.0)",
    OpKind.SILU: _call("silu"),
    OpKind.TANH: _call("jnp.tanh"),
    OpKind.EXP: _call("jnp.exp"),
    OpKind.LAYERNORM: _norm("layernorm"),
    OpKind.RMSNORM: _norm("rmsnorm"),
    OpKind.SOFTMAX: _softmax,
    OpKind.SUM: _sum,
    OpKind.CAUSAL: _causal,
    OpKind.RELABEL: _relabel,
    OpKind.LAST: _last,
    OpKind.ALL_GATHER: _all_gather,
    OpKind.REDUCE_SCATTER: _reduce_scatter,
    OpKind.ALL_REDUCE: _all_reduce,
    OpKind.ALL_TO_ALL: _all_to_all,
    OpKind.SLICE: _slice,
}


# --- the module text --------------------------------------------------------------------------
def _statement(c: _Ctx, op: Op) -> str:
    """The shardc statement of ``op`` (operands by name), for the comment beside its line."""
    args = [c.name(o) if isinstance(o, Const) else (o.name or f"t{o.id}") for o in op.operands]
    if op.kind in BINARY:
        text = f" {OP_DEFS[op.kind].spelling} ".join(args)
    elif op.kind is OpKind.NEG:
        text = f"-{args[0]}"
    else:
        text = spell_call(op.kind, op.attrs, args)
    return f"{op.result.name or f't{op.result.id}'} = {text} @ {_layout(op.result).format(c.mesh)}"


def _names(g: Graph) -> dict[int, str]:
    names: dict[int, str] = {}

    def add(v: Value) -> None:
        names[v.id] = f"{v.name}_{v.id}" if v.name else f"t{v.id}"

    for stmt, _ in g.walk():
        if isinstance(stmt, Decl):
            add(stmt.value)
        elif isinstance(stmt, Op):
            add(stmt.result)
        elif isinstance(stmt, Repeat):
            for carry in stmt.carries:
                add(carry.arg)
                add(carry.result)
    return names


def _op_line(c: _Ctx, op: Op, indent: str) -> str:
    return f"{indent}{c.names[op.result.id]} = {JAX_OPS[op.kind](c, op)}  # {_statement(c, op)}"


def _repeat_lines(c: _Ctx, rep: Repeat, index: int, per_layer: list[Value]) -> list[str]:
    carries = ", ".join(c.names[k.arg.id] for k in rep.carries)
    params = ", ".join(c.names[v.id] for v in per_layer)
    outs = [v for s in rep.body if isinstance(s, Output) for v in s.values]
    lines = [f"    def layer{index}(carry, per_layer):  # repeat {rep.count} {{ ... }}: one layer",
             f"        ({carries}{',' if rep.carries else ''}) = carry",
             f"        ({params}{',' if per_layer else ''}) = per_layer"]
    lines += [_op_line(c, s, "        ") for s in rep.body if isinstance(s, Op)]
    nexts = ", ".join(f"vary({c.names[k.next.id]}, {_axes(_vary_axes(c, k.next))})" for k in rep.carries)
    ys = ", ".join(c.names[v.id] for v in outs)
    lines.append(f"        return ({nexts}{',' if rep.carries else ''}), ({ys}{',' if outs else ''})")
    inits = ", ".join(f"vary({c.names[k.init.id]}, {_axes(_vary_axes(c, k.init))})" for k in rep.carries)
    results = ", ".join(c.names[k.result.id] for k in rep.carries)
    stacked = ", ".join(f"{c.names[v.id]}_layers" for v in outs)
    lines.append(f"    ({results}{',' if rep.carries else ''}), ({stacked}{',' if outs else ''}) = lax.scan(")
    lines.append(f"        layer{index}, ({inits}{',' if rep.carries else ''}), "
                 f"({params}{',' if per_layer else ''}), length={rep.count})")
    return lines


def _string(text: str) -> str:
    """A Python literal of ``text``: a raw triple-quoted string when that is exact, else repr."""
    if "'''" not in text and "\\" not in text and not text.endswith("'"):
        return "r'''" + text + "'''"
    return repr(text)


def _stacked(spec: str) -> str:
    """The spec of a per-layer value stacked on a leading, unsplit layer axis."""
    return "P(None, " + spec[2:]


def _vary_axes(c: _Ctx, v: Value) -> tuple[str, ...]:
    return () if c.unsharded else c.mesh.sort_axes(_layout(v).used_axes)


def _decl_comment(c: _Ctx, d: Decl, rep: Repeat | None) -> str:
    where = f", stacked over {rep.count} layers" if rep else ""
    return f"{d.kind} {d.value.name} : {d.value.type} @ {_layout(d.value).format(c.mesh)}{where}"


def export_jax(sg: Graph) -> str:
    """The sharded program ``sg`` as the text of a standalone JAX module (see the module doc).

    The module runs with ``python prog.py [--devices N] [--check] [--time]``; without jax it
    says how to install it.  Its size does not depend on the layer count of any repeat.
    """
    verify_sharded(sg)
    mesh = sg.mesh
    assert mesh is not None
    c = _Ctx(mesh, sg.sizes, _names(sg))
    fans = fan_ins(sg)
    decls: list[tuple[Decl, Repeat | None]] = list(sg.decls())
    repeats = sg.repeats
    decl_rows, in_specs = [], []
    for d, rep in decls:
        name = d.value.name
        spec = partition_spec(_layout(d.value))
        if rep is not None:
            spec = _stacked(spec)
        ri = None if rep is None else repeats.index(rep)
        decl_rows.append(f'    ("{name}", "{d.kind}", "{"".join(d.value.dims)}", "{d.value.dtype}", {ri}, '
                         f"{rep.count if rep else 1}, {fans.get(d.value.id)}),")
        in_specs.append(f"        {spec},  # {_decl_comment(c, d, rep)}")
    body, outputs, out_specs = _body(c, sg)
    args = ", ".join(c.names[d.value.id] for d, _ in decls)
    text = [
        f'"""{sg.name} on the mesh {mesh}, exported from shardc by `shardc export --to jax`.',
        "",
        "Each line of `body` is one op of the sharded program, run on every device's block inside",
        "jax.shard_map, with the shardc statement it came from as a comment; the collectives are",
        "exactly the plan's. Run: python THIS.py [--devices N] [--check] [--time]",
        '"""',
        "import argparse",
        "import inspect",
        "import math",
        "import os",
        "import sys",
        "import time",
        "import zlib",
        "",
        "import numpy as np",
        "",
        f'MODEL = "{sg.name}"',
        f"MESH = {tuple(mesh.axes)!r}",
        f"SIZES = {dict(sg.dims)!r}",
        "# name, kind, dims, dtype, repeat index (None: top level), layers, fan-in (shardc.reference's draw)",
        "DECLS = (",
        *decl_rows,
        ")",
        f"OUTPUTS = {tuple(outputs)!r}",
        "# The sharded program, for --check (shardc.reference runs it on the same seeded data).",
        f"SHARDED_PROGRAM = {_string(format_graph(sg))}",
        "",
        "",
        "def in_specs():",
        "    return (",
        *in_specs,
        "    )",
        "",
        "",
        "def out_specs():",
        "    return (",
        *out_specs,
        "    )",
        "",
        "",
        f"def body({args}):",
        *body,
        "",
        RUNTIME,
    ]
    return "\n".join(text).rstrip() + "\n"


def unsharded_body(sg: Graph, name: str = "unsharded_body") -> str:
    """The text of ``def NAME(...)``: the program of ``sg`` on global arrays, without collectives.

    It takes and returns what ``body`` of :func:`export_jax` does, as whole arrays; run in the
    namespace of that module (its helpers), under ``jax.jit`` with the plan's shardings it is
    the program XLA's own partitioner is given (:mod:`shardc.export.vs_xla`).
    """
    verify_sharded(sg)
    assert sg.mesh is not None
    c = _Ctx(sg.mesh, sg.sizes, _names(sg), unsharded=True)
    lines, _, _ = _body(c, sg)
    args = ", ".join(c.names[d.value.id] for d, _ in sg.decls())
    return "\n".join([f"def {name}({args}):", *lines]) + "\n"


def _body(c: _Ctx, sg: Graph) -> tuple[list[str], list[str], list[str]]:
    """The lines of ``body``, the output names and the output specs."""
    lines: list[str] = []
    outputs: list[str] = []
    results: list[str] = []
    specs: list[str] = []
    repeat_index = 0
    for stmt in sg.body:
        if isinstance(stmt, Op):
            lines.append(_op_line(c, stmt, "    "))
        elif isinstance(stmt, Repeat):
            per_layer = [s.value for s in stmt.body if isinstance(s, Decl)]
            lines += _repeat_lines(c, stmt, repeat_index, per_layer)
            for s in stmt.body:
                if isinstance(s, Output):
                    for v in s.values:
                        outputs.append(v.name or "")
                        results.append(f"{c.names[v.id]}_layers")
                        specs.append(f"        {_stacked(partition_spec(_layout(v)))},  "
                                     f"# output {v.name} @ {_layout(v).format(c.mesh)}, per layer")
            repeat_index += 1
        elif isinstance(stmt, Output):
            for v in stmt.values:
                outputs.append(v.name or "")
                results.append(c.names[v.id])
                specs.append(f"        {partition_spec(_layout(v))},  # output {v.name} @ {_layout(v).format(c.mesh)}")
    if not outputs:
        raise ShardcError(f"{sg.name} has no outputs: there is nothing to export")
    lines.append(f"    return ({', '.join(results)},)")
    return lines, outputs, specs
