"""The sharding pass: Graph + Mesh + Strategy -> sharded Graph.

Every value gets a layout and every collective becomes an op.  The pass walks
the program once (a repeat body once, not once per layer) and for each op:

1. asks :data:`~shardc.sharding.candidates.CANDIDATES` for ways to lay out the operands,
2. keeps the legal one (checked by the op's rule in :mod:`shardc.sharding.rules`) whose
   reshards move the fewest bytes,
3. inserts those reshards -- collectives chosen by :func:`~shardc.sharding.reshard.reshard`,
   the only place collectives are invented -- and annotates the result with
   the layout its rule derives.

Declarations get their layout from a pin or from the strategy; a weight the
strategy does not place floats until its first use.  Pins on statements and
outputs are honoured by resharding the result; loop carries keep one layout
(the layout of the value entering the loop) and the end of the body is
resharded back to it.  A chain of ``+`` is sharded as a whole, terms holding
the same partial sums added first (:mod:`shardc.sharding.sums`).  The pass notes why
each collective it inserts is there (and why each norm or softmax over a split
dim all-reduces statistics); the records
(:class:`~shardc.sharding.sharded.CollectiveRecord`) are derived from the sharded graph
by :func:`~shardc.sharding.sharded.collectives_of` with those reasons.  The result is
renumbered canonically and passes :func:`~shardc.sharding.sharded.verify_sharded`, which
recomputes every annotation from the rules.

What a sharded program is, and its records, live in :mod:`shardc.sharding.sharded`.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Iterable

from shardc.errors import NOLOC, Loc, ShardcError
from shardc.ir.graph import (
    Block,
    Carry,
    Const,
    Decl,
    DeclKind,
    Graph,
    Op,
    Operand,
    Output,
    OverAttrs,
    Repeat,
    Stmt,
    TensorType,
    Value,
)
from shardc.ir.layout import Layout
from shardc.ir.mesh import Mesh
from shardc.ir.transforms import renumber, with_mesh
from shardc.sharding.candidates import CANDIDATES, Candidate, OpView
from shardc.sharding.presets import Attention, PresetChoice, RoleAssignment, Strategy, make_strategy
from shardc.sharding.reshard import Step, reshard
from shardc.sharding.rules import infer, operand_layouts
from shardc.sharding.sharded import ShardResult, collectives_of, verify_sharded
from shardc.sharding.stats import describe_stats
from shardc.sharding.sums import SumChains

__all__ = [
    "resolve_mesh",
    "shard",
    "shard_program",
]


class _Floating:
    """A weight waiting for its first use to decide its layout."""

    def __init__(self, decl: Decl, index: int, block: list[Stmt]) -> None:
        self.decl = decl
        self.index = index
        self.block = block


class _Sharder:
    def __init__(self, g: Graph, mesh: Mesh, strategy: Strategy) -> None:
        self.g = g
        self.mesh = mesh
        self.strategy = strategy
        self.sizes = g.sizes
        self.next_id = 0
        self.env: dict[int, Value] = {}
        self.floating: dict[int, _Floating] = {}
        self.decl_kinds: dict[int, DeclKind] = {}
        self.caches: list[dict[tuple[int, Layout], Value]] = [{}]
        self.taken = g.names()
        self.reasons: dict[int, str] = {}  # result id -> why the collective (or statistics) is there
        self.repeat_index: int | None = None
        self.count = 1
        self.post = self._post_requirements()
        self.sums = SumChains(g, self.op, self.layout_so_far)

    # -- helpers --------------------------------------------------------------------
    def new_value(self, name: str | None, type_: TensorType, layout: Layout) -> Value:
        self.next_id += 1
        return Value(self.next_id - 1, name, type_, layout)

    def layout_so_far(self, o: Operand) -> Layout | None:
        """The layout of the sharded counterpart of a source operand (None: a constant or unplaced)."""
        v = self.env.get(o.id) if isinstance(o, Value) else None
        return v.layout if v is not None else None

    def fresh(self, base: str | None) -> str:
        base = base or "t"
        if base[-1].isdigit():
            base += "_"
        n = 1
        while f"{base}{n}" in self.taken:
            n += 1
        self.taken.add(f"{base}{n}")
        return f"{base}{n}"

    def _post_requirements(self) -> dict[int, tuple[Layout | None, str]]:
        """Values whose final layout is constrained: (layout or None = complete, reason)."""
        post: dict[int, tuple[Layout | None, str]] = {}
        for stmt, _ in self.g.walk():
            if isinstance(stmt, Op) and stmt.result.layout is not None:
                post[stmt.result.id] = (stmt.result.layout, f"pinned @ {stmt.result.layout.format(self.mesh)} "
                                        f"on line {stmt.loc.line}")
            elif isinstance(stmt, Output):
                for v in stmt.values:
                    want = stmt.pin
                    reason = (f"output pinned @ {stmt.pin.format(self.mesh)} on line {stmt.loc.line}"
                              if stmt.pin is not None else "outputs hold complete values")
                    post.setdefault(v.id, (want, reason))
            elif isinstance(stmt, Repeat):
                for c in stmt.carries:
                    post.setdefault(c.init.id, (None, "values entering a repeat hold complete values"))
        return post

    # -- declarations -----------------------------------------------------------------
    def decl(self, d: Decl, out: list[Stmt]) -> None:
        v = d.value
        self.decl_kinds[v.id] = d.kind
        layout = v.layout
        if layout is None:
            try:
                if d.kind is DeclKind.INPUT:
                    layout = self.strategy.activation_layout(v.dims, self.sizes)
                elif d.kind is DeclKind.CACHE:
                    layout = self.strategy.cache_layout(v.dims, self.sizes, v.name or "")
                else:
                    layout = self.strategy.weight_layout(v.dims, self.sizes, v.name or "")
            except ShardcError as err:  # the preset cannot place it: say where it is declared
                raise ShardcError(err.message, self.g.source, d.loc, hint=err.hint) from None
        if layout is None:
            self.floating[v.id] = _Floating(d, len(out), out)
            out.append(d)  # patched when its first use decides its layout
            return
        self.place(d, layout, out, len(out))

    def place(self, d: Decl, layout: Layout, out: list[Stmt], index: int) -> Value:
        v = d.value
        try:
            layout.check(self.sizes, self.mesh, v.dims)
        except ShardcError as err:
            raise ShardcError(f"'{v.name}': {err.message}", self.g.source, d.loc, hint=err.hint) from None
        new = self.new_value(v.name, v.type, layout)
        stmt = Decl(d.kind, new, d.loc, d.trivia)
        if index == len(out):
            out.append(stmt)
        else:
            out[index] = stmt
        self.env[v.id] = new
        return new

    def settle_floating(self, old_id: int, layout: Layout) -> Value:
        f = self.floating.pop(old_id)
        return self.place(f.decl, layout, f.block, f.index)

    # -- reshards ------------------------------------------------------------------------
    def reshard_to(self, value: Value, target: Layout, reason: str, line: int, out: list[Stmt],
                   final_name: str | None = None) -> Value:
        """Insert the collectives taking ``value`` to ``target``; return the new value."""
        assert value.layout is not None
        if value.layout == target:
            return value
        key = (value.id, target)
        for cache in reversed(self.caches):
            if key in cache and final_name is None:
                return cache[key]
        steps = reshard(value.layout, target, self.sizes, self.mesh, itemsize=value.dtype.bytes)
        current = value
        for i, step in enumerate(steps):
            last = i == len(steps) - 1
            name = final_name if (last and final_name) else self.fresh(value.name)
            current = self.emit_step(current, step, name, reason, line, out)
        if final_name is None:
            self.caches[-1][key] = current
        return current

    def emit_step(self, operand: Value, step: Step, name: str, reason: str, line: int,
                  out: list[Stmt]) -> Value:
        result = self.new_value(name, operand.type, step.after)
        out.append(Op(step.kind, result, (operand,), step.attrs, Loc(line, 1) if line else NOLOC))
        self.reasons[result.id] = reason
        return result

    def cost(self, value: Value | None, target: Layout | None) -> float:
        if value is None or target is None or value.layout is None or value.layout == target:
            return 0.0
        steps = reshard(value.layout, target, self.sizes, self.mesh, itemsize=value.dtype.bytes)
        return sum(s.bytes_per_chip for s in steps)

    # -- ops -----------------------------------------------------------------------------
    def op(self, op: Op, out: list[Stmt]) -> None:
        current: list[Value | None] = []
        for o in op.operands:
            current.append(self.env.get(o.id) if isinstance(o, Value) else None)
        view = OpView(
            op=op,
            current=tuple(v.layout if v is not None else None for v in current),
            stationary=tuple(isinstance(o, Value) and self.is_stationary(o) and o.id in self.env
                             for o in op.operands),
            gatherable=tuple(isinstance(o, Value) and self.decl_kinds.get(o.id) is DeclKind.PARAM
                             and o.id in self.env for o in op.operands),
            names=tuple(o.name or "a temporary" if isinstance(o, Value) else "" for o in op.operands),
            strategy=self.strategy,
            sizes=self.sizes,
        )
        choice = self.choose(op, view, current)
        operands: list[Operand] = []
        for i, o in enumerate(op.operands):
            if isinstance(o, Const):
                operands.append(o)
                continue
            target = choice.targets[i]
            assert target is not None
            if current[i] is None:  # a floating weight takes the layout its first use asks for
                if o.id in self.floating:
                    operands.append(self.settle_floating(o.id, target))
                else:  # the same weight twice in one op: placed by its first operand
                    operands.append(self.reshard_to(self.env[o.id], target, choice.reasons[i], op.loc.line, out))
                continue
            value = current[i]
            assert value is not None
            reason = f"{choice.reasons[i]}; feeds {_describe(op)} on line {op.loc.line}"
            operands.append(self.reshard_to(value, target, reason, op.loc.line, out))
        inferred = infer(op.kind, op.attrs, tuple(operands), operand_layouts(tuple(operands)),
                         op.result.dims, self.mesh, self.sizes)
        want, why = self.post.get(op.result.id, (None, ""))
        final = inferred.layout if op.result.id not in self.post else (
            want if want is not None else self.strategy.complete(inferred.layout, self.sizes))
        needs_post = final != inferred.layout
        name = op.result.name if (op.result.name and not needs_post) else self.fresh(op.result.name)
        result = self.new_value(name, op.result.type, inferred.layout)
        out.append(Op(op.kind, result, tuple(operands), op.attrs, op.loc, op.trivia))
        if inferred.stats_axes:
            assert isinstance(op.attrs, OverAttrs)
            self.reasons[result.id] = describe_stats(op.kind, op.attrs.dim, inferred.stats_axes, op.loc.line)
        if needs_post:
            final_name = op.result.name or self.fresh(None)
            result = self.reshard_to(result, final, why, op.loc.line, out, final_name=final_name)
        self.env[op.result.id] = result

    def choose(self, op: Op, view: OpView, current: list[Value | None]) -> Candidate:
        best: tuple[float, Candidate] | None = None
        errors: list[str] = []
        for cand in CANDIDATES[op.kind](view):
            try:
                operands = tuple(
                    o if isinstance(o, Const) else Value(o.id, o.name, o.type, cand.targets[i])
                    for i, o in enumerate(op.operands))
                result = infer(op.kind, op.attrs, operands, operand_layouts(operands), op.result.dims,
                               self.mesh, self.sizes).layout
                for t, o in zip(cand.targets, op.operands, strict=True):
                    if t is not None and isinstance(o, Value):
                        t.check(self.sizes, self.mesh, o.dims)
            except ShardcError as err:
                errors.append(err.message)
                continue
            total = sum(self.cost(v, t) for v, t in zip(current, cand.targets, strict=True))
            # Pending partial sums must be completed some time: count that, so a candidate that
            # defers them onto a bigger result does not look free.
            total += self.cost(Value(op.result.id, None, op.result.type, result),
                               self.strategy.complete(result, self.sizes))
            if best is None or total < best[0]:
                best = (total, cand)  # ties keep the earlier candidate
        if best is None:
            raise ShardcError(f"cannot shard {_describe(op)}: " + "; ".join(errors or ["no candidate layout"]),
                              self.g.source, op.loc)
        return best[1]

    def is_stationary(self, v: Value) -> bool:
        return self.decl_kinds.get(v.id) in (DeclKind.PARAM, DeclKind.CACHE)

    # -- blocks ----------------------------------------------------------------------------
    def output(self, stmt: Output, out: list[Stmt]) -> None:
        values = []
        for v in stmt.values:
            if v.id in self.env:
                new = self.env[v.id]
            else:  # a weight nothing placed yet: the output pin (or replication) places it
                new = self.settle_floating(v.id, stmt.pin or Layout.replicated(v.dims))
            if stmt.pin is not None and new.layout != stmt.pin:
                raise ShardcError(self.output_pin_message(v, new, stmt.pin), self.g.source, stmt.loc)
            values.append(new)
        out.append(Output(tuple(values), stmt.pin, stmt.loc, stmt.trivia))

    def output_pin_message(self, v: Value, new: Value, pin: Layout) -> str:
        """Why an output pin cannot be honoured (outputs keep their names, so only the
        statement computing the value could have been resharded)."""
        have = new.layout.format(self.mesh) if new.layout else "unplaced"
        want = pin.format(self.mesh)
        carried = any(v.id in (c.arg.id, c.result.id) for r in self.g.repeats for c in r.carries)
        if carried:
            return (f"cannot pin output '{v.name}' to {want}: it is loop-carried, and a loop-carried value "
                    f"keeps the layout it enters the repeat with ({have}); pin the value entering the "
                    "repeat instead")
        if v.id in self.decl_kinds:
            return (f"cannot pin output '{v.name}' to {want}: it is declared as {have}; pin its declaration "
                    "instead")
        return (f"cannot pin output '{v.name}' to {want}: its own statement pins it to {have}; "
                "the two pins disagree")

    def repeat(self, rep: Repeat, index: int, out: list[Stmt]) -> None:
        args = []
        for c in rep.carries:
            init = self.env[c.init.id]
            assert init.layout is not None
            arg = self.new_value(c.arg.name, c.arg.type, init.layout)
            self.env[c.arg.id] = arg
            args.append((init, arg))
        self.caches.append({})
        self.repeat_index, self.count = index, rep.count
        body: list[Stmt] = []
        try:
            self.block(rep.body.stmts, body)
            carries = []
            for c, (init, arg) in zip(rep.carries, args, strict=True):
                nxt = self.env[c.next.id]
                assert arg.layout is not None
                nxt = self.reshard_to(nxt, arg.layout, "a loop-carried value keeps one layout from layer to "
                                      "layer", rep.loc.line, body, final_name=c.arg.name)
                result = self.new_value(c.result.name, c.result.type, arg.layout)
                self.env[c.result.id] = result
                carries.append(Carry(init, arg, nxt, result))
        finally:
            self.caches.pop()
            self.repeat_index, self.count = None, 1
        out.append(Repeat(rep.count, tuple(carries), Block(tuple(body)), rep.loc, rep.trivia, rep.close_trivia))

    def block(self, stmts: Iterable[Stmt], out: list[Stmt]) -> None:
        for stmt in stmts:
            if isinstance(stmt, Decl):
                self.decl(stmt, out)
            elif isinstance(stmt, Op):
                if self.sums.is_chain_link(stmt):
                    continue  # sharded with the sum it belongs to
                if self.sums.is_chain_root(stmt):
                    self.sums.shard(stmt, out)
                else:
                    self.op(stmt, out)
            elif isinstance(stmt, Output):
                self.output(stmt, out)
            else:
                assert isinstance(stmt, Repeat)
                self.repeat(stmt, self.g.repeats.index(stmt), out)
        # Weights nothing used: replicated.
        for old_id in [i for i, f in self.floating.items() if f.block is out]:
            f = self.floating[old_id]
            self.settle_floating(old_id, Layout.replicated(f.decl.value.dims))

    def run(self) -> ShardResult:
        body: list[Stmt] = []
        self.block(self.g.body.stmts, body)
        g = self.g
        sharded, ids = renumber(replace(g, mesh=self.mesh, body=Block(tuple(body))))
        verify_sharded(sharded)
        reasons = {ids[old]: why for old, why in self.reasons.items()}
        return ShardResult(sharded, self.strategy, collectives_of(sharded, reasons))


def _describe(op: Op) -> str:
    name = op.result.name or "a temporary"
    return f"{op.kind} -> {name}"


# --- public entry points -------------------------------------------------------------------
def resolve_mesh(g: Graph, mesh: Mesh | str | None, strategy: PresetChoice = None) -> Mesh:
    """``mesh`` (a Mesh or spec such as "4x4x4"), else the mesh ``strategy`` is bound to (a
    :class:`Strategy`), else the program's mesh line, else an error."""
    if isinstance(mesh, str):
        mesh = Mesh.parse(mesh)
    if mesh is None and isinstance(strategy, Strategy):
        mesh = strategy.mesh
    if mesh is None:
        mesh = g.mesh
    if mesh is None:
        raise ShardcError("no mesh: give one with --mesh (e.g. --mesh 4x4x4) or a 'mesh' line in the program",
                          g.source)
    return mesh


