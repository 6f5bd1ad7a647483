"""Whole requests: ``shardc.planner.request.plan_request`` and ``shardc plan FILE_PREFILL FILE_DECODE``.

Fast: PaLM 8B on one 2x2x2 mesh (a handful of candidates per phase).  The paper's worked requests on
PaLM 540B are in ``benchmarks/requests.py`` and the claims table (``tests/test_cost.py``).
"""
from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import pytest

import shardc
from shardc.cli.main import main
from shardc.ir.transforms import with_sizes
from shardc.planner.request import RequestPlan, _split_of, plan_request

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PREFILL = EXAMPLES / "palm_8b_prefill.model"
DECODE = EXAMPLES / "palm_8b_decode.model"
FAST = ["--mesh", "2x2x2", "--ffn", "2d-ws", "--attention", "batch"]


@pytest.fixture(scope="module")
def request_plan() -> RequestPlan:
    return plan_request(shardc.load(PREFILL), shardc.load(DECODE), 256, 8, mesh="2x2x2", ffn="2d-ws",
                        attention="batch", prefill_batch=1, decode_batch=16)


def test_decode_steps_are_costed_at_their_growing_context(request_plan: RequestPlan) -> None:
    r = request_plan
    assert [s.context for s in r.steps] == list(range(256, 264))
    assert r.steps[-1].latency_s > r.steps[0].latency_s  # the cache read grows
    sg = r.decode.best.graph
    for step in (r.steps[0], r.steps[-1]):
        direct = shardc.estimate(with_sizes(sg, {"S": step.costed_context}))
        assert step.latency_s == direct.latency_s and step.bound_latency_s == direct.bound_latency_s


def test_steps_are_affine_in_the_context_for_this_layout(request_plan: RequestPlan) -> None:
    """A fact about this layout, checked rather than assumed (plan_request estimates every step anyway)."""
    lat = [s.latency_s for s in request_plan.steps]
    slope = (lat[-1] - lat[0]) / (len(lat) - 1)
    assert slope > 0
    assert all(abs(t - (lat[0] + slope * i)) <= 1e-12 * lat[0] for i, t in enumerate(lat))


def test_decode_layout_is_chosen_at_the_final_context(request_plan: RequestPlan) -> None:
    r = request_plan
    assert r.decode_context >= r.steps[-1].context and r.decode_context % r.chips == 0
    assert r.decode.best.graph.sizes["S"] == r.decode_context
    at_plan = shardc.estimate(r.decode.best.graph).latency_s
    assert at_plan == pytest.approx(r.decode.best.figures.latency_s, rel=1e-9)  # the search's own number
    assert r.prefill.best.graph.sizes["L"] == 256 and r.prefill.best.graph.sizes["S"] == 256


def test_totals_add_up(request_plan: RequestPlan) -> None:
    r = request_plan
    assert r.decode_latency_s == pytest.approx(sum(s.latency_s for s in r.steps))
    assert r.latency_s == pytest.approx(r.prefill_latency_s + r.decode_latency_s)
    assert r.decode_per_token_s == pytest.approx(r.decode_latency_s / 8)
    chip_s = 8 * (r.prefill_latency_s / 1 + r.decode_latency_s / 16)
    assert r.chip_seconds_per_sequence == pytest.approx(chip_s)
    assert r.cost_chip_s_per_token == pytest.approx(chip_s / (256 + 8))
    peak = shardc.load_profile("tpu-v4").peak_flops
    assert r.mfu == pytest.approx(2 * r.params * (256 + 8) / (peak * chip_s))
    assert 0 < r.mfu < r.bound_mfu < 1 and r.bound_latency_s < r.latency_s


def test_phases_take_their_own_layouts_and_batches() -> None:
    r = plan_request(shardc.load(PREFILL), shardc.load(DECODE), 128, 2, mesh="2x2x2", attention="any",
                     prefill_batch=1, decode_batch=64)
    assert (r.prefill_batch, r.decode_batch) == (1, 64)
    assert r.prefill.best.candidate.attention != r.decode.best.candidate.attention


