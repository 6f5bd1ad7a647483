"""Peak memory per chip (:mod:`shardc.cost.memory`) and ``last(a, L=T)``, the op that lets a prefill
compute logits for its last position only."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import shardc
from shardc.cost.memory import memory_peak
from shardc.cost.model import estimate
from shardc.errors import ShardcError
from shardc.execute.emulate import emulate
from shardc.execute.reference import reference
from shardc.execute.verification import verify
from shardc.ir.graph import OpKind
from shardc.sharding.shard import shard_program
from shardc.sharding.sharded import verify_sharded

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
GIB = 2**30


def ht_prefill() -> shardc.Graph:
    """The paper's high-throughput prefill: PaLM 540B, B=512, H padded to 64, wg-xyz, batch, bf16."""
    g = shardc.load(EXAMPLES / "palm_540b_prefill.model", sizes={"B": 512, "H": 64})
    return shard_program(g, None, "wg-xyz", "batch").graph


def test_high_throughput_prefill_fits_32_gib_and_says_why() -> None:
    sg = ht_prefill()
    report = estimate(sg, "tpu-v4")
    assert report.fits_hbm and report.hbm_capacity == 32 * GIB
    peak = report.memory_peak
    # The peak is the MLP's second input matmul of the last layer: both B x L x F halves of SwiGLU.
    assert (peak.op, peak.kind, peak.layer) == ("t4", "einsum", "layer 118 of 118 (repeat on line 32)")
    live = {v.name: v.bytes for v in peak.live}
    b, seq, e, f, d = 512 // 64, 2048, 18432, 73728, 256  # B split over the 64 chips
    assert live["t4"] == b * seq * f * 2 and live["t3"] == b * seq * f * 2  # silu(t2) in place of t2
    assert live["kn, vn of layers 1-117"] == 117 * 2 * b * seq * d * 2  # the prompt's KV entries accumulate
    assert live["x"] == live["h"] == live["o"] == b * seq * e * 2
    assert live["win2_1"] == 2 * e * f * 2 / 64  # two of 64 chunks of the gathered weight, not 2.5 GiB
    assert sum(live.values()) == peak.bytes == report.activation_bytes_per_chip
    assert report.memory_bytes_per_chip == report.weight_bytes_per_chip + peak.bytes
    assert 24 * GIB < report.memory_bytes_per_chip < 25 * GIB
    assert report.to_json()["memory_peak"]["op"] == "t4"  # type: ignore[index]


def test_gathered_weights_held_whole_move_the_peak_to_the_unembedding() -> None:
    peak = memory_peak(ht_prefill(), gather_chunks=1)
    assert (peak.op, peak.layer) == ("logits", "top level")
    live = {v.name: v.bytes for v in peak.live}
    assert live["wemb1"] == 256128 * 18432 * 2  # V x E whole on every chip
    assert live["kn, vn of all 118 layers"] == 118 * 2 * 8 * 2048 * 256 * 2
    assert live["logits"] == 8 * 1 * 256128 * 2  # the last position only
    with pytest.raises(ShardcError, match="at least one chunk"):
        memory_peak(ht_prefill(), gather_chunks=0)


SCORES = """
model scores
mesh x=2
dims B=2, L=8, S=8, H=2, D=4
input q : f32[B, L, H, D] @ B_xLHD
input k : f32[B, S, D] @ B_xSD
t = einsum("BLHD,BSD->BHLS", q, k) @ B_xHLS
s = t * 0.5 @ B_xHLS
m = causal(s, L, S) @ B_xHLS
p = softmax(m, over=S) @ B_xHLS
output p
"""


def test_scale_mask_softmax_share_one_scores_buffer() -> None:
    peak = memory_peak(shardc.parse(SCORES))
    scores = 1 * 2 * 8 * 8 * 4  # B x H x L x S per chip, f32
    inputs = (1 * 8 * 2 * 4 + 1 * 8 * 4) * 4
    assert peak.bytes == inputs + scores  # one scores buffer, never two
    assert peak.op == "t"  # reached at the scores einsum; scale, mask and softmax add nothing


LAST = """
model last_logits
mesh x=2, y=2
dims B=4, L=8, T=3, E=4, V=6
input x    : f32[B, L, E]
param wemb : f32[V, E]
xt     = last(x, L=T)
logits = einsum("BTE,VE->BTV", xt, wemb)
output logits
"""


def test_last_keeps_the_last_positions_against_the_reference() -> None:
    g = shardc.parse(LAST)
    out = reference(g, dtype="f64", trace=None)
    full = reference(shardc.parse(LAST.replace("xt     = last(x, L=T)\n", "").replace(
        '"BTE,VE->BTV", xt', '"BLE,VE->BLV", x')), dtype="f64")
    np.testing.assert_allclose(out["logits"], full["logits"][:, -3:, :], rtol=1e-12)
    sg = shard_program(g).graph
    assert any(op.kind is OpKind.LAST for op in sg.ops())
    assert verify(sg).passed
    assert emulate(sg).outputs["logits"].shape == (4, 3, 6)


def test_last_needs_its_dim_unsplit_and_gathers_it() -> None:
    pinned = LAST.replace("input x    : f32[B, L, E]", "input x    : f32[B, L, E] @ BL_xE")
    sg = shard_program(shardc.parse(pinned)).graph
    ops = list(sg.ops())
    before = ops[[op.kind for op in ops].index(OpKind.LAST) - 1]
    assert before.kind is OpKind.ALL_GATHER  # L gathered before its end is kept
    assert verify(sg).passed
    bad = "model t\nmesh x=2\ndims B=2, L=8, T=2, E=4\ninput x : f32[B, L, E] @ BL_xE\n" \
          "y = last(x, L=T) @ BTE\noutput y\n"  # a sharded program that skips the gather
    with pytest.raises(ShardcError, match="L must be unsplit"):
        verify_sharded(shardc.parse(bad))


@pytest.mark.parametrize("text, message", [
    ("y = last(x, L=T, E=V)\noutput y", "one OLD=NEW pair"),
    ("y = last(x, T=L)\noutput y", "T is not a dim"),
    ("y = last(einsum(\"BLE->BE\", x), L=T)\noutput y", "L is not a dim"),
])
def test_last_type_errors(text: str, message: str) -> None:
    with pytest.raises(ShardcError, match=message):
        shardc.parse(f"model t\ndims B=2, L=4, T=8, E=2, V=2\ninput x : f32[B, L, E]\n{text}\n")


def test_last_keeps_at_most_the_dim() -> None:
    with pytest.raises(ShardcError, match="cannot keep 8 positions of L=4"):
        shardc.parse("model t\ndims B=2, L=4, T=8\ninput x : f32[B, L]\ny = last(x, L=T)\noutput y\n")
