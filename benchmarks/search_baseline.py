"""Record the estimated time of every example x preset x mesh, as the sharding pass plans it now.

Run once, before a change to how the pass chooses layouts, and commit the output:
``python benchmarks/search_baseline.py > tests/golden/search_baseline.json``.  The layout-search
tests then check that the pass never plans a slower program than the one recorded here.
Meshes: the paper's shapes up to 64 chips (2x2x2, 2x4x2, 4x2x4, 4x4x4); presets: every ``--ffn``
with both ``--attention`` choices; PaLM files also with heads padded to 64.  A combination the
pass refuses (a dim that does not divide) is recorded with its error.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import shardc
from shardc.errors import ShardcError

ROOT = Path(__file__).resolve().parent.parent
MESHES = ("2x2x2", "2x4x2", "4x2x4", "4x4x4")
FFN = ("1d-ws", "2d-ws", "wg-x", "wg-xy", "wg-xyz")
ATTENTION = ("heads", "batch")


def variants(path: Path) -> list[dict[str, int]]:
    return [{}, {"H": 64}] if path.stem.startswith("palm_") else [{}]


def main() -> int:
    rows = []
    for path in sorted((ROOT / "examples").glob("*.model")):
        for sets in variants(path):
            g = shardc.load(path, sizes=sets)
            for mesh in MESHES:
                for ffn in FFN:
                    for attention in ATTENTION:
                        row: dict[str, object] = {"example": path.stem, "set": sets, "mesh": mesh,
                                                  "ffn": ffn, "attention": attention}
                        try:
                            sg = shardc.shard(g, mesh, ffn, attention)
                            row["latency_s"] = shardc.estimate(sg).latency_s
                        except ShardcError as err:
                            row["error"] = err.message
                        rows.append(row)
    json.dump(rows, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
