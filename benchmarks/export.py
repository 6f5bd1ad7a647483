"""Benchmark: ``shardc.export_jax`` of PaLM 540B prefill (118 layers, and a million) on 64 chips.

The export is one ``lax.scan`` per repeat, so its time and size do not depend on the layer
count.  Sharding is done outside the timed region; each export is timed best-of-N, the two
layer counts interleaved.

    python benchmarks/export.py [--repeats N]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import shardc

PALM = Path(__file__).resolve().parent.parent / "examples" / "palm_540b_prefill.model"


def sharded(layers: int) -> shardc.Graph:
    text = PALM.read_text().replace("repeat 118 {", f"repeat {layers} {{")
    return shardc.shard(shardc.parse(text, str(PALM)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    graphs = {layers: sharded(layers) for layers in (118, 1_000_000)}
    best = {layers: float("inf") for layers in graphs}
    size = {}
    for _ in range(args.repeats):
        for layers, sg in graphs.items():
            start = time.perf_counter()
            text = shardc.export_jax(sg)
            best[layers] = min(best[layers], time.perf_counter() - start)
            size[layers] = len(text)
    for layers in graphs:
        print(f"{layers:>9,} layers: export_jax {best[layers] * 1e3:7.1f} ms, {size[layers]:,} characters")
    print(f"time ratio (1,000,000 / 118 layers): {best[1_000_000] / best[118]:.2f}")


if __name__ == "__main__":
    main()
