"""Sweep the planner over chip counts, batch sizes and weight dtypes: the paper's Figure 1 as data.

:func:`sweep` asks :func:`~shardc.planner.choose.plan` for the best layout of every
(model, chips, batch, weight dtype) point -- ``plan(g, chips, batch=b, weights=dtype,
pad="any")``, so PaLM 540B's 48 heads may be padded to the next multiple of the chip
count where that helps -- and returns one :class:`SweepPoint` per point, in a
deterministic order (model, weights, chips, batch), feasible or not: a point where
nothing divides or fits is kept, with the planner's reason.

Each point is *one run of the file*: a decode file (``L=1``) is one decode step, a
prefill file one pass over its ``L`` prompt tokens.  The paper's Figure 1 plots, on
the left, the per-token latency of generating 64 tokens against the cost per token;
with the planner's figures of one step, the per-token latency of a decode file is the
step's latency (the KV cache stays at the file's ``S``; the growth of the cache over
the 64 steps is not modelled), and the x value of a prefill file is the time to
process its input (the right panel).  :attr:`SweepPoint.plot_latency_s` is that x.

The points are independent, so :func:`sweep` spreads them over ``jobs`` processes
(:class:`concurrent.futures.ProcessPoolExecutor`); ``jobs=1`` runs in this process.

:func:`layout_sweep` is the paper's Figure 3 as data: the communication of each
feed-forward preset on one mesh as the tokens per batch grow; :func:`pareto` is the
frontier the figures draw.
"""
from __future__ import annotations

import itertools
import math
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from typing import Callable, Sequence

from shardc.cost.model import estimate
from shardc.errors import ShardcError
from shardc.hardware.profile import ChipProfile, load_profile
from shardc.ir.graph import DType, Graph
from shardc.ir.mesh import Mesh
from shardc.ir.transforms import with_sizes
from shardc.language.lower import load
from shardc.planner.choose import Objective, plan
from shardc.sharding.presets import FFN
from shardc.sharding.shard import shard_program

__all__ = ["DEFAULT_BATCHES", "DEFAULT_CHIPS", "DEFAULT_WEIGHTS", "LAYOUT_FFNS", "LayoutPoint", "SweepPoint",
           "layout_sweep", "pareto", "pareto_indices", "sweep"]

DEFAULT_CHIPS = (8, 16, 32, 64, 128, 256, 512)
DEFAULT_BATCHES = tuple(2 ** i for i in range(11))  # 1, 2, 4, ..., 1024
DEFAULT_WEIGHTS = (DType.BF16, DType.INT8)
LAYOUT_FFNS = (FFN.WS_1D, FFN.WS_2D, FFN.WG_X, FFN.WG_XY, FFN.WG_XYZ)

Progress = Callable[[int, int], None]  # (points done, points in all)


@dataclass(frozen=True)
class SweepPoint:
    """The planner's best layout for one (model, chips, batch, weights) point, or why there is none."""

    model: str
    phase: str  # "decode" (the file's L is 1: one step) or "prefill" (one pass over L tokens)
    chips: int
    batch: int
    weights: str
    feasible: bool
    mesh: str | None = None
    ffn: str | None = None
    attention: str | None = None
    pad: str | None = None  # "H=64", or "" when the program is as written
    latency_s: float | None = None  # one run: a decode step or the whole prefill
    per_token_latency_s: float | None = None  # latency / L
    tokens: int | None = None  # B * L
    cost_chip_ms_per_token: float | None = None  # chips * latency / tokens, in chip-milliseconds
    mfu: float | None = None
    memory_bytes_per_chip: float | None = None
    reason: str | None = None  # an infeasible point: the planner's message

    @property
    def plot_latency_s(self) -> float | None:
        """Figure 1's x: the per-token latency of a decode file, the time of the whole pass of a prefill."""
        return self.per_token_latency_s if self.phase == "decode" else self.latency_s

    def to_json(self) -> dict[str, object]:
        """Every field, by name (the row of ``--csv`` and ``--json``)."""
        return asdict(self)


FIELDS = tuple(SweepPoint.__dataclass_fields__)


