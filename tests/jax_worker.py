"""Run exported JAX programs and compare them with shardc (a subprocess of the JAX tests).

``python tests/jax_worker.py CASES.json RESULTS.json``: CASES is a list of
``{"id", "program", "against"[, "collectives", "dtype"]}`` (the sharded program's text; "emulate"
or "reference"; collectives false skips their count, for programs with dead code; dtype "f32"
(default) or "bf16").  For each case the program is exported, compiled once, run on the host
devices that XLA_FLAGS forces (set by the caller before jax is imported), and compared with
``shardc.emulate`` (or ``shardc.reference``); the collectives of its compiled HLO (as
:func:`shardc.export.vs_xla.compile_and_count` counts them: before XLA:CPU promotes bf16 to f32)
and the dot FLOPs of its lowered module (XLA later turns a dot with a contracted size of 1 into a
multiply) are compared with :func:`shardc.export.expected.expected_hlo`; in bf16 the bytes of the
lowered module too.
RESULTS gets one ``{"id", "error", "max_rel", ...}`` each.  Every call is blocked on:
dispatching many sharded calls without blocking can deadlock XLA:CPU.
"""
from __future__ import annotations

import json
import sys
import time
import traceback
import types

import numpy as np

import shardc
from shardc.export import export_jax
from shardc.export.expected import expected_hlo
from shardc.export.hlo import parse_hlo
from shardc.export.vs_xla import compile_and_count

#: Max relative error (to the largest |value|) of a bf16 run against the f32 emulator, per layer
#: the program runs (rounding compounds along the residual stream): two bf16 ulps (2**-7).
BF16_RTOL_PER_LAYER = 2.0 ** -7


def _rel_error(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want| over the finite entries; inf if the non-finite entries differ."""
    finite = np.isfinite(want)
    if not np.array_equal(np.isfinite(got), finite) or not np.array_equal(got[~finite], want[~finite],
                                                                          equal_nan=True):
        return float("inf")
    if not finite.any():
        return 0.0
    scale = float(np.max(np.abs(want[finite]))) or 1.0
    return float(np.max(np.abs(got[finite].astype(np.float64) - want[finite]))) / scale


def _same(got: dict, want: dict, skip: frozenset = frozenset()) -> bool:
    kinds = (set(got) | set(want)) - skip
    return all(abs(got.get(k, 0) - want.get(k, 0)) <= 1e-6 * max(1.0, want.get(k, 0)) for k in kinds)


def run_case(case: dict) -> dict:
    sg = shardc.parse(case["program"])
    dtype = case.get("dtype", "f32")
    module = types.ModuleType("exported")
    exec(compile(export_jax(sg), f"<export of {case['id']}>", "exec"), module.__dict__)
    module.load_jax()
    mesh, program = module.build()
    args = module.put(mesh, module.make_data(0), dtype)
    lowered = program.lower(*args)
    compiled, hlo, _ = compile_and_count(lowered, mesh.size)
    start = time.perf_counter()
    result = compiled(*args)
    module.jax.block_until_ready(result)
    seconds = time.perf_counter() - start
    got = {name: np.asarray(v, dtype=np.float32) for name, v in zip(module.OUTPUTS, result)}
    emulated = shardc.emulate(sg).outputs
    want = emulated if case["against"] == "emulate" else shardc.reference(sg, dtype="f64")
    worst = 0.0
    mismatched = []
    for name, value in want.items():
        err = _rel_error(got[name], value)
        # Against the f64 reference, an f32 program is held to 1e-5 or to ten times the error of
        # shardc's own f32 emulator on the same program, whichever is larger (random programs can
        # be ill-conditioned: a division by a silu near 0).
        bound = 1e-5 if case["against"] == "emulate" else max(1e-5, 10 * _rel_error(emulated[name], value))
        if dtype == "bf16":
            bound = BF16_RTOL_PER_LAYER * (1 + sum(r.count for r in sg.repeats))
        if err > bound:
            mismatched.append(name)
        worst = max(worst, err)
    want_hlo = expected_hlo(sg, itemsize=2 if dtype == "bf16" else 4)
    # Dots come from the lowered module: XLA turns a dot whose contracted size is 1 into a multiply.
    low = parse_hlo(lowered.as_text(dialect="hlo"), mesh.size)
    counts, sent = dict(hlo.counts()), dict(hlo.bytes_by_kind())
    checked = case.get("collectives", True)  # jax drops dead code: compared only where every op feeds an output
    out = {"id": case["id"], "error": None, "against": case["against"], "max_rel": worst,
           "mismatched": mismatched, "seconds": seconds,
           "expected": want_hlo.counts, "compiled": counts,
           "expected_bytes": want_hlo.bytes_by_kind, "compiled_bytes": sent,
           "expected_flops": want_hlo.einsum_flops, "lowered_flops": low.dot_flops(),
           "counts_ok": not checked or counts == want_hlo.counts,
           "bytes_ok": not checked or _same(sent, want_hlo.bytes_by_kind, want_hlo.unpriced),
           "flops_ok": not checked or _same({"dot": low.dot_flops()}, {"dot": want_hlo.einsum_flops})}
    if dtype == "bf16":  # and the lowered module's bytes (what the program asked for)
        lowered_sent = dict(low.bytes_by_kind())
        out["lowered_bytes"] = lowered_sent
        out["bytes_ok"] = out["bytes_ok"] and (not checked or _same(lowered_sent, want_hlo.bytes_by_kind,
                                                                    want_hlo.unpriced))
    return out


def main() -> int:
    cases = json.loads(open(sys.argv[1]).read())
    results = []
    for case in cases:
        start = time.perf_counter()
        try:
            results.append(run_case(case))
        except Exception:  # noqa: BLE001 -- every case reports; the test decides
            results.append({"id": case["id"], "error": traceback.format_exc()})
        print(f"{case['id']}: {time.perf_counter() - start:.2f}s", file=sys.stderr, flush=True)
        if "jax" in sys.modules:
            sys.modules["jax"].clear_caches()  # compiled programs of earlier cases are not needed again
    with open(sys.argv[2], "w") as out:
        json.dump(results, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
