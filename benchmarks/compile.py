"""How long ``shard_program`` takes, and that it does not depend on the number of layers.

The sharding pass walks a ``repeat`` body once, not once per layer, so sharding PaLM 540B
(118 layers) should take as long as sharding one layer or a million.  This script times
it on

* PaLM 540B decode, ``--ffn 2d-ws --attention batch`` (``examples/palm_540b_decode.model``),
* PaLM 540B prefill, ``--ffn wg-xyz`` (``examples/palm_540b_prefill.model``),

each with the file's ``repeat 118`` and with the count edited in the text to ``repeat 1``
and ``repeat 1000000``.  Every configuration runs in a fresh Python process so that its
first run is truly *cold* (the lark parser is built, the reshard caches are empty); then,
after that warm-up, the *warm* time is the best of 5 runs.  Each configuration gets 3
fresh processes and every figure is the best of the 3 (one cold run is noisy).  Parsing the text and
sharding are timed separately; the ratio column is warm shard time at 1,000,000 layers /
warm shard time at 118 layers.

    python benchmarks/compile.py            # the table
    python benchmarks/compile.py --json     # the raw figures
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = (
    ("540B decode 2d-ws/batch", "palm_540b_decode.model", "2d-ws", "batch"),
    ("540B prefill wg-xyz", "palm_540b_prefill.model", "wg-xyz", None),
)
LAYERS = (118, 1, 1_000_000)
RUNS = 5
PROCESSES = 3


def program_text(file: str, layers: int) -> str:
    """The example's text with its ``repeat 118`` edited to ``repeat LAYERS``."""
    text = (ROOT / "examples" / file).read_text(encoding="utf-8")
    edited, n = re.subn(r"^repeat 118 \{", f"repeat {layers} {{", text, flags=re.M)
    assert n == 1, f"{file}: expected one 'repeat 118 {{' line"
    return edited


def measure(file: str, layers: int, ffn: str | None, attention: str | None) -> dict[str, float]:
    """Cold first run, then the best of RUNS warm runs (seconds), for parse and shard_program."""
    t0 = time.perf_counter()
    import shardc  # imported inside the timing: the cold run includes building the parser
    from shardc.sharding.shard import shard_program

    text = program_text(file, layers)
    t1 = time.perf_counter()
    g = shardc.parse(text, file)
    t2 = time.perf_counter()
    result = shard_program(g, None, ffn, attention)
    t3 = time.perf_counter()
    assert result.graph.repeats[0].count == layers
    warm_parse, warm_shard = [], []
    for _ in range(RUNS):
        a = time.perf_counter()
        g = shardc.parse(text, file)
        b = time.perf_counter()
        shard_program(g, None, ffn, attention)
        c = time.perf_counter()
        warm_parse.append(b - a)
        warm_shard.append(c - b)
    return {"import": t1 - t0, "cold_parse": t2 - t1, "cold_shard": t3 - t2,
            "warm_parse": min(warm_parse), "warm_shard": min(warm_shard)}


def in_fresh_processes(file: str, layers: int, ffn: str | None, attention: str | None) -> dict[str, float]:
    """:func:`measure` in PROCESSES fresh interpreters; the best of each figure."""
    cmd = [sys.executable, __file__, "--one", file, str(layers), ffn or "", attention or ""]
    runs = [json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout)
            for _ in range(PROCESSES)]
    return {key: min(r[key] for r in runs) for key in runs[0]}


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:8.1f} ms"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    ap.add_argument("--one", nargs=4, metavar=("FILE", "LAYERS", "FFN", "ATTENTION"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        file, layers, ffn, attention = args.one
        print(json.dumps(measure(file, int(layers), ffn or None, attention or None)))
        return 0
    rows = []
    for label, file, ffn, attention in CASES:
        for layers in LAYERS:
            rows.append({"case": label, "layers": layers, **in_fresh_processes(file, layers, ffn, attention)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"shard_program on PaLM 540B, mesh 4x4x4; cold = first run in a fresh process, "
          f"warm = best of {RUNS} after it; each the best of {PROCESSES} processes")
    print(f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs")
    print(f"{'case':<25} {'layers':>9}  {'cold parse':>11} {'cold shard':>11}  "
          f"{'warm parse':>11} {'warm shard':>11}")
    for r in rows:
        print(f"{r['case']:<25} {r['layers']:>9,}  {ms(r['cold_parse']):>11} {ms(r['cold_shard']):>11}  "
              f"{ms(r['warm_parse']):>11} {ms(r['warm_shard']):>11}")
    print()
    for label, *_ in CASES:
        by_layers = {r["layers"]: r for r in rows if r["case"] == label}
        warm = by_layers[1_000_000]["warm_shard"] / by_layers[118]["warm_shard"]
        cold = by_layers[1_000_000]["cold_shard"] / by_layers[118]["cold_shard"]
        print(f"{label}: 1,000,000 layers / 118 layers = {warm:.2f}x warm, {cold:.2f}x cold")
    return 0


if __name__ == "__main__":
    sys.exit(main())
