"""Run exported JAX programs and compare them with shardc (a subprocess of the JAX tests).

``python tests/jax_worker.py CASES.json RESULTS.json``: CASES is a list of
``{"id", "program", "against"[, "collectives"]}`` (the sharded program's text; "emulate" or
"reference"; collectives false skips their count, for programs with dead code).
For each case the program is exported, run on the host devices that XLA_FLAGS forces
(set by the caller before jax is imported), compared with ``shardc.emulate`` (or
``shardc.reference``), and the collectives of its lowered module are counted against the
sharded program's.  RESULTS gets one ``{"id", "error", "max_rel", "collectives", ...}`` each.
Every call is blocked on: dispatching many sharded calls without blocking can deadlock XLA:CPU.
"""
from __future__ import annotations

import json
import re
import sys
import time
import traceback
import types
from collections import Counter

import numpy as np

import shardc
from shardc.export import export_jax
from shardc.ir.graph import CollectiveAttrs, OpKind
from shardc.sharding.reshard import collective_bytes
from shardc.sharding.stats import op_stats

_OP_RE = re.compile(r'"?stablehlo\.(all_gather|all_reduce|reduce_scatter|all_to_all)"?')
_GROUPS_RE = re.compile(r"replica_groups = dense<.*?> : tensor<(\d+)x(\d+)xi64>")
_TYPE_RE = re.compile(r"\(tensor<([0-9x]*)x?f32>[^)]*\) -> tensor<([0-9x]*)x?f32>")


def _numel(shape: str) -> int:
    return int(np.prod([int(s) for s in shape.split("x") if s])) if shape else 1


def expected_collectives(sg: shardc.Graph) -> tuple[Counter, Counter]:
    """What the lowered module should hold, per kind: op counts, and bytes per chip at 4 bytes an element.

    One op per collective of the program (each repeat body once); an all_gather over several dims
    is one per dim; a norm's statistics one all_reduce, a softmax's two (max, then sum).
    """
    counts: Counter = Counter()
    sent: Counter = Counter()
    mesh = sg.mesh
    assert mesh is not None
    for op in sg.ops():
        stats = op_stats(op, sg.sizes, mesh)
        if stats is not None:
            counts["all_reduce"] += 2 if op.kind is OpKind.SOFTMAX else 1
            sent["all_reduce"] += stats.bytes_per_chip
        if not op.kind.is_collective or op.kind is OpKind.SLICE:
            continue
        a = op.attrs_as(CollectiveAttrs)
        (v,) = op.inputs
        assert v.layout is not None and op.result.layout is not None
        if op.kind is OpKind.ALL_GATHER:
            dims = [d for d, held in v.layout.split if set(held) & set(a.axes)]
            counts["all_gather"] += len(dims)
            if len(dims) > 1:
                sent["multi_dim_gathers"] += 1
                continue  # per-dim gathers send a different total; counted, not priced
        else:
            counts[op.kind.value] += 1
        sent[op.kind.value] += collective_bytes(op.kind, a, v.layout, op.result.layout, sg.sizes, mesh, 4)
    return counts, sent


def _ring_bytes(kind: str, k: int, numel_in: int, numel_out: int) -> float:
    """Bytes each chip sends (ring formulas of shardc.sharding.reshard), at 4 bytes an element."""
    if kind == "all_gather":
        return (k - 1) / k * numel_out * 4
    if kind == "all_reduce":
        return 2 * (k - 1) / k * numel_in * 4
    return (k - 1) / k * numel_in * 4  # reduce_scatter, all_to_all


def lowered_collectives(text: str) -> tuple[Counter, Counter]:
    """Collectives of a lowered (StableHLO) module: op counts and ring bytes per chip, per kind.

    An all_reduce or reduce_scatter has a region: its types are on the line that closes it.
    """
    counts: Counter = Counter()
    sent: Counter = Counter()
    pending: list[tuple[str, int]] = []
    for line in text.splitlines():
        m = _OP_RE.search(line)
        types_ = _TYPE_RE.search(line)
        if m and "=" in line.split(m.group(0))[0]:
            kind = m.group(1)
            counts[kind] += 1
            groups = _GROUPS_RE.search(line)
            pending.append((kind, int(groups.group(2)) if groups else 1))
        if pending and types_ is not None and (m or line.strip().startswith("})")):
            kind, k = pending.pop()
            sent[kind] += _ring_bytes(kind, k, _numel(types_.group(1)), _numel(types_.group(2)))
    return counts, sent


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


def run_case(case: dict) -> dict:
    sg = shardc.parse(case["program"])
    text = export_jax(sg)
    module = types.ModuleType("exported")
    exec(compile(text, f"<export of {case['id']}>", "exec"), module.__dict__)
    module.load_jax()
    mesh, program = module.build()
    args = module.put(mesh, module.make_data(0))
    start = time.perf_counter()
    result = program(*args)
    module.jax.block_until_ready(result)
    seconds = time.perf_counter() - start
    got = {name: np.asarray(v) for name, v in zip(module.OUTPUTS, result)}
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
        if err > bound:
            mismatched.append(name)
        worst = max(worst, err)
    lowered = program.lower(*args).as_text()
    exp_counts, exp_bytes = expected_collectives(sg)
    got_counts, got_bytes = lowered_collectives(lowered)
    kinds = set(exp_counts) | set(got_counts)
    # A shardc all_gather over several dims is priced as one; JAX's per-dim gathers are compared by count.
    bytes_ok = {k: abs(got_bytes[k] - exp_bytes[k]) <= 1e-6 * max(1.0, exp_bytes[k]) for k in kinds
                if not (k == "all_gather" and exp_bytes.get("multi_dim_gathers"))}
    return {"id": case["id"], "error": None, "against": case["against"], "max_rel": worst,
            "mismatched": mismatched, "seconds": seconds,
            "expected": dict(exp_counts), "lowered": dict(got_counts),
            "expected_bytes": dict(exp_bytes), "lowered_bytes": dict(got_bytes),
            # jax drops dead code: collectives are compared only where every op feeds an output
            "counts_ok": not case.get("collectives", True) or dict(exp_counts) == dict(got_counts),
            "bytes_ok": not case.get("collectives", True) or all(bytes_ok.values())}


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
