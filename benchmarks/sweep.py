"""How long ``shardc sweep`` takes on PaLM 540B decode: the full grid with --jobs 2 and with --jobs 1.

The grid is the command's default: 7 chip counts (8 ... 512) x 11 batches (1 ... 1024) x 2 weight
dtypes (bf16, int8) = 154 planner calls on ``examples/palm_540b_decode.model``, each
``plan(g, chips, batch=b, weights=w, pad="any")``.  Each sweep runs once (a sweep takes minutes;
parsing is inside the timed region, once per sweep), the --jobs 2 sweep first.  The target is
under 60 s on 2 cores.  ``--profile OUT`` also runs the --jobs 1 sweep under cProfile and prints
the 25 functions of largest cumulative time.

    python benchmarks/sweep.py                         # both sweeps, the ratio, the machine
    python benchmarks/sweep.py --chips 64 --batch 1,64 # a smaller grid
    python benchmarks/sweep.py --two-only       # only the --jobs 2 sweep
    python benchmarks/sweep.py --json
"""
from __future__ import annotations

import argparse
import cProfile
import json
import math
import os
import platform
import pstats
import sys
import time
from pathlib import Path

from shardc.planner.sweep import DEFAULT_BATCHES, DEFAULT_CHIPS, sweep

ROOT = Path(__file__).resolve().parent.parent
MODEL = str(ROOT / "examples" / "palm_540b_decode.model")
TARGET_S = 60.0


def machine() -> str:
    """The CPU model, the core count, the load average, Python and the OS."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    load = "load average %.1f" % os.getloadavg()[0] if hasattr(os, "getloadavg") else ""
    return (f"{cpu}, {os.cpu_count()} cores, {load}; Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


def timed(jobs: int, chips: list[int], batches: list[int], profile: str | None = None) -> tuple[float, int]:
    """Seconds of one sweep with ``jobs`` workers, and how many points were feasible."""
    start = time.perf_counter()
    if profile:
        prof = cProfile.Profile()
        points = prof.runcall(sweep, [MODEL], chips, batches, jobs=jobs)
        prof.dump_stats(profile)
    else:
        points = sweep([MODEL], chips, batches, jobs=jobs)
    return time.perf_counter() - start, sum(p.feasible for p in points)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chips", default=",".join(map(str, DEFAULT_CHIPS)))
    parser.add_argument("--batch", default=",".join(map(str, DEFAULT_BATCHES)))
    parser.add_argument("--profile", metavar="OUT.prof", help="profile the --jobs 1 sweep into OUT.prof")
    parser.add_argument("--two-only", action="store_true", help="time only the --jobs 2 sweep (half the wait)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    chips = [int(c) for c in args.chips.split(",")]
    batches = [int(b) for b in args.batch.split(",")]
    where = machine()
    points = len(chips) * len(batches) * 2
    two, feasible = timed(2, chips, batches)
    if not args.json:  # as soon as it is known: the --jobs 1 sweep takes twice as long
        print(f"  (--jobs 2 took {two:.1f} s{'' if args.two_only else '; now --jobs 1'})", file=sys.stderr, flush=True)
    one, _ = (math.nan, 0) if args.two_only else timed(1, chips, batches, args.profile)
    result = {"model": "palm_540b_decode", "points": points, "feasible": feasible, "jobs2_s": two, "jobs1_s": one,
              "ratio": one / two, "target_s": TARGET_S, "machine": where}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"shardc sweep of PaLM 540B decode: {len(chips)} chip counts x {len(batches)} batches x 2 dtypes "
              f"= {points} points ({feasible} feasible)")
        print(f"  --jobs 2  {two:7.1f} s   ({two / points:.2f} s per point)")
        if not args.two_only:
            print(f"  --jobs 1  {one:7.1f} s   ({one / points:.2f} s per point)")
            print(f"  jobs 1 / jobs 2 = {one / two:.2f}x")
        full = chips == list(DEFAULT_CHIPS) and batches == list(DEFAULT_BATCHES)
        print(f"  target under {TARGET_S:.0f} s on 2 cores for the full grid: "
              f"{('met' if two < TARGET_S else 'missed') if full else 'not judged (a smaller grid)'}")
        print(f"  machine: {where}")
    if args.profile:
        pstats.Stats(args.profile, stream=sys.stdout).sort_stats("cumulative").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
