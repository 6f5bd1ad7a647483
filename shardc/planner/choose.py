"""The planner: choose the partitioning for the application, and say why.

:func:`plan` shards and costs every :class:`~shardc.planner.space.Candidate` for a
program and a chip count -- each mesh the chip's topology allows, each role
assignment, each preset, weight dtype, padding and batch asked for -- drops those
that do not divide or do not fit in HBM (or miss ``max_latency``), and ranks the
rest by the objective:

* ``latency``: the estimated seconds of one run (a decode step, or a whole prefill);
* ``throughput``: tokens per second of the whole system (most first);
* ``cost``: chip-seconds per token.

Each candidate is sharded with the layout search (:mod:`shardc.sharding.search`),
which minimises the same estimated time the ranking reads, so the planner's winner
is the one a loop over ``shard`` + ``estimate`` would find.  :attr:`Plan.why`
names the cost term the winner saves against the runner-up, and what it pays
instead.
"""
from __future__ import annotations

import gc
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Iterator, Mapping, Sequence

from shardc.cost.model import CostReport
from shardc.errors import ShardcError
from shardc.hardware.profile import ChipProfile, load_profile
from shardc.ir.graph import DeclKind, DType, Graph
from shardc.ir.mesh import Mesh
from shardc.planner.bound import Floor
from shardc.planner.evaluate import Evaluator, Objective, Ranked, evaluate_all, score
from shardc.planner.space import Candidate, candidates, max_axes, meshes, pad_options
from shardc.sharding.presets import FFN, Attention
from shardc.sharding.search import Beaten
from shardc.units import human_seconds

__all__ = ["Dropped", "Objective", "Plan", "Ranked", "plan"]

PARALLEL_MIN = 48  # fewer candidates than this are costed in this process (workers take longer to start)

WEIGHT_DTYPES = (DType.BF16, DType.INT8)
BATCHES = tuple(2 ** i for i in range(11))  # --batch any: 1, 2, 4, ..., 1024


@dataclass(frozen=True)
class Dropped:
    """Candidates left out for one reason: how many, and the closest of them."""

    reason: str
    count: int
    example: str  # one of them, with what was wrong
    closest: bool = False  # the example is the one that came closest (a measure exists: memory, latency)

    def to_json(self) -> dict[str, object]:
        return {"reason": self.reason, "count": self.count, "example": self.example, "closest": self.closest}


@dataclass(frozen=True)
class Plan:
    """The planner's answer (module docstring)."""

    chips: int
    chip: str
    objective: Objective
    max_latency_s: float | None
    best: Ranked
    candidates: tuple[Ranked, ...]  # every feasible one, best first
    dropped: tuple[Dropped, ...] = field(default=())
    considered: int = 0
    profile: ChipProfile | None = field(default=None, repr=False, compare=False)
    comm: str | None = None
    pruned: int = 0  # with prune=True: candidates not searched (their floor worse than the best so far) or given up

    @property
    def runner_up(self) -> Ranked | None:
        return self.candidates[1] if len(self.candidates) > 1 else None

    @property
    def other_layout(self) -> Ranked | None:
        """The best candidate with another feed-forward preset than the winner's."""
        return next((r for r in self.candidates if r.candidate.ffn is not self.best.candidate.ffn), None)

    @property
    def why(self) -> str:
        """What the winner saves against the runner-up (and against the best other layout, when
        the runner-up has the same presets), and what it pays instead."""
        text = explain_win(self.best, self.runner_up, self.objective, self.profile, self.comm)
        other = self.other_layout
        if other is not None and other is not self.runner_up:
            text += "; against the best other layout, " + explain_win(
                self.best, other, self.objective, self.profile, self.comm, name=False)
        return text

    def to_json(self) -> dict[str, object]:
        return {
            "chips": self.chips,
            "chip": self.chip,
            "objective": self.objective.value,
            "max_latency_s": self.max_latency_s,
            "considered": self.considered,
            "pruned": self.pruned,
            "best": self.best.to_json(),
            "why": self.why,
            "candidates": [r.to_json() for r in self.candidates],
            "dropped": [d.to_json() for d in self.dropped],
        }


