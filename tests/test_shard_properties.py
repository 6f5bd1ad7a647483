"""Property tests of the sharding pass (Hypothesis).

Two sources of programs:

* random well-typed programs of :mod:`shardc.testing` (any dims, ops, repeat blocks,
  pins valid for a random mesh of 1-3 axes of sizes 1-4);
* random transformer layers drawn by :func:`layer_programs` below (PaLM/GPT-like: the
  dims the presets know, multiquery or multihead attention with or without a KV cache,
  parallel or serial blocks, SwiGLU or not, random small sizes, random pins), so that
  the presets' placements, gathers and all-to-alls are exercised.

For each, with a preset from {defaults, 2d-ws, 1d-ws} (the layer programs also try the
weight-gathered presets), ``shard_program`` either raises ShardcError for a reason the
test recognises and checks (a preset dim that does not divide over its axes; for the
random programs also an output pin the pass rejects with "pin its declaration instead",
see ``rejected_output_pin``) or returns a graph that passes ``verify_sharded``,
round-trips through print/parse, honours every pin, and whose collectives each apply
legally (``reshard.apply_collective``) where they stand and agree with the pass's records.
In the transformer layers, moreover, KV caches never move and weights move only by the
all-gather of a weight-gathered preset.

Output pins that cannot be honoured (on loop-carried values, or against another pin of the
same value; see test_shard.py) must be rejected with a clear error (``rejected_output_pin``).

The default run is derandomized (tests/conftest.py, profile ``ci``); ``--fuzz`` draws
50x more examples with random seeds.
"""
from __future__ import annotations

import re

from hypothesis import event, given, settings
from hypothesis import strategies as st
from test_shard import assert_pins_honoured  # one definition of "every pin holds"

import shardc
from shardc.ir.graph import Decl, DeclKind, Graph, Op, OpKind, Output, Repeat
from shardc.ir.mesh import Mesh
from shardc.sharding.reshard import apply_collective
from shardc.sharding.shard import shard_program
from shardc.sharding.sharded import ShardResult, verify_sharded
from shardc.testing import layouts, meshes, program_models


