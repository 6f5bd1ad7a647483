"""shardc: a sharding compiler for transformer inference.

The public API (stable; see docs/api.md)::

    import shardc
    g = shardc.load("examples/palm_540b_decode.model")   # or shardc.parse(text)
    text = shardc.format(g)                               # canonical .model text
    ref = shardc.reference(g, seed=0)                     # unsharded NumPy run
    sg = shardc.shard(g, "4x4x4", ffn="2d-ws", attention="batch")  # sharded Graph
    rep = shardc.verify(shardc.shrink(sg), seed=0)        # emulated chips vs reference
    prog = shardc.export_jax(shardc.shrink(sg))           # a standalone jax.shard_map program (text)
    best = shardc.plan(g, chips=64).best                  # the partitioning of least estimated latency
    b = shardc.Builder("m", dims={"B": 8, "E": 16})       # or build a program from Python, no text
    req = shardc.plan_request(prefill, decode, prompt=2048, generate=64, chips=64)  # a whole request

    # the paper's presets are data in role letters (x, y, z); bind one to a mesh,
    # choosing which mesh axis plays which role, or build a Preset of one's own
    s = shardc.bind(shardc.PRESETS[shardc.FFN.WS_2D], "4x4x4", "batch", roles={"x": "z", "y": "x", "z": "y"})
    sg = shardc.shard(g, strategy=s)                      # the mesh is the one s is bound to

Only what works is exported.
"""
import importlib.metadata

from shardc.cost.memory import LiveValue, MemoryPeak, max_context
from shardc.cost.model import CostReport, OpTime, estimate
from shardc.errors import Loc, ShardcError, Source
from shardc.execute.emulate import Counters, Emulation, OpCount, emulate
from shardc.execute.reference import reference, seeded_inputs
from shardc.execute.verification import DEFAULT_LAYERS, Mismatch, VerifyReport, shrink, verify
from shardc.export import export_jax
from shardc.hardware.comm import CommMode
from shardc.hardware.profile import Calibration, ChipProfile, Topology, load_profile
from shardc.ir.graph import (
    Block,
    Carry,
    CausalAttrs,
    CollectiveAttrs,
    Const,
    Decl,
    DeclKind,
    DType,
    EinsumAttrs,
    Graph,
    NoAttrs,
    Op,
    OpKind,
    Output,
    OverAttrs,
    RelabelAttrs,
    Repeat,
    TensorType,
    Trivia,
    Value,
)
from shardc.ir.layout import Layout
from shardc.ir.mesh import Mesh
from shardc.ir.summary import Counts, RepeatSummary, Summary, TensorInfo, summarize
from shardc.ir.transforms import with_weight_dtype
from shardc.language.builder import Builder, Tensor
from shardc.language.lower import load, parse
from shardc.language.printer import format_graph as format
from shardc.planner.choose import Dropped, Objective, Plan, Ranked, plan
from shardc.planner.evaluate import Figures
from shardc.planner.request import RequestPlan, Step, plan_request
from shardc.planner.space import Candidate
from shardc.sharding.presets import FFN, PRESETS, Attention, Preset, Role, Strategy, bind, default_roles
from shardc.sharding.replication import Replicated
from shardc.sharding.search import Method
from shardc.sharding.shard import shard, shard_program
from shardc.sharding.sharded import CollectiveRecord, ShardResult, verify_sharded

__all__ = [
    # reading, building and printing programs
    "parse",
    "load",
    "format",
    "summarize",
    "Builder",
    "Tensor",
    "with_weight_dtype",
    # sharding
    "shard",
    "shard_program",
    "verify_sharded",
    "bind",
    "default_roles",
    "PRESETS",
    "Preset",
    "Strategy",
    "FFN",
    "Attention",
    "Role",
    "Method",
    # running
    "reference",
    "seeded_inputs",
    "emulate",
    "verify",
    "shrink",
    "DEFAULT_LAYERS",
    # costing, planning, export
    "estimate",
    "max_context",
    "load_profile",
    "CommMode",
    "plan",
    "plan_request",
    "Objective",
    "export_jax",
    # results, and the objects they refer to, for tools that keep or inspect them
    "ShardResult",
    "CollectiveRecord",
    "Emulation",
    "Counters",
    "OpCount",
    "VerifyReport",
    "Mismatch",
    "CostReport",
    "OpTime",
    "MemoryPeak",
    "LiveValue",
    "Replicated",
    "ChipProfile",
    "Calibration",
    "Topology",
    "Plan",
    "Ranked",
    "Candidate",
    "Figures",
    "Dropped",
    "RequestPlan",
    "Step",
    "Summary",
    "TensorInfo",
    "RepeatSummary",
    "Counts",
    # the IR
    "Graph",
    "Block",
    "Decl",
    "DeclKind",
    "Op",
    "OpKind",
    "Output",
    "Repeat",
    "Carry",
    "Value",
    "Const",
    "TensorType",
    "DType",
    "NoAttrs",
    "EinsumAttrs",
    "OverAttrs",
    "CausalAttrs",
    "RelabelAttrs",
    "CollectiveAttrs",
    "Trivia",
    "Mesh",
    "Layout",
    # errors
    "ShardcError",
    "Loc",
    "Source",
]
__version__ = importlib.metadata.version("shardc")  # one version: pyproject.toml's