# --- explaining the winner -------------------------------------------------------------------
def _terms(r: CostReport) -> dict[str, float]:
    """Seconds by what they are spent on: the report's buckets, communication split by collective."""
    terms = {k: v for k, v in r.buckets.items() if k != "communication"}
    for kind, seconds in r.breakdown_by_collective.items():
        name = kind.replace("_", "-")
        terms[f"{name} all-reduces" if name.endswith("statistics") else f"{name}s"] = seconds
    return terms


def explain_win(best: Ranked, other: Ranked | None, objective: Objective, chip: ChipProfile | None = None,
                comm: str | None = None, name: bool = True) -> str:
    """``2d-ws/batch on 4x4x4 beats ... by 6.15 ms: 6.6 ms less KV cache (...) for 2.08 ms more all-to-alls``."""
    title = f"{best.candidate.ffn.value}/{best.candidate.attention.value} on {best.candidate.mesh.spec()}"
    if other is None:
        return f"{title} is the only candidate that divides and fits"
    a, b = _terms(best.report(chip, comm)), _terms(other.report(chip, comm))
    # In the reports' own order (a set's order changes with the hash seed, and ties would too).
    saved = {k: b.get(k, 0.0) - a.get(k, 0.0) for k in dict.fromkeys([*a, *b])}
    gain = max(saved, key=lambda k: saved[k])
    loss = min(saved, key=lambda k: saved[k])
    rival = (f"{other.candidate.ffn.value}/{other.candidate.attention.value} on {other.candidate.mesh.spec()}"
             f" ({other.candidate.weights.value} weights)")
    margin = other.score(objective) - best.score(objective)
    if objective is Objective.LATENCY:
        by = f"by {human_seconds(margin)}"
    elif objective is Objective.COST:
        by = f"by {human_seconds(margin)} chip-seconds per token"
    else:
        by = f"by {-margin:,.0f} tokens/s"
    if saved[gain] <= 0 or margin <= 0:
        same = " (the same sharded program)" if best.graph == other.graph else ""
        return f"{title} ties with {rival}{same}"
    text = f"{title} beats the runner-up, {rival}, {by}: " if name else f"{rival}, it wins {by}: "
    text += f"{human_seconds(saved[gain])} less {gain} ({human_seconds(a.get(gain, 0.0))} against " \
            f"{human_seconds(b.get(gain, 0.0))})"
    if saved[loss] < 0 and loss != gain:
        text += f" for {human_seconds(-saved[loss])} more {loss}"
    return text


# --- the planner -------------------------------------------------------------------------------
def _choices(value: str | Sequence, every: Sequence, parse: type, flag: str) -> list:
    """``any`` -> every choice; a name or a list of names -> those (each checked)."""
    if isinstance(value, str):
        if value == "any":
            return list(every)
        value = [v for v in value.split(",") if v]
    out = []
    for v in value:
        if isinstance(v, parse):
            out.append(v)
            continue
        try:
            out.append(parse(v))
        except ValueError:
            names = ", ".join(e.value for e in every)
            raise ShardcError(f"{flag} {v}: unknown; choose {names} or any") from None
    return out


def _batches(g: Graph, batch: int | str | Sequence[int] | None) -> list[int]:
    if batch is None:
        return [g.sizes.get("B", 1)]
    if isinstance(batch, int):
        return [batch]
    if isinstance(batch, str):
        if batch == "any":
            return list(BATCHES)
        try:
            batch = [int(b) for b in batch.split(",") if b]
        except ValueError:
            raise ShardcError(f"--batch {batch}: give a batch size, a comma-separated list, or any") from None
    out = [int(b) for b in batch]
    if any(b < 1 for b in out) or not out:
        raise ShardcError("--batch: every batch size must be at least 1")
    if "B" not in g.sizes:
        raise ShardcError("--batch: the program has no dim B")
    return out