# --- the sweep ------------------------------------------------------------------------------
_GRAPHS: tuple[Graph, ...] = ()  # in a worker process: the programs, sent once by the initializer


def _init_worker(graphs: tuple[Graph, ...]) -> None:
    global _GRAPHS
    _GRAPHS = graphs


@dataclass(frozen=True)
class _Task:
    index: int
    model: int  # into the graphs
    chips: int
    batch: int
    weights: DType
    chip: str | ChipProfile | None
    comm: str | None
    objective: str
    pad: str


def _run_task(task: _Task, graphs: Sequence[Graph] | None = None) -> tuple[int, SweepPoint]:
    g = (graphs if graphs is not None else _GRAPHS)[task.model]
    return task.index, point(g, task.chips, task.batch, task.weights, chip=task.chip, comm=task.comm,
                             objective=task.objective, pad=task.pad)


def phase_of(g: Graph) -> str:
    """``decode`` when the program makes one token per sequence (L is 1 or absent), else ``prefill``."""
    return "decode" if g.sizes.get("L", 1) == 1 else "prefill"


def point(g: Graph, chips: int, batch: int, weights: DType | str, *, chip: str | ChipProfile | None = None,
          comm: str | None = None, objective: Objective | str = Objective.LATENCY, pad: str = "any") -> SweepPoint:
    """One point of the sweep: ``plan(g, chips, batch=batch, weights=weights, pad=pad)``'s best, or
    the reason nothing is left."""
    dtype = weights if isinstance(weights, DType) else DType(weights)
    head = SweepPoint(g.name, phase_of(g), chips, batch, dtype.value, feasible=False)
    try:
        best = plan(g, chips, chip=chip, comm=comm, objective=objective, batch=batch, weights=[dtype], pad=pad,
                    prune=True).best
    except ShardcError as err:
        return replace(head, reason=err.message)
    c, f = best.candidate, best.figures
    return replace(head, feasible=True, mesh=c.mesh.spec(), ffn=c.ffn.value, attention=c.attention.value,
                      pad=",".join(f"{d}={n}" for d, n in c.pad), latency_s=f.latency_s,
                      per_token_latency_s=f.per_token_latency_s, tokens=f.tokens,
                      cost_chip_ms_per_token=f.cost_chip_s_per_token * 1e3, mfu=f.mfu,
                      memory_bytes_per_chip=f.memory_bytes_per_chip)


def sweep(files_or_graphs: Sequence[str | Graph], chips: Sequence[int] = DEFAULT_CHIPS,
          batches: Sequence[int] = DEFAULT_BATCHES, weights: Sequence[DType | str] = DEFAULT_WEIGHTS, *,
          chip: str | ChipProfile | None = None, comm: str | None = None,
          objective: Objective | str = Objective.LATENCY, pad: str = "any", jobs: int | None = None,
          progress: Progress | None = None) -> list[SweepPoint]:
    """The planner's best layout at every (model, chips, batch, weights) point (module docstring).

    ``files_or_graphs``: ``.model`` paths or parsed programs (each must have a dim ``B``);
    ``jobs``: worker processes (default :func:`os.cpu_count`; 1 runs here, in this process);
    ``progress(done, total)`` is called after each point.  The points come back ordered by
    model (as given), weights, chips and batch (as given), whatever order they finish in.
    """
    graphs = tuple(load(x) if isinstance(x, str) else x for x in files_or_graphs)
    for g in graphs:
        if "B" not in g.sizes:
            raise ShardcError(f"{g.name}: the program has no dim B, so there is no batch to sweep")
    if not graphs or not chips or not batches or not weights:
        raise ShardcError("sweep: give at least one program, chip count, batch and weight dtype")
    dtypes = [w if isinstance(w, DType) else _dtype(w) for w in weights]
    name = chip.name if isinstance(chip, ChipProfile) else chip
    load_profile(chip)  # an unknown chip is one error here, not one per point
    obj = objective.value if isinstance(objective, Objective) else objective
    where = chip if isinstance(chip, ChipProfile) else name
    grid = itertools.product(range(len(graphs)), dtypes, chips, batches)
    tasks = [_Task(i, m, n, b, w, where, comm, obj, pad) for i, (m, w, n, b) in enumerate(grid)]
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(tasks)))
    out: dict[int, SweepPoint] = {}
    if jobs == 1:
        for t in tasks:
            i, p = _run_task(t, graphs)
            out[i] = p
            if progress:
                progress(len(out), len(tasks))
    else:
        # The biggest meshes take longest: start them first so no worker is left with one at the end.
        order = sorted(tasks, key=lambda t: (-t.chips, -t.batch, t.index))
        with ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker, initargs=(graphs,)) as pool:
            futures = [pool.submit(_run_task, t) for t in order]
            for fut in as_completed(futures):
                i, p = fut.result()
                out[i] = p
                if progress:
                    progress(len(out), len(tasks))
    return [out[i] for i in range(len(tasks))]


