"""The HLO-text counter (shardc.export.hlo) on handwritten modules: every replica-group spelling,
combined collectives, loops, dots, element sizes.  No jax needed."""
from __future__ import annotations

import pytest

from shardc.errors import ShardcError
from shardc.export.hlo import group_axes, parse_hlo, replica_groups
from shardc.ir.mesh import Mesh


def module(body: str, extra: str = "") -> str:
    return f"""HloModule m

{extra}
%add (a: f32[], b: f32[]) -> f32[] {{
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %s = f32[] add(%a, %b)
}}

ENTRY %main (p: f32[8,16]) -> f32[8,16] {{
  %p = f32[8,16]{{1,0}} parameter(0)
{body}
}}
"""


@pytest.mark.parametrize("spelling, groups", [
    ("{{0,1},{2,3}}", ((0, 1), (2, 3))),
    ("{{0,2,1,3}}", ((0, 2, 1, 3),)),
    ("{}", ((0, 1, 2, 3),)),
    ("[2,2]<=[4]", ((0, 1), (2, 3))),
    ("[2,2]<=[2,2]T(1,0)", ((0, 2), (1, 3))),
    ("[4,2]<=[2,4]T(1,0)", None),  # checked below against numpy's transpose
    ("mesh['a'=2,'b'=2] {'a'}", ((0, 2), (1, 3))),
    ("mesh['a'=2,'b'=2] {'b'}", ((0, 1), (2, 3))),
    ("mesh['a'=1,'b'=2,'c'=2], device_ids=([2,2]T(1,0)) {'b'}", ((0, 1), (2, 3))),
    ("mesh['a'=4] {'a':(1)2}", ((0, 2), (1, 3))),
])
def test_every_replica_group_spelling(spelling: str, groups) -> None:
    got = replica_groups(f"replica_groups={spelling}, to_apply=%add", 4 if "[4,2]" not in spelling else 8)
    if groups is None:  # arange(8).reshape(2, 4).T regrouped in pairs: columns of the 2x4 grid
        groups = ((0, 4), (1, 5), (2, 6), (3, 7))
    assert got == groups


def test_mesh_device_ids_reorder_the_devices() -> None:
    # devices [0, 2, 1, 3] at the positions of a 2x2 mesh: the groups along 'b' are {0,2} and {1,3}
    assert replica_groups("replica_groups=mesh['a'=2,'b'=2], device_ids=(0,2,1,3) {'b'}", 4) == ((0, 2), (1, 3))


def test_an_unknown_spelling_is_an_error_not_a_guess() -> None:
    with pytest.raises(ShardcError, match="unknown replica_groups spelling"):
        replica_groups("replica_groups=<<0,1>>", 4)


def test_bytes_follow_the_ring_formulas_for_each_kind_and_group_size() -> None:
    text = module("""  %ag = f32[8,64]{1,0} all-gather(%p), replica_groups=[1,4]<=[4], dimensions={1}
  %rs = f32[8,4]{1,0} reduce-scatter(%p), replica_groups={{0,1,2,3}}, dimensions={1}, to_apply=%add
  %ar = f32[8,16]{1,0} all-reduce(%p), replica_groups=[2,2]<=[2,2]T(1,0), to_apply=%add
  %a2a = f32[8,16]{1,0} all-to-all(%p), replica_groups=[2,2]<=[4], dimensions={1}
  %cp = f32[8,16]{1,0} collective-permute(%p), source_target_pairs={{0,1},{1,0}}
  %id = f32[8,16]{1,0} collective-permute(%p), source_target_pairs={{0,0},{1,1}}
  ROOT %one = f32[8,16]{1,0} all-reduce(%p), replica_groups={{0},{1},{2},{3}}, to_apply=%add""")
    counts = parse_hlo(text, 4)
    block = 8 * 16 * 4  # bytes of p
    assert dict(counts.counts()) == {"all_gather": 1, "reduce_scatter": 1, "all_reduce": 1, "all_to_all": 1,
                                     "collective_permute": 1}  # a permute to itself and groups of one move nothing
    assert dict(counts.bytes_by_kind()) == {"all_gather": 3 / 4 * 8 * 64 * 4, "reduce_scatter": 3 / 4 * block,
                                            "all_reduce": 2 * 1 / 2 * block, "all_to_all": 1 / 2 * block,
                                            "collective_permute": block}


