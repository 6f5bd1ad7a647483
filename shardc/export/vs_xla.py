"""shardc's plan beside XLA's own partitioner (``shardc export --compare-xla``, benchmarks/vs_xla.py).

XLA is given the *unsharded* program (:func:`shardc.export.to_jax.unsharded_body`) under
``jax.jit`` with only the plan's input and output shardings (every other layout is XLA's choice),
and compiled, not run, on the plan's mesh of host devices, once with the Shardy partitioner and
once with GSPMD.  Its compiled HLO is counted with :func:`shardc.export.hlo.parse_hlo`:
collectives by kind (per run), bytes each device sends, and dot FLOPs per device.  shardc's side
is the sharded program's own count (:func:`shardc.export.expected.expected_hlo`, which the export
tests prove equal to the exported program's compiled HLO).  Every side is priced the same way on
the chip profile: its collectives by shardc's comm model (:func:`shardc.hardware.comm.collective_time`,
the group's mesh axes read from its replica groups), plus its dot FLOPs at the chip's sustained
peak; and its redundant FLOPs are the dot FLOPs per chip beyond the unsharded program's over the
chips.  Arrays have their declared dtypes; XLA:CPU promotes bf16 collectives to f32 late in its
pipeline, so a module is counted as XLA dumps it just before that promotion
(:func:`compile_and_count`): the compiled collectives with the program's dtypes.

jax must be importable; the host device count is set here when jax is not yet imported.
"""
from __future__ import annotations

import math
import os
import sys
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shardc.errors import ShardcError
from shardc.export.expected import expected_hlo
from shardc.export.hlo import HloCounts, group_axes, parse_hlo
from shardc.export.to_jax import export_jax, unsharded_body
from shardc.hardware.comm import CommMode, collective_time, priced_in
from shardc.hardware.profile import ChipProfile
from shardc.ir.graph import CollectiveAttrs, Graph, Op, OpKind
from shardc.ir.mesh import Mesh
from shardc.sharding.stats import op_stats
from shardc.sharding.timing import larger_side_bytes

__all__ = ["PARTITIONERS", "Side", "compare_xla", "compile_and_count", "format_table"]

#: The partitioners XLA is run with: name -> the value of jax's ``jax_use_shardy_partitioner``.
PARTITIONERS = {"Shardy": True, "GSPMD": False}

_KIND = {"all_gather": OpKind.ALL_GATHER, "all_reduce": OpKind.ALL_REDUCE,
         "reduce_scatter": OpKind.REDUCE_SCATTER, "all_to_all": OpKind.ALL_TO_ALL}


@dataclass(frozen=True)
class Side:
    """One partitioning of the program: what it sends and computes per chip, and its estimated time."""

    name: str
    counts: dict[str, int]  # collectives per run, by kind
    bytes_per_chip: float
    dot_flops_per_chip: float
    redundant_flops_per_chip: float  # dot FLOPs beyond (unsharded FLOPs / chips)
    comm_s: float
    matmul_s: float
    note: str = ""

    @property
    def seconds(self) -> float:
        return self.comm_s + self.matmul_s

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "collectives": dict(self.counts), "bytes_per_chip": self.bytes_per_chip,
                "dot_flops_per_chip": self.dot_flops_per_chip,
                "redundant_flops_per_chip": self.redundant_flops_per_chip,
                "comm_s": self.comm_s, "matmul_s": self.matmul_s, "seconds": self.seconds, "note": self.note}


def _unsharded_flops(sg: Graph) -> float:
    """Two-operand einsum FLOPs of one run of the whole (unsharded) program."""
    total = 0.0
    for op, rep in sg.walk():
        if isinstance(op, Op) and op.kind is OpKind.EINSUM and len(op.inputs) == 2:
            dims = {d for v in op.inputs for d in v.dims}
            total += 2.0 * math.prod(sg.sizes[d] for d in dims) * (rep.count if rep else 1)
    return total


