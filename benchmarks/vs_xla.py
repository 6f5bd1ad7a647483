"""shardc beside XLA's own partitioner on the PaLM 540B layers, under every feed-forward preset.

For PaLM 540B decode and prefill (examples/palm_540b_*.model, 118 layers, on their 4x4x4 mesh of
64 host devices) under each feed-forward preset (attention: the default), the unsharded program
is compiled by ``jax.jit`` with only shardc's input and output shardings, once with the Shardy
partitioner and once with GSPMD (nothing runs: the arrays are abstract, so the real sizes
compile on one CPU), and its collectives, bytes per chip, dot FLOPs and estimated time on TPU v4
are printed beside shardc's (:mod:`shardc.export.vs_xla`).  The README's table is this output.

    python benchmarks/vs_xla.py [--shrink] [--presets 1d-ws,2d-ws]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import shardc
from shardc.export.vs_xla import compare_xla, format_table
from shardc.hardware.comm import comm_mode
from shardc.hardware.profile import load_profile

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("palm_540b_decode", "palm_540b_prefill")
PRESETS = ("1d-ws", "2d-ws", "wg-x", "wg-xy", "wg-xyz")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shrink", action="store_true", help="shrink the dims first (XLA then decides on tiny sizes)")
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated --ffn presets")
    args = parser.parse_args()
    chip = load_profile("tpu-v4")
    mode = comm_mode(chip.default_comm)
    start = time.perf_counter()
    for name in LAYERS:
        g = shardc.load(ROOT / "examples" / f"{name}.model")
        for ffn in args.presets.split(","):
            try:
                sg = shardc.shard(g, ffn=ffn)
            except shardc.ShardcError as e:
                print(f"{name} --ffn {ffn}: does not apply ({e.message})\n")
                continue
            if args.shrink:
                sg = shardc.shrink(sg)
            assert sg.mesh is not None
            print(f"### {name} --ffn {ffn}{' --shrink' if args.shrink else ''} "
                  f"({sg.mesh.spec()}, {chip.name}, --comm {mode.value})\n")
            print(format_table(compare_xla(sg, chip, mode), sg.mesh))
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
