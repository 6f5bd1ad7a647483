"""Tests of the sharding pass (shardc/shard.py, shardc/sums.py; shardc/sharded.py checks its
result) against the paper and the language.

1. Golden collective sequences of one PaLM 540B feed-forward on 4x4x4, per preset, in
   the paper's notation (the paper's §3.2), for decode and prefill; the decode attention
   all-to-all of the paper's §3.3; weights keep their stored ``E_xF_yz`` layout.
2. The parallel block: one reduce into E per PaLM layer, two per serial GPT layer.
3. Round trips of every example x preset x mesh through print/parse/verify/shard.
4. The sharded verifier catches tampered annotations, axis orders and deleted
   collectives, at the line of the bad statement.
5. Pins are honoured or rejected at the pin.
6. Defaults and error messages of the presets.
7. Repeat blocks are sharded once, whatever the layer count.

Tests marked ``xfail(strict=True)`` pin down bugs of the pass (see their reasons).
"""
from __future__ import annotations

import re
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import pytest

import shardc
from shardc.ir.graph import Decl, Graph, Op, OpKind, Output, Repeat
from shardc.ir.layout import Layout
from shardc.ir.mesh import Mesh
from shardc.sharding.presets import FFN, FFN_CHOICES, Attention
from shardc.sharding.reshard import apply_collective
from shardc.sharding.shard import shard_program
from shardc.sharding.sharded import ShardResult, collectives_of, verify_sharded
from shardc.sharding.sums import SumChains

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.model"))
PRESETS = ("1d-ws", "2d-ws", "wg-x", "wg-xy", "wg-xyz")
AG, RS, AR, A2A, SLICE = (
    OpKind.ALL_GATHER, OpKind.REDUCE_SCATTER, OpKind.ALL_REDUCE, OpKind.ALL_TO_ALL, OpKind.SLICE,
)


# --- helpers -----------------------------------------------------------------------------
@lru_cache(maxsize=None)
def source(name: str, sizes: tuple[tuple[str, int], ...] = ()) -> Graph:
    return shardc.load(ROOT / "examples" / name, sizes=dict(sizes) or None)


@lru_cache(maxsize=None)
def sharded(name: str, ffn: str | None = None, attention: str | None = None,
            sizes: tuple[tuple[str, int], ...] = (), mesh: str | None = None) -> ShardResult:
    return shard_program(source(name, sizes), mesh, ffn, attention)


def the_repeat(g: Graph) -> Repeat:
    (rep,) = g.repeats
    return rep


def body_ops(g: Graph) -> list[Op]:
    return [s for s in the_repeat(g).body.stmts if isinstance(s, Op)]


def body_decls(g: Graph) -> dict[str, Decl]:
    return {s.value.name: s for s in the_repeat(g).body.stmts if isinstance(s, Decl)}


def show(op: Op, mesh: Mesh) -> str:
    """A collective in the paper's notation: ``reduce_scatter(x, F) BLF_yz (partialsum-x) -> BLF_yzx``."""
    a = op.attrs
    args = "".join(a.axes)
    if op.kind is RS:
        args += f", {a.dim}"
    elif op.kind is A2A:
        args += f", {a.src}->{a.dst}"
    elif op.kind is SLICE:
        args += f", {a.dim}"
    (operand,) = op.inputs
    return f"{op.kind.value}({args}) {operand.layout.format(mesh)} -> {op.result.layout.format(mesh)}"


def ffn_sequence(g: Graph, weights: tuple[str, ...] = ("win1", "win2", "wout")) -> list[str]:
    """The collectives of a layer's feed-forward, in program order.

    The collectives feeding the einsums with ``weights`` (the activation's all-gather,
    h -> h1, and the weight gathers of the weight-gathered presets), and every
    collective downstream of those einsums in the layer (up to the residual).
    """
    ops = body_ops(g)
    defs = {op.result.id: op for op in ops}
    decl_ids = {d.value.id for name, d in body_decls(g).items() if name in weights}

    def root(v):
        while v.id in defs and defs[v.id].kind.is_collective:
            v = defs[v.id].inputs[0]
        return v

    einsums = [op for op in ops if op.kind is OpKind.EINSUM and any(root(v).id in decl_ids for v in op.inputs)]
    assert len(einsums) == len(weights), [show(o, g.mesh) for o in einsums]
    chosen: set[int] = set()
    for op in einsums:
        for v in op.inputs:
            while v.id in defs and defs[v.id].kind.is_collective:
                chosen.add(v.id)
                v = defs[v.id].inputs[0]
    downstream = {op.result.id for op in einsums}
    for op in ops:
        if any(v.id in downstream for v in op.inputs):
            downstream.add(op.result.id)
            if op.kind.is_collective:
                chosen.add(op.result.id)
    return [show(op, g.mesh) for op in ops if op.result.id in chosen]


def body_collectives(g: Graph) -> list[str]:
    return [show(op, g.mesh) for op in body_ops(g) if op.kind.is_collective]


# --- 1. golden sequences (the paper's §3.2) -------------------------------------------------------
# The paper's sequences on 4x4x4, written in shardc's axis order (the paper's notation: the paper's
# BLF_xyz after reduce-scatter(x) of BLF_yz is BLF_yzx).  Weight-gathered presets store
# weights E_xF_yz / F_yzE_x and gather them right before each matmul.
GOLDEN_FFN = {
    # BLE_xyz -AG(xyz)-> BLE -einsum-> BLF_xyz -gelu-> -einsum-> BLE (partialsum-xyz) -RS(xyz)-> BLE_xyz
    "1d-ws": [
        "all_gather(xyz) BLE_xyz -> BLE",
        "reduce_scatter(xyz, E) BLE (partialsum-xyz) -> BLE_xyz",
    ],
    # BLE_xyz -AG(yz)-> BLE_x -einsum-> BLF_yz (partialsum-x) -RS(x)-> BLF_yzx -gelu->
    # -AG(x)-> BLF_yz -einsum-> BLE_x (partialsum-yz) -RS(yz)-> BLE_xyz.  SwiGLU has two
    # input matrices, so the reduce-scatter into F happens twice.
    "2d-ws": [
        "all_gather(yz) BLE_xyz -> BLE_x",
        "reduce_scatter(x, F) BLF_yz (partialsum-x) -> BLF_yzx",
        "reduce_scatter(x, F) BLF_yz (partialsum-x) -> BLF_yzx",
        "all_gather(x) BLF_yzx -> BLF_yz",
        "reduce_scatter(yz, E) BLE_x (partialsum-yz) -> BLE_xyz",
    ],
    # X-weight-gathered: activations B_x L E_yz, weights after gather E F_yz (N = X).
    "wg-x": [
        "all_gather(yz) B_xLE_yz -> B_xLE",
        "all_gather(x) E_xF_yz -> EF_yz",
        "all_gather(x) E_xF_yz -> EF_yz",
        "all_gather(x) F_yzE_x -> F_yzE",
        "reduce_scatter(yz, E) B_xLE (partialsum-yz) -> B_xLE_yz",
    ],
    # XY-weight-gathered: shardc gathers x and z (the suffixes of the stored E_x F_yz;
    # strategies.py), so activations are B_xz L E_y and weights after gather E F_y.
    "wg-xy": [
        "all_gather(y) B_xzLE_y -> B_xzLE",
        "all_gather(xz) E_xF_yz -> EF_y",
        "all_gather(xz) E_xF_yz -> EF_y",
        "all_gather(zx) F_yzE_x -> F_yE",
        "reduce_scatter(y, E) B_xzLE (partialsum-y) -> B_xzLE_y",
    ],
    # XYZ-weight-gathered: activations B_xyz L E, weights E F: no activation collectives.
    "wg-xyz": [
        "all_gather(xyz) E_xF_yz -> EF",
        "all_gather(xyz) E_xF_yz -> EF",
        "all_gather(yzx) F_yzE_x -> FE",
    ],
}

