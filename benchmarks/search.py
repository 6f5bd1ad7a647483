"""How long the layout search takes on PaLM 540B, per preset, against the greedy policy.

The pass searches a ``repeat`` body once, whatever its trip count.  For PaLM 540B decode
(``examples/palm_540b_decode.model``) and prefill (``examples/palm_540b_prefill.model``) on
4x4x4, under every ``--ffn`` preset with attention by heads and by batch (heads padded to 64
where a preset needs them to split), this times ``shard_program`` with ``method="search"``
and ``method="greedy"`` on the same parsed program (parsing is outside the timed region).
Each figure is the best of 5 runs after one warm-up in the same process, and the ratio
column is search / greedy from those runs.  The search's target is under 50 ms per preset.

    python benchmarks/search.py            # the table
    python benchmarks/search.py --json     # the raw figures
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import shardc
from shardc.errors import ShardcError

ROOT = Path(__file__).resolve().parent.parent
FFN = ("1d-ws", "2d-ws", "wg-x", "wg-xy", "wg-xyz")
ATTENTION = ("heads", "batch")
PHASES = (("decode", "palm_540b_decode.model", {"H": 64}), ("prefill", "palm_540b_prefill.model", {"H": 64}))
RUNS = 5
TARGET_S = 0.050


def best_time(g: shardc.Graph, ffn: str, attention: str, method: str) -> tuple[float, float]:
    """(best seconds of RUNS shardings after a warm-up, the plan's estimated seconds)."""
    r = shardc.shard_program(g, "4x4x4", ffn, attention, method=method)
    times = []
    for _ in range(RUNS):
        t = time.perf_counter()
        shardc.shard_program(g, "4x4x4", ffn, attention, method=method)
        times.append(time.perf_counter() - t)
    assert r.seconds is not None
    return min(times), r.seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    args = parser.parse_args(argv)
    rows = []
    for phase, name, sets in PHASES:
        g = shardc.load(ROOT / "examples" / name, sizes=sets)
        for ffn in FFN:
            for attention in ATTENTION:
                try:
                    search_s, search_est = best_time(g, ffn, attention, "search")
                    greedy_s, greedy_est = best_time(g, ffn, attention, "greedy")
                except ShardcError as err:
                    rows.append({"phase": phase, "ffn": ffn, "attention": attention, "error": err.message})
                    continue
                rows.append({"phase": phase, "ffn": ffn, "attention": attention, "search_s": search_s,
                             "greedy_s": greedy_s, "ratio": search_s / greedy_s,
                             "estimate_search_s": search_est, "estimate_greedy_s": greedy_est})
    if args.json:
        json.dump({"machine": platform.platform(), "python": platform.python_version(), "rows": rows},
                  sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    machine = platform.processor() or platform.machine()
    print(f"layout search of PaLM 540B (H=64) on 4x4x4; best of {RUNS} runs; {machine}, "
          f"Python {platform.python_version()}")
    print(f"{'phase':8} {'ffn':7} {'attention':9} {'search':>9} {'greedy':>9} {'ratio':>6}  "
          f"{'plan (search)':>13} {'plan (greedy)':>13}")
    worst = 0.0
    for r in rows:
        if "error" in r:
            print(f"{r['phase']:8} {r['ffn']:7} {r['attention']:9} refused: {r['error']}")
            continue
        worst = max(worst, r["search_s"])
        print(f"{r['phase']:8} {r['ffn']:7} {r['attention']:9} {r['search_s'] * 1e3:7.1f} ms "
              f"{r['greedy_s'] * 1e3:6.1f} ms {r['ratio']:5.2f}x  {r['estimate_search_s'] * 1e3:10.2f} ms "
              f"{r['estimate_greedy_s'] * 1e3:10.2f} ms")
    print(f"slowest search: {worst * 1e3:.1f} ms (target under {TARGET_S * 1e3:.0f} ms per preset: "
          f"{'met' if worst < TARGET_S else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