def test_a_combined_all_reduce_counts_each_operand() -> None:
    text = module("""  %q = f32[4]{0} parameter(1)
  ROOT %ar = (f32[8,16]{1,0}, f32[4]{0}) all-reduce(%p, %q), replica_groups={{0,1}}, to_apply=%add""")
    counts = parse_hlo(text, 2)
    assert counts.counts()["all_reduce"] == 2
    assert counts.bytes_per_device() == 2 * 1 / 2 * (8 * 16 + 4) * 4


LOOP = """%body (t: (s32[], f32[8,16])) -> (s32[], f32[8,16]) {
  %t = (s32[], f32[8,16]{1,0}) parameter(0)
  %i = s32[] get-tuple-element(%t), index=0
  %x = f32[8,16]{1,0} get-tuple-element(%t), index=1
  %w = f32[16,16]{1,0} constant({...})
  %d = f32[8,16]{1,0} dot(%x, %w), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  %r = f32[8,16]{1,0} all-reduce(%d), replica_groups={{0,1}}, to_apply=%add
  %one = s32[] constant(1)
  %j = s32[] add(%i, %one)
  ROOT %out = (s32[], f32[8,16]{1,0}) tuple(%j, %r)
}

%cond (t: (s32[], f32[8,16])) -> pred[] {
  %t = (s32[], f32[8,16]{1,0}) parameter(0)
  %i = s32[] get-tuple-element(%t), index=0
  %n = s32[] constant(5)
  ROOT %lt = pred[] compare(%i, %n), direction=LT
}
"""


@pytest.mark.parametrize("trip", ['backend_config={"known_trip_count":{"n":"5"}}', ""])
def test_a_loop_body_counts_its_trip_count_times(trip: str) -> None:
    # XLA's known_trip_count, or (a lowered module has none) the condition i < 5 from i = 0
    text = module(f"""  %zero = s32[] constant(0)
  %init = (s32[], f32[8,16]{{1,0}}) tuple(%zero, %p)
  ROOT %loop = (s32[], f32[8,16]{{1,0}}) while(%init), condition=%cond, body=%body, {trip}""", LOOP)
    counts = parse_hlo(text, 2)
    assert counts.counts()["all_reduce"] == 5
    assert counts.dot_flops() == 5 * 2 * 8 * 16 * 16


def test_a_fused_dot_counts_through_the_fusion() -> None:
    fused = """%fused (a: f32[2,8,16], b: f32[2,16,4]) -> f32[2,8,4] {
  %a = f32[2,8,16]{2,1,0} parameter(0)
  %b = f32[2,16,4]{2,1,0} parameter(1)
  ROOT %d = f32[2,8,4]{2,1,0} dot(%a, %b), lhs_batch_dims={0}, lhs_contracting_dims={2}, \
rhs_batch_dims={0}, rhs_contracting_dims={1}
}
"""
    text = module("""  %a = f32[2,8,16]{2,1,0} parameter(1)
  %b = f32[2,16,4]{2,1,0} parameter(2)
  ROOT %f = f32[2,8,4]{2,1,0} fusion(%a, %b), kind=kCustom, calls=%fused""", fused)
    assert parse_hlo(text, 1).dot_flops() == 2 * (2 * 8 * 4) * 16


def test_elements_count_the_bytes_of_their_type() -> None:
    text = module("""  %h = bf16[8,16]{1,0} parameter(1)
  %w = s8[8,16]{1,0} parameter(2)
  %a = bf16[8,32]{1,0} all-gather(%h), replica_groups={{0,1}}, dimensions={1}
  ROOT %b = s8[8,32]{1,0} all-gather(%w), replica_groups={{0,1}}, dimensions={1}""")
    assert parse_hlo(text, 2).bytes_per_device() == 1 / 2 * 8 * 32 * (2 + 1)


def test_a_group_names_the_mesh_axes_it_spans() -> None:
    mesh = Mesh.parse("x=2, y=2, z=2")
    assert group_axes((0, 1), mesh) == ("z",)
    assert group_axes((0, 2, 4, 6), mesh) == ("x", "y")
    assert group_axes((0, 4), mesh) == ("x",)
