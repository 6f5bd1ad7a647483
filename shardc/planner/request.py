"""Plan a whole generation request: a prefill of the prompt, then decode steps whose KV cache grows.

:func:`plan_request` plans the two phases separately, each with :func:`shardc.planner.choose.plan`,
so each may take its own layout and batch (the paper's low-latency recipe is a batch-1 prefill
feeding a batch-64 decode):

* the **prefill** at ``L = prompt`` and ``S = history + prompt`` (the prompt attends to itself
  and, when the program reads a KV cache of past tokens, to ``history`` cached positions);
* the **decode** once, at the final context of the request rounded up to a multiple of the chip
  count (so that any split of ``S`` divides).  The layout is then kept for every step: a server
  does not re-shard its KV cache while it generates.  It is chosen at the *final* context, not the
  middle one, because memory grows with the context: a layout that fits there fits at every step,
  while one chosen at the middle could run out of HBM before the end.  (Step latency is close to
  affine in ``S``, so the layout that is fastest at the middle is nearly always the one fastest at
  the end; the planner's ranking is at the end.)

Every decode step ``i`` (``i = 0 .. generate - 1``) is then costed at its real context,
``S = history + prompt + i``: the sharded decode program with ``S`` set
(:func:`shardc.ir.transforms.with_sizes`) and :func:`shardc.estimate` of it.  When the layout
splits ``S`` over ``k`` chips and ``S`` does not divide, the step is costed at the next multiple of
``k`` (a cache split ``k`` ways is allocated in blocks of ``k`` positions) and says so.  Every step
is estimated (a few milliseconds each on PaLM 540B; steps at the same costed context share one
estimate) rather than interpolated.  On the PaLM 540B decode layouts checked (1D and 2D
weight-stationary, attention by heads or by batch, B from 1 to 512) step latency is affine in ``S``
to rounding error, since ``S`` only lengthens the attention einsums and the cache reads; nothing in
the cost model promises that for every program and chip profile, so it is not assumed.

Request totals, per sequence (a phase's run serves its batch, so its time is shared by it):

* end-to-end latency = prefill latency + the sum of the decode steps;
* chip-seconds per sequence = chips x (prefill latency / prefill batch + decode total / decode batch);
* cost = chip-seconds per sequence / tokens per sequence (``prompt + generate``, the tokens
  processed; cached history is not re-processed);
* MFU = 2 N_params (prompt + generate) / (peak x chip-seconds per sequence): the paper's "FLOPS
  efficiency" over the whole request.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from shardc.cost.model import estimate, param_count
from shardc.errors import ShardcError
from shardc.hardware.profile import ChipProfile
from shardc.ir.graph import Decl, DeclKind, DType, Graph
from shardc.ir.mesh import Mesh
from shardc.ir.transforms import with_sizes
from shardc.planner.choose import Objective, Plan, Ranked, plan
from shardc.sharding.presets import FFN, Attention

__all__ = ["RequestPlan", "Step", "plan_request"]

Batch = int | str | Sequence[int] | None


@dataclass(frozen=True)
class Step:
    """One decode step: the context it attends to, the context it was costed at, its latency."""

    context: int  # S: the cached positions the step reads (history + prompt + i)
    costed_context: int  # S as costed: the next multiple of the layout's split of S
    latency_s: float
    bound_latency_s: float  # the roofline bound of the same step (no fitted terms)


@dataclass(frozen=True)
class RequestPlan:
    """A whole request planned (module docstring): the two phases' plans and the decode steps."""

    prompt: int
    generate: int
    history: int
    prefill: Plan
    decode: Plan
    decode_context: int  # the S the decode layout was chosen at
    steps: tuple[Step, ...]
    params: int  # N_params at the real sizes (padding not counted)
    peak_flops: float = field(repr=False)
    prefill_bound_s: float = 0.0  # the roofline bound of the prefill run

    @property
    def chips(self) -> int:
        return self.decode.chips

    @property
    def prefill_batch(self) -> int:
        return self.prefill.best.candidate.batch

    @property
    def decode_batch(self) -> int:
        return self.decode.best.candidate.batch

    @property
    def prefill_latency_s(self) -> float:
        """One prefill run: the prompts of the prefill batch."""
        return self.prefill.best.figures.latency_s

    @property
    def decode_latency_s(self) -> float:
        """The sum of the decode steps: the time to generate ``generate`` tokens per sequence."""
        return math.fsum(s.latency_s for s in self.steps)

    @property
    def decode_per_token_s(self) -> float:
        """Mean decode step: seconds per generated token of a sequence."""
        return self.decode_latency_s / len(self.steps)

    @property
    def latency_s(self) -> float:
        """End to end for one sequence: its prefill, then its decode steps."""
        return self.prefill_latency_s + self.decode_latency_s

    @property
    def tokens_per_sequence(self) -> int:
        """Tokens processed per sequence: the prompt and the generated tokens (history is cached)."""
        return self.prompt + self.generate

    @property
    def chip_seconds_per_sequence(self) -> float:
        """Each phase's chip-seconds shared by the sequences of its batch."""
        return self._chip_seconds(self.prefill_latency_s, self.decode_latency_s)

    @property
    def cost_chip_s_per_token(self) -> float:
        return self.chip_seconds_per_sequence / self.tokens_per_sequence

    @property
    def mfu(self) -> float:
        """2 N_params x tokens / (chips x peak x time) over the whole request."""
        return self._mfu(self.chip_seconds_per_sequence)

    @property
    def bound_latency_s(self) -> float:
        """End to end with the roofline bound of every phase and step (the same layouts)."""
        return self.prefill_bound_s + math.fsum(s.bound_latency_s for s in self.steps)

    @property
    def bound_mfu(self) -> float:
        return self._mfu(self._chip_seconds(self.prefill_bound_s, math.fsum(s.bound_latency_s for s in self.steps)))

    def _chip_seconds(self, prefill_s: float, decode_s: float) -> float:
        return self.chips * (prefill_s / self.prefill_batch + decode_s / self.decode_batch)

    def _mfu(self, chip_seconds: float) -> float:
        useful = 2.0 * self.params * self.tokens_per_sequence
        return useful / (self.peak_flops * chip_seconds) if chip_seconds else 0.0

    def to_json(self) -> dict[str, object]:
        """``shardc plan FILE_PREFILL FILE_DECODE --prompt N --generate M --json``."""
        pre, dec = self.prefill.best, self.decode.best
        return {
            "prefill": {**_phase_json(pre), "context": self.history + self.prompt, "tokens": self.prompt},
            "decode": {**_phase_json(dec), "planned_at_context": self.decode_context,
                       "steps": len(self.steps), "total_s": self.decode_latency_s,
                       "per_token_s": self.decode_per_token_s,
                       "first_step": _step_json(self.steps[0]), "last_step": _step_json(self.steps[-1]),
                       "step_latencies_s": [s.latency_s for s in self.steps]},
            "request": {"prompt": self.prompt, "generate": self.generate, "history": self.history,
                        "chips": self.chips, "latency_s": self.latency_s,
                        "tokens_per_sequence": self.tokens_per_sequence,
                        "chip_seconds_per_sequence": self.chip_seconds_per_sequence,
                        "cost_chip_s_per_token": self.cost_chip_s_per_token, "mfu": self.mfu,
                        "bound_latency_s": self.bound_latency_s, "bound_mfu": self.bound_mfu,
                        "params": self.params},
        }


