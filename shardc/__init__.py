"""shardc: a sharding compiler for transformer inference.

The public API (stable; see DESIGN.md)::

    import shardc
    g = shardc.load("examples/palm_540b_decode.model")   # or shardc.parse(text)
    text = shardc.format(g)                               # canonical .model text
    ref = shardc.reference(g, seed=0)                     # unsharded NumPy run
    sg = shardc.shard(g, "4x4x4", ffn="2d-ws", attention="batch")  # sharded Graph
    rep = shardc.verify(shardc.shrink(sg), seed=0)        # emulated chips vs reference

Only what works is exported.
"""
from .cost import estimate
from .errors import ShardcError
from .frontend import load, parse
from .ir import DType, Graph, OpKind, TensorType, Value
from .layout import Layout
from .mesh import Mesh
from .printer import format_graph as format
from .reference import reference
from .shard import shard, shard_program
from .sharded import ShardResult, verify_sharded
from .emulate import Emulation, emulate
from .verification import VerifyReport, shrink, verify
from .summary import Summary, summarize

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
    "emulate",
    "Emulation",
    "verify",
    "VerifyReport",
    "shrink",
    "shard",
    "shard_program",
    "ShardResult",
    "verify_sharded",
    "summarize",
]
__version__ = "0.1.0"
