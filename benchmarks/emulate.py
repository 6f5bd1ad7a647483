"""What the emulator costs next to the reference executor, and how that grows with chips.

The emulator (``shardc.emulate``) runs a sharded program on every chip of the mesh at
once, each value held as one stacked NumPy array ``[*mesh_shape, *local_shape]``; the
reference (``shardc.reference``) runs the unsharded program on whole arrays.  This script
measures, in one process, execution only: the seeded data is drawn once beforehand
(``seeded_inputs``) and the same arrays are fed to both sides through ``inputs=``.

1. A PaLM-540B-shaped layer, shrunk: ``examples/palm_540b_prefill.model`` with its
   ``repeat 118`` edited to ``repeat 1`` and ``--set E=1024 F=4096 H=16 D=64 B=16 L=128
   S=128 V=1024``, sharded on 4x4x4 as 2d-ws / attention by heads, as 1d-ws (which splits
   heads over all 64 chips: H=64 D=16, the same H x D) and as wg-xyz.  For each: the
   reference, the emulator, and the emulator without ``check_replicas``, timed in turn
   (interleaved, the order rotating each round) after a warm-up round; best of ``--runs`` (default 5) with the spread
   (slowest / fastest - 1), and the ratio of the best times.  Then the emulator's peak host
   memory (tracemalloc, a separate run that draws its own data) over the chips' peak bytes
   (``counters.peak_bytes x chips`` at the f32 itemsize the emulator computes in; every
   value of this program is declared bf16, so the counter's 2-byte figure is doubled), and
   the memory guard's estimate (``emulation_footprint``) over that peak.
2. A small layer (same file, ``E=256 F=1024 H=64 D=16 B=8 L=32 S=32 V=256``, 2d-ws /
   heads) on 8, 64 and 512 chips (2x2x2, 4x4x4, 8x8x8), timed the same way.

BLAS threads are pinned for both sides (``--threads``, default 1): by threadpoolctl when it
is installed, else by the environment variables below, set before NumPy is imported.  The
allocator is the system's (glibc's defaults), as ``shardc verify`` and library callers get.

    python benchmarks/emulate.py            # the tables (a few minutes on 2 shared cores)
    python benchmarks/emulate.py --json     # the raw figures
"""
from __future__ import annotations

import os
import sys

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _threads_from_argv(argv: list[str]) -> int:
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            return int(argv[i + 1])
        if arg.startswith("--threads="):
            return int(arg.split("=", 1)[1])
    return 1


THREADS = _threads_from_argv(sys.argv[1:])
for _var in THREAD_VARS:  # before NumPy loads its BLAS, which reads them once
    os.environ[_var] = str(THREADS)

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from contextlib import nullcontext  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable, ContextManager  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import shardc  # noqa: E402
from shardc.execute.emulate import emulate  # noqa: E402
from shardc.execute.footprint import emulation_footprint  # noqa: E402
from shardc.execute.reference import reference, seeded_inputs  # noqa: E402
from shardc.sharding.shard import shard_program  # noqa: E402

SOURCE = ROOT / "examples" / "palm_540b_prefill.model"
BIG = {"E": 1024, "F": 4096, "H": 16, "D": 64, "B": 16, "L": 128, "S": 128, "V": 1024}
BIG_CONFIGS = (("2d-ws", "heads", {}), ("1d-ws", "heads", {"H": 64, "D": 16}), ("wg-xyz", "heads", {}))
SMALL = {"E": 256, "F": 1024, "H": 64, "D": 16, "B": 8, "L": 32, "S": 32, "V": 256}
SMALL_MESHES = ("2x2x2", "4x4x4", "8x8x8")
F32 = 4
MAX_BYTES = 16 * 2**30  # no refusal: this script measures, the memory guard is tested elsewhere


def thread_limit(threads: int) -> tuple[ContextManager[object], str]:
    """A context pinning BLAS to ``threads`` threads, and how it does so (for the output)."""
    env = ", ".join(f"{v}={os.environ[v]}" for v in THREAD_VARS)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return nullcontext(), f"{threads} for both sides ({env}, set before NumPy was imported; no threadpoolctl)"
    return threadpool_limits(limits=threads), f"{threads} for both sides (threadpoolctl, and {env})"


