"""Tests of shardc.execute.reference: the plain NumPy executor and its seeded data."""
from __future__ import annotations

import math
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import shardc
from shardc.execute.reference import (
    IMPLS,
    SeededData,
    draw,
    fan_ins,
    reference,
    reference_footprint,
    seed_key,
    seeded_inputs,
)
from shardc.ir.graph import Decl, OpKind

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIGHT = dict(rtol=1e-12, atol=1e-13)


# --- helpers: hand-written NumPy -------------------------------------------------------
def decl_of(g: shardc.Graph, name: str) -> tuple[Decl, int | None]:
    """The declaration named ``name`` and the index of its repeat (None: top level)."""
    repeats = list(g.repeats)
    for stmt, rep in g.decls():
        if stmt.value.name == name:
            return stmt, (None if rep is None else repeats.index(rep))
    raise KeyError(name)


def drawn(g, name, layer=0, *, seed=0, fan_in=None, dtype="f64"):
    """``draw`` with a hand-given fan-in (so fan_ins() is checked independently)."""
    decl, index = decl_of(g, name)
    return draw(decl, seed=seed, repeat_index=index, layer=layer, sizes=g.sizes,
                fan_in=fan_in, dtype=dtype)


def normals(key, shape):
    return np.random.default_rng(np.random.SeedSequence(key)).standard_normal(shape, dtype=np.float32)


def layernorm(a, g):
    mean = a.mean(-1, keepdims=True)
    var = ((a - mean) ** 2).mean(-1, keepdims=True)
    return (a - mean) / np.sqrt(var + 1e-6) * g


def gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def silu(x):
    return x / (1 + np.exp(-x))