# (example, preset) -> (attention, size overrides): the paper pads 48 heads to 64 for
# 1D-WS; weight-gathered prefill runs at B=512 (Table 2, high-throughput column).
PHASES = {
    "decode": "palm_540b_decode.model",
    "prefill": "palm_540b_prefill.model",
}


def golden_case(phase: str, preset: str) -> tuple[str, str | None, tuple[tuple[str, int], ...]]:
    name = PHASES[phase]
    sizes: list[tuple[str, int]] = []
    if preset == "1d-ws":
        sizes.append(("H", 64))
    if phase == "prefill" and preset.startswith("wg-"):
        sizes.append(("B", 512))
    attention = "batch" if (phase == "decode" or preset.startswith("wg-")) else None
    return name, attention, tuple(sizes)


@pytest.mark.parametrize("phase", sorted(PHASES))
@pytest.mark.parametrize("preset", PRESETS)
def test_ffn_collectives_follow_the_paper(phase: str, preset: str) -> None:
    name, attention, sizes = golden_case(phase, preset)
    r = sharded(name, preset, attention, sizes)
    assert r.graph.mesh == Mesh.parse("4x4x4")
    assert ffn_sequence(r.graph) == GOLDEN_FFN[preset]


def test_prefill_defaults_are_table_2_low_latency() -> None:
    """B=1 prefill: 2D weight-stationary, attention by heads (Table 2, low-latency prefill)."""
    r = sharded("palm_540b_prefill.model")
    assert r.strategy.ffn is FFN.WS_2D and r.strategy.attention is Attention.HEADS
    assert ffn_sequence(r.graph) == GOLDEN_FFN["2d-ws"]


def test_serial_gpt_ffn_is_2d_weight_stationary() -> None:
    """One GELU input matrix: the reduce-scatter into F happens once."""
    r = sharded("gpt_mha_serial.model", "2d-ws", mesh="4x4x4")
    assert ffn_sequence(r.graph, ("win", "wout")) == [
        "all_gather(yz) BLE_xyz -> BLE_x",
        "reduce_scatter(x, F) BLF_yz (partialsum-x) -> BLF_yzx",
        "all_gather(x) BLF_yzx -> BLF_yz",
        "reduce_scatter(yz, E) BLE_x (partialsum-yz) -> BLE_xyz",
    ]


@pytest.mark.parametrize("phase", sorted(PHASES))
@pytest.mark.parametrize("preset", ["2d-ws", "wg-x", "wg-xy", "wg-xyz"])
def test_weights_keep_the_stored_2d_layout(phase: str, preset: str) -> None:
    """2D-WS and every weight-gathered preset store weights E_x F_yz (one copy for both phases)."""
    name, attention, sizes = golden_case(phase, preset)
    decls = body_decls(sharded(name, preset, attention, sizes).graph)
    mesh = Mesh.parse("4x4x4")
    stored = {n: decls[n].value.layout.format(mesh) for n in ("win1", "win2", "wout", "wq", "wo")}
    assert stored == {"win1": "E_xF_yz", "win2": "E_xF_yz", "wout": "F_yzE_x", "wq": "E_xH_yzD",
                      "wo": "H_yzDE_x"}


def test_1d_weights_are_split_over_every_axis() -> None:
    decls = body_decls(sharded("palm_540b_decode.model", "1d-ws", "batch", (("H", 64),)).graph)
    assert {n: decls[n].value.layout.format() for n in ("win1", "win2", "wout")} == {
        "win1": "EF_xyz", "win2": "EF_xyz", "wout": "F_xyzE"}


# --- attention (the paper's §3.3) ---------------------------------------------------------------
def test_decode_batch_attention_does_the_all_to_all() -> None:
    """Multiquery sharded by batch: q moves heads -> batch before attention and back after it."""
    g = sharded("palm_540b_decode.model", "2d-ws", "batch", (("H", 64),)).graph
    decls = body_decls(g)
    assert decls["k"].value.layout.format() == "B_yzxSD"
    assert decls["v"].value.layout.format() == "B_yzxSD"
    seq = body_collectives(g)
    expected_q = [
        "reduce_scatter(x, H) BLH_yzD (partialsum-x) -> BLH_yzxD",
        "all_to_all(yzx, H->B) BLH_yzxD -> B_yzxLHD",
    ]
    back = "all_to_all(yzx, B->H) B_yzxLHD -> BLH_yzxD"
    i = seq.index(expected_q[0])
    assert seq[i:i + 2] == expected_q
    assert back in seq[i + 2:]
    assert [s for s in seq if s.startswith("all_to_all")] == [expected_q[1], back]
    # The attention einsums read the cache where it lives, without moving it.
    ops = body_ops(g)
    for op in ops:
        if op.kind is OpKind.EINSUM and any(v.name in ("k", "v") for v in op.inputs):
            assert all(v.layout.axes_of("B") == ("y", "z", "x") for v in op.inputs), show_einsum(op)
    assert not any(op.kind.is_collective and op.inputs[0].name in ("k", "v") for op in ops)


def show_einsum(op: Op) -> str:
    return f"einsum {op.attrs.spec} of " + ", ".join(v.layout.format() for v in op.inputs)


