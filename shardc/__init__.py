"""shardc: a sharding compiler for transformer inference.

The public API (stable; see DESIGN.md)::

    import shardc
    g = shardc.load("examples/palm_540b_decode.model")   # or shardc.parse(text)
    text = shardc.format(g)                               # canonical .model text
    ref = shardc.reference(g, seed=0)                     # unsharded NumPy run

Only what works is exported.
"""
from .errors import ShardcError
from .frontend import load, parse
from .ir import DType, Graph, OpKind, TensorType, Value
from .layout import Layout
from .mesh import Mesh

__all__ = [
    "DType",
    "Graph",
    "Layout",
    "Mesh",
    "OpKind",
    "ShardcError",
    "TensorType",
    "Value",
    "load",
    "parse",
]
__version__ = "0.1.0"
