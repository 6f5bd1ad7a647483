"""Costing the planner's candidates: each one's figures, once per distinct plan, on all cores.

An :class:`Evaluator` shards and costs one :class:`~shardc.planner.space.Candidate` at a
time (the layout search, then the figures the ranking reads) and gives its
:class:`~shardc.planner.bound.Floor` before any search.  :func:`evaluate_all` spreads
many candidates over worker processes, each mesh's candidates one task for the next free
worker (they share its reshard tables); a worker sends back figures only, and the parent searches a
:class:`Ranked` candidate's program again when one is asked for (the few the planner
prints or explains), which costs far less than sending every program back.
"""
from __future__ import annotations

import enum
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Sequence

from shardc.cost.memory import memory_peak, resident_bytes
from shardc.cost.model import CostReport, estimate, mfu, param_count
from shardc.errors import ShardcError
from shardc.hardware.comm import comm_mode, priced_in
from shardc.hardware.profile import ChipProfile
from shardc.ir.graph import DType, Graph
from shardc.ir.transforms import with_mesh, with_sizes, with_weight_dtype
from shardc.planner.bound import Declared, Floor, declared, floor, roofline_floor
from shardc.planner.space import Candidate
from shardc.sharding.presets import FFN, PRESETS, bind
from shardc.sharding.search import Beaten
from shardc.sharding.shard import shard_program

__all__ = ["Evaluator", "Figures", "Objective", "Ranked", "evaluate_all", "figures", "score"]


class Objective(enum.StrEnum):
    LATENCY = "latency"
    THROUGHPUT = "throughput"
    COST = "cost"


@dataclass(frozen=True)
class Figures:
    """What the ranking reads of one candidate: the estimate's latency (the layout search's own
    number, :attr:`shardc.sharding.sharded.ShardResult.seconds`) and what follows from it, and the
    memory per chip."""

    latency_s: float
    per_token_latency_s: float
    tokens: int
    mfu: float
    cost_chip_s_per_token: float
    memory_bytes_per_chip: float
    hbm_capacity: float

    @property
    def fits_hbm(self) -> bool:
        return self.memory_bytes_per_chip <= self.hbm_capacity


def figures(sg: Graph, seconds: float, profile: ChipProfile, real: Mapping[str, int]) -> Figures:
    """The :class:`Figures` of the sharded program ``sg`` whose estimated run takes ``seconds``."""
    assert sg.mesh is not None
    sizes = sg.sizes
    chips = sg.mesh.num_chips
    tokens = sizes.get("B", 1) * sizes.get("L", 1)
    params = param_count(sg, {**sizes, **real})
    weights, caches = resident_bytes(sg)
    memory = weights + caches + memory_peak(sg).bytes
    return Figures(seconds, seconds / max(sizes.get("L", 1), 1), tokens,
                   mfu(params, tokens, chips, profile, seconds),
                   chips * seconds / tokens, memory, profile.hbm_bytes)


@dataclass(frozen=True)
class Ranked:
    """A feasible candidate, its figures, and its sharded program."""

    candidate: Candidate
    figures: Figures
    built: Graph | None = field(default=None, repr=False, compare=False)  # the program, once made
    real_sizes: tuple[tuple[str, int], ...] = ()
    rebuild: Callable[[], Graph] | None = field(default=None, repr=False, compare=False)

    @property
    def graph(self) -> Graph:
        """The candidate's sharded program (searched again here when a worker process costed it)."""
        if self.built is None:
            assert self.rebuild is not None
            object.__setattr__(self, "built", self.rebuild())  # a cache: the value cannot differ
        assert self.built is not None
        return self.built

    def score(self, objective: Objective) -> float:
        """Lower is better (:func:`score`)."""
        return score(objective, self.figures.latency_s, self.figures.tokens, self.candidate.mesh.num_chips)

    def report(self, chip: str | ChipProfile | None = None, comm: str | None = None) -> CostReport:
        """The full cost report of this candidate's program (``shardc cost`` of it)."""
        return estimate(self.graph, chip, comm, real_sizes=dict(self.real_sizes))

    def to_json(self) -> dict[str, object]:
        c, f = self.candidate, self.figures
        return {
            "mesh": c.mesh.spec(),
            "roles": {role.value: "".join(axes) for role, axes in c.roles.items()},
            "ffn": c.ffn.value,
            "attention": c.attention.value,
            "weights": c.weights.value,
            "pad": dict(c.pad),
            "batch": c.batch,
            "latency_s": f.latency_s,
            "per_token_latency_s": f.per_token_latency_s,
            "mfu": f.mfu,
            "cost_chip_s_per_token": f.cost_chip_s_per_token,
            "memory_bytes_per_chip": f.memory_bytes_per_chip,
        }


def score(objective: Objective, seconds: float, tokens: int, chips: int) -> float:
    """Lower is better: seconds per run, minus tokens per second, or chip-seconds per token."""
    if objective is Objective.LATENCY:
        return seconds
    if objective is Objective.THROUGHPUT:
        return -tokens / seconds if seconds else -math.inf
    return chips * seconds / tokens