def machine() -> str:
    """CPU model, logical CPUs and the load average: the figures depend on all three."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = "/".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return f"{os.cpu_count()} logical CPUs ({model}), load average {load} (1/5/15 min)"


def one_layer(sizes: dict[str, int]) -> shardc.Graph:
    """palm_540b_prefill with ``repeat 118`` edited to ``repeat 1`` and the dims set."""
    text, n = re.subn(r"^repeat 118 \{", "repeat 1 {", SOURCE.read_text(encoding="utf-8"), flags=re.M)
    assert n == 1, "expected one 'repeat 118 {' line"
    return shardc.parse(text, SOURCE.name, sizes=sizes)


def interleaved(sides: dict[str, Callable[[], object]], runs: int) -> dict[str, dict[str, float]]:
    """Each side called in turn, one warm-up round then ``runs`` timed rounds: best and spread.

    Interleaving spreads a change of machine load over every side alike, and rotating the
    order spreads the allocator's state; the warm-up pays for first-call costs (imports)
    that later calls do not.
    """
    times: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for round_ in range(runs + 1):
        # Each round starts with another side: whichever runs right after the reference finds the
        # allocator's freed pages handed back (page faults), so no side always takes that place.
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            fn = sides[name]
            gc.collect()
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
            if round_ > 0:
                times[name].append(elapsed)
    return {name: {"best": min(t), "spread": max(t) / min(t) - 1, "runs": len(t)} for name, t in times.items()}


def peak_memory(fn: Callable[[], object]) -> int:
    """Peak bytes traced by tracemalloc during one call (NumPy reports its buffers to it)."""
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def measure(g: shardc.Graph, sg: shardc.Graph, runs: int) -> dict[str, object]:
    data = seeded_inputs(g, 0, "f32")  # drawn once, outside every timed call
    sides = {
        "reference": lambda: reference(g, 0, "f32", inputs=data),
        "emulate": lambda: emulate(sg, 0, "f32", max_bytes=MAX_BYTES, inputs=data),
        "emulate_no_replica_check": lambda: emulate(sg, 0, "f32", check_replicas=False, max_bytes=MAX_BYTES,
                                                    inputs=data),
    }
    t = interleaved(sides, runs)
    ref = t["reference"]["best"]
    return {"mesh": sg.mesh.spec(), "chips": sg.mesh.num_chips, "times": t,
            "ratio": t["emulate"]["best"] / ref, "ratio_no_replica_check": t["emulate_no_replica_check"]["best"] / ref}


def measure_big(ffn: str, attention: str, extra: dict[str, int], runs: int) -> dict[str, object]:
    g = one_layer({**BIG, **extra})
    sg = shard_program(g, "4x4x4", ffn, attention).graph
    out = {"config": f"{ffn}/{attention}", "sizes": extra, **measure(g, sg, runs)}
    counters: list = []
    peak = peak_memory(lambda: counters.append(emulate(sg, 0, "f32", max_bytes=MAX_BYTES).counters))
    assert declared_itemsizes(sg) == {2}  # every value bf16: the counter's bytes x 2 are its f32 bytes
    chips_bytes = counters[0].peak_bytes * (F32 // 2) * sg.mesh.num_chips
    out.update({"emulate_peak_bytes": peak, "reference_peak_bytes": peak_memory(lambda: reference(g, 0, "f32")),
                "chips_peak_bytes_f32": chips_bytes, "peak_over_chips": peak / chips_bytes,
                "estimate_bytes": emulation_footprint(sg, "f32")})
    return out


def declared_itemsizes(sg: shardc.Graph) -> set[int]:
    sizes = {decl.value.dtype.bytes for decl, _ in sg.decls()}
    return sizes | {op.result.dtype.bytes for op in sg.ops()}


def measure_small(mesh: str, runs: int) -> dict[str, object]:
    g = one_layer(SMALL)
    return measure(g, shard_program(g, mesh, "2d-ws", "heads").graph, runs)


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def cell(t: dict[str, float], scale: float, unit: str) -> str:
    return f"{t['best'] * scale:>8.{1 if unit == 'ms' else 2}f}{unit} ±{t['spread'] * 100:>3.0f}%"


def print_table(rows: list[dict[str, object]], first: str, scale: float, unit: str) -> None:
    print(f"  {first:<16}{'reference':>17}{'emulate':>17}{'ratio':>7}{'no check':>17}{'ratio':>7}")
    for r in rows:
        t = r["times"]
        label = r.get("config", f"{r['mesh']} ({r['chips']})")
        print(f"  {label:<16}{cell(t['reference'], scale, unit):>17}{cell(t['emulate'], scale, unit):>17}"
              f"{r['ratio']:>6.2f}x{cell(t['emulate_no_replica_check'], scale, unit):>17}"
              f"{r['ratio_no_replica_check']:>6.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    parser.add_argument("--runs", type=int, default=5, help="timed rounds after the warm-up (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads for both sides (default 1)")
    args = parser.parse_args()
    limit, how = thread_limit(args.threads)
    before = machine()
    start = time.perf_counter()
    with limit:
        big = [measure_big(ffn, att, extra, args.runs) for ffn, att, extra in BIG_CONFIGS]
        small = [measure_small(m, args.runs) for m in SMALL_MESHES]
    total = time.perf_counter() - start
    after = machine()
    if args.json:
        print(json.dumps({"big": big, "small": small, "seconds": total, "blas_threads": how, "machine_before": before,
                          "machine_after": after, "python": platform.python_version(), "numpy": np.__version__},
                         indent=2))
        return 0
    dims = " ".join(f"{d}={n}" for d, n in BIG.items())
    print(f"machine: {before}\nBLAS threads: {how}\nsystem allocator; execution only (data drawn once, fed to "
          f"both sides); best of {args.runs} interleaved rounds after a warm-up, ± the spread (slowest/best - 1)\n")
    print(f"PaLM-540B-shaped layer, 1 layer, {dims} (1d-ws: H=64 D=16), f32, 4x4x4")
    print_table(big, "config", 1.0, "s")
    print("  peak host memory of one emulate run (tracemalloc, drawing included) over the chips' peak bytes,")
    print("  i.e. counters.peak_bytes x chips at the f32 itemsize (the counter is at bf16, x2), and the")
    print("  memory guard's estimate over that peak:")
    for r in big:
        print(f"  {r['config']:<16}{mib(r['emulate_peak_bytes']):>12} / {mib(r['chips_peak_bytes_f32']):>11}"
              f" = {r['peak_over_chips']:.2f}x   estimate {mib(r['estimate_bytes'])}"
              f" = {r['estimate_bytes'] / r['emulate_peak_bytes']:.2f}x   (reference peak "
              f"{mib(r['reference_peak_bytes'])})")
    dims = " ".join(f"{d}={n}" for d, n in SMALL.items())
    print(f"\nsmall layer, 1 layer, {dims}, 2d-ws/heads, f32")
    print_table(small, "mesh (chips)", 1e3, "ms")
    print(f"\n(total {total:.0f} s; machine after: {after};\n Python {platform.python_version()}, "
          f"NumPy {np.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