def test_decode_1d_batch_attention_all_to_all() -> None:
    g = sharded("palm_540b_decode.model", "1d-ws", "batch", (("H", 64),)).graph
    a2a = [s for s in body_collectives(g) if s.startswith("all_to_all")]
    assert a2a == ["all_to_all(xyz, H->B) BLH_xyzD -> B_xyzLHD", "all_to_all(xyz, B->H) B_xyzLHD -> BLH_xyzD"]


@pytest.mark.parametrize("preset", ["1d-ws", "2d-ws"])
def test_heads_attention_replicates_the_kv_cache(preset: str) -> None:
    g = sharded("palm_540b_decode.model", preset, "heads", (("H", 64),)).graph
    decls = body_decls(g)
    assert decls["k"].value.layout.format() == "BSD"
    assert decls["v"].value.layout.format() == "BSD"
    assert not any(op.kind is A2A for op in g.ops())


def test_heads_attention_reduces_q_not_the_scores() -> None:
    """q's pending partial sum is reduce-scattered into H right after its projection (H plays F,
    the paper's §3.3), not carried into the 8x larger scores (regression)."""
    g = sharded("palm_540b_prefill.model", "2d-ws", "heads", (("H", 64),)).graph
    seq = body_collectives(g)
    assert "reduce_scatter(x, H) BLH_yzD (partialsum-x) -> BLH_yzxD" in seq
    scores = [show(op, g.mesh) for op in body_ops(g) if op.kind.is_collective and {"L", "S"} <= set(op.result.dims)]
    assert scores == []


def test_weight_gathered_decode_never_moves_the_kv_cache() -> None:
    """Weight-gathered presets gather weights, never the KV cache (regression: wg-xyz decode used
    to all-gather k and v, B_xyzSD -> BSD, every layer)."""
    g = sharded("palm_540b_decode.model", "wg-xyz", "batch").graph
    decls = body_decls(g)
    assert decls["k"].value.layout.format() == "B_xyzSD"
    moved = [show(op, g.mesh) for op in body_ops(g) if op.kind.is_collective and op.inputs[0].name in ("k", "v")]
    assert moved == []


def test_weight_gathered_cache_minimal() -> None:
    """q @ B_xLD and the cache k @ B_xSD already agree: no collective (regression)."""
    g = shardc.parse(
        "model m\nmesh x=2\ndims B=2, L=1, S=4, D=2\n"
        "input q : f32[B, L, D]\ncache k : f32[B, S, D]\n"
        's = einsum("BLD,BSD->BLS", q, k)\noutput s\n')
    sg = shard_program(g, None, "wg-x", "batch").graph
    assert [op.kind for op in sg.ops() if op.kind.is_collective] == []
    (einsum,) = [op for op in sg.ops() if op.kind is OpKind.EINSUM]
    assert einsum.result.layout.format() == "B_xLS"


# --- 2. the parallel block (the paper's §3.3) ---------------------------------------------------
def residual_reductions(g: Graph) -> list[Op]:
    """Collectives of a layer that complete a partial sum of a value with dim E."""
    return [op for op in body_ops(g) if op.kind in (RS, AR) and "E" in op.result.dims]


@pytest.mark.parametrize("preset", ["1d-ws", "2d-ws", "wg-x", "wg-xy"])
@pytest.mark.parametrize("example", ["palm_540b_decode.model", "palm_540b_prefill.model", "tiny_layer.model"])
def test_parallel_block_reduces_once(example: str, preset: str) -> None:
    tiny = example.startswith("tiny")
    mesh = "2x2x2" if tiny else None
    sizes = ((("H", 8 if tiny else 64),) if preset == "1d-ws" else ())  # heads over every chip
    g = sharded(example, preset, None, sizes, mesh).graph
    (reduce,) = residual_reductions(g)
    # ... of the attention and MLP outputs, summed before it.
    defs = {op.result.id: op for op in body_ops(g)}
    total = defs[reduce.inputs[0].id]
    assert total.kind is OpKind.ADD
    producers = [defs[v.id] for v in total.inputs]
    assert all(op.kind is OpKind.EINSUM for op in producers)
    assert [weights_of(op, defs) for op in producers] == [{"wo"}, {"wout"}]
    assert reduce.kind is RS and reduce.attrs.dim == "E"


SUM_OF_FOUR = """model sums
dims B=2, E=4
input x : f32[B, E]
input o : f32[B, E]
input f : f32[B, E]
input r : f32[B, E]
y = x + o + f + r
output y
"""


@pytest.mark.parametrize("partial, expected", [
    ({"o", "f"}, [("o", "f"), ("x", "o+f"), ("x+o+f", "r")]),  # o and f added first
    ({"o"}, [("x", "o"), ("x+o", "f"), ("x+o+f", "r")]),  # nothing to group: as written
])
def test_sum_chains_shard_through_the_pass_they_are_given(partial: set[str], expected: list) -> None:
    """SumChains sees the pass only through the function it is given: it asks for the layouts
    of the terms and plans every add for the pass, the root last."""
    g = shardc.parse(SUM_OF_FOUR)
    names: dict[int, str] = {d.value.id: d.value.name for d, _ in g.decls()}
    layouts = {vid: Layout.replicated(("B", "E")).with_partial({"x"} if name in partial else set())
               for vid, name in names.items()}
    sums = SumChains(g)
    adds = [op for op in g.ops() if op.kind is OpKind.ADD]
    root = adds[-1]
    assert [sums.is_chain_link(op) for op in adds] == [True, True, False] and sums.is_chain_root(root)
    planned = sums.plan(root, lambda o: layouts.get(o.id))
    for op in planned:
        names[op.result.id] = "+".join(names[v.id] for v in op.inputs)
    assert [tuple(names[v.id] for v in op.inputs) for op in planned] == expected
    assert planned[-1].result == root.result


def weights_of(einsum: Op, defs: dict[int, Op]) -> set[str]:
    """The output-projection weights an einsum reads (through the gathers of weight-gathered presets)."""
    names = set()
    for v in einsum.inputs:
        while v.id in defs and defs[v.id].kind.is_collective:
            v = defs[v.id].inputs[0]
        names.add(v.name)
    return names & {"wo", "wout"}


@pytest.mark.parametrize("preset", ["1d-ws", "2d-ws", "wg-x", "wg-xy"])
@pytest.mark.parametrize("example", ["gpt_mha_serial.model", "gqa_decode.model"])
def test_serial_block_reduces_twice(example: str, preset: str) -> None:
    g = sharded(example, preset).graph
    reductions = residual_reductions(g)
    assert len(reductions) == 2
    defs = {op.result.id: op for op in body_ops(g)}
    weights = []
    for op in reductions:
        producer = defs[op.inputs[0].id]
        assert producer.kind is OpKind.EINSUM
        weights.append(weights_of(producer, defs))
    assert weights == [{"wo"}, {"wout"}]