def _phase_json(r: Ranked) -> dict[str, object]:
    c = r.candidate
    return {"mesh": c.mesh.spec(), "ffn": c.ffn.value, "attention": c.attention.value,
            "weights": c.weights.value, "pad": dict(c.pad), "batch": c.batch,
            "latency_s": r.figures.latency_s, "memory_bytes_per_chip": r.figures.memory_bytes_per_chip}


def _step_json(s: Step) -> dict[str, object]:
    return {"context": s.context, "costed_context": s.costed_context, "latency_s": s.latency_s,
            "bound_latency_s": s.bound_latency_s}


def plan_request(prefill: Graph, decode: Graph, prompt: int, generate: int, chips: int | None = None, *,
                 history: int = 0, mesh: Mesh | str | None = None, chip: str | ChipProfile | None = None,
                 comm: str | None = None, objective: Objective | str = Objective.LATENCY,
                 max_latency: float | None = None, ffn: str | Sequence[FFN | str] = "any",
                 attention: str | Sequence[Attention | str] = "any",
                 weights: str | Sequence[DType | str] | None = None, pad: str | Mapping[str, int] = "none",
                 prefill_batch: Batch = None, decode_batch: Batch = None, jobs: int | None = None) -> RequestPlan:
    """Plan a request of ``prompt`` new tokens (after ``history`` cached ones) and ``generate`` decode steps.

    ``prefill`` is a prefill program (dims ``L`` and, if it attends, ``S``; with ``history`` it
    must read a KV cache over ``S``); ``decode`` a decode step (``L = 1``) that reads a KV cache over
    ``S``.  ``prefill_batch``, ``decode_batch``: as :func:`~shardc.planner.choose.plan`'s ``batch``
    (a size, a list, ``"any"`` or None for the program's ``B``), one for each phase.
    ``max_latency`` bounds the decode step.  The other arguments (``jobs`` too) go to both phases' plans.
    Raises :class:`ShardcError` on a program that is not a prefill or decode, on bad sizes, or when
    a phase has no candidate left (for a long prompt, none that fits in HBM).
    """
    _check_request(prefill, decode, prompt, generate, history)
    common = {"mesh": mesh, "chip": chip, "comm": comm, "objective": objective, "ffn": ffn,
              "attention": attention, "weights": weights, "pad": pad, "jobs": jobs}
    sizes = {"L": prompt, **({"S": history + prompt} if "S" in prefill.sizes else {})}
    prefill_plan = _phase("prefill", with_sizes(prefill, sizes), chips, prefill_batch, None, common)
    chips = prefill_plan.chips
    final = history + prompt + generate - 1  # the context the last step reads
    planned = -(-final // chips) * chips  # every split of S (a product of mesh axes) divides it
    decode_plan = _phase("decode", with_sizes(decode, {"S": planned}), chips, decode_batch, max_latency, common)
    best = decode_plan.best
    real = dict(best.real_sizes)
    split = _split_of(best.graph, "S")
    cache: dict[int, tuple[float, float]] = {}
    steps = []
    for i in range(generate):
        context = history + prompt + i
        costed = -(-context // split) * split
        if costed not in cache:
            r = estimate(with_sizes(best.graph, {"S": costed}), decode_plan.profile, decode_plan.comm,
                         real_sizes=real)
            cache[costed] = (r.latency_s, r.bound_latency_s)
        steps.append(Step(context, costed, *cache[costed]))
    params = param_count(best.graph, {**best.graph.sizes, **real})
    assert decode_plan.profile is not None
    prefill_bound = prefill_plan.best.report(prefill_plan.profile, prefill_plan.comm).bound_latency_s
    return RequestPlan(prompt, generate, history, prefill_plan, decode_plan, planned, tuple(steps), params,
                       decode_plan.profile.peak_flops, prefill_bound)


def _phase(name: str, g: Graph, chips: int | None, batch: Batch, max_latency: float | None,
           common: Mapping[str, object]) -> Plan:
    """One phase's plan; a phase with no candidate left says which phase it was."""
    try:
        return plan(g, chips, batch=batch, max_latency=max_latency, **common)  # type: ignore[arg-type]
    except ShardcError as err:
        context = f"L={g.sizes['L']}" if name == "prefill" else f"context S={g.sizes['S']}"
        hint = err.hint
        if not hint and "do not fit in HBM" in err.message:
            hint = ("a shorter --prompt or --generate, a smaller batch, int8 weights (--weights int8) or more "
                    "chips" if name == "decode" else "a shorter --prompt, a smaller batch or more chips")
        raise ShardcError(f"{name} ({context}): {err.message}", hint=hint) from None


def _name(g: Graph) -> str:
    return g.source.filename if g.source is not None and g.source.filename else g.name


def _reads_cache_over(g: Graph, dim: str) -> bool:
    return any(d.kind is DeclKind.CACHE and dim in d.value.dims for d, _ in g.decls())


def _check_request(prefill: Graph, decode: Graph, prompt: int, generate: int, history: int) -> None:
    """Clear errors for a request the two programs cannot serve."""
    for flag, n, least in (("--prompt", prompt, 1), ("--generate", generate, 1), ("--history", history, 0)):
        if n < least:
            raise ShardcError(f"{flag} {n}: must be at least {least}")
    for g, phase in ((prefill, "prefill"), (decode, "decode")):
        if g.is_sharded:
            raise ShardcError(f"{_name(g)}: the {phase} program is already sharded; plan the unsharded program")
    if "L" not in prefill.sizes:
        raise ShardcError(f"{_name(prefill)}: the prefill program has no dim L (the prompt's tokens)")
    if "S" not in decode.sizes or not _reads_cache_over(decode, "S"):
        raise ShardcError(f"{_name(decode)}: the decode program reads no KV cache over a dim S, so its context "
                          "cannot grow", hint="declare the cache as e.g. 'cache k : bf16[B, S, D]' "
                                              "(as examples/palm_540b_decode.model does)")
    if decode.sizes.get("L", 1) != 1:
        raise ShardcError(f"{_name(decode)}: a decode step makes one token per sequence (L=1); "
                          f"this one has L={decode.sizes['L']}", hint="give the decode program second, "
                                                                      "after the prefill")
    if history and not _reads_cache_over(prefill, "S"):
        raise ShardcError(f"--history {history}: the prefill program {_name(prefill)} reads no KV cache over S, "
                          "so it cannot attend to cached history",
                          hint="use a prefill that reads a cache of past tokens "
                               "(examples/palm_540b_chat_prefill.model)")


def _split_of(sg: Graph, dim: str) -> int:
    """The least common multiple of the chip counts ``dim`` is split over anywhere in ``sg`` (1: unsplit)."""
    assert sg.mesh is not None
    k = 1
    for stmt, _ in sg.walk():
        values = [stmt.value] if isinstance(stmt, Decl) else [getattr(stmt, "result", None)]
        for v in values:
            if v is not None and v.layout is not None and dim in v.layout.dims:
                k = math.lcm(k, sg.mesh.group_size(v.layout.axes_of(dim)))
    return k