def _dtype(name: str) -> DType:
    try:
        return DType(name)
    except ValueError:
        raise ShardcError(f"--weights {name}: unknown; choose bf16 or int8") from None


# --- the Pareto frontier --------------------------------------------------------------------
def pareto_indices(pairs: Sequence[tuple[float, float]]) -> list[int]:
    """The indices of the pairs no other pair beats in both coordinates (lower is better in each),
    ordered by the first coordinate; of equal pairs, the first is kept."""
    order = sorted(range(len(pairs)), key=lambda i: (pairs[i][0], pairs[i][1], i))
    front: list[int] = []
    best_y = math.inf
    for i in order:
        if pairs[i][1] < best_y:
            front.append(i)
            best_y = pairs[i][1]
    return front


def pareto(points: Sequence[SweepPoint]) -> list[SweepPoint]:
    """The feasible points on the latency-cost frontier (Figure 1's x and y, both lower-is-better),
    by increasing latency."""
    ok = [p for p in points if p.feasible and p.plot_latency_s is not None and p.cost_chip_ms_per_token is not None]
    pairs = [(float(p.plot_latency_s or 0.0), float(p.cost_chip_ms_per_token or 0.0)) for p in ok]
    return [ok[i] for i in pareto_indices(pairs)]


# --- Figure 3: communication of each feed-forward layout against tokens per batch ------------
@dataclass(frozen=True)
class LayoutPoint:
    """One feed-forward preset at one batch on a fixed mesh: the communication of one run."""

    model: str
    mesh: str
    ffn: str
    batch: int
    tokens: int  # B * L
    feasible: bool
    comm_s: float | None = None  # seconds of collectives (the estimate's breakdown by collective, summed)
    latency_s: float | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def layout_sweep(g: Graph, mesh: Mesh | str = "4x4x4", batches: Sequence[int] = DEFAULT_BATCHES,
                 ffns: Sequence[FFN] = LAYOUT_FFNS, *, chip: str | ChipProfile | None = None,
                 comm: str | None = None) -> list[LayoutPoint]:
    """Shard ``g`` at every batch with every feed-forward preset on ``mesh`` (attention by heads) and
    sum the collective time of each run (:attr:`~shardc.cost.model.CostReport.breakdown_by_collective`),
    the paper's Figure 3 when ``g`` is a feed-forward layer of d_model 16384, d_ff 65536 on 4x4x4.
    Ordered by preset, then batch."""
    m = Mesh.parse(mesh) if isinstance(mesh, str) else mesh
    if "B" not in g.sizes:
        raise ShardcError(f"{g.name}: the program has no dim B, so there is no batch to sweep")
    profile = load_profile(chip)
    out = []
    for ffn in ffns:
        for b in batches:
            sized = with_sizes(g, {"B": b})
            head = LayoutPoint(g.name, m.spec(), ffn.value, b, b * sized.sizes.get("L", 1), feasible=False)
            try:
                result = shard_program(sized, m, ffn.value, "heads", chip=profile, comm=comm)
            except ShardcError as err:
                out.append(replace(head, reason=err.message))
                continue
            report = estimate(result.graph, profile, comm)
            out.append(replace(head, feasible=True, comm_s=sum(report.breakdown_by_collective.values()),
                                   latency_s=report.latency_s))
    return out