def _dropped_reason(err: ShardcError) -> str:
    message = err.message
    if "divisible" in message or "divide" in message:
        return "do not divide (a dim over the mesh axes a preset splits it over)"
    return "cannot be sharded"


def plan(g: Graph, chips: int | None = None, *, mesh: Mesh | str | None = None, chip: str | ChipProfile | None = None,
         comm: str | None = None, objective: Objective | str = Objective.LATENCY, max_latency: float | None = None,
         ffn: str | Sequence[FFN | str] = "any", attention: str | Sequence[Attention | str] = "any",
         weights: str | Sequence[DType | str] | None = None, pad: str | Mapping[str, int] = "none",
         batch: int | str | Sequence[int] | None = None, prune: bool = False, jobs: int | None = None) -> Plan:
    """Choose the partitioning of ``g`` for ``chips`` chips (or for the one ``mesh``).

    ``ffn``, ``attention``: ``"any"`` (default) or the presets to try; ``weights``: the
    dtypes to store params in (``"any"``: bf16 and int8; default: as the program declares
    them); ``pad``: ``"none"``, ``"any"`` or ``{"H": 64}`` (:mod:`shardc.planner.space`);
    ``batch``: a size, a list, ``"any"`` (1, 2, 4, ..., 1024) or None (the program's B).
    ``max_latency``: seconds per token (per step in decode, where one step makes one token
    per sequence) a candidate may take.  Raises :class:`ShardcError` when no candidate is
    left, saying what came closest.

    A candidate whose weights and caches alone overflow HBM is dropped without a search
    (:mod:`shardc.planner.bound`).  ``prune``: search the candidates in the order of their
    floors and skip those whose floor is already worse than the best found -- the same
    winner for far fewer searches, but :attr:`Plan.candidates` then holds only those
    searched, and :attr:`Plan.pruned` counts the others (what a sweep wants).  ``jobs``: worker
    processes for the searches (default: one per core; :mod:`shardc.planner.evaluate`), used
    without ``prune`` when there are at least :data:`PARALLEL_MIN` candidates to search.
    """
    with _collecting_less():
        return _plan(g, chips, mesh, chip, comm, objective, max_latency, ffn, attention, weights, pad, batch,
                     prune, jobs)


@contextmanager
def _collecting_less() -> Iterator[None]:
    """The cyclic garbage collector, run less often while planning (its thresholds restored after).

    The searches allocate millions of small objects, nearly all freed by reference counting, and
    keep memo tables that grow to millions more: at the default thresholds the collector walks all
    of those again and again, a quarter of a sweep's time.  Garbage with cycles (errors holding
    their tracebacks) is still collected, later.
    """
    old = gc.get_threshold()
    if not gc.isenabled() or old[0] == 0:  # the caller turned collection off: leave it so
        yield
        return
    gc.set_threshold(max(old[0], 100_000), max(old[1], 50), max(old[2], 100))
    # What exists now (the memo tables of earlier calls among it) is not walked meanwhile; unless
    # the caller froze objects of its own, which unfreezing after would let go of too.
    freeze = gc.get_freeze_count() == 0
    if freeze:
        gc.freeze()
    try:
        yield
    finally:
        if freeze:
            gc.unfreeze()
        gc.set_threshold(*old)