def softmax(a, axis):
    e = np.exp(a - a.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def run(text: str, **kw) -> dict[str, np.ndarray]:
    kw.setdefault("dtype", "f64")
    return reference(shardc.parse(text), **kw)


def prog(dims: str, body: str) -> str:
    return f"model t\ndims {dims}\n{body.strip()}\n"


# --- the examples against hand-written NumPy -------------------------------------------------
def test_tiny_ffn_matches_hand_numpy():
    g = shardc.load(EXAMPLES / "tiny_ffn.model")
    sizes = g.sizes
    out = reference(g, seed=3, dtype="f64")
    x = drawn(g, "x", seed=3)
    assert x.shape == (sizes["B"], sizes["L"], sizes["E"])
    for layer in range(2):
        gain = drawn(g, "g", layer, seed=3)
        win = drawn(g, "win", layer, seed=3, fan_in=sizes["E"])
        wout = drawn(g, "wout", layer, seed=3, fan_in=sizes["F"])
        h = layernorm(x, gain)
        u = gelu(np.einsum("ble,ef->blf", h, win))
        x = x + np.einsum("blf,fe->ble", u, wout)
    assert set(out) == {"x"}
    np.testing.assert_allclose(out["x"], x, **TIGHT)


def test_tiny_layer_matches_hand_numpy():
    g = shardc.load(EXAMPLES / "tiny_layer.model")
    s = g.sizes
    out = reference(g, seed=1, dtype="f64")
    x = drawn(g, "x", seed=1)
    kns, vns = [], []
    for layer in range(2):
        w = {name: drawn(g, name, layer, seed=1, fan_in=s["E"])
             for name in ("wq", "wk", "wv", "win1", "win2")}
        wo = drawn(g, "wo", layer, seed=1, fan_in=s["H"] * s["D"])
        wout = drawn(g, "wout", layer, seed=1, fan_in=s["F"])
        h = layernorm(x, drawn(g, "g", layer, seed=1))
        q = np.einsum("ble,ehd->blhd", h, w["wq"])
        kn = np.einsum("ble,ed->bld", h, w["wk"])
        vn = np.einsum("ble,ed->bld", h, w["wv"])
        scores = np.einsum("blhd,bsd->bhls", q, kn) * 0.5
        i, j = np.arange(s["L"])[:, None], np.arange(s["S"])[None, :]
        scores = np.where(j <= i + s["S"] - s["L"], scores, -np.inf)
        a = np.einsum("bhls,bsd->blhd", softmax(scores, -1), vn)
        o = np.einsum("blhd,hde->ble", a, wo)
        u = silu(h @ w["win1"]) * (h @ w["win2"])
        x = x + o + u @ wout
        kns.append(kn)
        vns.append(vn)
    y = layernorm(x, drawn(g, "gf", seed=1))
    logits = np.einsum("ble,ve->blv", y, drawn(g, "wemb", seed=1, fan_in=s["E"]))
    assert set(out) == {"kn", "vn", "logits"}
    np.testing.assert_allclose(out["kn"], np.stack(kns), **TIGHT)
    np.testing.assert_allclose(out["vn"], np.stack(vns), **TIGHT)
    np.testing.assert_allclose(out["logits"], logits, **TIGHT)


def test_fan_ins_of_tiny_layer():
    g = shardc.load(EXAMPLES / "tiny_layer.model")
    by_name = {decl.value.name: fan_ins(g).get(decl.value.id) for decl, _ in g.decls()}
    assert by_name == {"x": None, "gf": None, "wemb": 16, "g": None, "wq": 16, "wk": 16,
                       "wv": 16, "wo": 16, "win1": 16, "win2": 16, "wout": 32}


def test_activations_stay_order_one_through_many_layers():
    text = prog("B=4, L=8, E=64, F=256", """
input x : f32[B, L, E]
repeat 24 {
  param g    : f32[E]
  param win  : f32[E, F]
  param wout : f32[F, E]
  h = layernorm(x, g, over=E)
  f = einsum("BLF,FE->BLE", gelu(einsum("BLE,EF->BLF", h, win)), wout)
  x = x + f
}
output x
""")
    x = run(text)["x"]
    assert 0.1 < x.std() < 10


# --- determinism, dtypes, seeded data -----------------------------------------------------------
def test_same_seed_bit_identical_and_different_seeds_differ():
    g = shardc.load(EXAMPLES / "tiny_layer.model")
    for dtype in ("f32", "f64"):
        a, b = reference(g, seed=7, dtype=dtype), reference(g, seed=7, dtype=dtype)
        c = reference(g, seed=8, dtype=dtype)
        for name in a:
            assert a[name].tobytes() == b[name].tobytes()
            assert a[name].tobytes() != c[name].tobytes()


def test_f32_and_f64():
    g = shardc.load(EXAMPLES / "tiny_layer.model")
    lo, hi = reference(g, dtype="f32"), reference(g, dtype="f64")
    for name in hi:
        assert lo[name].dtype == np.float32 and hi[name].dtype == np.float64
        np.testing.assert_allclose(lo[name], hi[name], rtol=1e-4, atol=1e-4)
    decl, _ = decl_of(g, "wq")
    kw = dict(seed=0, repeat_index=0, layer=1, sizes=g.sizes, fan_in=16)
    f32, f64 = draw(decl, dtype="f32", **kw), draw(decl, dtype="f64", **kw)
    assert np.array_equal(f32, f64.astype(np.float32))


@pytest.mark.parametrize("dtype", ["bf16", "float32", "f16", ""])
def test_bad_dtype(dtype):
    with pytest.raises(shardc.ShardcError, match="dtype"):
        reference(shardc.load(EXAMPLES / "tiny_ffn.model"), dtype=dtype)


def test_bad_seed_and_layers():
    g = shardc.load(EXAMPLES / "tiny_ffn.model")
    with pytest.raises(shardc.ShardcError, match="seed"):
        reference(g, seed=-1)
    with pytest.raises(shardc.ShardcError, match="layers"):
        reference(g, layers=-1)


def test_data_keyed_by_name_not_value_id():
    a = prog("B=2, E=3", "input p : f32[B, E]\ninput q : f32[E]\nr = p + q\noutput r")
    b = prog("B=2, E=3", "input q : f32[E]\ninput p : f32[B, E]\nr = q + p\noutput r")
    assert decl_of(shardc.parse(a), "p")[0].value.id != decl_of(shardc.parse(b), "p")[0].value.id
    assert run(a)["r"].tobytes() == run(b)["r"].tobytes()


def test_draw_distributions():
    g = shardc.parse(prog("B=64, E=128, F=256", """
input x : f32[B, E]
cache c : f32[B, E]
param g : f32[E]
param w : f32[E, F]
param v : f32[B, F]
y = einsum("BE,EF->BF", x * g + c, w) + v
output y
"""))
    fans = {d.value.name: n for d, _ in g.decls() if (n := fan_ins(g).get(d.value.id))}
    assert fans == {"w": 128}
    data = SeededData(g, seed=5, dtype="f64")
    arrays = {d.value.name: data(d, None, 0) for d, _ in g.decls()}
    assert abs(arrays["x"].std() - 1) < 0.05 and abs(arrays["c"].std() - 1) < 0.05
    assert abs(arrays["w"].std() - 1 / math.sqrt(128)) < 0.005
    for name in ("g", "v"):  # a gain, and a param not used in an einsum
        assert abs(arrays[name].mean() - 1) < 0.02 and abs(arrays[name].std() - 0.1) < 0.01
    z = normals(seed_key(5, None, 0, "w"), (128, 256))
    np.testing.assert_array_equal(arrays["w"], z / math.sqrt(128))
    assert not np.array_equal(arrays["x"], arrays["c"])


def test_int8_params_are_integers_over_127():
    g = shardc.parse(prog("B=2, E=64, F=32", """
input x : f32[B, E]
param g : int8[E]
param w : int8[E, F]
y = einsum("BE,EF->BF", x * g, w)
output y
"""))
    data = SeededData(g, seed=2, dtype="f64")
    for name, fan_in in (("w", 64), ("g", None)):
        decl, _ = decl_of(g, name)
        arr = data(decl, None, 0)
        q = arr * 127
        np.testing.assert_allclose(q, np.round(q), rtol=0, atol=1e-9)
        assert np.abs(q).max() <= 127
        z = normals(seed_key(2, None, 0, name), arr.shape)
        v = z / math.sqrt(fan_in) if fan_in else 1 + 0.1 * z
        np.testing.assert_array_equal(arr, np.clip(np.round(v * 127), -127, 127).astype(np.float64) / 127)
    assert len(np.unique(data(decl_of(g, "w")[0], None, 0))) > 3


def test_seeded_inputs_are_the_drawn_data_and_shared_data_is_drawn_once(monkeypatch):
    g = shardc.load(EXAMPLES / "tiny_layer.model")
    drawn_run = reference(g, seed=4)
    fed = seeded_inputs(g, seed=4)
    assert {d.value.name for d, _ in g.decls()} == set(fed)
    for name, array in reference(g, seed=4, inputs=fed).items():
        assert array.tobytes() == drawn_run[name].tobytes()
    calls = []
    real = draw
    monkeypatch.setattr("shardc.execute.reference.draw", lambda *a, **k: calls.append(1) or real(*a, **k))
    data = SeededData(g, 4, "f32", keep=True)
    first = reference(g, seed=4, inputs=data)
    n = len(calls)
    second = reference(g, seed=4, inputs=data)
    assert n == sum(1 if rep is None else rep.count for _, rep in g.decls()) and len(calls) == n  # none drawn again
    for name in first:
        assert first[name].tobytes() == second[name].tobytes() == drawn_run[name].tobytes()
    kept = next(iter(data.kept.values()))
    assert not kept.flags.writeable  # a run cannot alter the data the next run reads
    with pytest.raises(shardc.ShardcError, match="seed 4, dtype f32"):
        reference(g, seed=5, inputs=data)


# --- every op kind ---------------------------------------------------------------------------
def test_every_op_kind_has_an_impl():
    assert set(IMPLS) == set(OpKind)
    assert all(callable(f) for f in IMPLS.values())


def test_causal_mask_with_longer_key_than_query():
    # dims deliberately in the order (S, B, L): the mask follows names, not positions
    out = run(prog("B=2, L=3, S=5", "input a : f32[S, B, L]\nm = causal(a, L, S)\noutput m"))["m"]
    a = drawn(shardc.parse(prog("B=2, L=3, S=5", "input a : f32[S, B, L]\noutput a")), "a")
    for j in range(5):
        for i in range(3):
            expect = a[j, :, i] if j <= i + 2 else np.full(2, -np.inf)
            np.testing.assert_array_equal(out[j, :, i], expect)
    assert np.isneginf(out[4, :, 0]).all() and np.isfinite(out[2, :, 0]).all()


def test_broadcast_by_name_either_order_and_constants():
    text = prog("B=2, L=3, E=4", """
input x : f32[B, L, E]
input y : f32[E, B]
r1 = x * y
r2 = y * x
r3 = y - x
r4 = 2.0 / y
r5 = x - 0.5
r6 = y + y
output r1, r2, r3, r4, r5, r6
""")
    g = shardc.parse(text)
    out = reference(g, dtype="f64")
    x, y = drawn(g, "x"), drawn(g, "y")
    yb = y.T[:, None, :]  # [B, 1, E]
    np.testing.assert_array_equal(out["r1"], x * yb)
    np.testing.assert_array_equal(out["r2"], x * yb)
    np.testing.assert_array_equal(out["r3"], yb - x)
    np.testing.assert_array_equal(out["r4"], 2.0 / y)
    np.testing.assert_array_equal(out["r5"], x - 0.5)
    np.testing.assert_array_equal(out["r6"], 2 * y)
    assert out["r1"].shape == (2, 3, 4) and out["r4"].shape == (4, 2)


def test_same_rank_operands_in_different_order():
    text = prog("B=2, E=3", "input a : f32[B, E]\ninput b : f32[E, B]\n"
                            "c = a + b\nd = b + a\noutput c, d")
    g = shardc.parse(text)
    out = reference(g, dtype="f64")
    np.testing.assert_array_equal(out["c"], drawn(g, "a") + drawn(g, "b").T)
    np.testing.assert_array_equal(out["d"], drawn(g, "b") + drawn(g, "a").T)


def test_unary_ops():
    text = prog("B=3, E=5", """
input a : f32[B, E]
r1 = gelu(a)
r2 = relu(a)
r3 = silu(a)
r4 = tanh(a)
r5 = exp(a)
r6 = -a
output r1, r2, r3, r4, r5, r6
""")
    g = shardc.parse(text)
    out = reference(g, dtype="f64")
    a = drawn(g, "a")
    expect = [gelu(a), np.maximum(a, 0), silu(a), np.tanh(a), np.exp(a), -a]
    for k, e in enumerate(expect, 1):
        np.testing.assert_allclose(out[f"r{k}"], e, **TIGHT)


def test_norms_softmax_sum_einsum_relabel():
    text = prog("B=3, E=6, F=6", """
input a : f32[E, B]
param g : f32[E]
n1 = layernorm(a, g, over=E)
n2 = rmsnorm(a, g, over=E)
n3 = rmsnorm(a, over=E)
p  = softmax(a, over=B)
s  = sum(a, over=E)
t  = einsum("EB->BE", a)
r  = relabel(a, E=F)
output n1, n2, n3, p, s, t, r
""")
    g = shardc.parse(text)
    out = reference(g, dtype="f64")
    a, gain = drawn(g, "a"), drawn(g, "g")
    at = a.T  # [B, E]
    np.testing.assert_allclose(out["n1"], layernorm(at, gain).T, **TIGHT)
    rms = at / np.sqrt((at**2).mean(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(out["n2"], (rms * gain).T, **TIGHT)
    np.testing.assert_allclose(out["n3"], rms.T, **TIGHT)
    np.testing.assert_allclose(out["p"], softmax(a, 1), **TIGHT)
    np.testing.assert_allclose(out["p"].sum(axis=1), 1.0, **TIGHT)
    np.testing.assert_allclose(out["s"], a.sum(0), **TIGHT)
    assert out["s"].shape == (3,)
    np.testing.assert_array_equal(out["t"], at)
    np.testing.assert_array_equal(out["r"], a)


def test_sharded_program_collectives_are_identities():
    plain = prog("B=4, E=8", """
input a : f32[B, E]
param w : f32[E]
c = a * w
output c
""")
    sharded = """model t
mesh x=2, y=2
dims B=4, E=8
input a : f32[B, E] @ BE_x
param w : f32[E] @ E_x
b  = all_gather(a, over=x) @ BE
b2 = slice(b, over=xy, dim=E) @ BE_xy
b3 = all_to_all(b2, over=y, from=E, to=B) @ B_yE_x
b4 = all_gather(b3, over=y) @ BE_x
c  = b4 * w @ BE_x
c2 = all_gather(c, over=x) @ BE
output c2
"""
    expect = run(plain)["c"]
    np.testing.assert_array_equal(run(sharded)["c2"], expect)


def test_fan_in_looks_through_collectives():
    sharded = shardc.parse("""model t
mesh x=2
dims B=4, E=8, F=6
input a : f32[B, E] @ BE
param w : f32[E, F] @ E_xF
w1 = all_gather(w, over=x) @ EF
c  = einsum("BE,EF->BF", a, w1) @ BF
output c
""")
    decl, _ = decl_of(sharded, "w")
    assert fan_ins(sharded) == {decl.value.id: 8}


# --- repeats ---------------------------------------------------------------------------------
LOOP = prog("B=2, E=3", """
input x : f32[B, E]
repeat 5 {
  param w : f32[E]
  y = x * w
  x = tanh(y)
  x = x + 1.0
  output y
}
output x
""")


def test_loop_carried_rebinding_three_layers():
    g = shardc.parse(LOOP)
    out = reference(g, dtype="f64", layers=3)
    x, ys = drawn(g, "x"), []
    for layer in range(3):
        ys.append(x * drawn(g, "w", layer))
        x = np.tanh(ys[-1]) + 1.0
    assert out["y"].shape == (3, 2, 3)
    np.testing.assert_array_equal(out["y"], np.stack(ys))
    np.testing.assert_array_equal(out["x"], x)
    assert not np.array_equal(drawn(g, "w", 0), drawn(g, "w", 1))


def test_layers_limit():
    g = shardc.parse(LOOP)
    full = reference(g, dtype="f64")
    assert full["y"].shape == (5, 2, 3)
    assert reference(g, dtype="f64", layers=100)["x"].tobytes() == full["x"].tobytes()
    two = reference(g, dtype="f64", layers=2)
    np.testing.assert_array_equal(two["y"], full["y"][:2])
    zero = reference(g, dtype="f64", layers=0)
    assert zero["y"].shape == (0, 2, 3)
    np.testing.assert_array_equal(zero["x"], drawn(g, "x"))


def test_two_repeats_get_their_own_params():
    text = prog("B=2, E=3", """
input x : f32[B, E]
repeat 2 {
  param w : f32[E]
  x = x * w
}
repeat 2 {
  param w : f32[E]
  x = x * w
}
output x
""")
    g = shardc.parse(text)
    decls = [d for d, rep in g.decls() if rep is not None]
    data = SeededData(g, dtype="f64")
    w00, w10 = data(decls[0], 0, 0), data(decls[1], 1, 0)
    assert not np.array_equal(w00, w10)
    expect = drawn(g, "x")
    for index, decl in enumerate(decls):
        for layer in range(2):
            expect = expect * data(decl, index, layer)
    np.testing.assert_array_equal(reference(g, dtype="f64")["x"], expect)


# --- the memory guard ---------------------------------------------------------------------------
def test_memory_guard_is_instant_and_allocates_nothing():
    g = shardc.parse(prog("B=2, E=1000000000000", """
input x : f32[B, E]
param g : f32[E]
y = layernorm(x, g, over=E)
output y
"""))
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(shardc.ShardcError) as info:
            reference(g)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 1 << 20
    message = info.value.render()
    assert "--set" in message and "layers=" in message and "max_bytes" in message


def test_memory_guard_counts_layers_of_stacked_outputs():
    text = prog("B=1000, E=1000", """
input x : f32[B, E]
repeat 1000000 {
  x = tanh(x)
  output x
}
""")
    g = shardc.parse(text)
    with pytest.raises(shardc.ShardcError, match="max_bytes"):
        reference(g)
    assert reference(g, layers=2)["x"].shape == (2, 1000, 1000)
    need, _ = reference_footprint(g, "f32", layers=2)
    assert need < 100 * 2**20


def test_memory_guard_limit_is_a_keyword():
    g = shardc.load(EXAMPLES / "tiny_ffn.model")
    with pytest.raises(shardc.ShardcError):
        reference(g, max_bytes=1000)
    need, _ = reference_footprint(g, "f64")
    reference(g, dtype="f64", max_bytes=need)
