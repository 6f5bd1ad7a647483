"""The layout search: the cheapest way, under the estimate, to shard a whole program.

The sharding pass walks the source program once (a repeat body once, priced
times its trip count).  At every op the candidate table
(:data:`~shardc.sharding.candidates.CANDIDATES`) offers a few legal ways to lay
out its operands; a choice decides which reshards are emitted and what layout
the result has, and so what every later op can do.  The preset is the
constraint the candidates respect: where weights and caches are stored, which
axes a weight-gathered preset gathers, where activations rest between layers.

:attr:`Method.SEARCH` (the default) is exact within that candidate set: a
dynamic program over the statements of the walk.  The states after each
statement are the partial programs of every combination of choices, and two
states that agree on everything the rest of the walk depends on -- the layout
of each value still to be used, the reshards already made of them, which
weights still float (:meth:`~shardc.sharding.walk.State.key`) -- have the same
cheapest completion, so only the cheaper is kept.  The cost of a state is the
estimate's own time of what it emitted (:func:`shardc.sharding.timing.op_seconds`:
compute, including compute repeated on chips that hold the same data, HBM
traffic, collectives on the chip's links, per-op overhead), so the winner is the
plan with the lowest estimated latency of all the plans the candidates can
express.  :attr:`Method.GREEDY` is the older policy: at each op, the option
whose reshards move the fewest bytes.

:func:`alternatives` explains a result: for each choice that put a collective
in the program, the cheapest plan that chose otherwise there, and how much
slower it is.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable, Hashable

from shardc.errors import ShardcError
from shardc.ir.graph import Decl, Op, Output, Repeat, Stmt, Value
from shardc.ir.layout import Layout
from shardc.sharding.walk import Decision, Option, State, Walk
from shardc.units import human_seconds

__all__ = ["Alternative", "Beaten", "Method", "Unit", "alternatives", "every_plan", "search", "units_of"]

PinMessage = Callable[[State, Value, Value, Layout], str]

# Two costs this close are equal: ties keep the earlier candidate, as the candidate table orders them.
_REL_TIE = 1e-9
# A partial plan is given up only when its floor is above the cutoff by more than this: far more
# than the rounding of sums taken in another order, and than the ties above.
_CUTOFF_MARGIN = 1e-6


class Beaten(Exception):
    """No plan of the program takes at most the cutoff asked for (:func:`search`'s ``cutoff``)."""

    def __init__(self, cutoff: float) -> None:
        super().__init__(f"no plan takes at most {cutoff!r} s")
        self.cutoff = cutoff


class Method(enum.StrEnum):
    """How the pass chooses among an op's candidates."""

    SEARCH = "search"
    GREEDY = "greedy"


class UnitKind(enum.Enum):
    DECL = "decl"
    OP = "op"
    SUM = "sum"  # the root of a sum chain, sharded as a whole
    OUTPUT = "output"
    ENTER = "enter"  # the start of a repeat
    EXIT = "exit"  # the end of a repeat


@dataclass(frozen=True)
class Unit:
    """One step of the walk, and the source values it reads."""

    kind: UnitKind
    stmt: Stmt
    uses: frozenset[int]


def units_of(walk: Walk) -> list[Unit]:
    """The steps of the walk over ``walk``'s program, in order (a repeat body once)."""
    sums = walk.sums
    out: list[Unit] = []

    def block(stmts: tuple[Stmt, ...]) -> None:
        for stmt in stmts:
            if isinstance(stmt, Decl):
                out.append(Unit(UnitKind.DECL, stmt, frozenset()))
            elif isinstance(stmt, Op):
                if sums.is_chain_link(stmt):
                    continue  # sharded with the sum it belongs to
                if sums.is_chain_root(stmt):
                    uses = frozenset(o.id for o in sums.leaves(stmt) if isinstance(o, Value))
                    out.append(Unit(UnitKind.SUM, stmt, uses))
                else:
                    out.append(Unit(UnitKind.OP, stmt, frozenset(v.id for v in stmt.inputs)))
            elif isinstance(stmt, Output):
                out.append(Unit(UnitKind.OUTPUT, stmt, frozenset(v.id for v in stmt.values)))
            else:
                assert isinstance(stmt, Repeat)
                out.append(Unit(UnitKind.ENTER, stmt, frozenset(c.init.id for c in stmt.carries)))
                block(stmt.body.stmts)
                out.append(Unit(UnitKind.EXIT, stmt,
                                frozenset(i for c in stmt.carries for i in (c.next.id, c.arg.id))))

    block(walk.g.body.stmts)
    return out


def _live_after(units: list[Unit]) -> list[tuple[int, ...]]:
    """For each unit, the source values some later unit reads (in a fixed order)."""
    live: list[tuple[int, ...]] = [()] * len(units)
    later: set[int] = set()
    for i in range(len(units) - 1, -1, -1):
        live[i] = tuple(sorted(later))
        later |= units[i].uses
    return live


Forbid = tuple[tuple[int, int], tuple[Layout | None, ...]] | None
"""A choice the search may not make: (where in the walk, operand layouts) -- for :func:`alternatives`."""


def _floors_after(walk: Walk, units: list[Unit]) -> list[float]:
    """For each unit, seconds the units after it add to any plan at least: each source op is
    emitted once, at no less than :func:`~shardc.sharding.timing.op_floor`, times the trip count
    of its block (a sum chain, whose adds the pass may regroup, and the rest count nothing)."""
    out = [0.0] * len(units)
    later, count = 0.0, 1
    for i in range(len(units) - 1, -1, -1):
        out[i] = later
        unit = units[i]
        if unit.kind is UnitKind.EXIT:
            assert isinstance(unit.stmt, Repeat)
            count = unit.stmt.count
        elif unit.kind is UnitKind.ENTER:
            count = 1
        elif unit.kind is UnitKind.OP:
            assert isinstance(unit.stmt, Op)
            later += walk.floor(unit.stmt) * count
    return out


class _Search:
    def __init__(self, walk: Walk, method: Method, pin_message: PinMessage, forbid: Forbid = None,
                 limit: int | None = None, cutoff: float | None = None) -> None:
        """``limit``: keep every state, merging none, and give up past ``limit`` of them (:func:`every_plan`);
        ``cutoff``: drop partial plans that cannot finish within it (:func:`search`)."""
        self.walk, self.method, self.pin_message, self.forbid, self.limit = walk, method, pin_message, forbid, limit
        self.units = units_of(walk)
        self.live = _live_after(self.units)
        self.error: ShardcError | None = None
        self.cutoff = cutoff
        self.rest = _floors_after(walk, self.units) if cutoff is not None else []

    def run(self) -> State:
        return min(self.finals(), key=lambda s: s.seconds)

    def finals(self) -> list[State]:
        frontier: list[State] = [State()]
        for i, unit in enumerate(self.units):
            merged: dict[Hashable, State] = {}
            for st in frontier:
                for t in self.expand(st, unit, i):
                    self.keep(merged, t.key(self.live[i]), t)
            frontier = list(merged.values())
            if not frontier:
                assert self.error is not None
                raise self.error
            if self.cutoff is not None:
                # Seconds only grow along the walk, by at least the floor of what is left.
                limit = self.cutoff * (1 + _CUTOFF_MARGIN)
                frontier = [st for st in frontier if st.seconds + self.rest[i] <= limit]
                if not frontier:
                    raise Beaten(self.cutoff)
        for st in frontier:
            self.walk.close_block(st)
        return frontier

    def keep(self, merged: dict[Hashable, State], key: Hashable, st: State) -> None:
        if self.limit is None:
            _keep(merged, key, st)
            return
        merged[len(merged)] = st  # every plan: merge nothing
        if len(merged) > self.limit:
            raise ShardcError(f"more than {self.limit} plans: too many to enumerate")

    def expand(self, st: State, unit: Unit, i: int) -> list[State]:
        """The states after ``unit``: one per choice for an op, else one (empty: no way through)."""
        walk = self.walk
        try:
            if unit.kind is UnitKind.OP:
                assert isinstance(unit.stmt, Op)
                return self.expand_op(st, unit.stmt, (i, 0))
            if unit.kind is UnitKind.SUM:
                assert isinstance(unit.stmt, Op)
                return self.expand_sum(st, unit.stmt, i)
            if unit.kind is UnitKind.DECL:
                assert isinstance(unit.stmt, Decl)
                walk.decl(st, unit.stmt)
            elif unit.kind is UnitKind.OUTPUT:
                assert isinstance(unit.stmt, Output)
                walk.output(st, unit.stmt, self.pin_message)
            elif unit.kind is UnitKind.ENTER:
                assert isinstance(unit.stmt, Repeat)
                walk.enter(st, unit.stmt)
            else:
                assert isinstance(unit.stmt, Repeat)
                walk.exit(st, unit.stmt)
        except ShardcError as err:
            self.error = self.error or err
            return []
        return [st]

    def expand_sum(self, st: State, root: Op, i: int) -> list[State]:
        ops = self.walk.sums.plan(root, st.layout_so_far)
        states = [st]
        for k, op in enumerate(ops):
            live = tuple(sorted(set(self.live[i]) | {o.id for later in ops[k + 1:] for o in later.inputs}))
            merged: dict[Hashable, State] = {}
            for s in states:
                for t in self.expand_op(s, op, (i, k)):
                    self.keep(merged, t.key(live), t)
            states = list(merged.values())
        return states

    def expand_op(self, st: State, op: Op, where: tuple[int, int]) -> list[State]:
        walk = self.walk
        try:
            options = walk.options(st, op)
        except ShardcError as err:
            self.error = self.error or err
            return []
        chosen: list[Option] = [walk.greedy(op, options)] if self.method is Method.GREEDY else options
        if self.forbid is not None and self.forbid[0] == where:
            chosen = [o for o in chosen if o.candidate.targets != self.forbid[1]]
            if not chosen:
                self.error = self.error or ShardcError(f"no other choice at {op.kind} -> {op.result.name}")
        out = []
        for option in chosen:
            t = st.copy() if len(chosen) > 1 else st
            first = t.next_id
            try:
                walk.apply(t, op, option)
            except ShardcError as err:
                self.error = self.error or err
                continue
            if len(options) > 1:
                t.decisions = (Decision(where, op, option, tuple(options), first, t.next_id), t.decisions)
            out.append(t)
        return out


def _keep(merged: dict[Hashable, State], key: Hashable, st: State) -> None:
    """Keep ``st`` under ``key`` unless an earlier state there is as cheap (ties: the earlier)."""
    held = merged.get(key)
    if held is None or st.seconds < held.seconds * (1 - _REL_TIE):
        merged[key] = st


def search(walk: Walk, method: Method, pin_message: PinMessage, cutoff: float | None = None) -> State:
    """The walk's final state: the cheapest plan (:attr:`Method.SEARCH`) or the greedy one.

    Raises the first :class:`ShardcError` met when no plan gets through the program.  ``cutoff``
    (seconds): partial plans whose time so far, plus a floor under the rest of the walk, is above
    it are dropped, and :class:`Beaten` is raised when none is left -- for a caller that only
    wants a plan faster than one it has (the planner's pruning).  A plan within the cutoff is
    found exactly as without it: every partial plan on its way is within it too.
    """
    return _Search(walk, method, pin_message, cutoff=cutoff).run()


def every_plan(walk: Walk, pin_message: PinMessage, limit: int) -> list[State]:
    """Every plan the candidates allow, merging none (exponential: the oracle of the search's
    exactness on small programs).  Raises :class:`ShardcError` past ``limit`` partial plans."""
    return _Search(walk, Method.SEARCH, pin_message, limit=limit).finals()


@dataclass(frozen=True)
class Alternative:
    """What a choice of the search beat: the cheapest plan that chose otherwise at that op."""

    decision: Decision
    other: Option | None  # the option the alternative took there (None: no other plan gets through)
    extra_seconds: float  # how much slower the alternative plan is, per program run

    def describe(self, walk: Walk) -> str:
        """One line for ``--explain``: what the alternative would have done at this op, and its cost."""
        if self.other is None:
            return "the only way through the program"
        op = self.decision.op
        moved = [f"{o.name or f'operand {i + 1}'} as {t.format(walk.mesh)}"
                 for i, (o, t, c) in enumerate(zip(op.operands, self.other.candidate.targets,
                                                   self.decision.chosen.candidate.targets, strict=True))
                 if isinstance(o, Value) and t is not None and t != c]
        how = f"{', '.join(moved) or 'its operands as they are'} at {op.kind} -> {op.result.name or 'a temporary'}"
        if self.extra_seconds <= _REL_TIE * max(abs(self.extra_seconds), 1e-30) or self.extra_seconds <= 0:
            return f"tied with {how} (the earlier candidate is kept)"
        return f"beat {how} by {human_seconds(self.extra_seconds)}"


def alternatives(walk: Walk, best: State, pin_message: PinMessage) -> dict[int, Alternative]:
    """For each choice of ``best`` that emitted a collective: the alternative it beat.

    Keyed by the id (in ``best``'s numbering) of every collective the choice emitted.  Each
    alternative is a search with that one choice forbidden (the op may not take the same
    operand layouts), so it costs a search per choice.
    """
    emitted: set[int] = set()

    def collect(stmts: list[Stmt] | tuple[Stmt, ...]) -> None:
        for s in stmts:
            if isinstance(s, Op) and s.kind.is_collective:
                emitted.add(s.result.id)
            elif isinstance(s, Repeat):
                collect(s.body.stmts)

    collect(best.outs[0])
    out: dict[int, Alternative] = {}
    for d in best.decision_list():
        ids = [i for i in range(d.first_id, d.end_id) if i in emitted]
        if not ids:
            continue
        forbid = (d.where, d.chosen.candidate.targets)
        try:
            alt: State | None = _Search(walk, Method.SEARCH, pin_message, forbid=forbid).run()
        except ShardcError:
            alt = None
        found = Alternative(d, None, float("inf"))
        if alt is not None:
            taken = next((a for a in alt.decision_list() if a.where == d.where), None)
            found = Alternative(d, taken.chosen if taken is not None else None, alt.seconds - best.seconds)
        for i in ids:
            out[i] = found
    return out