def test_xyz_weight_gathered_layers_reduce_nothing() -> None:
    for name in ("palm_540b_prefill.model", "gpt_mha_serial.model"):
        g = sharded(name, "wg-xyz", "batch", (("B", 512),) if "palm" in name else ()).graph
        assert residual_reductions(g) == []


# --- 3. round trips ----------------------------------------------------------------------
def applicable(name: str, mesh: str | None, ffn: str) -> bool:
    """Every preset applies, except 1D-WS when the heads do not divide over all the chips."""
    g = source(name)
    chips = Mesh.parse(mesh).num_chips if mesh else g.mesh.num_chips
    return not (ffn == "1d-ws" and "H" in g.sizes and g.sizes["H"] % chips)


ROUND_TRIP_CASES = [
    pytest.param(p.name, mesh, ffn, attention, id=f"{p.stem}-{mesh or 'file'}-{ffn}-{attention}")
    for p in EXAMPLES for mesh in (None, "2x2x2") for ffn in PRESETS for attention in ("heads", "batch")
]


@pytest.mark.parametrize("name, mesh, ffn, attention", ROUND_TRIP_CASES)
def test_round_trip(name: str, mesh: str | None, ffn: str, attention: str) -> None:
    if not applicable(name, mesh, ffn):
        with pytest.raises(shardc.ShardcError, match=r"dim H of size \d+ is not divisible"):
            sharded(name, ffn, attention, (), mesh)
        return
    r = sharded(name, ffn, attention, (), mesh)
    sg = r.graph
    assert sg.is_sharded
    verify_sharded(sg)
    text = shardc.format(sg)
    again = shardc.parse(text)
    assert again == sg
    verify_sharded(again)
    assert shardc.format(again) == text  # format is stable
    # An already-sharded program comes back unchanged (its records: test_records_*).
    r2 = shard_program(again)
    assert r2.graph == again
    # Every collective is legal where it stands.
    for op in sg.ops():
        if op.kind.is_collective:
            (operand,) = op.inputs
            assert apply_collective(operand.layout, op.kind, op.attrs, sg.mesh, sg.sizes) == op.result.layout


# The records of a sharded program are derived from it (collectives_of); the pass adds reasons.
TINY_FFN_SHARDED = """model tiny_ffn
mesh x=2, y=2
dims B=2, L=4, E=8, F=16

input x : f32[B, L, E] @ BLE_xy
repeat 2 {
  param g    : f32[E]    @ E_xy
  param win  : f32[E, F] @ E_xF_y
  param wout : f32[F, E] @ F_yE_x
  h    = layernorm(x, g, over=E)           @ BLE_xy
  h1   = all_gather(h, over=y)             @ BLE_x
  t1   = einsum("BLE,EF->BLF", h1, win)    @ BLF_y (partialsum-x)
  t1_1 = reduce_scatter(t1, over=x, dim=F) @ BLF_yx
  u    = gelu(t1_1)                        @ BLF_yx
  u1   = all_gather(u, over=x)             @ BLF_y
  f    = einsum("BLF,FE->BLE", u1, wout)   @ BLE_x (partialsum-y)
  f1   = reduce_scatter(f, over=y, dim=E)  @ BLE_xy
  x    = x + f1                            @ BLE_xy
}
y = all_to_all(x, over=y, from=E, to=B) @ B_yLE_x
output y
"""


def test_records_are_derived_from_the_sharded_graph() -> None:
    g = shardc.parse(TINY_FFN_SHARDED)
    m = g.mesh
    got = [(c.value, c.kind, "".join(c.axes), c.dim, c.src_dim, c.dst_dim, c.before.format(m), c.after.format(m),
            c.bytes_per_chip, c.count, c.repeat, c.line, c.implicit) for c in collectives_of(g)]
    # Per chip (f32): h holds B·L = 8 rows of 2 statistics, a ring over 4 chips sends 2·3/4 of them;
    # h1 gathers a BLE_xy block of 16 values from 1 other chip; t1_1 sends half of a BLF_y block of
    # 64; u1 gathers 32 values; f1 sends half of a BLE_x block of 32; the all-to-all over x sends half
    # of a BLE_xy block of 16.
    assert got == [
        ("h", AR, "xy", None, None, None, "BLE_xy", "BLE_xy", 2 * 3 / 4 * 8 * 2 * 4, 2, 0, 10, True),
        ("h1", AG, "y", None, None, None, "BLE_xy", "BLE_x", 64.0, 2, 0, 11, False),
        ("t1_1", RS, "x", "F", None, None, "BLF_y (partialsum-x)", "BLF_yx", 128.0, 2, 0, 13, False),
        ("u1", AG, "x", None, None, None, "BLF_yx", "BLF_y", 128.0, 2, 0, 15, False),
        ("f1", RS, "y", "E", None, None, "BLE_x (partialsum-y)", "BLE_xy", 64.0, 2, 0, 17, False),
        ("y", A2A, "y", None, "E", "B", "BLE_xy", "B_yLE_x", 32.0, 1, None, 20, False),
    ]


def test_records_take_reasons_by_result_id() -> None:
    g = shardc.parse(TINY_FFN_SHARDED)
    ids = {op.result.name: op.result.id for op in g.ops()}
    records = {c.value: c for c in collectives_of(g, {ids["h"]: "stats", ids["f1"]: "complete f"})}
    assert records["h"].reason == "stats" and records["f1"].reason == "complete f"
    # Without a reason: what a program that arrives sharded says.
    assert records["h1"].reason == "written in the sharded program"
    plain = {c.value: c for c in collectives_of(g)}
    assert plain["h"].reason == ("layernorm statistics over E, which is split over xy "
                                 "(a small all-reduce inside the op)")
    assert [c.reason for c in shard_program(g).collectives] == [c.reason for c in plain.values()]


@pytest.mark.parametrize("name", [p.name for p in EXAMPLES])
def test_records_of_the_pass_are_those_of_its_graph_with_reasons(name: str) -> None:
    """The pass gives every collective it inserts (and every statistics all-reduce) a reason of its
    own; everything else in its records is what the sharded graph says."""
    r = sharded(name, "2d-ws")
    derived = collectives_of(r.graph)
    assert [replace(c, reason="") for c in r.collectives] == [replace(c, reason="") for c in derived]
    moved = [(c, d) for c, d in zip(r.collectives, derived, strict=True) if not c.implicit]
    assert moved and all(c.reason != d.reason for c, d in moved)
    assert all("written in the sharded program" not in c.reason for c in r.collectives)
    stats = [c for c in r.collectives if c.implicit]
    # A statistics all-reduce says what it is; the record's value names the op (no line: the
    # pass's lines are the source's, not the printed program's).
    assert all(c.reason.endswith("(a small all-reduce inside the op)") for c in stats)