def _plan(g: Graph, chips: int | None, mesh: Mesh | str | None, chip: str | ChipProfile | None,
          comm: str | None, objective: Objective | str, max_latency: float | None,
          ffn: str | Sequence[FFN | str], attention: str | Sequence[Attention | str],
          weights: str | Sequence[DType | str] | None, pad: str | Mapping[str, int],
          batch: int | str | Sequence[int] | None, prune: bool, jobs: int | None) -> Plan:
    profile = load_profile(chip)
    obj = objective if isinstance(objective, Objective) else _choices(objective, list(Objective), Objective,
                                                                      "--objective")[0]
    chips, mesh_list = _meshes(chips, mesh, profile)
    declared = sorted({d.value.dtype for d, _ in g.decls() if d.kind is DeclKind.PARAM}, key=lambda t: t.value)
    dtypes = (_choices(weights, WEIGHT_DTYPES, DType, "--weights") if weights is not None
              else declared[:1] or [DType.BF16])
    todo = candidates(g, mesh_list, _choices(ffn, [f for f in FFN if f is not FFN.NONE], FFN, "--ffn"),
                      _choices(attention, list(Attention), Attention, "--attention"), dtypes,
                      pad_options(g, pad, chips), _batches(g, batch), user_mesh=mesh is not None)
    evaluate = Evaluator(g, declared, profile, comm)
    length = g.sizes.get("L", 1)
    floors = [evaluate.floor(c, gathers=prune) for c in todo]  # without pruning only memory is read
    order = list(range(len(todo)))
    if prune:  # the most promising first, so the winner is found early and the rest are skipped
        order.sort(key=lambda i: (_floor_score(floors[i], todo[i], obj, length), max(todo[i].mesh.shape)))
    outcomes: dict[int, Ranked | ShardcError] = {}
    workers = max(1, jobs if jobs is not None else os.cpu_count() or 1)
    searched = [i for i in order if not isinstance(floors[i], ShardcError)
                and floors[i].resident_bytes <= profile.hbm_bytes]  # type: ignore[union-attr]
    if not prune and workers > 1 and len(searched) >= PARALLEL_MIN:
        outcomes = dict(zip(searched, evaluate_all(evaluate, [todo[i] for i in searched], workers), strict=True))
    ranked, drops, skipped = _rank(todo, order, floors, outcomes, evaluate, obj, max_latency, prune, length,
                                   profile.hbm_bytes)
    dropped = tuple(Dropped(reason, len(items), min(items)[1], min(items)[0] < math.inf)
                    for reason, items in drops.items())
    if not ranked:
        raise ShardcError(_nothing_left(len(todo), dropped, max_latency))
    ranked.sort(key=lambda t: (t[0], t[1]))  # ties keep the enumeration order
    rows = tuple(r for _, _, r in ranked)
    return Plan(chips, profile.name, obj, max_latency, rows[0], rows, dropped, len(todo), profile, comm,
                pruned=skipped)


def _rank(todo: list[Candidate], order: list[int], floors: list[Floor | ShardcError],
          outcomes: dict[int, Ranked | ShardcError], evaluate: Evaluator, obj: Objective,
          max_latency: float | None, prune: bool, length: int,
          hbm_bytes: float) -> tuple[list[tuple[float, int, Ranked]], dict[str, list[tuple[float, str]]], int]:
    """Go through the candidates in ``order``: drop, skip (``prune``) or search and rank each."""
    ranked: list[tuple[float, int, Ranked]] = []
    drops: dict[str, list[tuple[float, str]]] = {}
    best, skipped = math.inf, 0
    for i in order:
        c, fl = todo[i], floors[i]
        if isinstance(fl, ShardcError):
            drops.setdefault(_dropped_reason(fl), []).append((math.inf, f"{c.label()}: {fl.message}"))
            continue
        if fl.resident_bytes > hbm_bytes:  # no search can make it fit
            over = fl.resident_bytes / hbm_bytes
            drops.setdefault("do not fit in HBM", []).append(
                (over, f"{c.label()}: needs at least {over:.2f}x the {hbm_bytes / 2**30:.0f} GiB per chip "
                       "for its weights and caches"))
            continue
        if prune and _floor_score(fl, c, obj, length) > best:
            skipped += 1
            continue
        # Pruning: the search itself gives up once it knows it cannot match the best so far.
        cutoff = _seconds_at(best, c, obj, length) if prune and best < math.inf else None
        outcome = outcomes[i] if i in outcomes else evaluate(c, cutoff)
        if isinstance(outcome, Beaten):
            skipped += 1
            continue
        if isinstance(outcome, ShardcError):
            drops.setdefault(_dropped_reason(outcome), []).append((math.inf, f"{c.label()}: {outcome.message}"))
            continue
        f = outcome.figures
        if not f.fits_hbm:
            over = f.memory_bytes_per_chip / f.hbm_capacity
            drops.setdefault("do not fit in HBM", []).append(
                (over, f"{c.label()}: needs {over:.2f}x the {f.hbm_capacity / 2**30:.0f} GiB per chip"))
        elif max_latency is not None and f.per_token_latency_s > max_latency:
            drops.setdefault("are slower than --max-latency", []).append(
                (f.per_token_latency_s, f"{c.label()}: {human_seconds(f.per_token_latency_s)} per token"))
        else:
            r = replace(outcome, candidate=c)
            ranked.append((r.score(obj), i, r))
            best = min(best, r.score(obj))
    return ranked, drops, skipped


