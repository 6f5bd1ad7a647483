"""The presets as data: the table in role letters, binding it to a mesh, and handing the result to ``shard``.

1. The table, bound with the default roles, gives the strategies the compiler has always used
   (written out below in the paper's notation) on 3-, 2- and 1-axis meshes, and on bigger ones.
2. Another role assignment (x played by the mesh's last axis...) moves the weights onto the
   reassigned axes, and the sharded program still computes what the reference does.
3. A preset or strategy of one's own goes through ``shardc.shard``.
4. A bad role assignment, or a strategy that does not fit, is a clear ShardcError.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import shardc
from shardc import FFN, PRESETS, Attention, Preset, Role, Strategy, bind, default_roles
from shardc.ir.graph import Decl, DeclKind, Graph, Op
from shardc.sharding.presets import WIDE_DIMS, make_strategy

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def split(text: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``"E_x F_yz H"`` -> ``(("E", ("x",)), ("F", ("y", "z")), ("H", ()))`` (one-letter axes)."""
    out = []
    for word in text.split():
        dim, _, axes = word.partition("_")
        out.append((dim, tuple(axes)))
    return tuple(out)


def stored_2d(x: str, yz: str) -> str:
    """``E_x`` and every dim split like F over ``yz``."""
    return " ".join([f"E_{x}" if x else "E"] + [f"{d}_{yz}" if yz else d for d in WIDE_DIMS])


def wide(axes: str) -> str:
    return " ".join(f"{d}_{axes}" for d in WIDE_DIMS)


# --- 1. the table reproduces the strategies ----------------------------------------------------
# (ffn, weights stored, gathered, activations rest, B of a batch-split cache), per mesh.
EXPECTED = {
    "2x2x2": [
        ("1d-ws", wide("xyz"), "", "E_xyz", "xyz"),
        ("2d-ws", stored_2d("x", "yz"), "", "E_xyz", "yzx"),
        ("wg-x", stored_2d("x", "yz"), "x", "B_x E_yz", "xyz"),
        ("wg-xy", stored_2d("x", "yz"), "xz", "B_xz E_y", "xzy"),
        ("wg-xyz", stored_2d("x", "yz"), "xyz", "B_xyz E", "xyz"),
        ("none", "", "", "", "yzx"),
    ],
    "4x2": [
        ("1d-ws", wide("xy"), "", "E_xy", "xy"),
        ("2d-ws", stored_2d("x", "y"), "", "E_xy", "yx"),
        ("wg-x", stored_2d("x", "y"), "x", "B_x E_y", "xy"),
        ("wg-xy", stored_2d("x", "y"), "xy", "B_xy E", "xy"),  # x and the minor axis of F: all of them
        ("wg-xyz", stored_2d("x", "y"), "xy", "B_xy E", "xy"),
        ("none", "", "", "", "yx"),
    ],
    "8": [
        ("1d-ws", wide("x"), "", "E_x", "x"),
        ("2d-ws", stored_2d("x", ""), "", "E_x", "x"),
        ("wg-x", stored_2d("x", ""), "x", "B_x E", "x"),
        ("wg-xy", stored_2d("x", ""), "x", "B_x E", "x"),
        ("wg-xyz", stored_2d("x", ""), "x", "B_x E", "x"),
        ("none", "", "", "", "x"),
    ],
    # Named axes, more than three: x the first, z the last, y the ones between.
    "a=2,b=2,c=2,d=2": [
        ("1d-ws", wide("abcd"), "", "E_abcd", "abcd"),
        ("2d-ws", stored_2d("a", "bcd"), "", "E_abcd", "bcda"),
        ("wg-x", stored_2d("a", "bcd"), "a", "B_a E_bcd", "abcd"),
        ("wg-xy", stored_2d("a", "bcd"), "ad", "B_ad E_bc", "adbc"),
        ("wg-xyz", stored_2d("a", "bcd"), "abcd", "B_abcd E", "abcd"),
        ("none", "", "", "", "bcda"),
    ],
}
CASES = [(mesh, *row) for mesh, rows in EXPECTED.items() for row in rows]
REDUCE_INTO = ("F", "K", "G", "H", "V", "E")


