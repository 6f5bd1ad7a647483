"""The paper's two worked requests, planned whole by ``shardc plan FILE_PREFILL FILE_DECODE``.

Pope et al. (2022) give two end-to-end examples for PaLM 540B on 64 TPU v4 chips:

* **chatbot** (low latency, int8 weights): 64 new user tokens against 1,920 tokens of cached
  history, then 64 generated tokens, in 1.9 s in all.  The prefill is
  ``examples/palm_540b_chat_prefill.model`` (64 new tokens attending to a cache of 1,984
  positions) at batch 1, the decode ``examples/palm_540b_decode.model`` at batch 64;
* **offline** (high throughput, bf16 weights): 1,984 input and 64 output tokens at 73% FLOPS
  efficiency over the whole request, with Table 2's high-throughput batches (prefill 512,
  decode 512).

Each is planned twice: with the paper's mesh (4x4x4) and the feed-forward presets of Table 2
(attention chosen by the planner), and with the planner free over every mesh and preset of 64
chips.  Heads are padded from 48 to 64 (``--pad H=64``) as in the paper.  Nothing is fitted here:
the calibration terms are those ``benchmarks/calibrate.py`` fitted to Table 2.

    python benchmarks/requests.py           # both requests, both variants (about a minute)
    python benchmarks/requests.py --paper   # the paper's layouts only (a few seconds)
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from shardc import load
from shardc.hardware.profile import ChipProfile, load_profile
from shardc.planner.request import RequestPlan, plan_request
from shardc.units import human_seconds

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@dataclass(frozen=True)
class Request:
    """One worked request of the paper and how it was served."""

    name: str
    prefill_file: str
    prompt: int
    history: int
    generate: int
    weights: str
    prefill_batch: int
    decode_batch: int
    paper_ffn: str  # Table 2's feed-forward presets for its prefill and its decode
    objective: str
    paper_figure: str  # "latency" or "mfu": what the paper reports for this request
    paper_value: float


CHATBOT = Request("chatbot", "palm_540b_chat_prefill.model", 64, 1920, 64, "int8", 1, 64, "2d-ws", "latency",
                  "latency", 1.9)
OFFLINE = Request("offline", "palm_540b_prefill.model", 1984, 0, 64, "bf16", 512, 512, "wg-xyz,2d-ws", "cost",
                  "mfu", 0.73)
REQUESTS = (CHATBOT, OFFLINE)


def plan_worked(req: Request, chip: ChipProfile, paper_layouts: bool) -> RequestPlan:
    """``req`` planned on the paper's mesh and presets, or over every mesh and preset of 64 chips."""
    layout: dict[str, object] = {"mesh": "4x4x4", "ffn": req.paper_ffn} if paper_layouts else {"chips": 64}
    return plan_request(load(EXAMPLES / req.prefill_file), load(EXAMPLES / "palm_540b_decode.model"),
                        req.prompt, req.generate, history=req.history, chip=chip, objective=req.objective,
                        weights=req.weights, pad={"H": 64}, prefill_batch=req.prefill_batch,
                        decode_batch=req.decode_batch, **layout)  # type: ignore[arg-type]


def ours(req: Request, r: RequestPlan, bound: bool = False) -> float:
    """The figure the paper reports for ``req``, from our plan (calibrated, or the roofline bound)."""
    if req.paper_figure == "latency":
        return r.bound_latency_s if bound else r.latency_s
    return r.bound_mfu if bound else r.mfu


def _fmt(req: Request, v: float) -> str:
    return human_seconds(v) if req.paper_figure == "latency" else f"{v:.1%}"


def _layout(r: RequestPlan, phase: str) -> str:
    c = (r.prefill if phase == "prefill" else r.decode).best.candidate
    return f"{c.mesh.spec()} {c.ffn.value}/{c.attention.value} B={c.batch}"


def report(chip: ChipProfile, variants: tuple[bool, ...] = (True, False)) -> str:
    """Each request beside the paper's figure: the two layouts, the phases, the totals, the ratio."""
    lines = []
    for req in REQUESTS:
        history = f" after {req.history:,} cached" if req.history else ""
        lines.append(f"{req.name}: PaLM 540B, 64 chips, {req.weights} weights, {req.prompt:,} new tokens{history}, "
                     f"{req.generate} generated; prefill B={req.prefill_batch}, decode B={req.decode_batch}")
        lines.append(f"  paper: {'latency' if req.paper_figure == 'latency' else 'MFU'} "
                     f"{_fmt(req, req.paper_value)} for the whole request")
        for paper_layouts in variants:
            r = plan_worked(req, chip, paper_layouts)
            title = "the paper's mesh and presets" if paper_layouts else "the planner's choice"
            value, bound = ours(req, r), ours(req, r, bound=True)
            lines += [f"  {title}:",
                      f"    prefill {_layout(r, 'prefill'):<34} {human_seconds(r.prefill_latency_s):>9}",
                      f"    decode  {_layout(r, 'decode'):<34} {human_seconds(r.decode_latency_s):>9}  "
                      f"({r.generate} steps, {human_seconds(r.steps[0].latency_s)} -> "
                      f"{human_seconds(r.steps[-1].latency_s)})",
                      f"    request {human_seconds(r.latency_s)} end to end, MFU {r.mfu:.1%}, "
                      f"{r.cost_chip_s_per_token * 1e3:.3g} chip-ms per token",
                      f"    {req.paper_figure}: ours {_fmt(req, value)} (bound {_fmt(req, bound)}), paper "
                      f"{_fmt(req, req.paper_value)}, ratio {value / req.paper_value:.2f}"]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paper", action="store_true", help="the paper's mesh and presets only (fast)")
    parser.add_argument("--chip", default="tpu-v4", help="chip profile (default tpu-v4)")
    args = parser.parse_args()
    print(report(load_profile(args.chip), (True,) if args.paper else (True, False)))


if __name__ == "__main__":
    main()
