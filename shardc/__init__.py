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
    req = shardc.plan_request(prefill, decode, prompt=2048, generate=64, chips=64)  # a whole request

    # the paper's presets are data in role letters (x, y, z); bind one to a mesh,
    # choosing which mesh axis plays which role, or build a Preset of one's own
    s = shardc.bind(shardc.PRESETS[shardc.FFN.WS_2D], "4x4x4", "batch", roles={"x": "z", "y": "x", "z": "y"})
    sg = shardc.shard(g, strategy=s)                      # the mesh is the one s is bound to

Only what works is exported.
"""
import importlib.metadata

from shardc.cost.memory import max_context
from shardc.cost.model import CostReport, estimate
from shardc.errors import ShardcError
from shardc.execute.emulate import Counters, Emulation, emulate
from shardc.execute.reference import reference, seeded_inputs
from shardc.execute.verification import Mismatch, VerifyReport, shrink, verify
from shardc.export import export_jax
from shardc.hardware.profile import ChipProfile, load_profile
from shardc.ir.graph import DType, Graph, OpKind, TensorType, Value
from shardc.ir.layout import Layout
from shardc.ir.mesh import Mesh
from shardc.ir.summary import Summary, summarize
from shardc.language.lower import load, parse
from shardc.language.printer import format_graph as format
from shardc.planner.choose import Objective, Plan, Ranked, plan
from shardc.planner.request import RequestPlan, plan_request
from shardc.sharding.presets import FFN, PRESETS, Attention, Preset, Role, Strategy, bind, default_roles
from shardc.sharding.shard import shard, shard_program
from shardc.sharding.sharded import CollectiveRecord, ShardResult, verify_sharded

__all__ = [
    "DType",
    "Graph",
    "Layout",
    "Mesh",
    "OpKind",
    "ShardcError",
    "TensorType",
    "Summary",
    "Value",
    "format",
    "estimate",
    "load",
    "parse",
    "reference",
    "seeded_inputs",
    "emulate",
    "Emulation",
    "verify",
    "VerifyReport",
    "shrink",
    "shard",
    "shard_program",
    "Attention",
    "FFN",
    "PRESETS",
    "Preset",
    "Role",
    "Strategy",
    "bind",
    "default_roles",
    "ShardResult",
    "verify_sharded",
    "summarize",
    "export_jax",
    "plan",
    "plan_request",
    "RequestPlan",
    "Plan",
    "Ranked",
    "Objective",
    # the objects the results above refer to, for tools that keep or inspect them
    "ChipProfile",
    "CollectiveRecord",
    "CostReport",
    "Counters",
    "Mismatch",
    "load_profile",
    "max_context",
]
__version__ = importlib.metadata.version("shardc")  # one version: pyproject.toml's
