"""``shardc export --compare-xla``: shardc's plan beside XLA's partitioners (jax, in a subprocess).

The command runs in a subprocess under a timeout (it imports jax with the mesh's host devices).
shardc's row must be the sharded program's own count (the export tests prove the exported
program's compiled HLO equal to it); XLA's rows come from its compiled HLO.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from jax_cases import NEEDS_JAX, TIMEOUT

import shardc
from shardc.export.expected import expected_hlo

pytestmark = NEEDS_JAX
ROOT = Path(__file__).resolve().parent.parent


def test_compare_xla_prints_shardc_beside_both_partitioners(tmp_path: Path) -> None:
    model = ROOT / "examples" / "tiny_layer.model"
    cmd = [sys.executable, "-c", "import sys; from shardc.cli.main import main; sys.exit(main(sys.argv[1:]))",
           "export", str(model), "--mesh", "2x2x2", "--ffn", "2d-ws", "--compare-xla"]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in proc.stdout.splitlines() if line.startswith("| ") and "partitioner" not in line}
    assert set(rows) == {"shardc", "XLA Shardy", "XLA GSPMD"}
    header = next(line for line in proc.stdout.splitlines() if "partitioner" in line)
    kinds = re.search(r"collectives \(([^)]*)\)", header).group(1).split(" / ")
    short = {"AG": "all_gather", "RS": "reduce_scatter", "AR": "all_reduce", "A2A": "all_to_all",
             "CP": "collective_permute"}
    want = expected_hlo(shardc.shard(shardc.load(model), "2x2x2", ffn="2d-ws"))
    counts = dict(zip((short[k] for k in kinds), (int(n) for n in rows["shardc"][0].split(" / "))))
    assert {k: n for k, n in counts.items() if n} == want.counts
    assert rows["shardc"][2] == "1.00"
    for xla in ("XLA Shardy", "XLA GSPMD"):
        assert sum(int(n) for n in rows[xla][0].split(" / ")) > 0  # XLA must communicate on this plan
        assert float(rows[xla][2]) > 0