def test_sharded_program_keeps_its_mesh() -> None:
    sg = sharded("tiny_ffn.model").graph
    again = shardc.parse(shardc.format(sg))
    assert shard_program(again, "2x2").graph == again
    with pytest.raises(shardc.ShardcError, match="already sharded"):
        shard_program(again, "4")


# --- 4. the verifier catches tampering -----------------------------------------------------
ASSIGN_RE = re.compile(r"^(\s*)([a-z_][a-z0-9_]*)(\s*=\s*)(.*?)(\s+@\s+)([A-Za-z_]+)"
                       r"( \(partialsum-[a-z]+\))?(\s*#.*)?$")


def printed(name: str, ffn: str, attention: str | None = None, sizes=(), mesh=None) -> str:
    return shardc.format(sharded(name, ffn, attention, sizes, mesh).graph)


def line_of(text: str, what: str) -> int:
    """1-based number of the one line defining ``what``: ``"t2_1 ="`` (an assignment) or
    ``"param win1"`` (a declaration); names are padded in the printed text."""
    words = what.split()
    if words[-1] == "=":
        pattern = re.compile(rf"\s*{re.escape(words[0])}\s+=\s")
    else:
        pattern = re.compile(rf"\s*{words[0]}\s+{re.escape(words[1])}\s*:")
    hits = [i + 1 for i, line in enumerate(text.split("\n")) if pattern.match(line)]
    assert len(hits) == 1, (what, hits)
    return hits[0]


def replace_on_line(text: str, line: int, old: str, new: str) -> str:
    lines = text.split("\n")
    assert old in lines[line - 1], (lines[line - 1], old)
    lines[line - 1] = lines[line - 1].replace(old, new, 1)
    return "\n".join(lines)


def delete_collective(text: str, line: int) -> tuple[str, int]:
    """Delete the collective on ``line`` and let its users read its operand instead.

    Returns the new text and the (new) line of the first statement using it.
    """
    lines = text.split("\n")
    m = re.match(r"\s*([a-z_][a-z0-9_]*)\s*=\s*[a-z_]+\(([a-z_][a-z0-9_]*),", lines[line - 1])
    assert m, lines[line - 1]
    result, operand = m.groups()
    del lines[line - 1]
    first = None
    word = re.compile(rf"\b{re.escape(result)}\b")
    for i in range(line - 1, len(lines)):
        head, sep, rest = lines[i].partition("=") if ASSIGN_RE.match(lines[i]) else ("", "", lines[i])
        if word.search(rest) and not rest.lstrip().startswith("#"):
            code, hash_, comment = rest.partition("#")
            lines[i] = head + sep + word.sub(operand, code) + hash_ + comment
            if first is None:
                first = i + 1
    assert first is not None
    return "\n".join(lines), first


def error_of(text: str) -> shardc.ShardcError:
    with pytest.raises(shardc.ShardcError) as info:
        verify_sharded(shardc.parse(text, "tampered.model"))
    return info.value


PALM_2D = ("palm_540b_decode.model", "2d-ws", "batch", (("H", 64),))


@pytest.mark.parametrize("stmt", ["t2_1 =", "t3 =", "t4_1 =", "u ="])
def test_tampered_annotation_is_caught_at_its_line(stmt: str) -> None:
    text = printed(*PALM_2D)
    line = line_of(text, stmt)
    bad = replace_on_line(text, line, "@ BLF_yzx", "@ BLF_yz ")
    err = error_of(bad)
    assert err.line == line, err.render()
    assert "BLF_yz" in err.message


def test_tampered_partial_sum_is_caught() -> None:
    text = printed(*PALM_2D)
    line = line_of(text, "t5 =")
    err = error_of(replace_on_line(text, line, "(partialsum-yz)", "(partialsum-y)"))
    assert err.line == line, err.render()


@pytest.mark.parametrize("param, stored, swapped, user", [
    ("win1", "E_xF_yz", "E_xF_zy", "t2 ="),
    ("win2", "E_xF_yz", "E_xF_zy", "t4 ="),
    ("wout", "F_yzE_x", "F_zyE_x", "f ="),
    ("wq", "E_xH_yzD", "E_xH_zyD", "q ="),
])
def test_swapped_param_axes_are_caught_at_the_first_use(param: str, stored: str, swapped: str, user: str) -> None:
    """A declaration may hold any valid layout; the statement reading it is the one that disagrees."""
    text = printed(*PALM_2D)
    decl = line_of(text, f"param {param}")
    bad = replace_on_line(text, decl, f"@ {stored}", f"@ {swapped}")
    shardc.parse(bad)  # still a well-formed sharded program
    err = error_of(bad)
    assert err.line == line_of(text, user), err.render()


@pytest.mark.parametrize("stmt, user", [
    ("h1 =", "q ="), ("t2_1 =", "t3 ="), ("t4_1 =", "u ="), ("u1 =", "f ="), ("t5_1 =", "x ="),
    ("q1 =", "q2 ="), ("q2 =", "t1 ="), ("a1 =", "a2 ="),
])
def test_deleted_collective_is_caught_at_its_user(stmt: str, user: str) -> None:
    text = printed(*PALM_2D)
    bad, first = delete_collective(text, line_of(text, stmt))
    assert first == line_of(text, user) - 1
    err = error_of(bad)
    assert err.line == first, err.render()


def test_tampered_loop_carry_is_caught_at_its_line() -> None:
    text = printed(*PALM_2D)
    line = line_of(text, "x =")
    err = error_of(replace_on_line(text, line, "@ BLE_xyz", "@ BLE_xy "))
    assert err.line == line, err.render()


def tamper_layout(annotation: str, partial: str | None, mesh: Mesh) -> str:
    """A different annotation: drop the most-minor axis of the last split dim, else the partial
    sums, else add a partial sum over the first mesh axis."""
    layout = Layout.parse(annotation, partial.strip() if partial else None)
    for d, axes in reversed(layout.split):
        if axes:
            return layout.with_axes(d, axes[:-1]).format(mesh)
    if layout.partial:
        return layout.with_partial(frozenset()).format(mesh)
    return layout.with_partial({mesh.names[0]}).format(mesh)


