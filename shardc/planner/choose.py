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

import enum
import math
from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

from shardc.cost.memory import memory_peak, resident_bytes
from shardc.cost.model import CostReport, estimate, mfu, param_count
from shardc.errors import ShardcError
from shardc.hardware.profile import ChipProfile, load_profile
from shardc.ir.graph import DeclKind, DType, Graph
from shardc.ir.mesh import Mesh
from shardc.ir.transforms import with_mesh, with_sizes, with_weight_dtype
from shardc.planner.space import Candidate, candidates, max_axes, meshes, pad_options
from shardc.sharding.presets import FFN, PRESETS, Attention, bind
from shardc.sharding.shard import shard_program
from shardc.units import human_seconds

__all__ = ["Dropped", "Objective", "Plan", "Ranked", "plan"]

WEIGHT_DTYPES = (DType.BF16, DType.INT8)
BATCHES = tuple(2 ** i for i in range(11))  # --batch any: 1, 2, 4, ..., 1024


class Objective(enum.Enum):
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
    graph: Graph = field(repr=False, compare=False)
    real_sizes: tuple[tuple[str, int], ...] = ()

    def score(self, objective: Objective) -> float:
        """Lower is better."""
        f = self.figures
        if objective is Objective.LATENCY:
            return f.latency_s
        if objective is Objective.THROUGHPUT:
            return -f.tokens / f.latency_s if f.latency_s else -math.inf
        return f.cost_chip_s_per_token

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
    saved = {k: b.get(k, 0.0) - a.get(k, 0.0) for k in set(a) | set(b)}
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
         batch: int | str | Sequence[int] | None = None) -> Plan:
    """Choose the partitioning of ``g`` for ``chips`` chips (or for the one ``mesh``).

    ``ffn``, ``attention``: ``"any"`` (default) or the presets to try; ``weights``: the
    dtypes to store params in (``"any"``: bf16 and int8; default: as the program declares
    them); ``pad``: ``"none"``, ``"any"`` or ``{"H": 64}`` (:mod:`shardc.planner.space`);
    ``batch``: a size, a list, ``"any"`` (1, 2, 4, ..., 1024) or None (the program's B).
    ``max_latency``: seconds per token (per step in decode, where one step makes one token
    per sequence) a candidate may take.  Raises :class:`ShardcError` when no candidate is
    left, saying what came closest.
    """
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
    ranked: list[Ranked] = []
    drops: dict[str, list[tuple[float, str]]] = {}
    evaluate = _Evaluator(g, declared, profile, comm)
    for c in todo:
        outcome = evaluate(c)
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
            ranked.append(replace(outcome, candidate=c))
    dropped = tuple(Dropped(reason, len(items), min(items)[1], min(items)[0] < math.inf)
                    for reason, items in drops.items())
    if not ranked:
        raise ShardcError(_nothing_left(len(todo), dropped, max_latency))
    ranked.sort(key=lambda r: r.score(obj))  # stable: ties keep the enumeration order
    return Plan(chips, profile.name, obj, max_latency, ranked[0], tuple(ranked), dropped, len(todo), profile, comm)


class _Evaluator:
    """Shards and costs candidates, once per distinct program and concrete strategy.

    Two candidates whose presets bind to the same strategy on the same mesh (a role left
    unplayed makes 2D weight-stationary the 1D one, say) are one plan, costed once.
    """

    def __init__(self, g: Graph, declared: list[DType], profile: ChipProfile, comm: str | None) -> None:
        self.g, self.declared, self.profile, self.comm = g, declared, profile, comm
        self.programs: dict[tuple, Graph] = {}
        self.done: dict[tuple, Ranked | ShardcError] = {}

    def program(self, c: Candidate) -> Graph:
        """The program at the candidate's sizes and dtype, on its mesh (built once for all presets)."""
        key = (c.weights, c.pad, c.batch, c.mesh)
        if key not in self.programs:
            g = self.g
            sized = with_sizes(g, {**dict(c.pad), **({"B": c.batch} if "B" in g.sizes else {})})
            same = self.declared == [c.weights]
            self.programs[key] = with_mesh(sized if same else with_weight_dtype(sized, c.weights), c.mesh)
        return self.programs[key]

    def __call__(self, c: Candidate) -> Ranked | ShardcError:
        g = self.program(c)
        try:
            strategy = bind(PRESETS[c.ffn], c.mesh, c.attention, roles=c.roles)
        except ShardcError as err:
            return err
        key = (c.weights, c.pad, c.batch, c.mesh, replace(strategy, ffn=FFN.NONE))
        if key not in self.done:
            real = tuple((d, self.g.sizes[d]) for d, _ in c.pad)
            try:
                result = shard_program(g, c.mesh, strategy, chip=self.profile, comm=self.comm)
            except ShardcError as err:
                self.done[key] = err
            else:
                assert result.seconds is not None
                self.done[key] = Ranked(c, figures(result.graph, result.seconds, self.profile, dict(real)),
                                        result.graph, real)
        return self.done[key]


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
