"""What the emulator costs next to the reference executor, and how that grows with chips.

The emulator (``shardc.emulate``) runs a sharded program on every chip of the mesh at
once, each value held as one stacked NumPy array ``[*mesh_shape, *local_shape]`` with
replicas as real copies; the reference (``shardc.reference``) runs the unsharded program
on whole arrays.  This script measures, in one process:

1. A PaLM-540B-shaped layer, shrunk: ``examples/palm_540b_prefill.model`` with its
   ``repeat 118`` edited to ``repeat 1`` and ``--set E=1024 F=4096 H=16 D=64 B=16 L=128
   S=128 V=1024``, sharded on 4x4x4 as 2d-ws / attention by heads and as wg-xyz.  For
   each: the reference time, the emulator time with and without ``check_replicas``
   (best of 3 after a warm-up, f32; a measurement whose calls pass 12 s gets fewer timed
   calls, and the output says how many) and their ratios; then the emulator's peak host
   memory (tracemalloc, a separate run) divided by ``counters.peak_bytes x chips``
   converted to f32 -- the bytes the emulated chips hold at their most, all chips
   together, at the 4-byte itemsize the emulator computes in (every value of this
   program is declared bf16, so the counter's 2-byte figure is doubled).
2. A small layer (same file, ``E=256 F=1024 H=64 D=16 B=8 L=32 S=32 V=256``, 2d-ws /
   heads) on 8, 64 and 512 chips (2x2x2, 4x4x4, 8x8x8): times and the ratio, to show how
   the emulator's cost grows with the number of chips (replicated values are copied to
   every chip, so work grows with chips even when the model does not).

    python benchmarks/emulate.py            # the tables (about a minute)
    python benchmarks/emulate.py --json     # the raw figures
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import shardc  # noqa: E402
from shardc.execute.emulate import emulate  # noqa: E402
from shardc.execute.reference import reference  # noqa: E402
from shardc.sharding.shard import shard_program  # noqa: E402

SOURCE = ROOT / "examples" / "palm_540b_prefill.model"
BIG = {"E": 1024, "F": 4096, "H": 16, "D": 64, "B": 16, "L": 128, "S": 128, "V": 1024}
SMALL = {"E": 256, "F": 1024, "H": 64, "D": 16, "B": 8, "L": 32, "S": 32, "V": 256}
F32 = 4
RUNS = 3
BUDGET = 12.0  # seconds per measurement (see best_of)
MAX_BYTES = 16 * 2**30  # wg-xyz gathers every weight onto all 64 chips: above emulate's 4 GiB default


def one_layer(sizes: dict[str, int]) -> shardc.Graph:
    """palm_540b_prefill with ``repeat 118`` edited to ``repeat 1`` and the dims set."""
    text, n = re.subn(r"^repeat 118 \{", "repeat 1 {", SOURCE.read_text(encoding="utf-8"), flags=re.M)
    assert n == 1, "expected one 'repeat 118 {' line"
    return shardc.parse(text, SOURCE.name, sizes=sizes)


def best_of(fn: Callable[[], object], runs: int = RUNS, budget: float = BUDGET) -> tuple[float, int]:
    """Seconds of the fastest of ``runs`` calls after one warm-up call, and how many were timed.

    To keep the whole script within about three minutes, a measurement stops early once it
    has spent ``budget`` seconds (warm-up included) and has one timed call.  The warm-up is
    never timed: the first call of a configuration also pays for fresh pages of memory
    from the operating system, which later calls reuse.
    """
    gc.collect()
    start = time.perf_counter()
    fn()
    spent = time.perf_counter() - start
    best, timed = float("inf"), 0
    while timed < runs and (timed == 0 or spent < budget):
        gc.collect()
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        best, timed, spent = min(best, elapsed), timed + 1, spent + elapsed
    return best, timed


def peak_memory(fn: Callable[[], object]) -> int:
    """Peak bytes traced by tracemalloc during one call (NumPy reports its buffers to it)."""
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def declared_itemsizes(sg: shardc.Graph) -> set[int]:
    out = set()
    for stmt, _ in sg.walk():
        for v in ([stmt.value] if hasattr(stmt, "value") else [stmt.result] if hasattr(stmt, "result") else []):
            out.add(v.dtype.bytes)
    return out


def measure_big(ffn: str, attention: str | None) -> dict[str, object]:
    g = one_layer(BIG)
    sg = shard_program(g, "4x4x4", ffn, attention).graph
    ref, ref_runs = best_of(lambda: reference(g, 0, "f32"))
    emu, emu_runs = best_of(lambda: emulate(sg, 0, "f32", max_bytes=MAX_BYTES))
    emu_fast, fast_runs = best_of(lambda: emulate(sg, 0, "f32", check_replicas=False, max_bytes=MAX_BYTES))
    counters: list = []
    peak = peak_memory(lambda: counters.append(emulate(sg, 0, "f32", max_bytes=MAX_BYTES).counters))
    itemsizes = declared_itemsizes(sg)
    assert itemsizes == {2}, itemsizes  # every value bf16: the counter's bytes x 2 are its f32 bytes
    chips_bytes = counters[0].peak_bytes * (F32 // 2) * sg.mesh.num_chips
    ref_peak = peak_memory(lambda: reference(g, 0, "f32"))
    return {
        "config": f"{ffn}/{attention or 'heads'}", "mesh": sg.mesh.spec(), "chips": sg.mesh.num_chips,
        "reference_s": ref, "emulate_s": emu, "emulate_no_replica_check_s": emu_fast,
        "timed_runs": [ref_runs, emu_runs, fast_runs],
        "ratio": emu / ref, "ratio_no_replica_check": emu_fast / ref,
        "emulate_peak_bytes": peak, "reference_peak_bytes": ref_peak,
        "chips_peak_bytes_f32": chips_bytes, "peak_over_chips": peak / chips_bytes,
    }


def measure_small(mesh: str) -> dict[str, object]:
    g = one_layer(SMALL)
    sg = shard_program(g, mesh, "2d-ws", "heads").graph
    ref, ref_runs = best_of(lambda: reference(g, 0, "f32"))
    emu, emu_runs = best_of(lambda: emulate(sg, 0, "f32", max_bytes=MAX_BYTES))
    emu_fast, fast_runs = best_of(lambda: emulate(sg, 0, "f32", check_replicas=False, max_bytes=MAX_BYTES))
    return {"mesh": mesh, "chips": sg.mesh.num_chips, "reference_s": ref, "emulate_s": emu,
            "timed_runs": [ref_runs, emu_runs, fast_runs],
            "emulate_no_replica_check_s": emu_fast, "ratio": emu / ref, "ratio_no_replica_check": emu_fast / ref}


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


# glibc hands large freed blocks back to the operating system, and every new array then
# pays page faults that swamp the computation being measured (run-to-run spread of 2x).
# Asking it to keep freed memory (both executors benefit alike) makes timings repeatable.
KEEP_FREED_MEMORY = {"MALLOC_MMAP_THRESHOLD_": str(2**34), "MALLOC_TRIM_THRESHOLD_": str(2**34)}


def _keep_freed_memory(argv: list[str]) -> None:
    """Re-run this script with glibc told to keep freed memory (unless --system-allocator)."""
    if "--system-allocator" in argv or not sys.platform.startswith("linux"):
        return
    if all(os.environ.get(k) == v for k, v in KEEP_FREED_MEMORY.items()):
        return
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **KEEP_FREED_MEMORY})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    parser.add_argument("--system-allocator", action="store_true",
                        help="do not ask glibc to keep freed memory (timings then vary up to 2x)")
    _keep_freed_memory(sys.argv[1:])
    args = parser.parse_args()
    start = time.perf_counter()
    big = [measure_big("2d-ws", "heads"), measure_big("wg-xyz", None)]
    small = [measure_small(m) for m in ("2x2x2", "4x4x4", "8x8x8")]
    total = time.perf_counter() - start
    if args.json:
        print(json.dumps({"big": big, "small": small, "seconds": total, "python": platform.python_version(),
                          "numpy": np.__version__}, indent=2))
        return 0
    dims = " ".join(f"{d}={n}" for d, n in BIG.items())
    print(f"PaLM-540B-shaped layer, 1 layer, {dims}, f32, best of {RUNS} after a warm-up"
          f" (fewer when one measurement passes {BUDGET:.0f} s; timed runs: reference/emulate/no check)")
    print(f"  {'config':<16}{'mesh':<7}{'reference':>11}{'emulate':>11}{'ratio':>8}"
          f"{'no check':>11}{'ratio':>8}   timed runs")
    for r in big:
        print(f"  {r['config']:<16}{r['mesh']:<7}{r['reference_s']:>10.2f}s{r['emulate_s']:>10.2f}s"
              f"{r['ratio']:>7.1f}x{r['emulate_no_replica_check_s']:>10.2f}s{r['ratio_no_replica_check']:>7.1f}x"
              f"   {'/'.join(map(str, r['timed_runs']))}")
    print("  peak host memory of one emulate run (tracemalloc) over the chips' peak bytes, i.e.")
    print("  counters.peak_bytes x chips at the f32 itemsize (the counter is at bf16, x2):")
    for r in big:
        print(f"  {r['config']:<16}{mib(r['emulate_peak_bytes']):>12} / {mib(r['chips_peak_bytes_f32']):>11}"
              f" = {r['peak_over_chips']:.2f}x   (reference peak {mib(r['reference_peak_bytes'])})")
    dims = " ".join(f"{d}={n}" for d, n in SMALL.items())
    print(f"\nsmall layer, 1 layer, {dims}, 2d-ws/heads, f32")
    print(f"  {'mesh':<8}{'chips':>6}{'reference':>11}{'emulate':>11}{'ratio':>9}{'no check':>11}{'ratio':>9}"
          f"   timed runs")
    for r in small:
        print(f"  {r['mesh']:<8}{r['chips']:>6}{r['reference_s'] * 1e3:>9.1f}ms{r['emulate_s'] * 1e3:>9.1f}ms"
              f"{r['ratio']:>8.1f}x{r['emulate_no_replica_check_s'] * 1e3:>9.1f}ms{r['ratio_no_replica_check']:>8.1f}x"
              f"   {'/'.join(map(str, r['timed_runs']))}")
    print(f"\n(total {total:.0f} s; Python {platform.python_version()}, NumPy {np.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