SWEEPS = [
    ("tiny_layer.model", "2d-ws", None, (), None),
    ("tiny_layer.model", "wg-xy", "batch", (), "2x2x2"),
    ("palm_8b_decode.model", "2d-ws", "batch", (), None),
    ("palm_540b_decode.model", "1d-ws", "batch", (("H", 64),), None),
    ("gpt_mha_serial.model", "2d-ws", None, (), None),
]


@pytest.mark.parametrize("case", SWEEPS, ids=lambda c: f"{c[0]}-{c[1]}")
def test_every_tampered_annotation_is_caught(case) -> None:
    """Each assignment of a sharded program, its annotation changed: an error at that line."""
    text = printed(*case)
    g = shardc.parse(text)
    # The last rebinding of a loop-carried name: see test_tampered_loop_carry_is_caught_at_its_line.
    carried = {stmt.loc.line for stmt, rep in g.walk() if isinstance(stmt, Op) and rep is not None
               and stmt.result.id in {c.next.id for c in rep.carries}}
    lines = text.split("\n")
    count = 0
    for i, line in enumerate(lines):
        m = ASSIGN_RE.match(line)
        if not m or i + 1 in carried:
            continue
        new = tamper_layout(m.group(6), m.group(7), g.mesh)
        bad = lines[:i] + [line[:m.start(6)] + new + (m.group(8) or "")] + lines[i + 1:]
        err = error_of("\n".join(bad))
        assert err.line == i + 1, f"line {i + 1}: {line.strip()} -> @ {new}\n{err.render()}"
        count += 1
    assert count > 10


@pytest.mark.parametrize("case", SWEEPS, ids=lambda c: f"{c[0]}-{c[1]}")
def test_every_deleted_collective_is_caught(case) -> None:
    """Each collective deleted (its users renamed to its operand): an error at the first user.

    Collectives whose first user is an ``output`` are left out: the verifier checks
    annotations, and an output has none to disagree with.
    """
    text = printed(*case)
    g = shardc.parse(text)
    names = {}
    for stmt, _ in g.walk():
        if isinstance(stmt, Op) and stmt.result.name:
            names[stmt.result.name] = names.get(stmt.result.name, 0) + 1
    count = 0
    for stmt, _ in g.walk():
        if not (isinstance(stmt, Op) and stmt.kind.is_collective) or names[stmt.result.name] > 1:
            continue
        bad, first = delete_collective(text, stmt.loc.line)
        if bad.split("\n")[first - 1].strip().startswith("output"):
            continue
        err = error_of(bad)
        assert err.line == first, f"deleting line {stmt.loc.line}\n{err.render()}"
        count += 1
    assert count >= 4


# --- 5. pins -------------------------------------------------------------------------------
PINNED = """\
model pinned
mesh x=2, y=2
dims B=8, E=16, F=32

input x : f32[B, E] @ B_xE
param w1 : f32[E, F] @ EF_y
param w2 : f32[F, E] @ F_yE_x
param g : f32[E]

h = einsum("BE,EF->BF", x, w1) @ B_xF_y
u = gelu(h)
y = einsum("BF,FE->BE", u, w2) @ BE_xy
z = layernorm(y, g, over=E) @ B_yE
t = z * 2
output z
output t @ B_xyE
"""


def pins_of(g: Graph) -> list[tuple[str, str, int, Layout]]:
    """(kind, name, line, pin) of every pinned declaration, assignment and output of a source program."""
    out = []
    for stmt, _ in g.walk():
        if isinstance(stmt, Decl) and stmt.value.layout is not None:
            out.append(("decl", stmt.value.name, stmt.loc.line, stmt.value.layout))
        elif isinstance(stmt, Op) and stmt.result.layout is not None:
            out.append(("assign", stmt.result.name, stmt.loc.line, stmt.result.layout))
        elif isinstance(stmt, Output) and stmt.pin is not None:
            out.append(("output", ",".join(v.name for v in stmt.values), stmt.loc.line, stmt.pin))
    return out


def assert_pins_honoured(g: Graph, sg: Graph) -> None:
    """Every pin of ``g`` holds in its sharded form ``sg`` (which keeps source lines)."""
    for kind, name, line, pin in pins_of(g):
        if kind == "decl":
            found = [s.value.layout for s, _ in sg.walk()
                     if isinstance(s, Decl) and s.value.name == name and s.loc.line == line]
            assert found == [pin], (name, line, pin, found)
        elif kind == "assign":
            found = [s.result.layout for s, _ in sg.walk()
                     if isinstance(s, Op) and s.result.name == name and s.loc.line == line]
            assert found and found[-1] == pin, (name, line, pin, found)
        else:
            found = [s for s, _ in sg.walk() if isinstance(s, Output) and s.loc.line == line]
            assert len(found) == 1 and found[0].pin == pin, (name, line, pin)
            assert all(v.layout == pin for v in found[0].values), (name, [v.layout for v in found[0].values])


@pytest.mark.parametrize("ffn", [None, "2d-ws", "1d-ws", "wg-x", "none"])
def test_pins_are_honoured(ffn: str | None) -> None:
    g = shardc.parse(PINNED)
    sg = shard_program(g, None, ffn).graph
    assert_pins_honoured(g, sg)
    assert len(pins_of(g)) == 7
    again = shardc.parse(shardc.format(sg))
    assert again == sg
    verify_sharded(again)


def test_pins_on_a_bigger_mesh_and_in_a_repeat() -> None:
    text = """\
model pinned_layers
mesh x=2, y=2, z=2
dims B=8, L=2, E=16, F=32

input x : f32[B, L, E] @ B_xLE_yz

repeat 5 {
  param win  : f32[E, F] @ E_zF_xy
  param wout : f32[F, E]
  h = einsum("BLE,EF->BLF", x, win)
  u = relu(h) @ B_xLF_yz
  x = x + einsum("BLF,FE->BLE", u, wout) @ BLE_zyx
  n = sum(u, over=F)
  output n @ B_zyL
}

output x
"""
    g = shardc.parse(text)
    for ffn in (None, "1d-ws", "wg-xy"):
        r = shard_program(g, None, ffn)
        assert_pins_honoured(g, r.graph)
        for rep in r.graph.repeats:
            for c in rep.carries:
                assert c.init.layout == c.arg.layout == c.next.layout == c.result.layout
        assert shardc.parse(shardc.format(r.graph)) == r.graph


NO_PRESET_DIMS = """\
model plain
mesh x=2, y=2
dims A=4, C=8, N=6, M=2

input a : f32[A, C] @ A_xC_y
param w : f32[C, N]
param v : f32[N, M] @ NM
input b : f32[A, C]
c = relu(einsum("AC,CN->AN", a, w))
d = einsum("AN,NM->AM", c, v)
e = b * a
output d, e
"""