@pytest.fixture(scope="module")
def decode() -> Graph:
    return shardc.load(EXAMPLES / "palm_8b_decode.model")


@pytest.mark.parametrize("attention", ["heads", "batch"])
@pytest.mark.parametrize("mesh, ffn, weights, gathered, activations, cache", CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_table_gives_the_paper_strategies(decode: Graph, mesh: str, ffn: str, weights: str, gathered: str,
                                          activations: str, cache: str, attention: str) -> None:
    m = shardc.Mesh.parse(mesh)
    want = Strategy(FFN(ffn), Attention(attention), m, split(weights), tuple(gathered), split(activations),
                    REDUCE_INTO + (("B",) if attention == "batch" else ()), tuple(cache))
    assert bind(PRESETS[FFN(ffn)], m, Attention(attention)) == want
    assert bind(PRESETS[FFN(ffn)], mesh, attention) == want  # names and specs do too
    assert make_strategy(decode, m, ffn, attention) == want  # the --ffn / --attention convenience


def test_the_table_has_every_preset_and_is_frozen() -> None:
    assert set(PRESETS) == set(FFN)
    assert all(p.ffn is f for f, p in PRESETS.items())
    with pytest.raises(TypeError):
        PRESETS[FFN.WS_2D] = PRESETS[FFN.WS_1D]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS[FFN.WS_2D].gathered = (Role.X,)  # type: ignore[misc]


def test_default_roles() -> None:
    X, Y, Z = Role
    assert default_roles(shardc.Mesh.parse("4x4x4")) == {X: ("x",), Y: ("y",), Z: ("z",)}
    assert default_roles(shardc.Mesh.parse("4x4")) == {X: ("x",), Y: (), Z: ("y",)}
    assert default_roles(shardc.Mesh.parse("8")) == {X: ("x",), Y: (), Z: ()}
    assert default_roles(shardc.Mesh.parse("p=2,q=2,r=2,s=2")) == {X: ("p",), Y: ("q", "r"), Z: ("s",)}


def test_make_strategy_defaults(decode: Graph) -> None:
    """Default ffn 2d-ws; attention by batch when the program reads a KV cache and B divides."""
    assert make_strategy(decode, shardc.Mesh.parse("2x2x2")) == bind(PRESETS[FFN.WS_2D], "2x2x2", "batch")
    assert make_strategy(decode, shardc.Mesh.parse("8x4x4")).attention is Attention.HEADS  # B=64, 128 chips
    assert make_strategy(decode, shardc.Mesh.parse("2x2x2"), FFN.WG_X).ffn is FFN.WG_X


# --- 2. another role assignment ------------------------------------------------------------------
def params(sg: Graph) -> dict[str, shardc.Value]:
    return {st.value.name or "": st.value for st, _ in sg.walk()
            if isinstance(st, Decl) and st.kind is DeclKind.PARAM}


def axes(value: shardc.Value, dim: str) -> str:
    assert value.layout is not None
    return "".join(value.layout.axes_of(dim))


# x played by the mesh's last axis; (weights of E, of F) expected for each preset.
ROTATED = {"x": "z", "y": "x", "z": "y"}
ROTATED_WEIGHTS = {"1d-ws": ("", "zxy"), "2d-ws": ("z", "xy"), "wg-x": ("z", "xy"), "wg-xy": ("z", "xy"),
                   "wg-xyz": ("z", "xy")}


@pytest.mark.parametrize("example", ["tiny_layer.model", "palm_8b_decode.model"])
@pytest.mark.parametrize("attention", ["heads", "batch"])
@pytest.mark.parametrize("ffn", sorted(ROTATED_WEIGHTS))
def test_reassigned_roles_move_the_weights_and_verify(example: str, ffn: str, attention: str) -> None:
    g = shardc.load(EXAMPLES / example, sizes={"H": 8})  # heads that split over all 8 chips (1d-ws)
    strategy = bind(PRESETS[FFN(ffn)], "2x2x2", attention, roles=ROTATED)
    sg = shardc.shard(g, "2x2x2", strategy)
    e_axes, f_axes = ROTATED_WEIGHTS[ffn]
    w = params(sg)["win1"]  # E x F, stored as the preset says
    assert (axes(w, "E"), axes(w, "F")) == (e_axes, f_axes)
    default = params(shardc.shard(g, "2x2x2", ffn, attention))["win1"]
    assert (axes(default, "E"), axes(default, "F")) != (e_axes, f_axes)  # the roles made the difference
    report = shardc.verify(shardc.shrink(sg))
    assert report.passed, report


def test_roles_through_shard_and_on_a_two_axis_mesh() -> None:
    """On 4x2 (default: x = x, z = y), x played by the last axis instead: weights E_y F_x."""
    g = shardc.load(EXAMPLES / "tiny_layer.model")
    sg = shardc.shard(g, "4x2", "2d-ws", "batch", roles={Role.X: "y", Role.Z: "x"})
    w = params(sg)["wout"]
    assert (axes(w, "F"), axes(w, "E")) == ("x", "y")
    assert shardc.verify(shardc.shrink(sg)).passed
    result = shardc.shard_program(g, "4x2", ffn="wg-x", roles={"x": "y", "y": (), "z": "x"})
    assert result.strategy is not None and result.strategy.gathered == ("y",)
    assert result.strategy.activations == split("B_y E_x")


def test_roles_may_leave_axes_unused() -> None:
    """A mesh axis that plays no role is not used by the preset: everything is replicated over it."""
    g = shardc.load(EXAMPLES / "tiny_ffn.model")
    sg = shardc.shard(g, "2x2x2", "1d-ws", "heads", roles={"x": ("y", "z")})
    values = [st.value if isinstance(st, Decl) else st.result for st, _ in sg.walk() if isinstance(st, (Decl, Op))]
    assert values and all(v.layout is not None and "x" not in v.layout.used_axes for v in values)
    assert shardc.verify(shardc.shrink(sg)).passed


# --- 3. presets and strategies of one's own ------------------------------------------------------
def test_a_custom_preset_through_shard() -> None:
    """2D-WS turned around: E over yz, F (and heads) over x."""
    X, Y, Z = Role
    turned = dataclasses.replace(PRESETS[FFN.WS_2D], weights=(("E", (Y, Z)),) + tuple((d, (X,)) for d in WIDE_DIMS),
                                 cache_batch=(X, Y, Z))
    g = shardc.load(EXAMPLES / "palm_8b_decode.model")
    sg = shardc.shard(g, "2x2x2", turned, "batch")
    w = params(sg)["win1"]
    assert (axes(w, "E"), axes(w, "F")) == ("yz", "x")
    assert shardc.verify(shardc.shrink(sg)).passed
    # The same preset, bound by hand, is the same program.
    assert shardc.shard(g, strategy=bind(turned, "2x2x2", "batch")) == sg


def test_a_hand_built_strategy_through_shard() -> None:
    m = shardc.Mesh.parse("2x2")
    mine = Strategy(FFN.WS_1D, Attention.HEADS, m, split(wide("yx")), (), split("E_yx"), REDUCE_INTO, ("y", "x"))
    g = shardc.load(EXAMPLES / "tiny_ffn.model")
    r = shardc.shard_program(g, None, mine)
    assert r.strategy is mine and r.graph.mesh == m
    assert axes(params(r.graph)["win"], "F") == "yx"
    assert shardc.verify(shardc.shrink(r.graph)).passed


def test_names_and_objects_give_the_same_program() -> None:
    g = shardc.load(EXAMPLES / "palm_8b_decode.model")
    by_name = shardc.shard(g, "2x2x2", "2d-ws", "batch")
    assert shardc.shard(g, "2x2x2", ffn="2d-ws", attention="batch") == by_name
    assert shardc.shard(g, "2x2x2", FFN.WS_2D, Attention.BATCH) == by_name
    assert shardc.shard(g, "2x2x2", PRESETS[FFN.WS_2D], "batch") == by_name
    assert shardc.shard(g, "2x2x2", bind(PRESETS[FFN.WS_2D], "2x2x2", "batch")) == by_name
    assert shardc.shard(g, "2x2x2", "2d-ws", "batch", roles={"x": "x", "y": "y", "z": "z"}) == by_name
    assert shardc.shard(g, "2x2x2", ffn="none") == shardc.shard(g, "2x2x2", PRESETS[FFN.NONE])


# --- 4. errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize("roles, words", [
    ({"x": "q"}, ["role x", "no axis 'q'", "x, y, z"]),
    ({"x": "y", "y": "y"}, ["axis 'y'", "roles x and y"]),
    ({"z": ("x", "x")}, ["axis 'x'", "role z twice"]),
    ({Role.X: "x", "X": "y"}, ["unknown role 'X'"]),  # (Role.X and "x" are one key: a Role is its name)
    ({"w": "x"}, ["unknown role 'w'", "x, y, z"]),
    (("z", "x", "y"), ["maps roles to mesh axes"]),
])
def test_bad_role_assignments(roles, words: list[str]) -> None:
    with pytest.raises(shardc.ShardcError) as info:
        bind(PRESETS[FFN.WS_2D], "2x2x2", "heads", roles=roles)
    for word in words:
        assert word in info.value.message
    with pytest.raises(shardc.ShardcError):  # the same through shard
        shardc.shard(shardc.load(EXAMPLES / "tiny_ffn.model"), "2x2x2", "2d-ws", roles=roles)