def _seconds_at(best: float, c: Candidate, objective: Objective, length: int) -> float:
    """The seconds per run at which the candidate would score ``best`` (the inverse of :func:`score`)."""
    tokens = c.batch * length
    if objective is Objective.LATENCY:
        return best
    if objective is Objective.THROUGHPUT:
        return tokens / -best if best < 0 else math.inf
    return best * tokens / c.mesh.num_chips


def _floor_score(fl: Floor | ShardcError, c: Candidate, objective: Objective, length: int) -> float:
    """The best score a candidate with floor ``fl`` could reach (-inf for an error: it is dropped
    first); ``length``: the program's L (tokens per sequence in one run)."""
    if isinstance(fl, ShardcError):
        return -math.inf
    return score(objective, fl.seconds, c.batch * length, c.mesh.num_chips)


def _meshes(chips: int | None, mesh: Mesh | str | None, profile: ChipProfile) -> tuple[int, list[Mesh]]:
    if mesh is not None:
        mesh = Mesh.parse(mesh) if isinstance(mesh, str) else mesh
        if chips is not None and chips != mesh.num_chips:
            raise ShardcError(f"--chips {chips} and mesh {mesh.spec()} ({mesh.num_chips} chips) disagree")
        return mesh.num_chips, [mesh]
    if chips is None:
        raise ShardcError("how many chips? give --chips N (or a mesh)")
    found = meshes(chips, profile)
    if not found:  # a chip count no topology-legal shape multiplies to
        raise ShardcError(
            f"no mesh of {chips} chips fits a {profile.name} {profile.topology.value}: every axis must be at "
            f"least 2 chips and a multiple of {profile.axis_multiple}, with at most {_max_axes_text(profile)}",
            hint=_nearest_counts(chips, profile))
    return chips, found


def _max_axes_text(profile: ChipProfile) -> str:
    n = max_axes(profile)
    return f"{n} axis" if n == 1 else f"{n} axes"


def _nearest_counts(chips: int, profile: ChipProfile) -> str:
    """Chip counts near ``chips`` that do have meshes."""
    below = next((n for n in range(chips - 1, 0, -1) if meshes(n, profile)), None)
    above = next((n for n in range(chips + 1, 4 * chips + 8) if meshes(n, profile)), None)
    near = [str(n) for n in (below, above) if n is not None]
    return f"the nearest chip counts that do: {' and '.join(near)}" if near else ""


def _nothing_left(considered: int, dropped: tuple[Dropped, ...], max_latency: float | None) -> str:
    lines = [f"no candidate is left of the {considered} considered:"]
    for d in dropped:
        lines.append(f"  {d.count} {d.reason}; {'the closest' if d.closest else 'e.g.'}: {d.example}")
    if max_latency is not None and any(d.reason == "are slower than --max-latency" for d in dropped):
        lines.append(f"  (--max-latency is {human_seconds(max_latency)} per token)")
    return "\n".join(lines)