def shardc_side(sg: Graph, chip: ChipProfile, mode: CommMode) -> Side:
    """shardc's plan, counted from the sharded program and priced (module docstring)."""
    mesh = sg.mesh
    assert mesh is not None
    want = expected_hlo(sg)
    comm = 0.0
    for op, rep in sg.walk():
        if not isinstance(op, Op):
            continue
        times = rep.count if rep else 1
        if op.kind.is_collective and op.kind is not OpKind.SLICE:
            axes = op.attrs_as(CollectiveAttrs).axes
            comm += sum(collective_time(op.kind, axes, larger_side_bytes(op, sg.sizes, mesh), mesh, chip,
                                        mode)) * times
        stats = op_stats(op, sg.sizes, mesh)
        if stats is not None and stats.buffer_bytes:
            comm += sum(collective_time(OpKind.ALL_REDUCE, stats.axes, stats.buffer_bytes, mesh, chip, mode)) * times
    flops = want.einsum_flops
    return Side("shardc", want.counts, float(sum(want.bytes_by_kind.values())), flops,
                flops - _unsharded_flops(sg) / mesh.num_chips, comm, _matmul_seconds(flops, chip))


def _matmul_seconds(flops: float, chip: ChipProfile) -> float:
    return flops / (chip.peak_flops * chip.calibration.peak_fraction)


def hlo_side(name: str, counts: HloCounts, sg: Graph, chip: ChipProfile, mode: CommMode, note: str = "") -> Side:
    """A compiled module's collectives and dots, priced as shardc's (module docstring).

    A collective-permute is priced as one hop of its bytes over one mesh axis."""
    mesh = sg.mesh
    assert mesh is not None
    comm = 0.0
    for c in counts.collectives:
        if not c.moves:
            continue
        if c.kind == "collective_permute":
            comm += (c.larger_side_bytes() / chip.axis_bandwidth + chip.calibration.hop_latency) * c.executions
            continue
        axes = group_axes(c.groups[0], mesh)
        comm += sum(collective_time(_KIND[c.kind], axes, c.larger_side_bytes(), mesh, chip, mode)) * c.executions
    flops = counts.dot_flops()
    return Side(name, dict(counts.counts()), counts.bytes_per_device(), flops,
                flops - _unsharded_flops(sg) / mesh.num_chips, comm, _matmul_seconds(flops, chip), note)


#: XLA flags that make the CPU compile faster without touching the HLO passes that partition the
#: program (no LLVM optimisation, the older loop emitter): the program is compiled, never run.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"


def _load_jax(devices: int) -> types.ModuleType:
    if "jax" not in sys.modules:
        flag = f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        # XLA's C++ warnings (GSPMD's deprecation notice) are not shardc's output; errors still show.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import jax
    except ImportError:
        raise ShardcError("--compare-xla needs jax", hint='pip install "shardc[jax]"') from None
    if len(jax.devices()) < devices:
        raise ShardcError(f"the plan's mesh needs {devices} devices and jax already runs with "
                          f"{len(jax.devices())}", hint=f"set XLA_FLAGS=--xla_force_host_platform_device_count="
                                                        f"{devices} before jax is imported")
    return jax


#: The XLA:CPU pass that promotes bf16 collectives to f32: the module before it is the one counted.
PROMOTION_PASS = "all-reduce-promotion"


def compile_and_count(lowered: Any, num_devices: int) -> tuple[Any, HloCounts, str]:
    """Compile a jax ``Lowered``; return the executable, the counts and the text counted.

    The text is XLA's dump of the module just before :data:`PROMOTION_PASS` (every partitioning
    and simplification pass has run; the dtypes are still the program's); a module without bf16
    may fall back to the compiled text, where nothing was promoted.
    """
    with tempfile.TemporaryDirectory() as dump:
        compiled = lowered.compile(compiler_options={"xla_dump_to": dump, "xla_dump_hlo_pass_re": PROMOTION_PASS})
        found = sorted(Path(dump).glob(f"*before_{PROMOTION_PASS}.txt"))
        text = found[-1].read_text() if found else ""
    if not text:
        if "bf16" in lowered.as_text(dialect="hlo"):
            raise ShardcError(f"XLA did not dump the module before its {PROMOTION_PASS} pass: the bf16 "
                              "collectives of this jax version cannot be counted at their dtype")
        text = str(compiled.as_text())
    return compiled, parse_hlo(text, num_devices), text