def test_bad_presets_and_strategies() -> None:
    g = shardc.load(EXAMPLES / "tiny_ffn.model")
    bound = bind(PRESETS[FFN.WS_2D], "2x2x2", "heads")
    with pytest.raises(shardc.ShardcError, match="bound to mesh 2x2x2.*sharded for 4x4x4"):
        shardc.shard(g, "4x4x4", bound)
    with pytest.raises(shardc.ShardcError, match="already bound"):
        shardc.shard(g, "2x2x2", bound, "batch")
    with pytest.raises(shardc.ShardcError, match="already bound"):
        shardc.shard(g, "2x2x2", bound, roles={"x": "z"})
    with pytest.raises(shardc.ShardcError, match="once"):
        shardc.shard(g, "2x2x2", "2d-ws", ffn="1d-ws")
    with pytest.raises(shardc.ShardcError, match="axis 'z', which mesh 2x2 lacks"):
        Strategy(FFN.WS_2D, Attention.HEADS, shardc.Mesh.parse("2x2"), split("E_z"), (), (), (), ())
    with pytest.raises(shardc.ShardcError, match="'x' is not a role; use Role.X"):
        Preset(FFN.WS_2D, weights=(("E", ("x",)),))  # type: ignore[arg-type]
    with pytest.raises(shardc.ShardcError, match="names a dim twice"):
        Preset(FFN.WS_2D, weights=(("E", (Role.X,)), ("E", (Role.Y,))))
    with pytest.raises(shardc.ShardcError, match="--attention preset 'rows'; choose one of heads, batch"):
        bind(PRESETS[FFN.WS_2D], "2x2x2", "rows")
    with pytest.raises(shardc.ShardcError, match="--ffn preset '3d-ws'; choose one of 1d-ws, 2d-ws"):
        shardc.shard(g, "2x2x2", "3d-ws")
