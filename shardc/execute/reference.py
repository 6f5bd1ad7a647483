"""The reference executor: run a :class:`~shardc.ir.graph.Graph` in plain NumPy.

:func:`reference` evaluates every op on whole (global) arrays, one Python loop
iteration per layer of each ``repeat``.  It also runs *sharded* graphs: a
collective only changes a value's layout, never its global content, so every
collective (all_gather, reduce_scatter, all_reduce, all_to_all, slice) is the
identity here.

Ops are defined by dim *names* (docs/language.md); :data:`IMPLS` holds one NumPy
function per :class:`~shardc.ir.graph.OpKind`.  Numerics: layernorm is
``(a - mean) / sqrt(var + 1e-6) * g`` (no bias), rmsnorm is
``a / sqrt(mean(a^2) + 1e-6) * g``, softmax subtracts the max, and gelu is the
tanh approximation ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``.

Seeded data.  Inputs, params and caches are not passed in: they are drawn by
:func:`draw`, which the emulator must use too so that both executors see the
same numbers.  A declaration's array depends only on ``(seed, repeat index,
layer, crc32(name))`` and the graph's sizes and fan-ins -- never on value ids,
so a sharded program (other ids, same declaration names) draws the same data.
See :func:`draw` for the distributions.

Memory guard.  Before anything proportional to the dims is allocated, the run's
footprint is estimated (:func:`reference_footprint`) and a :class:`ShardcError` is
raised when it exceeds ``max_bytes``.
"""
from __future__ import annotations

import math
import zlib
from typing import Callable, Mapping, Sequence, Union

import numpy as np
import numpy.typing as npt

from shardc.errors import ShardcError
from shardc.ir.graph import (
    COLLECTIVES,
    CausalAttrs,
    Const,
    Decl,
    DeclKind,
    DType,
    EinsumAttrs,
    Graph,
    Op,
    OpKind,
    Output,
    OverAttrs,
    RelabelAttrs,
    Repeat,
    Value,
)
from shardc.units import human_bytes

EPS = 1e-6
DEFAULT_MAX_BYTES = 4 * 2**30
INT8_LEVELS = 127.0  # int8 params are integers in [-127, 127] times the scale 1/127
COMPUTE_DTYPES: dict[str, type] = {"f32": np.float32, "f64": np.float64}

Arg = Union[np.ndarray, float]  # a tensor operand, or the number of a Const operand


def _np_dtype(dtype: str) -> np.dtype:
    if dtype not in COMPUTE_DTYPES:
        raise ShardcError(f"unknown compute dtype {dtype!r}; expected 'f32' or 'f64'")
    return np.dtype(COMPUTE_DTYPES[dtype])