def shard_program(g: Graph, mesh: Mesh | str | None = None, strategy: PresetChoice = None,
                  attention: Attention | str | None = None, *, ffn: str | None = None,
                  roles: RoleAssignment | None = None) -> ShardResult:
    """Shard ``g`` and report the collectives (see :func:`shard`)."""
    if ffn is not None:
        if strategy is not None:
            raise ShardcError("give the feed-forward preset once: as the strategy or as ffn=, not both")
        strategy = ffn
    mesh = resolve_mesh(g, mesh, strategy)
    if g.is_sharded:
        if mesh != g.mesh:
            raise ShardcError(f"the program is already sharded for mesh {g.mesh.spec() if g.mesh else '?'}; "
                              f"it cannot be resharded for {mesh.spec()}", g.source)
        verify_sharded(g)
        return ShardResult(g, None, collectives_of(g))
    if g.mesh != mesh:
        g = with_mesh(g, mesh)
    bound = make_strategy(g, mesh, strategy, attention, roles)
    return _Sharder(g, mesh, bound).run()


def shard(g: Graph, mesh: Mesh | str | None = None, strategy: PresetChoice = None,
          attention: Attention | str | None = None, *, ffn: str | None = None,
          roles: RoleAssignment | None = None) -> Graph:
    """The sharded program: every value has a layout, every collective is an op.

    ``strategy`` is a :class:`~shardc.sharding.presets.Strategy` (a preset already
    bound to a mesh, see :func:`~shardc.sharding.presets.bind`), a
    :class:`~shardc.sharding.presets.Preset` of one's own, or the name of one of
    the paper's: ``1d-ws 2d-ws wg-x wg-xy wg-xyz`` or ``none`` (default
    ``2d-ws``; ``ffn=`` is the same by keyword).  ``attention`` is ``heads`` or
    ``batch`` (default: ``batch`` when the program reads a KV cache and the
    batch divides over the mesh), and ``roles`` says which mesh axes play the
    preset's roles x, y, z (default: in order; see
    :func:`~shardc.sharding.presets.default_roles`); neither goes with a Strategy.
    """
    return shard_program(g, mesh, strategy, attention, ffn=ffn, roles=roles).graph