@pytest.mark.parametrize("ffn", [None, "1d-ws", "2d-ws", "wg-x", "wg-xy", "wg-xyz"])
@pytest.mark.parametrize("attention", [None, "heads", "batch"])
def test_layouts_propagate_from_pins_without_preset_dims(ffn: str | None, attention: str | None) -> None:
    """No dim a preset knows (B, E, F, H, K, G, V): the presets place nothing; no error."""
    g = shardc.parse(NO_PRESET_DIMS)
    r = shard_program(g, None, ffn, attention)
    sg = r.graph
    assert_pins_honoured(g, sg)
    decls = {d.value.name: d.value.layout.format() for d, _ in sg.decls()}
    assert decls["a"] == "A_xC_y"
    assert decls["w"] == "C_yN"  # a floating weight takes the layout its first use asks for
    assert decls["b"] == "AC"  # an unpinned input without preset dims: replicated
    ops = {op.result.name: op.result.layout.format(sg.mesh) for op in sg.ops()}
    assert ops["d"].startswith("A_x")  # x on A flows from the pin on a
    assert ops["e"].startswith("A_x")
    assert shardc.parse(shardc.format(sg)) == sg


PQ_PINS = """\
model pq
mesh p=2, q=2
dims B=4, E=8

input x : f32[B, E] @ B_pE_q
y = x * 2 @ BE_p
z = y + 1
output z
"""


def test_pin_on_an_axis_the_mesh_lacks_fails_at_the_pin() -> None:
    with pytest.raises(shardc.ShardcError) as info:
        shardc.parse(PQ_PINS, "pq.model", mesh=Mesh.parse("2x2"))
    err = info.value
    assert err.line == 5, err.render()
    assert "'p'" in err.message
    assert "x=2, y=2" in err.message or "x, y" in err.message


def test_pin_on_an_axis_the_mesh_lacks_fails_at_the_pin_when_sharding() -> None:
    text = PQ_PINS.replace("mesh p=2, q=2\n", "")
    g = shardc.parse(text, "pq.model")  # no mesh: pins are checked against the mesh given later
    with pytest.raises(shardc.ShardcError) as info:
        shard_program(g, "2x2")
    assert info.value.line == 4, info.value.render()
    assert "'p'" in info.value.message
    # With the axes it names, the same program shards.
    assert_pins_honoured(g, shard_program(g, "p=2,q=2").graph)


@pytest.mark.parametrize("text, line", [
    ("model m\nmesh x=4\ndims B=6, E=8\ninput x : f32[B, E] @ B_xE\ny = x * 2\noutput y\n", 4),
    ("model m\nmesh x=4\ndims B=6, E=8\ninput x : f32[B, E]\ny = x * 2 @ B_xE\noutput y\n", 5),
    ("model m\nmesh x=4\ndims B=6, E=8\ninput x : f32[B, E]\ny = x * 2\noutput y @ B_xE\n", 6),
])
def test_pin_on_a_non_divisible_dim_is_an_error(text: str, line: int) -> None:
    with pytest.raises(shardc.ShardcError) as info:
        shard_program(shardc.parse(text, "m.model"))
    err = info.value
    assert err.line == line, err.render()
    assert "dim B" in err.message and "6" in err.message and "x" in err.message
    assert "not divisible" in err.message


def test_pin_on_a_non_divisible_dim_is_an_error_for_a_mesh_given_later() -> None:
    text = "model m\ndims B=6, E=8\ninput x : f32[B, E] @ B_xE\ny = x * 2\noutput y\n"
    g = shardc.parse(text, "m.model")
    with pytest.raises(shardc.ShardcError) as info:
        shard_program(g, "4")
    assert info.value.line == 3, info.value.render()
    assert "dim B of size 6" in info.value.message and "x" in info.value.message


def test_output_pin_on_a_loop_carried_value_says_what_to_pin() -> None:
    """Outputs keep their names and a loop-carried value keeps the layout it enters the repeat
    with, so an output pin on it can only be honoured at the value entering the repeat."""
    g = shardc.parse("model m\nmesh x=2\ndims A=2\ninput x : f32[A]\nrepeat 2 {\n  x = x * 2\n}\n"
                     "output x @ A_x\n")
    with pytest.raises(shardc.ShardcError) as info:
        shard_program(g)
    assert info.value.line == 8
    assert "loop-carried" in info.value.message and "entering the repeat" in info.value.message
    pinned = shardc.parse("model m\nmesh x=2\ndims A=2\ninput x : f32[A] @ A_x\nrepeat 2 {\n  x = x * 2\n}\n"
                          "output x @ A_x\n")
    (out,) = [st for st in shard_program(pinned).graph.body.stmts if isinstance(st, Output)]
    assert out.values[0].layout == Layout.parse("A_x")


def test_output_pin_places_a_floating_weight() -> None:
    g = shardc.parse("model m\nmesh x=2\ndims A=2\nparam w : f32[A]\noutput w @ A_x\n")
    sg = shard_program(g).graph
    (decl,) = [d for d, _ in sg.decls()]
    assert decl.value.layout == Layout.parse("A_x")


@pytest.mark.parametrize("expr", ["g * g", "layernorm(g, g, over=A)", 'einsum("A,A->A", g, g)'])
def test_a_floating_weight_used_twice_by_one_op(expr: str) -> None:
    g = shardc.parse(f"model m\nmesh x=2\ndims A=2\nparam g : f32[A]\nk = {expr}\noutput k\n")
    sg = shard_program(g).graph
    verify_sharded(sg)


# --- 6. defaults and errors -----------------------------------------------------------------
@pytest.mark.parametrize("name, sizes, attention", [
    ("palm_540b_decode.model", (), Attention.BATCH),  # KV cache, B=64 over 64 chips
    ("palm_540b_decode.model", (("B", 128),), Attention.BATCH),
    ("palm_540b_decode.model", (("B", 32),), Attention.HEADS),  # B does not divide over the chips
    ("palm_540b_decode.model", (("B", 96),), Attention.HEADS),
    ("palm_8b_decode.model", (), Attention.BATCH),
    ("palm_540b_prefill.model", (), Attention.HEADS),  # no KV cache
    ("palm_540b_prefill.model", (("B", 512),), Attention.HEADS),
    ("tiny_ffn.model", (), Attention.HEADS),
])
def test_default_presets(name: str, sizes, attention: Attention) -> None:
    r = sharded(name, None, None, sizes)
    assert r.strategy.attention is attention
    assert r.strategy.ffn is FFN.WS_2D
    decls = body_decls(r.graph) if r.graph.repeats else {}
    if "k" in decls:
        want = "B_yzxSD" if attention is Attention.BATCH else "BSD"
        assert decls["k"].value.layout.format() == want