# --- seeded data ---------------------------------------------------------------------
def seed_key(seed: int, repeat_index: int | None, layer: int, name: str) -> list[int]:
    """The SeedSequence entropy of one declaration's array.

    ``repeat_index`` is the position of the declaring ``repeat`` among the
    graph's repeats (0, 1, ...) or None for a top-level declaration (then
    ``layer`` is 0).  The name enters as ``zlib.crc32(name)``.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ShardcError(f"seed must be a non-negative integer, not {seed!r}")
    block = 0 if repeat_index is None else repeat_index + 1
    return [int(seed), block, layer, zlib.crc32(name.encode("utf-8"))]


def fan_ins(g: Graph) -> dict[int, int]:
    """Fan-in of each param used in an einsum, keyed by the declaration's value id.

    The fan-in is the product of the sizes of the param's dims that its first
    einsum use (in program order) contracts, i.e. that are absent from the
    einsum's output.  Collectives and relabels in between are looked through,
    so a sharded graph gets the same fan-ins as its source.  Params never used
    in an einsum are absent from the result.
    """
    sizes = g.sizes
    origin: dict[int, int] = {}  # value id -> id of the param declaration it aliases
    result: dict[int, int] = {}
    for stmt, _ in g.walk():
        if isinstance(stmt, Decl) and stmt.kind is DeclKind.PARAM:
            origin[stmt.value.id] = stmt.value.id
        elif isinstance(stmt, Op) and (stmt.kind in COLLECTIVES or stmt.kind is OpKind.RELABEL):
            source = stmt.inputs[0].id
            if source in origin:
                origin[stmt.result.id] = origin[source]
        elif isinstance(stmt, Op) and stmt.kind is OpKind.EINSUM:
            spec = stmt.attrs_as(EinsumAttrs)
            for letters, operand in zip(spec.inputs, stmt.operands):
                decl_id = origin.get(operand.id) if isinstance(operand, Value) else None
                if decl_id is not None and decl_id not in result:
                    contracted = [d for d in letters if d not in spec.output]
                    result[decl_id] = math.prod(sizes[d] for d in contracted)
    return result


def draw(decl: Decl, *, seed: int, repeat_index: int | None, layer: int,
         sizes: Mapping[str, int], fan_in: int | None, dtype: str = "f64") -> np.ndarray:
    """The seeded global array of one declaration, in its dims' order.

    A ``numpy.random.default_rng(SeedSequence(seed_key(...)))`` draws standard
    normals ``z`` in float32 (shape: the declaration's global dims; one
    vectorised call); then, in float32,

    - inputs and caches: ``z``;
    - params with one dim (norm gains) or not used in any einsum
      (``fan_in is None``): ``1 + 0.1 z``;
    - other params: ``z / sqrt(fan_in)`` (see :func:`fan_ins`), which keeps
      activations O(1) through many layers;
    - int8 params are then quantised: ``clip(round(v * 127), -127, 127)`` are
      the stored integers, dequantised with the per-tensor scale 1/127 in the
      compute dtype.

    The result is in the compute ``dtype`` ("f32" or "f64"): an f64 run sees
    exactly the f32 run's values (an int8 param's ``k / 127`` rounded once, in
    its dtype).  Every layer of a repeat gets its own ``layer`` and hence its
    own params.
    """
    np_dtype = _np_dtype(dtype)
    shape = tuple(sizes[d] for d in decl.value.dims)
    assert decl.value.name is not None  # every declaration is named
    key = seed_key(seed, repeat_index, layer, decl.value.name)
    rng = np.random.default_rng(np.random.SeedSequence(key))
    values = rng.standard_normal(shape, dtype=np.float32)
    if decl.kind is not DeclKind.PARAM:
        return values.astype(np_dtype, copy=False)
    if len(shape) == 1 or fan_in is None:
        values *= 0.1
        values += 1.0
    else:
        values /= math.sqrt(fan_in)
    if decl.value.dtype is not DType.INT8:
        return values.astype(np_dtype, copy=False)
    values *= 127.0
    np.clip(np.round(values, out=values), -127.0, 127.0, out=values)  # the stored integers
    values = values.astype(np_dtype, copy=False)
    values /= INT8_LEVELS
    return values


Inputs = Mapping[str, npt.ArrayLike]  # arrays of the user's own, by declaration name


class SeededData:
    """The inputs, params and caches of one graph (what both executors read).

    ``SeededData(g, seed, dtype, inputs)(decl, repeat_index, layer)`` is the user's array for a
    declaration named in ``inputs``, else :func:`draw` with the graph's sizes and fan-ins filled
    in.  A user's array has the declaration's dims in order at the graph's sizes; one declared
    inside a ``repeat`` has a leading axis with one entry per layer.  The values are those the
    computation sees (an int8 param's dequantised values), cast to the compute dtype.

    With ``keep=True`` every drawn array is kept (read-only) and handed out again on the next
    request, so runs that share one ``SeededData`` (pass it as ``inputs=``) draw each array once.
    """

    def __init__(self, g: Graph, seed: int = 0, dtype: str = "f32", inputs: Inputs | None = None, *,
                 keep: bool = False) -> None:
        np_dtype = _np_dtype(dtype)
        seed_key(seed, None, 0, "")  # validates the seed
        self.seed = seed
        self.dtype = dtype
        self.sizes = g.sizes
        by_id = fan_ins(g)  # by name: a SeededData may serve another graph of the same declarations
        self.fan_ins = {d.value.name: by_id[d.value.id] for d, _ in g.decls() if d.value.id in by_id}
        self.given = _check_inputs(g, inputs or {}, np_dtype)
        self.kept: dict[tuple[str, int | None, int], np.ndarray] | None = {} if keep else None

    def __call__(self, decl: Decl, repeat_index: int | None, layer: int) -> np.ndarray:
        name = decl.value.name or ""
        given = self.given.get(name)
        if given is not None:
            return given[layer] if repeat_index is not None else given
        key = (name, repeat_index, layer)
        if self.kept is not None and key in self.kept:
            return self.kept[key]
        array = draw(decl, seed=self.seed, repeat_index=repeat_index, layer=layer, sizes=self.sizes,
                     fan_in=self.fan_ins.get(name), dtype=self.dtype)
        if self.kept is not None:
            array.flags.writeable = False
            self.kept[key] = array
        return array

    def serves(self, g: Graph, seed: int, dtype: str) -> SeededData:
        """This data, after checking it was made for ``g``'s sizes with this seed and dtype."""
        if (self.seed, self.dtype, dict(self.sizes)) != (seed, dtype, dict(g.sizes)):
            raise ShardcError(f"inputs: this SeededData holds seed {self.seed}, dtype {self.dtype} and sizes "
                              f"{dict(self.sizes)}; the run asks for seed {seed}, dtype {dtype} and sizes "
                              f"{dict(g.sizes)}")
        return self


def seeded_data(g: Graph, seed: int, dtype: str, inputs: Inputs | SeededData | None) -> SeededData:
    """The data a run of ``g`` reads: ``inputs`` itself when it is a :class:`SeededData`."""
    if isinstance(inputs, SeededData):
        return inputs.serves(g, seed, dtype)
    return SeededData(g, seed, dtype, inputs)


def seeded_inputs(g: Graph, seed: int = 0, dtype: str = "f32") -> dict[str, np.ndarray]:
    """Every declaration's seeded array by name, as ``inputs=`` takes them (drawn once, here).

    A declaration inside a ``repeat`` gets all ``count`` layers, stacked on a leading axis
    (that is ``count`` times its size: meant for programs of few layers, such as benchmarks).
    Feeding the result to :func:`reference` and :func:`~shardc.execute.emulate.emulate` runs
    both on exactly the data they would draw from ``seed``, without drawing it again.
    """
    data = SeededData(g, seed, dtype)
    index = {id(rep): i for i, rep in enumerate(g.repeats)}
    out: dict[str, np.ndarray] = {}
    for decl, rep in g.decls():
        name = decl.value.name or ""
        if rep is None:
            out[name] = data(decl, None, 0)
        else:
            out[name] = np.stack([data(decl, index[id(rep)], layer) for layer in range(rep.count)])
    return out


def _check_inputs(g: Graph, inputs: Inputs, np_dtype: np.dtype) -> dict[str, np.ndarray]:
    """The user's arrays by declaration name, checked against the declared dims and sizes."""
    decls = {d.value.name: (d, rep) for d, rep in g.decls()}
    checked: dict[str, np.ndarray] = {}
    for name, value in inputs.items():
        if name not in decls:
            known = ", ".join(sorted(n for n in decls if n))
            raise ShardcError(f"inputs: '{name}' is not an input, param or cache of {g.name}; "
                              f"they are {known}")
        decl, rep = decls[name]
        array = np.asarray(value)
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise ShardcError(f"inputs: '{name}' must hold real numbers, not {array.dtype}")
        shape = tuple(g.sizes[d] for d in decl.value.dims)
        layers = () if rep is None else (rep.count,)
        if array.shape != layers + shape:
            per_layer = f" (one {list(shape)} per layer of the repeat)" if rep is not None else ""
            raise ShardcError(f"inputs: '{name}' is declared {decl.kind} {name} : {decl.value.type}, so it needs "
                              f"shape {list(layers + shape)}{per_layer}; got {list(array.shape)}")
        checked[name] = array.astype(np_dtype, copy=False)
    return checked


# --- op implementations ----------------------------------------------------------------
Impl = Callable[[Op, Sequence[Arg], Mapping[str, int]], np.ndarray]


def _tensor(arg: Arg) -> np.ndarray:
    """A tensor argument (only ``+ - * /`` take a number, and never as their only operand)."""
    assert isinstance(arg, np.ndarray), f"expected an array, got {type(arg).__name__}"
    return arg


def _axis(op: Op, dim: str) -> int:
    """Position of ``dim`` in the first operand."""
    return op.inputs[0].dims.index(dim)


def _align(arg: Arg, dims: tuple[str, ...], out_dims: tuple[str, ...]) -> Arg:
    """Transpose ``arg`` (dims ``dims``) into ``out_dims``' order, size-1 axes for missing dims."""
    if not isinstance(arg, np.ndarray):
        return arg
    order = [dims.index(d) for d in out_dims if d in dims]
    shape = [arg.shape[dims.index(d)] if d in dims else 1 for d in out_dims]
    return arg.transpose(order).reshape(shape)


def _broadcast(op: Op, args: Sequence[Arg]) -> tuple[Arg, Arg]:
    """Both operands of a binary op aligned by name to the result's dims."""
    out = op.result.dims
    left, right = (
        arg if isinstance(operand, Const) else _align(arg, operand.dims, out)
        for operand, arg in zip(op.operands, args)
    )
    return left, right


def _binary(ufunc: np.ufunc) -> Impl:
    """The impl of ``+ - * /``: ``ufunc`` on both operands aligned by name to the result."""
    def binary(op: Op, args: Sequence[Arg], sizes: Mapping[str, int]) -> np.ndarray:
        left, right = _broadcast(op, args)
        return ufunc(left, right)
    return binary


def _elementwise(ufunc: np.ufunc) -> Impl:
    """The impl of a one-operand elementwise op that is a NumPy ufunc (neg, tanh, exp)."""
    def elementwise(op: Op, args: Sequence[Arg], sizes: Mapping[str, int]) -> np.ndarray:
        return ufunc(args[0])
    return elementwise


def _einsum(op: Op, args: Sequence[Arg], sizes: Mapping[str, int]) -> np.ndarray:
    return np.einsum(op.attrs_as(EinsumAttrs).spec, *args, optimize=True)


def _gelu(op: Op, args: Sequence[Arg], sizes: Mapping[str, int]) -> np.ndarray:
    """The tanh approximation 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    x = _tensor(args[0])
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def _relu(op: Op, args: Sequence[Arg], sizes: Mapping[str, int]) -> np.ndarray:
    return np.maximum(args[0], 0.0)


def _silu(op: Op, args: Sequence[Arg], sizes: Mapping[str, int]) -> np.ndarray:
    """x * sigmoid(x), with sigmoid(x) = (1 + tanh(x/2)) / 2 (no overflow)."""
    x = _tensor(args[0])
    return x * (0.5 * (1.0 + np.tanh(0.5 * x)))


def _apply_gain(op: Op, args: Sequence[Arg], normed: np.ndarray, axis: int) -> np.ndarray:
    if len(args) < 2:
        return normed
    shape = [1] * normed.ndim
    shape[axis] = -1
    return normed * _tensor(args[1]).reshape(shape)


def _layernorm(op: Op, args: Sequence[Arg], sizes: Mapping[str, int]) -> np.ndarray:
    """(a - mean) / sqrt(var + 1e-6) * g over the ``over`` dim; no bias."""
    a, axis = _tensor(args[0]), _axis(op, op.attrs_as(OverAttrs).dim)
    centered = a - a.mean(axis=axis, keepdims=True)
    var = (centered * centered).mean(axis=axis, keepdims=True)
    return _apply_gain(op, args, centered / np.sqrt(var + EPS), axis)


def _rmsnorm(op: Op, args: Sequence[Arg], sizes: Mapping[str, int]) -> np.ndarray:
    """a / sqrt(mean(a^2) + 1e-6) * g over the ``over`` dim."""
    a, axis = _tensor(args[0]), _axis(op, op.attrs_as(OverAttrs).dim)
    mean_square = (a * a).mean(axis=axis, keepdims=True)
    return _apply_gain(op, args, a / np.sqrt(mean_square + EPS), axis)


def _softmax(op: Op, args: Sequence[Arg], sizes: Mapping[str, int]) -> np.ndarray:
    a, axis = _tensor(args[0]), _axis(op, op.attrs_as(OverAttrs).dim)
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _sum(op: Op, args: Sequence[Arg], sizes: Mapping[str, int]) -> np.ndarray:
    return _tensor(args[0]).sum(axis=_axis(op, op.attrs_as(OverAttrs).dim))


def _causal(op: Op, args: Sequence[Arg], sizes: Mapping[str, int]) -> np.ndarray:
    """Query i (along L) sees key j (along S) iff j <= i + size(S) - size(L); else -inf."""
    a = _tensor(args[0])
    causal = op.attrs_as(CausalAttrs)
    q_axis, k_axis = _axis(op, causal.query), _axis(op, causal.key)
    n_query, n_key = a.shape[q_axis], a.shape[k_axis]
    q_shape, k_shape = [1] * a.ndim, [1] * a.ndim
    q_shape[q_axis], k_shape[k_axis] = n_query, n_key
    i = np.arange(n_query).reshape(q_shape)
    j = np.arange(n_key).reshape(k_shape)
    return np.where(j <= i + (n_key - n_query), a, a.dtype.type(-np.inf))


def _last(op: Op, args: Sequence[Arg], sizes: Mapping[str, int]) -> np.ndarray:
    """The last size(T) positions along the sliced dim (a copy, so the rest can be freed)."""
    ((old, new),) = op.attrs_as(RelabelAttrs).renames
    a, axis = _tensor(args[0]), _axis(op, old)
    n = sizes[new]
    return np.take(a, np.arange(a.shape[axis] - n, a.shape[axis]), axis=axis)


def _identity(op: Op, args: Sequence[Arg], sizes: Mapping[str, int]) -> np.ndarray:
    """relabel (same data, dims renamed) and every collective (same global value)."""
    return _tensor(args[0])


#: The NumPy implementation of every op kind: ``impl(op, args, sizes) -> array`` where
#: ``args`` follow ``op.operands`` (arrays in their value's dims order, floats
#: for Const operands), ``sizes`` the dim sizes (``last`` keeps size(T) positions) and the
#: result is in ``op.result.dims`` order.
IMPLS: dict[OpKind, Impl] = {
    OpKind.EINSUM: _einsum,
    OpKind.ADD: _binary(np.add),
    OpKind.SUB: _binary(np.subtract),
    OpKind.MUL: _binary(np.multiply),
    OpKind.DIV: _binary(np.divide),
    OpKind.NEG: _elementwise(np.negative),
    OpKind.GELU: _gelu,
    OpKind.RELU: _relu,
    OpKind.SILU: _silu,
    OpKind.TANH: _elementwise(np.tanh),
    OpKind.EXP: _elementwise(np.exp),
    OpKind.LAYERNORM: _layernorm,
    OpKind.RMSNORM: _rmsnorm,
    OpKind.SOFTMAX: _softmax,
    OpKind.SUM: _sum,
    OpKind.CAUSAL: _causal,
    OpKind.RELABEL: _identity,
    OpKind.LAST: _last,
    OpKind.ALL_GATHER: _identity,
    OpKind.REDUCE_SCATTER: _identity,
    OpKind.ALL_REDUCE: _identity,
    OpKind.ALL_TO_ALL: _identity,
    OpKind.SLICE: _identity,
}


# --- memory guard -------------------------------------------------------------------------
def _layers_run(rep: Repeat, layers: int | None) -> int:
    return rep.count if layers is None else min(layers, rep.count)


def reference_footprint(g: Graph, dtype: str = "f32", layers: int | None = None) -> tuple[int, str]:
    """An upper bound on the bytes :func:`reference` holds at once, and the largest tensor.

    Counts every top-level declaration and op result, one layer's declarations
    and op results per repeat (plus its carried values and stacked per-layer
    outputs), and float64 scratch for the largest draw.  Pure arithmetic on
    Python ints: nothing is allocated.  Returns ``(bytes, description)``.
    """
    item = _np_dtype(dtype).itemsize
    sizes = g.sizes
    total, biggest, biggest_decl, name = 0, 0, 0, ""

    def count(value: Value, decl: bool, times: int = 1) -> None:
        nonlocal total, biggest, biggest_decl, name
        n = math.prod(sizes[d] for d in value.dims)
        total += n * times
        biggest_decl = max(biggest_decl, n if decl else 0)
        if n > biggest:
            biggest, name = n, f"{value.name or '(temporary)'} : {value.type}"

    for stmt in g.body:
        body = stmt.body if isinstance(stmt, Repeat) else [stmt]
        for inner in body:
            if isinstance(inner, Decl):
                count(inner.value, True)
            elif isinstance(inner, Op):
                count(inner.result, False)
            elif isinstance(inner, Output) and isinstance(stmt, Repeat):
                for value in inner.values:
                    count(value, False, _layers_run(stmt, layers))
        for carry in stmt.carries if isinstance(stmt, Repeat) else ():
            count(carry.arg, False)
            count(carry.result, False)
    return total * item + biggest_decl * 16, f"{name} ({human_bytes(biggest * item)} in {dtype}, the compute dtype)"


def _check_memory(g: Graph, dtype: str, layers: int | None, max_bytes: int) -> None:
    need, largest = reference_footprint(g, dtype, layers)
    if need > max_bytes:
        raise ShardcError(
            f"the reference run of {g.name!r} needs about {human_bytes(need)} ({need} bytes), more than "
            f"max_bytes={human_bytes(max_bytes)}; the largest tensor is {largest}",
            hint="make dims smaller with --set (e.g. --set S=128), or run fewer layers with "
                 "layers= / --layers",
        )


# --- the executor -------------------------------------------------------------------------
def _run_op(op: Op, env: Mapping[int, np.ndarray], sizes: Mapping[str, int]) -> np.ndarray:
    args = [o.value if isinstance(o, Const) else env[o.id] for o in op.operands]
    try:
        return IMPLS[op.kind](op, args, sizes)
    except Exception as err:  # a bug here: say which statement it was running
        err.add_note(f"shardc: while running {where(op)} in the reference")
        raise


def where(op: Op) -> str:
    """``'h' = einsum (line 12)``: an op as a user finds it in the program."""
    name = f"'{op.result.name}'" if op.result.name else "a temporary"
    return f"{name} = {op.kind} (line {op.loc.line})" if op.loc.line else f"{name} = {op.kind}"


def _add_output(outputs: dict[str, np.ndarray], name: str | None, array: np.ndarray) -> None:
    if name is None or name in outputs:
        raise ShardcError(f"two outputs are named {name!r}; the reference keys outputs by name")
    outputs[name] = array


Trace = Callable[[Op, int, np.ndarray], None]  # (op, layer, its global result)


def _run_repeat(rep: Repeat, index: int, env: dict[int, np.ndarray], data: SeededData,
                layers: int | None, outputs: dict[str, np.ndarray], trace: Trace | None = None) -> None:
    """Run ``min(layers, count)`` layers; carried values rebind as in :class:`~shardc.ir.graph.Carry`."""
    n = _layers_run(rep, layers)
    carried = {c.arg.id: env[c.init.id] for c in rep.carries}
    stacked: dict[int, np.ndarray] = {}
    for stmt in rep.body:
        for value in stmt.values if isinstance(stmt, Output) else ():
            stacked[value.id] = np.empty((n,) + tuple(data.sizes[d] for d in value.dims),
                                          _np_dtype(data.dtype))
            _add_output(outputs, value.name, stacked[value.id])
    for layer in range(n):
        scope = dict(env)  # this layer's values; dropped at the end of the layer
        scope.update(carried)
        _run_layer(rep, index, layer, scope, data, stacked, trace)
        carried = {c.arg.id: scope[c.next.id] for c in rep.carries}
    for c in rep.carries:
        env[c.result.id] = carried[c.arg.id]


def _run_layer(rep: Repeat, index: int, layer: int, scope: dict[int, np.ndarray], data: SeededData,
               stacked: dict[int, np.ndarray], trace: Trace | None) -> None:
    """One layer of ``rep`` in ``scope``; per-layer outputs go to row ``layer`` of ``stacked``."""
    for stmt in rep.body:
        if isinstance(stmt, Decl):
            scope[stmt.value.id] = data(stmt, index, layer)
        elif isinstance(stmt, Op):
            scope[stmt.result.id] = _run_op(stmt, scope, data.sizes)
            if trace is not None:
                trace(stmt, layer, scope[stmt.result.id])
        elif isinstance(stmt, Output):
            for value in stmt.values:
                stacked[value.id][layer] = scope[value.id]


def reference(g: Graph, seed: int = 0, dtype: str = "f32", layers: int | None = None, *,
              max_bytes: int = DEFAULT_MAX_BYTES, trace: Trace | None = None,
              inputs: Inputs | SeededData | None = None) -> dict[str, np.ndarray]:
    """Run ``g`` in plain NumPy on the seeded data of :class:`SeededData`; return its outputs.

    Returns ``{output name: array}``.  A top-level output is the array with its
    value's dims in order; a per-layer output (``output`` inside a repeat) is
    stacked along a new leading axis, one entry per layer run.  ``layers``
    runs only ``min(layers, count)`` layers of each repeat (None: all).
    ``dtype`` is the compute dtype, "f32" or "f64"; the same seed gives
    bit-identical outputs.  Sharded graphs run too (collectives are the
    identity on global values).  Raises :class:`ShardcError` when the run would
    need more than ``max_bytes`` (checked before any allocation).  ``trace``, if
    given, is called with every op, its layer (0 at top level) and its result.
    ``inputs`` gives arrays of one's own by declaration name (see :class:`SeededData`);
    the others are drawn from the seed.  It may also be a :class:`SeededData` made for
    ``g``'s sizes, seed and dtype, to share data drawn once between runs.
    """
    _np_dtype(dtype)
    seed_key(seed, None, 0, "")
    if layers is not None and (not isinstance(layers, int) or layers < 0):
        raise ShardcError(f"layers must be a non-negative integer or None, not {layers!r}")
    _check_memory(g, dtype, layers, max_bytes)
    data = seeded_data(g, seed, dtype, inputs)
    env: dict[int, np.ndarray] = {}
    outputs: dict[str, np.ndarray] = {}
    repeat_index = 0
    for stmt in g.body:
        if isinstance(stmt, Decl):
            env[stmt.value.id] = data(stmt, None, 0)
        elif isinstance(stmt, Op):
            env[stmt.result.id] = _run_op(stmt, env, data.sizes)
            if trace is not None:
                trace(stmt, 0, env[stmt.result.id])
        elif isinstance(stmt, Output):
            for value in stmt.values:
                _add_output(outputs, value.name, env[value.id])
        elif isinstance(stmt, Repeat):
            _run_repeat(stmt, repeat_index, env, data, layers, outputs, trace)
            repeat_index += 1
    return outputs
