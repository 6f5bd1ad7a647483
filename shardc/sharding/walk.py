"""The steps of the sharding pass: what placing a declaration or sharding an op does to a partial program.

The pass (:mod:`shardc.sharding.shard`) walks the source program statement by
statement.  Everything the walk has decided so far is a :class:`State`: the
sharded statements emitted, the sharded counterpart of every source value, the
reshards already made (so a value moved twice to one layout moves once), the
weights still *floating* (waiting for their first use to choose a layout), and
the estimated seconds of what was emitted.  A :class:`State` is cheap to copy,
so the layout search (:mod:`shardc.sharding.search`) can follow several choices
from one state; the statements themselves are immutable and shared.

What stays fixed for the whole walk -- the program, mesh, strategy, chip
profile and the memo tables -- is the :class:`Walk`.  Its methods are the
transitions: :meth:`Walk.decl`, :meth:`Walk.options` / :meth:`Walk.apply` for an
op, :meth:`Walk.output`, :meth:`Walk.enter` / :meth:`Walk.exit` for a repeat.
Every emitted op is priced by :func:`shardc.sharding.timing.op_seconds`, the cost
model's own per-op time, times the trip count of the block it is in.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Hashable

from shardc.errors import NOLOC, Loc, ShardcError
from shardc.hardware.comm import CommMode
from shardc.hardware.profile import ChipProfile
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
from shardc.sharding.candidates import CANDIDATES, Candidate, OpView
from shardc.sharding.presets import Strategy
from shardc.sharding.reshard import Step, reshard
from shardc.sharding.rules import Inferred, infer, operand_layouts
from shardc.sharding.stats import describe_stats
from shardc.sharding.sums import SumChains
from shardc.sharding.timing import op_floor, op_seconds

__all__ = ["Option", "State", "Walk", "describe"]

PostRequirement = tuple[Layout | None, str]
"""A constraint on a value's final layout: the layout (None: complete values) and why."""


@dataclass(frozen=True)
class Option:
    """One legal way to shard an op: its candidate, the result layout its rule derives, and
    the bytes its reshards move (the greedy pass's measure)."""

    index: int  # position in the op's candidate list
    candidate: Candidate
    inferred: Inferred  # the rule's result for the candidate's operand layouts
    moved_bytes: float

    @property
    def result(self) -> Layout:
        return self.inferred.layout


@dataclass(frozen=True)
class Decision:
    """A choice the walk made at an op with more than one option (for ``--explain``)."""

    where: tuple[int, int]  # (statement of the walk, add within a sum chain)
    op: Op  # the source op
    chosen: Option
    options: tuple[Option, ...]  # every legal option there
    first_id: int  # the values the choice created: ids first_id .. end_id - 1
    end_id: int


class State:
    """A partial sharded program (module docstring).  Copy with :meth:`copy` before branching."""

    __slots__ = ("env", "floating", "caches", "outs", "frames", "names", "reasons", "next_id", "seconds",
                 "count", "decisions")

    def __init__(self) -> None:
        self.env: dict[int, Value] = {}  # source value id -> its sharded counterpart
        self.floating: dict[int, tuple[Decl, int, int]] = {}  # weight id -> (decl, block depth, index)
        self.caches: list[dict[tuple[int, Layout], Value]] = [{}]  # per open block: (value, layout) -> moved
        self.outs: list[list[Stmt]] = [[]]  # the statements of each open block
        self.frames: list[list[tuple[Value, Value]]] = []  # per open repeat: (init, arg) per carry
        self.names: set[str] = set()  # names the walk made up
        self.reasons: tuple = ()  # linked list ((result id, why), rest): why each collective is there
        self.next_id = 0
        self.seconds = 0.0
        self.count = 1  # trip count of the innermost open block
        self.decisions: tuple = ()  # linked list (Decision, rest), newest first

    def copy(self) -> State:
        new = State.__new__(State)
        new.env = dict(self.env)
        new.floating = dict(self.floating)
        new.caches = [dict(c) for c in self.caches]
        new.outs = [list(o) for o in self.outs]
        new.frames = [list(f) for f in self.frames]
        new.names = set(self.names)
        new.reasons, new.next_id, new.seconds = self.reasons, self.next_id, self.seconds
        new.count, new.decisions = self.count, self.decisions
        return new

    def layout_so_far(self, o: Operand) -> Layout | None:
        """The layout of the sharded counterpart of a source operand (None: a constant or unplaced)."""
        v = self.env.get(o.id) if isinstance(o, Value) else None
        return v.layout if v is not None else None

    def reason_map(self) -> dict[int, str]:
        out: dict[int, str] = {}
        node = self.reasons
        while node:
            (vid, why), node = node
            out.setdefault(vid, why)
        return out

    def decision_list(self) -> list[Decision]:
        out: list[Decision] = []
        node = self.decisions
        while node:
            d, node = node
            out.append(d)
        return out[::-1]

    def key(self, live: tuple[int, ...]) -> Hashable:
        """What decides the rest of the walk's cost, given the source values still to be used.

        Two states with equal keys at the same point of the walk have the same cheapest
        completion, so the search keeps only the cheaper of them.
        """
        layouts = tuple(v.layout if (v := self.env.get(i)) is not None else None for i in live)
        floating = tuple(i in self.floating for i in live)
        origin = {self.env[i].id: i for i in live if i in self.env}
        moved = tuple(frozenset((origin[vid], target) for vid, target in cache if vid in origin)
                      for cache in self.caches)
        return layouts, floating, moved


