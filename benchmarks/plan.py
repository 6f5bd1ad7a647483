"""How long ``shardc plan`` takes on PaLM 540B decode for 64 chips, and that it grows with the
number of candidates, never with the number of layers.

Three runs of :func:`shardc.plan`, each in a fresh Python process (so every cache starts cold,
as for a user's ``shardc plan``), parsing outside the timed region:

* the default space: every mesh of 64 chips and role assignment, every preset and attention layout,
  the file's bf16 weights, no padding;
* the whole space: also int8 weights and heads padded to 64 (``--weights any --pad any``);
* the default space on the file with its 118 layers edited to 1 (a million layers would fit no
  chip's memory, so the planner would drop every candidate, as fast);
* the default space searched in this process alone (``jobs=1``) rather than by one worker per core.

Each is the best of 3 processes.  Printed: seconds, candidates considered, milliseconds per
candidate, and the ratios whole / default (against the ratio of candidates) and 118 layers / 1.

    python benchmarks/plan.py
"""
from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROCESSES = 3
CHILD = r"""
import json, sys, time
import shardc
text = open(sys.argv[1]).read().replace("repeat 118 {", "repeat " + sys.argv[2] + " {")
g = shardc.parse(text, sys.argv[1])
kw = json.loads(sys.argv[3])
t = time.perf_counter()
p = shardc.plan(g, 64, **kw)
print(json.dumps({"seconds": time.perf_counter() - t, "considered": p.considered,
                  "best": p.best.candidate.label()}))
"""
CASES = (
    ("default space", "118", {}),
    ("whole space (--weights any --pad any)", "118", {"weights": "any", "pad": "any"}),
    ("default space, 1 layer", "1", {}),
    ("default space, one worker (--jobs 1)", "118", {"jobs": 1}),
)


def run(layers: str, kw: dict) -> dict:
    best: dict | None = None
    for _ in range(PROCESSES):
        out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT / "examples" / "palm_540b_decode.model"),
                              layers, json.dumps(kw)], capture_output=True, text=True, check=True,
                             env={"PYTHONPATH": str(ROOT), "PATH": ""})
        r = json.loads(out.stdout)
        if best is None or r["seconds"] < best["seconds"]:
            best = r
    assert best is not None
    return best


def main() -> int:
    print(f"shardc.plan(palm_540b_decode, 64 chips); best of {PROCESSES} fresh processes; "
          f"Python {platform.python_version()} on {platform.machine()}")
    results = []
    for label, layers, kw in CASES:
        r = run(layers, kw)
        results.append(r)
        print(f"  {label:40} {r['seconds']:6.2f} s  {r['considered']:5} candidates  "
              f"{r['seconds'] / r['considered'] * 1e3:5.1f} ms each   best: {r['best']}")
    default, whole, one, serial = results
    print(f"whole / default: {whole['seconds'] / default['seconds']:.2f}x the time for "
          f"{whole['considered'] / default['considered']:.2f}x the candidates")
    print(f"118 layers / 1 layer: {default['seconds'] / one['seconds']:.2f}x")
    print(f"one worker / the default (one per core): {serial['seconds'] / default['seconds']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
