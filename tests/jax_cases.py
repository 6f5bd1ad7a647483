"""Shared by test_export_jax_2x2x2.py and test_export_jax_2x4.py (one subprocess per module).

Exported JAX programs compute what shardc's emulator computes, with shardc's collectives.

Every example under every preset that applies (``--ffn`` x ``--attention``), PaLM-shaped
layers shrunk with ``shardc.shrink``, and programs whose pins split L and S, on 8 host
devices as 2x2x2 and as 2x4: each is exported with ``export_jax``, run in ONE subprocess
(``tests/jax_worker.py``, with ``XLA_FLAGS`` set before jax is imported, under a timeout),
and its outputs are compared with ``shardc.emulate`` (f32, rtol 1e-5).  The collectives in
its compiled HLO are counted kind by kind against the sharded program's (a statistics
all-reduce is one ``psum``, a softmax's two) with the same bytes per chip, and the dot FLOPs
of its lowered module against shardc's einsum count (:mod:`shardc.export.expected`).  Presets
that give the same sharded program are run once.  A few programs run in bf16 as well: their
outputs are within two bf16 ulps a layer of the emulator's and their collectives send bf16 bytes.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import shardc

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "jax_worker.py"
DEVICES = 8
TIMEOUT = 240
#: Compile faster (the programs are tiny; their run time does not matter): no LLVM optimisation and
#: the older loop emitter; neither changes the HLO passes that place collectives.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"

#: Skips a JAX test module, with the reason, when jax is not installed.
NEEDS_JAX = pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                               reason='jax is not installed (pip install -e ".[test,jax]")')

TINY = ("tiny_ffn", "tiny_layer", "gqa_decode", "gpt_mha_serial")
PALM = ("palm_8b_decode", "palm_8b_prefill")
MESHES = ("2x2x2", "2x4")
FFN = ("none", "1d-ws", "2d-ws", "wg-x", "wg-xy", "wg-xyz")
ATTENTION = ("heads", "batch")

#: Pins that split the sequence: queries L over x, keys S over y (causal needs global positions),
#: and a layernorm over a split E.
PINNED = """model pinned_ls
dims B=2, L=8, S=8, E=8, H=8, D=4
input x : f32[B, L, E] @ BL_xE
param g : f32[E]
param wq : f32[E, H, D]
param wk : f32[E, D]
param wv : f32[E, D]
h = layernorm(x, g, over=E) @ BL_xE
q = einsum("BLE,EHD->BLHD", h, wq)
k = relabel(einsum("BLE,ED->BLD", h, wk), L=S) @ BS_yD
v = relabel(einsum("BLE,ED->BLD", h, wv), L=S)
s = einsum("BLHD,BSD->BHLS", q, k) @ BHL_xS_y
p = softmax(causal(s, L, S), over=S)
a = einsum("BHLS,BSD->BLHD", p, v)
y = last(a, L=S) @ BSHD
output y
"""
PINNED_LAST = PINNED.replace("dims B=2, L=8, S=8,", "dims B=2, L=8, S=8, T=2,").replace(
    "y = last(a, L=S) @ BSHD", "y = last(a, L=T)")


#: (example, ffn, attention) also run in bf16 on each mesh.
BF16 = (("tiny_layer", "2d-ws", "heads"), ("gqa_decode", "1d-ws", "batch"), ("palm_8b_decode", "wg-xyz", "batch"),
        ("palm_8b_prefill", "2d-ws", "heads"))


def cases(mesh: str) -> list[dict]:
    """Every example x applicable preset on ``mesh``, shrunk (each distinct program once), the pinned
    programs, and the ``BF16`` programs in bf16."""
    out: list[dict] = []
    seen: set[str] = set()
    for name in TINY + PALM:
        g = shardc.load(ROOT / "examples" / f"{name}.model")
        for ffn in FFN if name in TINY else ("1d-ws", "2d-ws", "wg-xyz"):
            for attention in ATTENTION:
                try:
                    sg = shardc.shard(g, mesh, ffn=ffn, attention=attention)
                except shardc.ShardcError:
                    continue  # the preset does not apply (a dim does not divide)
                sg = shardc.shrink(sg)  # the smallest sizes every layout splits; same collectives
                program = shardc.format(sg)
                if (name, ffn, attention) in BF16:
                    out.append({"id": f"{name} {mesh} {ffn}/{attention} bf16", "program": program,
                                "against": "emulate", "dtype": "bf16"})
                if program in seen:
                    continue  # another preset gave the same program
                seen.add(program)
                out.append({"id": f"{name} {mesh} {ffn}/{attention}", "program": program, "against": "emulate"})
    for text in (PINNED, PINNED_LAST):
        g = shardc.parse(text)
        sg = shardc.shard(g, mesh)
        out.append({"id": f"{g.name} {mesh} {len(out)}", "program": shardc.format(sg), "against": "emulate"})
    return out


def run_worker(cases: list[dict], tmp: Path, timeout: float = TIMEOUT) -> list[dict]:
    """One subprocess for all cases: XLA_FLAGS is set before jax is imported; a timeout guards XLA:CPU."""
    (tmp / "cases.json").write_text(json.dumps(cases))
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES} {FAST_COMPILE}",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, str(WORKER), str(tmp / "cases.json"), str(tmp / "results.json")],
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results: list[dict] = json.loads((tmp / "results.json").read_text())
    return results


def problems(results: list[dict]) -> list[str]:
    out = []
    for r in results:
        if r["error"]:
            out.append(f"{r['id']}: {r['error']}")
        elif r["mismatched"]:
            out.append(f"{r['id']}: outputs {r['mismatched']} differ from {r['against']} "
                       f"(max rel {r['max_rel']:.3g})")
        elif not r["counts_ok"]:
            out.append(f"{r['id']}: collectives {r['compiled']} in the compiled HLO, shardc has {r['expected']}")
        elif not r["bytes_ok"]:
            out.append(f"{r['id']}: bytes {r['compiled_bytes']} in the compiled HLO "
                       f"({r.get('lowered_bytes')} lowered), shardc has {r['expected_bytes']}")
        elif not r["flops_ok"]:
            out.append(f"{r['id']}: dot FLOPs {r['lowered_flops']} in the lowered module, "
                       f"shardc has {r['expected_flops']}")
    return out


def check_mesh(mesh: str, tmp_path: Path) -> None:
    todo = cases(mesh)
    assert len(todo) > 35
    assert sum(c.get("dtype") == "bf16" for c in todo) == len(BF16)
    results = run_worker(todo, tmp_path)
    assert len(results) == len(todo)
    assert not problems(results), "\n".join(problems(results))
    assert max(r["max_rel"] for r in results if not r["id"].endswith("bf16")) < 1e-5