def test_history_is_attended_by_the_prefill_and_every_step() -> None:
    chat = shardc.parse((EXAMPLES / "palm_540b_chat_prefill.model").read_text(), sizes={"E": 1024, "F": 4096})
    decode = shardc.parse(DECODE.read_text(), sizes={"E": 1024, "F": 4096})  # any decode that reads a cache
    r = plan_request(chat, decode, 16, 2, history=100, mesh="2x2x2", ffn="2d-ws", attention="batch")
    assert r.prefill.best.graph.sizes["S"] == 116 and r.prefill.best.graph.sizes["L"] == 16
    assert [s.context for s in r.steps] == [116, 117]
    assert r.tokens_per_sequence == 18  # cached history is not processed again


def test_a_split_context_is_costed_at_the_next_multiple() -> None:
    sg = shardc.parse("model s\nmesh x=2\ndims B=2, S=4, D=2\ninput q : f32[B, D] @ BD\n"
                      "cache k : f32[B, S, D] @ BS_xD\ns = einsum(\"BD,BSD->BS\", q, k) @ BS_x\noutput s\n")
    assert _split_of(sg, "S") == 2 and _split_of(sg, "B") == 1


@pytest.mark.parametrize("args, message", [
    (["--prompt", "8"], "give --generate too"),
    (["--generate", "8"], "give --prompt too"),
    ([], "give --prompt and --generate too"),
])
def test_half_a_request_is_a_clear_error(args: list[str], message: str) -> None:
    status, out, err = run([str(PREFILL), str(DECODE), *args, *FAST])
    assert status == 2 and message in err and "Traceback" not in err


def test_request_flags_need_two_files() -> None:
    status, _, err = run([str(PREFILL), "--prompt", "8", "--generate", "2", *FAST])
    assert status == 2 and "give two files" in err
    status, _, err = run([str(DECODE), "--decode-batch", "8", *FAST])
    assert status == 2 and "only for a whole request" in err


def test_a_decode_file_without_a_kv_cache_is_refused() -> None:
    status, _, err = run([str(PREFILL), str(EXAMPLES / "tiny_ffn.model"), "--prompt", "8", "--generate", "2",
                          "--mesh", "2x2x2"])
    assert status == 2 and "reads no KV cache over a dim S" in err and "Traceback" not in err


def test_a_prompt_too_long_for_hbm_is_refused() -> None:
    status, _, err = run([str(PREFILL), str(DECODE), "--prompt", "4000000", "--generate", "2", *FAST])
    assert status == 2 and "prefill (L=4000000)" in err and "do not fit in HBM" in err
    assert "hint: a shorter --prompt" in err and "Traceback" not in err


def test_text_and_json_output() -> None:
    status, out, _ = run([str(PREFILL), str(DECODE), "--prompt", "256", "--generate", "4", "--decode-batch", "16",
                          *FAST])
    assert status == 0
    for line in ("prefill  mesh 2x2x2, 2d-ws/batch", "decode   mesh 2x2x2, 2d-ws/batch", "B=16",
                 "4 steps, context 256 -> 259", "end to end", "MFU"):
        assert line in out
    status, out, _ = run([str(PREFILL), str(DECODE), "--prompt", "256", "--generate", "4", "--json", *FAST])
    assert status == 0
    obj = json.loads(out)
    assert set(obj) >= {"prefill", "decode", "request"}
    dec, req = obj["decode"], obj["request"]
    assert len(dec["step_latencies_s"]) == 4 and dec["first_step"]["context"] == 256
    assert dec["last_step"]["context"] == 259
    assert math.isclose(req["latency_s"], obj["prefill"]["latency_s"] + dec["total_s"])


def test_json_errors_are_json() -> None:
    status, out, _ = run([str(PREFILL), str(DECODE), "--prompt", "8", "--json", *FAST])
    assert status == 2 and "--generate" in json.loads(out)["error"]["message"]


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["plan", *argv])
    return status, out.getvalue(), err.getvalue()
