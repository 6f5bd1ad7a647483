'''The fixed part of every exported JAX program: data, helpers for the ops, and main().

This text is copied verbatim into each program :func:`shardc.export.jax.export_jax` writes,
after the program's own tables (MODEL, MESH, SIZES, DECLS, OUTPUTS, SHARDED_PROGRAM) and
before its ``body``.  It is kept here as one string so that the program stands alone: it
needs NumPy, and jax to run; shardc only for ``--check``.
'''

RUNTIME = r'''
INSTALL_HINT = 'this program needs jax; install it with: pip install "shardc[jax]"  (or: pip install jax)'
EPS = 1e-6
DTYPES = ("f32", "bf16")  # --dtype: every array in f32 or in bf16 (norm and softmax statistics stay f32)
jax = jnp = lax = None  # set by load_jax(), after XLA_FLAGS


def load_jax(devices=None):
    """Import jax (setting the host device count first when asked); exit with a hint if it is missing."""
    global jax, jnp, lax
    if devices is not None:
        flag = f"--xla_force_host_platform_device_count={devices}"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
    try:
        import jax as _jax
        import jax.numpy as _jnp
        from jax import lax as _lax
    except ImportError:
        sys.exit(INSTALL_HINT)
    jax, jnp, lax = _jax, _jnp, _lax
    return jax


def shard_map_fn():
    """jax.shard_map (jax >= 0.6) or jax.experimental.shard_map.shard_map (older)."""
    if hasattr(jax, "shard_map"):
        return jax.shard_map
    from jax.experimental.shard_map import shard_map
    return shard_map


def make_mesh():
    """The plan's mesh: axis names and sizes, devices in row-major order."""
    shape = tuple(size for _, size in MESH)
    n = int(np.prod(shape))
    devices = jax.devices()
    if len(devices) < n:
        sys.exit(f"the plan's mesh needs {n} devices, jax sees {len(devices)}; run with --devices {n}")
    return jax.sharding.Mesh(np.array(devices[:n]).reshape(shape), tuple(name for name, _ in MESH))


def P(*dims):
    return jax.sharding.PartitionSpec(*dims)


# --- seeded data: the same arrays as shardc.reference (SeededData) --------------------------
def draw(name, kind, dims, dtype, repeat_index, layer, fan_in, seed):
    key = [int(seed), 0 if repeat_index is None else repeat_index + 1, layer, zlib.crc32(name.encode("utf-8"))]
    rng = np.random.default_rng(np.random.SeedSequence(key))
    values = rng.standard_normal(tuple(SIZES[d] for d in dims), dtype=np.float32)
    if kind == "param":
        if len(dims) == 1 or fan_in is None:
            values *= 0.1
            values += 1.0
        else:
            values /= math.sqrt(fan_in)
        if dtype == "int8":
            values *= 127.0
            values = np.clip(np.round(values), -127.0, 127.0) / np.float32(127.0)
    return values


def make_data(seed=0):
    """The program's arguments in DECLS order; a declaration in a repeat is stacked over its layers."""
    out = []
    for name, kind, dims, dtype, repeat_index, layers, fan_in in DECLS:
        if repeat_index is None:
            out.append(draw(name, kind, dims, dtype, None, 0, fan_in, seed))
        else:
            out.append(np.stack([draw(name, kind, dims, dtype, repeat_index, layer, fan_in, seed)
                                 for layer in range(layers)]))
    return out


# --- the ops that are more than one jnp call --------------------------------------------
def einsum(spec, *operands):
    return jnp.einsum(spec, *operands, precision=lax.Precision.HIGHEST)


def align(a, dims, out):
    """A block with dims `dims` transposed into `out`'s order, size 1 where a dim is absent."""
    a = jnp.transpose(a, [dims.index(d) for d in out if d in dims])
    return jnp.expand_dims(a, [i for i, d in enumerate(out) if d not in dims]) if len(dims) < len(out) else a


def gelu(x):
    return 0.5 * x * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def silu(x):
    return x * (0.5 * (1.0 + jnp.tanh(0.5 * x)))


def _gain(normed, gain, axis):
    if gain is None:
        return normed
    shape = [1] * normed.ndim
    shape[axis] = -1
    return normed * gain.reshape(shape)


def layernorm(a, gain, axis, n, axes):
    """The emulator's sequence: the row mean (a psum of the sums over `axes`), then the variance of the
    centred rows (a psum of their squares); over a whole dim the same without psums.

    Two passes, not one psum of the sums of a and a*a: E[a*a] - mean**2 cancels in f32 when the
    mean is large against the spread.  Statistics are f32 in every dtype (as shardc counts them).
    """
    x = a.astype(jnp.float32)
    total = x.sum(axis, keepdims=True)
    if axes:
        total = lax.psum(total, axes)
    centered = x - total / n
    square = (centered * centered).sum(axis, keepdims=True)
    if axes:
        square = lax.psum(square, axes)
    return _gain((centered / jnp.sqrt(square / n + EPS)).astype(a.dtype), gain, axis)


def rmsnorm(a, gain, axis, n, axes):
    x = a.astype(jnp.float32)
    square = (x * x).sum(axis, keepdims=True)
    if axes:
        square = lax.psum(square, axes)
    return _gain((x / jnp.sqrt(square / n + EPS)).astype(a.dtype), gain, axis)


def softmax(a, axis, axes):
    """The emulator's sequence: the row max (pmax over `axes`), then the sum of exponentials (psum), in f32."""
    x = a.astype(jnp.float32)
    top = x.max(axis, keepdims=True)
    if axes:
        top = lax.pmax(top, axes)
    e = jnp.exp(x - top)
    total = e.sum(axis, keepdims=True)
    if axes:
        total = lax.psum(total, axes)
    return (e / total).astype(a.dtype)


def block_start(axes, local):
    """Global index of this device's first element along a dim split over `axes` (major first)."""
    return lax.axis_index(axes) * local if axes else 0


def positions(a, axis, axes):
    local = a.shape[axis]
    shape = [1] * a.ndim
    shape[axis] = local
    return (block_start(axes, local) + jnp.arange(local)).reshape(shape)


def causal(a, query_axis, key_axis, query_axes, key_axes, n_query, n_key):
    """Query i sees key j iff j <= i + n_key - n_query, in global positions (split dims: axis_index)."""
    i = positions(a, query_axis, query_axes)
    j = positions(a, key_axis, key_axes)
    return jnp.where(j <= i + (n_key - n_query), a, -jnp.inf)


def all_gather(a, axes, axis):
    """Tiled all-gather of one dim; its result is replicated over `axes` (told to jax's checker)."""
    if hasattr(lax, "all_gather_invariant"):
        return lax.all_gather_invariant(a, axes, axis=axis, tiled=True)
    if "to" in inspect.signature(lax.all_gather).parameters:
        return lax.all_gather(a, axes, axis=axis, tiled=True, to="invarying")
    return lax.all_gather(a, axes, axis=axis, tiled=True)


def local_slice(a, axes, axis, local):
    """Keep this device's block of a dim for the appended `axes`: no communication."""
    return lax.dynamic_slice_in_dim(a, lax.axis_index(axes) * local, local, axis=axis)


def vary(a, axes):
    """Mark `a` as varying over `axes` for jax's replication checker (a loop carry keeps one type)."""
    typeof = getattr(jax, "typeof", None)
    if not axes or typeof is None or not hasattr(typeof(a), "vma"):
        return a
    missing = tuple(x for x in axes if x not in typeof(a).vma)
    if not missing:
        return a
    if hasattr(lax, "pcast"):
        return lax.pcast(a, missing, to="varying")
    return lax.pvary(a, missing)


# --- running it ---------------------------------------------------------------------------
def build():
    """The mesh and the jitted sharded program (arguments in DECLS order, results in OUTPUTS order)."""
    mesh = make_mesh()
    program = shard_map_fn()(body, mesh=mesh, in_specs=in_specs(), out_specs=out_specs())
    return mesh, jax.jit(program)


def put(mesh, arrays, dtype="f32"):
    """The arrays on the mesh, each split by its PartitionSpec, in `dtype` ("f32" or "bf16")."""
    np_dtype = jnp.bfloat16 if dtype == "bf16" else np.float32
    return [jax.device_put(a.astype(np_dtype), jax.sharding.NamedSharding(mesh, s))
            for a, s in zip(arrays, in_specs())]


def run(seed=0, dtype="f32"):
    """Outputs by name, as f32 NumPy arrays (global values; per-layer outputs stacked over layers)."""
    mesh, program = build()
    result = program(*put(mesh, make_data(seed), dtype))
    jax.block_until_ready(result)
    return {name: np.asarray(value, dtype=np.float32) for name, value in zip(OUTPUTS, result)}


def check(outputs, seed=0):
    """Max relative error (max |out - ref| / max |ref|, per output) against shardc.reference."""
    try:
        import shardc
    except ImportError:
        sys.exit('--check compares with shardc.reference; install shardc: pip install "shardc[jax]"')
    ref = shardc.reference(shardc.parse(SHARDED_PROGRAM), seed=seed, dtype="f64")
    worst = 0.0
    for name, value in outputs.items():
        want = ref[name]
        scale = float(np.max(np.abs(want))) or 1.0
        err = float(np.max(np.abs(value.astype(np.float64) - want))) / scale if want.size else 0.0
        print(f"{name}: max relative error {err:.3g}")
        worst = max(worst, err)
    print(f"max relative error against shardc.reference: {worst:.3g}")
    return worst


def time_calls(seed=0, calls=10, dtype="f32"):
    """Steady-state seconds per call (compiled and warmed up; blocking after every call)."""
    mesh, program = build()
    args = put(mesh, make_data(seed), dtype)
    jax.block_until_ready(program(*args))
    start = time.perf_counter()
    for _ in range(calls):
        jax.block_until_ready(program(*args))
    return (time.perf_counter() - start) / calls


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    n = int(np.prod([size for _, size in MESH]))
    parser.add_argument("--devices", type=int, default=None,
                        help=f"force this many host (CPU) devices; the mesh needs {n}")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data (as shardc.reference's)")
    parser.add_argument("--dtype", choices=DTYPES, default="f32",
                        help="run every array in f32 (default) or bf16 (statistics of norms and softmax in f32)")
    parser.add_argument("--check", action="store_true", help="print the max relative error against shardc.reference")
    parser.add_argument("--time", action="store_true", help="print the steady-state time per call")
    args = parser.parse_args(argv)
    load_jax(args.devices)
    outputs = run(args.seed, args.dtype)
    for name, value in outputs.items():
        print(f"{name}: shape {value.shape}, mean {float(value.mean()):.6g}")
    if args.check:
        check(outputs, args.seed)
    if args.time:
        print(f"time per call: {time_calls(args.seed, dtype=args.dtype) * 1e3:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''