class Evaluator:
    """Shards and costs candidates, once per distinct program and concrete strategy.

    Two candidates whose presets bind to the same strategy on the same mesh (a role left
    unplayed makes 2D weight-stationary the 1D one, say) are one plan, costed once.
    """

    def __init__(self, g: Graph, declared: list[DType], profile: ChipProfile, comm: str | None) -> None:
        self.g, self.declared, self.profile, self.comm = g, declared, profile, comm
        self.programs: dict[tuple, Graph] = {}
        self.done: dict[tuple, Ranked | ShardcError | Beaten] = {}
        self.rooflines: dict[tuple, float] = {}
        self.decl_facts: dict[tuple, tuple[Declared, ...]] = {}
        # The search prices ops on these (shard_program's choice for the same chip and --comm).
        self.mode = comm_mode(comm or profile.default_comm)
        self.priced = priced_in(profile, self.mode)

    def program(self, c: Candidate) -> Graph:
        """The program at the candidate's sizes and dtype, on its mesh (built once for all presets)."""
        key = (c.weights, c.pad, c.batch, c.mesh)
        if key not in self.programs:
            self.programs[key] = with_mesh(self.sized(c), c.mesh, verified=True)
        return self.programs[key]

    def sized(self, c: Candidate) -> Graph:
        """The program at the candidate's sizes and dtype, on no mesh yet (built once for all meshes)."""
        key = (c.weights, c.pad, c.batch)
        if key not in self.programs:
            g = self.g
            sized = with_sizes(g, {**dict(c.pad), **({"B": c.batch} if "B" in g.sizes else {})})
            same = self.declared == [c.weights]
            self.programs[key] = sized if same else with_weight_dtype(sized, c.weights)
        return self.programs[key]

    def floor(self, c: Candidate, gathers: bool = True) -> Floor | ShardcError:
        """The candidate's :class:`~shardc.planner.bound.Floor`, or why its preset cannot bind to the
        mesh or place a declaration (the error its search would meet); ``gathers``: as
        :func:`~shardc.planner.bound.floor`'s."""
        g = self.program(c)
        try:
            strategy = bind(PRESETS[c.ffn], c.mesh, c.attention, roles=c.roles)
            key = (c.weights, c.pad, c.batch, c.mesh.num_chips)
            if key not in self.rooflines:
                self.rooflines[key] = roofline_floor(g, c.mesh.num_chips, self.priced)
                self.decl_facts[key] = declared(g)
            return floor(g, c.mesh, strategy, self.priced, self.mode, self.rooflines[key], gathers,
                         self.decl_facts[key])
        except ShardcError as err:
            return err

    def __call__(self, c: Candidate, cutoff: float | None = None) -> Ranked | ShardcError | Beaten:
        """The candidate's figures, or why it cannot be sharded; with ``cutoff`` (seconds), a
        :class:`~shardc.sharding.search.Beaten` instead when no plan of it takes at most that
        (its search gives up as soon as it knows)."""
        g = self.program(c)
        try:
            strategy = bind(PRESETS[c.ffn], c.mesh, c.attention, roles=c.roles)
        except ShardcError as err:
            return err
        key = (c.weights, c.pad, c.batch, c.mesh, replace(strategy, ffn=FFN.NONE))
        held = self.done.get(key)
        if isinstance(held, Beaten) and (cutoff is None or cutoff > held.cutoff):
            del self.done[key]  # beaten at a lower cutoff than asked now: search again
        if key not in self.done:
            real = tuple((d, self.g.sizes[d]) for d, _ in c.pad)
            try:
                result = shard_program(g, c.mesh, strategy, chip=self.profile, comm=self.comm, cutoff=cutoff)
            except ShardcError as err:
                self.done[key] = err
            except Beaten as beaten:
                self.done[key] = beaten
            else:
                assert result.seconds is not None
                self.done[key] = Ranked(c, figures(result.graph, result.seconds, self.profile, dict(real)),
                                        result.graph, real)
        return self.done[key]


# --- on all cores ----------------------------------------------------------------------------
_WORKER: Evaluator | None = None  # in a worker process: its evaluator, made once by the initializer

Costed = tuple[Figures, tuple[tuple[str, int], ...]] | str  # figures and real sizes, or an error's message


def _init_worker(g: Graph, declared: list[DType], profile: ChipProfile, comm: str | None) -> None:
    global _WORKER
    _WORKER = Evaluator(g, declared, profile, comm)


def _cost_in_worker(batch: list[Candidate]) -> list[Costed]:
    assert _WORKER is not None
    out: list[Costed] = []
    for c in batch:
        r = _WORKER(c)
        assert not isinstance(r, Beaten)  # no cutoff asked
        out.append(r.message if isinstance(r, ShardcError) else (r.figures, r.real_sizes))
    return out


def evaluate_all(ev: Evaluator, todo: Sequence[Candidate], jobs: int) -> list[Ranked | ShardcError]:
    """``[ev(c) for c in todo]``, computed by ``jobs`` worker processes: the same figures and errors;
    each :class:`Ranked`'s program is searched again in this process when it is first asked for."""
    by_mesh: dict[object, list[int]] = {}
    for i, c in enumerate(todo):
        by_mesh.setdefault(c.mesh, []).append(i)
    # One task per mesh, the largest first, handed to whichever worker is free: meshes differ in how
    # long their searches take, so a fixed split would leave one worker idle.
    groups = sorted(by_mesh.values(), key=len, reverse=True)
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    out: list[Ranked | ShardcError] = [ShardcError("not costed")] * len(todo)
    with ProcessPoolExecutor(max_workers=min(jobs, len(groups)), mp_context=context, initializer=_init_worker,
                             initargs=(ev.g, ev.declared, ev.profile, ev.comm)) as pool:
        results = pool.map(_cost_in_worker, [[todo[i] for i in group] for group in groups])
        for group, costed in zip(groups, results, strict=True):
            for i, got in zip(group, costed, strict=True):
                c = todo[i]
                if isinstance(got, str):
                    out[i] = ShardcError(got)
                else:
                    out[i] = Ranked(c, got[0], None, got[1], rebuild=_rebuilder(ev, c))
    return out


def _rebuilder(ev: Evaluator, c: Candidate) -> Callable[[], Graph]:
    def rebuild() -> Graph:
        again = ev(c)
        assert isinstance(again, Ranked)  # a worker costed it: the same search succeeds here
        return again.graph
    return rebuild