class Walk:
    """The fixed context of one sharding of a program, and the transitions (module docstring)."""

    def __init__(self, g: Graph, mesh: Mesh, strategy: Strategy, chip: ChipProfile, mode: CommMode,
                 post: dict[int, PostRequirement]) -> None:
        self.g, self.mesh, self.strategy, self.chip, self.mode = g, mesh, strategy, chip, mode
        self.sizes = g.sizes
        self.post = post
        self.decl_kinds: dict[int, DeclKind] = {d.value.id: d.kind for d, _ in g.decls()}
        self.taken = g.names()
        self.sums = SumChains(g)
        self._options: dict[Hashable, list[Option] | ShardcError] = {}
        self._checked: dict[tuple[Layout, tuple[str, ...]], ShardcError | None] = {}
        # Reshards and op times depend on the sizes, mesh, chip and model only, not on the strategy:
        # walks that share those (the planner's presets and attention layouts on one mesh) share them.
        shared = _shared_memo((tuple(sorted(self.sizes.items())), mesh, chip, mode))
        self._reshards: dict[tuple[Layout, Layout, int], tuple[Step, ...]] = shared[0]
        self._seconds: dict[Hashable, float] = shared[1]
        self._floors: dict[Hashable, float] = shared[2]

    # -- helpers -----------------------------------------------------------------------------
    def new_value(self, st: State, name: str | None, type_: TensorType, layout: Layout) -> Value:
        st.next_id += 1
        return Value(st.next_id - 1, name, type_, layout)

    def fresh(self, st: State, base: str | None) -> str:
        base = base or "t"
        if base[-1].isdigit():
            base += "_"
        n = 1
        while f"{base}{n}" in self.taken or f"{base}{n}" in st.names:
            n += 1
        st.names.add(f"{base}{n}")
        return f"{base}{n}"

    def check(self, layout: Layout, dims: tuple[str, ...]) -> None:
        """:meth:`Layout.check` on this walk's sizes and mesh (memoised: the same few layouts recur)."""
        key = (layout, dims)
        if key not in self._checked:
            try:
                layout.check(self.sizes, self.mesh, dims)
                self._checked[key] = None
            except ShardcError as err:
                self._checked[key] = err
        found = self._checked[key]
        if found is not None:
            raise found.with_traceback(None)  # the same error again, not a longer traceback

    def steps(self, src: Layout, dst: Layout, itemsize: int) -> tuple[Step, ...]:
        """The collectives taking ``src`` to ``dst`` (memoised: the search asks many times)."""
        key = (src, dst, itemsize)
        if key not in self._reshards:
            self._reshards[key] = tuple(reshard(src, dst, self.sizes, self.mesh, itemsize=itemsize))
        return self._reshards[key]

    def seconds(self, op: Op) -> float:
        """The estimate's time of one execution of ``op`` (memoised by what it depends on)."""
        key = (op.kind, op.attrs, op.result.type, op.result.layout,
               tuple((o.type, o.layout) if isinstance(o, Value) else o for o in op.operands))
        if key not in self._seconds:
            self._seconds[key] = op_seconds(op, self.sizes, self.mesh, self.chip, self.mode)
        return self._seconds[key]

    def floor(self, op: Op) -> float:
        """:func:`~shardc.sharding.timing.op_floor` of the source op ``op`` on this walk's chips
        (memoised by what it depends on: the whole tensors)."""
        key = (op.kind, op.attrs, op.result.type, tuple(o.type if isinstance(o, Value) else o for o in op.operands))
        found = self._floors.get(key)
        if found is None:
            found = self._floors[key] = op_floor(op, self.sizes, self.mesh.num_chips, self.chip)
        return found

    def emit(self, st: State, op: Op, reason: str | None = None) -> None:
        st.outs[-1].append(op)
        st.seconds += self.seconds(op) * st.count
        if reason is not None:
            st.reasons = ((op.result.id, reason), st.reasons)

    # -- declarations ------------------------------------------------------------------------
    def decl(self, st: State, d: Decl) -> None:
        v = d.value
        layout = v.layout
        if layout is None:
            try:
                layout = self.strategy.placement(d.kind, v.dims, self.sizes, v.name or "")
            except ShardcError as err:  # the preset cannot place it: say where it is declared
                raise ShardcError(err.message, self.g.source, d.loc, hint=err.hint) from None
        if layout is None:
            st.floating[v.id] = (d, len(st.outs) - 1, len(st.outs[-1]))
            st.outs[-1].append(d)  # replaced when its first use decides its layout
            return
        st.outs[-1].append(d)
        self.place(st, d, layout, len(st.outs) - 1, len(st.outs[-1]) - 1)

    def place(self, st: State, d: Decl, layout: Layout, depth: int, index: int) -> Value:
        v = d.value
        try:
            layout.check(self.sizes, self.mesh, v.dims)
        except ShardcError as err:
            raise ShardcError(f"'{v.name}': {err.message}", self.g.source, d.loc, hint=err.hint) from None
        new = self.new_value(st, v.name, v.type, layout)
        st.outs[depth][index] = Decl(d.kind, new, d.loc, d.trivia)
        st.env[v.id] = new
        return new

    def settle(self, st: State, weight_id: int, layout: Layout) -> Value:
        """Place a floating weight where its first use (or the end of its block) wants it."""
        d, depth, index = st.floating.pop(weight_id)
        return self.place(st, d, layout, depth, index)

    def close_block(self, st: State) -> None:
        """Weights of the innermost block that nothing used: replicated."""
        depth = len(st.outs) - 1
        for wid in [i for i, (_, dd, _) in st.floating.items() if dd == depth]:
            self.settle(st, wid, Layout.replicated(st.floating[wid][0].value.dims))

    # -- reshards ----------------------------------------------------------------------------
    def reshard_to(self, st: State, value: Value, target: Layout, reason: str, line: int,
                   final_name: str | None = None) -> Value:
        """Emit the collectives taking ``value`` to ``target``; return the new value."""
        assert value.layout is not None
        if value.layout == target:
            return value
        key = (value.id, target)
        if final_name is None:
            for cache in reversed(st.caches):
                if key in cache:
                    return cache[key]
        steps = self.steps(value.layout, target, value.dtype.bytes)
        current = value
        for i, step in enumerate(steps):
            last = i == len(steps) - 1
            name = final_name if (last and final_name) else self.fresh(st, value.name)
            result = self.new_value(st, name, current.type, step.after)
            self.emit(st, Op(step.kind, result, (current,), step.attrs, Loc(line, 1) if line else NOLOC), reason)
            current = result
        if final_name is None:
            st.caches[-1][key] = current
        return current

    def moved_bytes(self, value: Value | None, target: Layout | None) -> float:
        if value is None or target is None or value.layout is None or value.layout == target:
            return 0.0
        return sum(s.bytes_per_chip for s in self.steps(value.layout, target, value.dtype.bytes))

    # -- ops ---------------------------------------------------------------------------------
    def options(self, st: State, op: Op) -> list[Option]:
        """The legal candidates for ``op`` in this state, in the candidate table's order.

        Raises :class:`ShardcError` (at the op) when there is none.
        """
        current = tuple(st.env.get(o.id) if isinstance(o, Value) else None for o in op.operands)
        key = (op.result.id, tuple(v.layout if v is not None else None for v in current))
        if key not in self._options:
            try:
                self._options[key] = self._legal(op, current)
            except ShardcError as err:
                self._options[key] = err
        found = self._options[key]
        if isinstance(found, ShardcError):
            raise found
        return found

    def _legal(self, op: Op, current: tuple[Value | None, ...]) -> list[Option]:
        view = OpView(
            op=op,
            current=tuple(v.layout if v is not None else None for v in current),
            stationary=tuple(v is not None and self.kind_of(o) in (DeclKind.PARAM, DeclKind.CACHE)
                             for o, v in zip(op.operands, current, strict=True)),
            gatherable=tuple(v is not None and self.kind_of(o) is DeclKind.PARAM
                             for o, v in zip(op.operands, current, strict=True)),
            names=tuple(o.name or "a temporary" if isinstance(o, Value) else "" for o in op.operands),
            strategy=self.strategy,
            sizes=self.sizes,
        )
        legal: list[Option] = []
        errors: list[str] = []
        for index, cand in enumerate(CANDIDATES[op.kind](view)):
            try:
                operands = tuple(
                    o if isinstance(o, Const) else Value(o.id, o.name, o.type, cand.targets[i])
                    for i, o in enumerate(op.operands))
                inferred = infer(op.kind, op.attrs, operands, operand_layouts(operands), op.result.dims,
                                 self.mesh, self.sizes)
                for t, o in zip(cand.targets, op.operands, strict=True):
                    if t is not None and isinstance(o, Value):
                        self.check(t, o.dims)
            except ShardcError as err:
                errors.append(err.message)
                continue
            if any(o.candidate.targets == cand.targets for o in legal):
                continue  # the same layouts offered again (for another reason): one option
            moved = sum(self.moved_bytes(v, t) for v, t in zip(current, cand.targets, strict=True))
            legal.append(Option(index, cand, inferred, moved))
        if not legal:
            raise ShardcError(f"cannot shard {describe(op)}: " + "; ".join(errors or ["no candidate layout"]),
                              self.g.source, op.loc)
        return legal

    def kind_of(self, o: Operand) -> DeclKind | None:
        """What a declared operand is (param, cache, input); None for a computed value or constant."""
        return self.decl_kinds.get(o.id) if isinstance(o, Value) else None

    def greedy(self, op: Op, options: list[Option]) -> Option:
        """The option whose reshards move the fewest bytes, counting the completion of pending
        partial sums of its result (so deferring them onto a bigger result does not look free);
        ties keep the earlier candidate."""
        def total(o: Option) -> float:
            completed = self.strategy.complete(o.result, self.sizes)
            return o.moved_bytes + self.moved_bytes(Value(op.result.id, None, op.result.type, o.result), completed)
        return min(options, key=total)

    def apply(self, st: State, op: Op, option: Option) -> None:
        """Shard ``op`` with ``option``: emit the operands' reshards, the op, and its result's pin."""
        cand = option.candidate
        operands: list[Operand] = []
        for i, o in enumerate(op.operands):
            if isinstance(o, Const):
                operands.append(o)
                continue
            target = cand.targets[i]
            assert target is not None
            value = st.env.get(o.id)
            if value is None:  # a floating weight takes the layout its first use asks for
                if o.id in st.floating:
                    operands.append(self.settle(st, o.id, target))
                else:  # the same weight twice in one op: placed by its first operand
                    operands.append(self.reshard_to(st, st.env[o.id], target, cand.reasons[i], op.loc.line))
                continue
            # What it feeds is read off the sharded program (collectives_of), in its printed names.
            operands.append(self.reshard_to(st, value, target, cand.reasons[i], op.loc.line))
        layouts = operand_layouts(tuple(operands))
        # The operands now have the candidate's layouts, whose result the option already holds.
        inferred = option.inferred if layouts == cand.targets else infer(
            op.kind, op.attrs, tuple(operands), layouts, op.result.dims, self.mesh, self.sizes)
        want, why = self.post.get(op.result.id, (None, ""))
        final = inferred.layout if op.result.id not in self.post else (
            want if want is not None else self.strategy.complete(inferred.layout, self.sizes))
        needs_post = final != inferred.layout
        name = op.result.name if (op.result.name and not needs_post) else self.fresh(st, op.result.name)
        result = self.new_value(st, name, op.result.type, inferred.layout)
        stats = None
        if inferred.stats_axes:
            assert isinstance(op.attrs, OverAttrs)
            stats = describe_stats(op.kind, op.attrs.dim, inferred.stats_axes)
        self.emit(st, Op(op.kind, result, tuple(operands), op.attrs, op.loc, op.trivia), stats)
        if needs_post:
            final_name = op.result.name or self.fresh(st, None)
            result = self.reshard_to(st, result, final, why, op.loc.line, final_name=final_name)
        st.env[op.result.id] = result

    # -- outputs and repeats -----------------------------------------------------------------
    def output(self, st: State, stmt: Output, pin_message: Callable[[State, Value, Value, Layout], str]) -> None:
        values = []
        for v in stmt.values:
            if v.id in st.env:
                new = st.env[v.id]
            else:  # a weight nothing placed yet: the output pin (or replication) places it
                new = self.settle(st, v.id, stmt.pin or Layout.replicated(v.dims))
            if stmt.pin is not None and new.layout != stmt.pin:
                raise ShardcError(pin_message(st, v, new, stmt.pin), self.g.source, stmt.loc)
            values.append(new)
        st.outs[-1].append(Output(tuple(values), stmt.pin, stmt.loc, stmt.trivia))

    def enter(self, st: State, rep: Repeat) -> None:
        """Open a repeat: loop-carried values enter with the layout of their initial value."""
        frame = []
        for c in rep.carries:
            init = st.env[c.init.id]
            assert init.layout is not None
            arg = self.new_value(st, c.arg.name, c.arg.type, init.layout)
            st.env[c.arg.id] = arg
            frame.append((init, arg))
        st.frames.append(frame)
        st.caches.append({})
        st.outs.append([])
        st.count = rep.count

    def exit(self, st: State, rep: Repeat) -> None:
        """Close a repeat: the end of the body is resharded back to each carry's layout."""
        carries = []
        for c, (init, arg) in zip(rep.carries, st.frames[-1], strict=True):
            assert arg.layout is not None
            nxt = self.reshard_to(st, st.env[c.next.id], arg.layout, "a loop-carried value keeps one layout "
                                  "from layer to layer", rep.loc.line, final_name=c.arg.name)
            result = self.new_value(st, c.result.name, c.result.type, arg.layout)
            st.env[c.result.id] = result
            carries.append(Carry(init, arg, nxt, result))
        self.close_block(st)
        body = st.outs.pop()
        st.caches.pop()
        st.frames.pop()
        st.count = 1
        st.outs[-1].append(Repeat(rep.count, tuple(carries), Block(tuple(body)), rep.loc, rep.trivia,
                                  rep.close_trivia))


_SHARED: OrderedDict[Hashable, tuple[dict, dict, dict]] = OrderedDict()
_SHARED_MAX = 256  # contexts kept, the least recently used dropped (each a few thousand entries at most;
# a planner call on 512 chips has over a hundred: a mesh for each shape and role assignment, padded or not)


def _shared_memo(context: Hashable) -> tuple[dict, dict, dict]:
    """The reshard, op-time and op-floor memo tables of one (sizes, mesh, chip, model) context."""
    found = _SHARED.get(context)
    if found is None:
        if len(_SHARED) >= _SHARED_MAX:
            _SHARED.popitem(last=False)
        found = _SHARED[context] = ({}, {}, {})
    else:
        _SHARED.move_to_end(context)
    return found


def describe(op: Op) -> str:
    name = op.result.name or "a temporary"
    return f"{op.kind} -> {name}"