def examples(n: int) -> int:
    """``n`` examples in the default CI profile, proportionally more under ``--fuzz``."""
    return max(1, n * settings.default.max_examples // 100)


# --- checks ------------------------------------------------------------------------------
NOT_DIVISIBLE = re.compile(
    r"(weight|cache) '([a-z_][a-z0-9_]*)': dim ([A-Z]) of size (\d+) is not divisible by (\d+) "
    r"\(the ([a-z·]+) axes of mesh (\S+)\)")


def check_not_divisible(err: shardc.ShardcError, g: Graph, mesh: Mesh) -> None:
    """The only error a preset may raise: a dim it splits does not divide over its axes."""
    m = NOT_DIVISIBLE.fullmatch(err.message)
    assert m, f"unexpected error: {err.render()}"
    _, name, dim, size, parts, axes, spec = m.groups()
    assert g.sizes[dim] == int(size)
    axes_t = tuple(axes.split("·"))
    assert mesh.group_size(axes_t) == int(parts) and int(size) % int(parts) != 0
    assert spec == mesh.spec()
    assert err.hint and f"--set {dim}=" in err.hint
    # The tensor really has that dim and carries no pin (pins bypass the preset).
    decls = [d for d, _ in g.decls() if d.value.name == name]
    assert decls and any(dim in d.value.dims and d.value.layout is None for d in decls), err.render()


def definitions(g: Graph) -> dict[int, Decl | Op | Repeat]:
    out: dict[int, Decl | Op | Repeat] = {}
    for stmt, _ in g.walk():
        if isinstance(stmt, Decl):
            out[stmt.value.id] = stmt
        elif isinstance(stmt, Op):
            out[stmt.result.id] = stmt
        elif isinstance(stmt, Repeat):
            for c in stmt.carries:
                out[c.arg.id] = out[c.result.id] = stmt
    return out


def rejected_output_pin(err: shardc.ShardcError, g: Graph) -> bool:
    """An output pin the pass cannot honour by resharding a statement, rejected at the output.

    Accepted when the output names a declaration (its layout is the preset's or its
    first use's), a value whose own statement carries a different pin (two pins for one
    value), or a loop-carried value, inside or after its repeat (a known bug: see
    test_shard.py::test_output_pin_after_a_repeat_is_honoured).
    """
    if not err.message.startswith("cannot pin output"):
        return False
    outs = [s for s, _ in g.walk() if isinstance(s, Output) and s.loc.line == err.line]
    assert len(outs) == 1 and outs[0].pin is not None, err.render()
    (v,) = outs[0].values
    where = definitions(g)[v.id]
    if isinstance(where, Op):
        assert where.result.layout is not None and where.result.layout != outs[0].pin, err.render()
    return True


def check_collectives(r: ShardResult) -> None:
    """Each collective applies legally to its operand's layout and yields its result's layout;
    the records list exactly the collectives of the graph, in order."""
    sg = r.graph
    mesh, sizes = sg.mesh, sg.sizes
    ops = [op for op in sg.ops() if op.kind.is_collective]
    for op in ops:
        (operand,) = op.inputs
        assert apply_collective(operand.layout, op.kind, op.attrs, mesh, sizes) == op.result.layout
        assert operand.layout != op.result.layout
        assert operand.dtype == op.result.dtype
    explicit = [c for c in r.collectives if not c.implicit]
    assert [(c.value, c.kind, c.axes, c.before, c.after) for c in explicit] == [
        (op.result.name, op.kind, op.attrs.axes, op.inputs[0].layout, op.result.layout) for op in ops]
    for c, op in zip(explicit, ops):
        assert (c.dim, c.src_dim, c.dst_dim) == (op.attrs.dim, op.attrs.src, op.attrs.dst)
        assert apply_collective(c.before, c.kind, op.attrs, mesh, sizes) == c.after
        assert c.bytes_per_chip >= 0 and c.count >= 1
        assert (c.bytes_per_chip == 0) == (c.kind is OpKind.SLICE or mesh.group_size(c.axes) == 1)
    for c in r.collectives:
        if c.implicit:  # statistics all-reduce of a norm/softmax over a split dim
            assert c.kind is OpKind.ALL_REDUCE and c.axes and c.before == c.after
            assert not c.before.partial


def check_sharded(g: Graph, r: ShardResult, mesh: Mesh) -> None:
    sg = r.graph
    assert sg.mesh == mesh and sg.is_sharded
    verify_sharded(sg)
    for stmt, _ in sg.walk():
        if isinstance(stmt, Output):  # outputs hold complete values
            assert all(not v.layout.partial for v in stmt.values)
        if isinstance(stmt, Repeat):
            for c in stmt.carries:
                assert c.init.layout == c.arg.layout == c.next.layout == c.result.layout
                assert c.result.layout.partial == frozenset()
    text = shardc.format(sg)
    again = shardc.parse(text)
    assert again == sg, text
    verify_sharded(again)
    assert shardc.format(again) == text
    assert shard_program(again).graph == again
    assert_pins_honoured(g, sg)
    check_collectives(r)
    # Sharding a program does not change what it computes: same statements modulo collectives.
    src_ops = [op.kind for op in g.ops()]
    out_ops = [op.kind for op in sg.ops() if not op.kind.is_collective]
    assert sorted(k.value for k in out_ops) == sorted(k.value for k in src_ops)


def check_stationary(r: ShardResult) -> None:
    """In a transformer layer KV caches and weights send nothing but the all-gathers of a
    weight-gathered preset (the paper's §3.2: weights are stored E_x F_yz and gathered before
    each matmul; §4: the cache is orders of magnitude larger than q).  A local slice (a chip
    keeping a block of what it holds, no data sent) is allowed: it is how a replicated cache
    meets a batch-split q for free."""
    decls = {d.value.id: d for d, _ in r.graph.decls()}
    for op in r.graph.ops():
        if op.kind.is_collective and op.inputs[0].id in decls and op.kind is not OpKind.SLICE:
            d = decls[op.inputs[0].id]
            assert d.kind is DeclKind.PARAM, f"{d.kind} '{d.value.name}' moves: {op.kind} over {op.attrs.axes}"
            assert op.kind is OpKind.ALL_GATHER and set(op.attrs.axes) <= set(r.strategy.gathered), (
                f"weight '{d.value.name}' moves: {op.kind} over {''.join(op.attrs.axes)} "
                f"({r.strategy.ffn.value})")


def run(g: Graph, mesh_arg: str | None, ffn: str | None, attention: str | None,
        allow_output_pins: bool, stationary: bool = False) -> None:
    mesh = Mesh.parse(mesh_arg) if mesh_arg else g.mesh
    try:
        r = shard_program(g, mesh_arg, ffn, attention)
    except shardc.ShardcError as err:
        if allow_output_pins and rejected_output_pin(err, g):
            event("rejected: output pin")
            return
        check_not_divisible(err, g, mesh)
        event("rejected: preset dim not divisible")
        return
    event(f"sharded, {'with' if any(op.kind.is_collective for op in r.graph.ops()) else 'without'} collectives")
    check_sharded(g, r, mesh)
    if stationary:
        check_stationary(r)


# --- random programs of shardc.testing ------------------------------------------------------
FFN = st.sampled_from([None, "2d-ws", "1d-ws"])
ATTENTION = st.sampled_from([None, None, "heads", "batch"])


@settings(max_examples=examples(400))
@given(model=program_models(mesh=meshes(min_axes=1, max_axes=3, min_size=1, max_size=4), max_repeats=1),
       ffn=FFN, attention=ATTENTION, explicit_mesh=st.booleans())
def test_random_programs_shard(model, ffn, attention, explicit_mesh) -> None:
    g = shardc.parse(model.text())
    run(g, model.mesh.spec() if explicit_mesh else None, ffn, attention, allow_output_pins=True)


# --- random transformer layers -----------------------------------------------------------------
SMALL_ANY = st.sampled_from([1, 2, 3, 4, 6, 8, 12, 16])
TINY = st.sampled_from([1, 2, 4])


@st.composite
def layer_programs(draw) -> tuple[str, Mesh]:
    """A PaLM/GPT-like program with random shape, sizes and pins, as text, and its mesh."""
    mesh = draw(meshes(min_axes=1, max_axes=3, min_size=1, max_size=4))
    # Mostly sizes that divide over the mesh (so the presets apply), now and then any small size.
    fits = st.sampled_from([mesh.num_chips, 2 * mesh.num_chips] + [mesh.size(a) for a in mesh.names])
    SMALL = st.one_of(fits, fits, SMALL_ANY)  # noqa: N806
    sizes = {"B": draw(SMALL), "L": draw(TINY), "E": draw(SMALL), "F": draw(SMALL)}
    attention = draw(st.sampled_from(["none", "multiquery", "multihead"]))
    cache = attention != "none" and draw(st.booleans())
    if attention != "none":
        sizes.update(H=draw(SMALL), D=draw(TINY))
        sizes["S"] = draw(st.sampled_from([1, 2, 4, 8])) if cache else sizes["L"]
    vocab = draw(st.booleans())
    if vocab:
        sizes["V"] = draw(SMALL)
    parallel = attention != "none" and draw(st.booleans())
    swiglu = draw(st.booleans())
    act = draw(st.sampled_from(["gelu", "silu", "relu"]))

    def pin(dims: str) -> str:
        if draw(st.integers(0, 3)):
            return ""
        return " @ " + draw(layouts(tuple(dims), sizes, mesh)).format(mesh)

    kv = "D" if attention == "multiquery" else "HD"
    lines = ["model layer", f"mesh {mesh}", "dims " + ", ".join(f"{d}={n}" for d, n in sizes.items()), "",
             f"input x : f32[B, L, E]{pin('BLE')}", "param gf : f32[E]"]
    if vocab:
        lines.append(f"param wemb : f32[V, E]{pin('VE')}")
    lines.append(f"repeat {draw(st.integers(1, 3))} {{")
    body = ["param g : f32[E]", f"param win : f32[E, F]{pin('EF')}", f"param wout : f32[F, E]{pin('FE')}"]
    if swiglu:
        body.append(f"param win2 : f32[E, F]{pin('EF')}")
    if attention != "none":
        body += [f"param wq : f32[E, H, D]{pin('EHD')}",
                 f"param wk : f32[E, {', '.join(kv)}]{pin('E' + kv)}",
                 f"param wv : f32[E, {', '.join(kv)}]",
                 f"param wo : f32[H, D, E]{pin('HDE')}"]
        if cache:
            body += [f"cache k : f32[B, S, {', '.join(kv)}]{pin('BS' + kv)}", f"cache v : f32[B, S, {', '.join(kv)}]"]
        if not parallel:
            body.append("param g2 : f32[E]")
        body += [f"h = layernorm(x, g, over=E){pin('BLE')}",
                 f'q = einsum("BLE,EHD->BLHD", h, wq){pin("BLHD")}',
                 f'kn = einsum("BLE,E{kv}->BL{kv}", h, wk)',
                 f'vn = einsum("BLE,E{kv}->BL{kv}", h, wv)']
        keys, values = ("k", "v") if cache else ("kk", "vv")
        if not cache:
            body += ["kk = relabel(kn, L=S)", "vv = relabel(vn, L=S)"]
        body.append(f's = einsum("BLHD,BS{kv}->BHLS", q, {keys}) * 0.5')
        scores = "s"
        if not cache:
            body.append("m = causal(s, L, S)")
            scores = "m"
        body += [f"p = softmax({scores}, over=S){pin('BHLS')}",
                 f'a = einsum("BHLS,BS{kv}->BLHD", p, {values})',
                 f'o = einsum("BLHD,HDE->BLE", a, wo){pin("BLE")}']
        if draw(st.booleans()):
            body.append("output kn, vn")
        if not parallel:
            body += [f"x = x + o{pin('BLE')}", "h2 = layernorm(x, g2, over=E)"]
        mlp_in = "h" if parallel else "h2"
    else:
        body.append(f"h = layernorm(x, g, over=E){pin('BLE')}")
        mlp_in = "h"
    gate = f'{act}(einsum("BLE,EF->BLF", {mlp_in}, win))'
    if swiglu:
        gate += f' * einsum("BLE,EF->BLF", {mlp_in}, win2)'
    body += [f"u = {gate}{pin('BLF')}", 'f = einsum("BLF,FE->BLE", u, wout)']
    body.append(f"x = x + o + f{pin('BLE')}" if parallel else f"x = x + f{pin('BLE')}")
    lines += ["  " + b for b in body] + ["}", ""]
    # The output may be pinned when its statement is not (one value, one pin).
    if vocab:
        last = pin("BLV")
        lines += [f"y = layernorm(x, gf, over=E){pin('BLE')}", f'logits = einsum("BLE,VE->BLV", y, wemb){last}',
                  f"output logits{'' if last else pin('BLV')}"]
    else:
        last = pin("BLE")
        lines += [f"y = layernorm(x, gf, over=E){last}", f"output y{'' if last else pin('BLE')}"]
    return "\n".join(lines) + "\n", mesh


@settings(max_examples=examples(250))
@given(program=layer_programs(), ffn=st.sampled_from([None, "2d-ws", "1d-ws", "wg-x", "wg-xy", "wg-xyz"]),
       attention=ATTENTION)
def test_random_layers_shard(program, ffn, attention) -> None:
    text, mesh = program
    g = shardc.parse(text)
    run(g, None, ffn, attention, allow_output_pins=False, stationary=True)


@settings(max_examples=examples(40))
@given(program=layer_programs())
def test_random_layers_are_sharded_once(program) -> None:
    """The sharded body does not depend on the layer count."""
    text, mesh = program
    big = re.sub(r"repeat \d+ \{", "repeat 1000000 {", text)
    try:
        small_r = shard_program(shardc.parse(text))
    except shardc.ShardcError as err:
        check_not_divisible(err, shardc.parse(text), mesh)
        return
    big_r = shard_program(shardc.parse(big))
    small_text = re.sub(r"repeat \d+ \{", "repeat N {", shardc.format(small_r.graph))
    assert re.sub(r"repeat \d+ \{", "repeat N {", shardc.format(big_r.graph)) == small_text
    assert {c.count for c in big_r.collectives if c.repeat is not None} <= {1000000}