def test_default_attention_on_a_mesh_given_on_the_command_line() -> None:
    """Divisibility is judged on the mesh actually used (B=64 on 128 chips: heads)."""
    assert sharded("palm_8b_decode.model", None, None, (), "8x4x4").strategy.attention is Attention.HEADS
    assert sharded("palm_8b_decode.model", None, None, (), "2x2x2").strategy.attention is Attention.BATCH


def test_no_mesh_anywhere() -> None:
    g = shardc.parse("model m\ndims B=2, E=4\ninput x : f32[B, E]\ny = x * 2\noutput y\n")
    with pytest.raises(shardc.ShardcError, match="--mesh"):
        shard_program(g)
    with pytest.raises(shardc.ShardcError, match="--mesh"):
        shardc.shard(g)


def test_non_divisible_preset_dims() -> None:
    """1D-WS splits the 48 heads of PaLM 540B 64 ways: an error naming dim, size, axes, --set."""
    with pytest.raises(shardc.ShardcError) as info:
        shard_program(source("palm_540b_decode.model"), None, "1d-ws")
    err = info.value
    assert "dim H" in err.message and "48" in err.message and "64" in err.message
    assert "x·y·z" in err.message and "4x4x4" in err.message
    assert err.hint and "--set H=" in err.hint
    assert "wq" in err.message  # the first weight with H


def test_non_divisible_preset_dims_are_located() -> None:
    g = source("palm_540b_decode.model")
    with pytest.raises(shardc.ShardcError) as info:
        shard_program(g, None, "1d-ws")
    wq = body_decls(g)["wq"]
    assert info.value.line == wq.loc.line
    assert info.value.filename and info.value.filename.endswith("palm_540b_decode.model")


def test_non_divisible_cache_with_heads() -> None:
    text = ("model m\nmesh x=2, y=3\ndims B=2, S=4, H=4, D=2, E=6\n"
            "cache k : f32[B, S, H, D]\noutput k\n")
    with pytest.raises(shardc.ShardcError) as info:
        shard_program(shardc.parse(text), None, "2d-ws", "heads")
    assert "cache 'k'" in info.value.message and "dim H of size 4" in info.value.message
    assert "--set H=" in info.value.hint


@pytest.mark.parametrize("ffn, attention, flag, valid", [
    ("3d-ws", None, "--ffn", FFN_CHOICES),
    ("WS-2D", None, "--ffn", FFN_CHOICES),
    (None, "rows", "--attention", ("heads", "batch")),
])
def test_unknown_preset(ffn, attention, flag, valid) -> None:
    with pytest.raises(shardc.ShardcError) as info:
        shard_program(source("tiny_ffn.model"), None, ffn, attention)
    msg = info.value.message
    assert flag in msg and (ffn or attention) in msg
    for choice in valid:
        assert choice in msg
    assert set(FFN_CHOICES) == set(PRESETS)


# --- 7. repeat blocks are sharded once ---------------------------------------------------------
def n_statements(g: Graph) -> int:
    return sum(1 for _ in g.walk())


@pytest.mark.parametrize("ffn", ["2d-ws", "wg-xyz"])
def test_a_million_layers_cost_one_layer(ffn: str) -> None:
    text = (ROOT / "examples" / "palm_540b_decode.model").read_text()
    assert "repeat 118 {" in text
    small = shard_program(shardc.parse(text), None, ffn)
    big = shard_program(shardc.parse(text.replace("repeat 118 {", "repeat 1000000 {")), None, ffn)
    assert n_statements(small.graph) == n_statements(big.graph)
    assert shardc.format(big.graph) == shardc.format(small.graph).replace("repeat 118 {", "repeat 1000000 {")
    counts = {c.count for c in big.collectives if c.repeat is not None}
    assert counts == {1000000}
    assert len(big.collectives) == len(small.collectives)


LOOP = """\
model loop
mesh x=2, y=2
dims B=4, E=8, F=16

input x : f32[B, E]

repeat {n} {{
  param w : f32[E, F]
  param v : f32[F, E]
  h = einsum("BE,EF->BF", x, w)
  x = x + einsum("BF,FE->BE", gelu(h), v) @ B_xE_y
}}

output x
"""


@pytest.mark.parametrize("n", [1, 118, 1000000])
def test_loop_carried_layout_is_restored_at_the_end_of_the_body(n: int) -> None:
    """A pin inside the body moves x; the body ends by moving it back to where it entered."""
    g = shardc.parse(LOOP.format(n=n))
    r = shard_program(g)
    (rep,) = r.graph.repeats
    (carry,) = rep.carries
    assert carry.init.layout == carry.arg.layout == carry.next.layout == carry.result.layout
    assert carry.arg.layout.format() == "BE_xy"  # the input's resting layout
    assert_pins_honoured(g, r.graph)
    loop_back = [c for c in r.collectives if "loop-carried" in c.reason]
    assert loop_back and loop_back[0].before == Layout.parse("B_xE_y")
    assert loop_back[-1].after == Layout.parse("BE_xy")
    assert all(c.count == n for c in r.collectives)
    assert n_statements(r.graph) == n_statements(shard_program(shardc.parse(LOOP.format(n=7))).graph)


@pytest.mark.parametrize("name", [p.name for p in EXAMPLES])
def test_loop_carries_keep_one_layout_in_every_example(name: str) -> None:
    for ffn in ("2d-ws", "wg-x"):
        r = sharded(name, ffn)
        for rep in r.graph.repeats:
            for c in rep.carries:
                assert c.init.layout == c.arg.layout == c.next.layout == c.result.layout


def test_a_sum_whose_terms_all_hold_the_same_partial_sums_is_not_doubled() -> None:
    """Regression: with every term of a+b+c in one partial-sum group the regrouped sum was
    added to itself (y = t + t)."""
    g = shardc.parse("model m\nmesh x=2, y=2\ndims B=2, E=4, F=4\ninput x : f32[B, E]\n"
                     "param w1 : f32[E, F]\nparam w2 : f32[E, F]\nparam w3 : f32[E, F]\n"
                     'y = einsum("BE,EF->BF", x, w1) + einsum("BE,EF->BF", x, w2) + einsum("BE,EF->BF", x, w3)\n'
                     "output y\n")
    sg = shard_program(g, None, "2d-ws").graph
    report = shardc.verify(sg, dtype="f64", source=g)
    assert report.passed, report.first_mismatch