def xla_module(sg: Graph, shardy: bool) -> tuple[HloCounts, str]:
    """The counts and counted HLO text of the unsharded program under jax.jit with the plan's shardings."""
    mesh = sg.mesh
    assert mesh is not None
    jax = _load_jax(mesh.num_chips)
    module = types.ModuleType("exported")
    exec(compile(export_jax(sg) + "\n" + unsharded_body(sg), f"<export of {sg.name}>", "exec"), module.__dict__)
    module.load_jax()
    jmesh = module.make_mesh()
    named = jax.sharding.NamedSharding
    ins = tuple(named(jmesh, s) for s in module.in_specs())
    outs = tuple(named(jmesh, s) for s in module.out_specs())
    dtypes = {"bf16": jax.numpy.bfloat16, "f32": jax.numpy.float32, "int8": jax.numpy.int8}
    args = []
    for (_, _, dims, dtype, repeat_index, layers, _), sharding in zip(module.DECLS, ins):
        shape = tuple(sg.sizes[d] for d in dims)
        if repeat_index is not None:
            shape = (layers, *shape)
        args.append(jax.ShapeDtypeStruct(shape, dtypes[dtype], sharding=sharding))
    before = jax.config.jax_use_shardy_partitioner
    jax.config.update("jax_use_shardy_partitioner", shardy)
    try:
        jitted = jax.jit(module.unsharded_body, in_shardings=ins, out_shardings=outs)
        _, counts, text = compile_and_count(jitted.lower(*args), mesh.num_chips)
        return counts, text
    finally:
        jax.config.update("jax_use_shardy_partitioner", before)


def compare_xla(sg: Graph, chip: ChipProfile, mode: CommMode) -> list[Side]:
    """shardc's side, then XLA's with each partitioner (module docstring)."""
    chip = priced_in(chip, mode)
    mesh = sg.mesh
    assert mesh is not None
    sides = [shardc_side(sg, chip, mode)]
    for name, shardy in PARTITIONERS.items():
        counts, text = xla_module(sg, shardy)
        rewritten = sum(1 for line in text.splitlines() if " multiply(" in line and "dot_general" in line)
        note = f"{rewritten} dots rewritten as multiplies, not counted" if rewritten else ""
        sides.append(hlo_side(f"XLA {name}", counts, sg, chip, mode, note))
    return sides


def _bytes(x: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(x) >= size:
            return f"{x / size:.3g} {unit}"
    return f"{x:.0f} B"


def _seconds(x: float) -> str:
    return f"{x * 1e3:.3g} ms" if x >= 1e-3 else f"{x * 1e6:.3g} us"


def format_table(sides: list[Side], mesh: Mesh) -> str:
    """A Markdown table: one row per side; ratios of bytes and time to shardc's."""
    kinds = ["all_gather", "reduce_scatter", "all_reduce", "all_to_all", "collective_permute"]
    kinds = [k for k in kinds if any(s.counts.get(k) for s in sides)]
    short = {"all_gather": "AG", "reduce_scatter": "RS", "all_reduce": "AR", "all_to_all": "A2A",
             "collective_permute": "CP"}
    base = sides[0]
    head = ["partitioner", "collectives (" + " / ".join(short[k] for k in kinds) + ")", "bytes/chip",
            "x shardc", "dot FLOPs/chip", "redundant", "est. time", "x shardc"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in sides:
        redundant = s.redundant_flops_per_chip / s.dot_flops_per_chip if s.dot_flops_per_chip else 0.0
        cells = [s.name, " / ".join(str(s.counts.get(k, 0)) for k in kinds), _bytes(s.bytes_per_chip),
                 f"{s.bytes_per_chip / base.bytes_per_chip:.2f}" if base.bytes_per_chip else "-",
                 f"{s.dot_flops_per_chip:.4g}", f"{redundant:.0%}", _seconds(s.seconds),
                 f"{s.seconds / base.seconds:.2f}" if base.seconds else "-"]
        rows.append("| " + " | ".join(cells) + " |")
    notes = [f"{s.name}: {s.note}" for s in sides if s.note]
    return "\n".join(rows + ([""] + notes if notes else [])) + "\n"
