"""The sharding pass: Graph + Mesh + Strategy -> sharded Graph.

Every value gets a layout and every collective becomes an op.  The pass walks
the program once (a repeat body once, not once per layer; :mod:`shardc.sharding.walk`)
and for each op:

1. asks :data:`~shardc.sharding.candidates.CANDIDATES` for ways to lay out the operands,
   and keeps the legal ones (checked by the op's rule in :mod:`shardc.sharding.rules`);
2. chooses among them -- by default the layout search (:mod:`shardc.sharding.search`)
   finds the combination of choices over the whole program with the least estimated
   time on the chip, the same per-op time the cost model reports;
3. inserts the reshards of the chosen layouts -- collectives chosen by
   :func:`~shardc.sharding.reshard.reshard`, the only place collectives are invented --
   and annotates the result with the layout its rule derives.

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

from shardc.errors import Loc, ShardcError
from shardc.hardware.comm import CommMode, comm_mode, priced_in
from shardc.hardware.profile import ChipProfile, load_profile
from shardc.ir.graph import Block, Graph, Op, Output, Repeat, Value
from shardc.ir.layout import Layout
from shardc.ir.mesh import Mesh
from shardc.ir.transforms import renumber, with_mesh
from shardc.sharding.presets import Attention, PresetChoice, RoleAssignment, Strategy, make_strategy
from shardc.sharding.search import Method, alternatives, search
from shardc.sharding.search import every_plan as search_every_plan
from shardc.sharding.sharded import ShardResult, collectives_of, verify_sharded
from shardc.sharding.walk import PostRequirement, State, Walk

__all__ = [
    "every_plan",
    "resolve_mesh",
    "shard",
    "shard_program",
]


def _in_source(g: Graph, loc: Loc) -> str:
    """Where a pin was written: in the program the pass read, whose lines are not the printed
    sharded program's (``at ffn.model:12``)."""
    if not loc.line:
        return "in the source program"
    return f"at {g.source.filename if g.source else 'the source program'}:{loc.line}"


def _post_requirements(g: Graph, mesh: Mesh) -> dict[int, PostRequirement]:
    """Values whose final layout is constrained: (layout or None = complete, reason)."""
    post: dict[int, PostRequirement] = {}
    for stmt, _ in g.walk():
        if isinstance(stmt, Op) and stmt.result.layout is not None:
            post[stmt.result.id] = (stmt.result.layout, f"pinned @ {stmt.result.layout.format(mesh)} "
                                    f"{_in_source(g, stmt.loc)}")
        elif isinstance(stmt, Output):
            for v in stmt.values:
                reason = (f"output pinned @ {stmt.pin.format(mesh)} {_in_source(g, stmt.loc)}"
                          if stmt.pin is not None else "outputs hold complete values")
                post.setdefault(v.id, (stmt.pin, reason))
        elif isinstance(stmt, Repeat):
            for c in stmt.carries:
                post.setdefault(c.init.id, (None, "values entering a repeat hold complete values"))
    return post


class _PinMessages:
    """Why an output pin cannot be honoured (outputs keep their names, so only the
    statement computing the value could have been resharded)."""

    def __init__(self, g: Graph) -> None:
        self.g = g
        self.decls = {d.value.id for d, _ in g.decls()}

    def __call__(self, st: State, v: Value, new: Value, pin: Layout) -> str:
        mesh = self.g.mesh
        assert mesh is not None
        have = new.layout.format(mesh) if new.layout else "unplaced"
        want = pin.format(mesh)
        carried = any(v.id in (c.arg.id, c.result.id) for r in self.g.repeats for c in r.carries)
        if carried:
            return (f"cannot pin output '{v.name}' to {want}: it is loop-carried, and a loop-carried value "
                    f"keeps the layout it enters the repeat with ({have}); pin the value entering the "
                    "repeat instead")
        if v.id in self.decls:
            return (f"cannot pin output '{v.name}' to {want}: it is declared as {have}; pin its declaration "
                    "instead")
        return (f"cannot pin output '{v.name}' to {want}: its own statement pins it to {have}; "
                "the two pins disagree")


def _run(g: Graph, mesh: Mesh, strategy: Strategy, method: Method, chip: ChipProfile, mode: CommMode,
         explain: bool, cutoff: float | None = None) -> ShardResult:
    walk = Walk(g, mesh, strategy, chip, mode, _post_requirements(g, mesh))
    pins = _PinMessages(g)
    best = search(walk, method, pins, cutoff)
    sharded, ids = _finish(g, mesh, best)
    reasons = {ids[old]: why for old, why in best.reason_map().items()}
    beaten: dict[int, str] = {}
    if explain and method is Method.SEARCH:
        beaten = {ids[old]: alt.describe(walk) for old, alt in alternatives(walk, best, pins).items()
                  if old in ids}
    return ShardResult(sharded, strategy, collectives_of(sharded, reasons, beaten), method=method,
                       seconds=best.seconds)


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
                  roles: RoleAssignment | None = None, method: Method | str = Method.SEARCH,
                  chip: str | ChipProfile | None = None, comm: str | None = None,
                  explain: bool = False, cutoff: float | None = None) -> ShardResult:
    """Shard ``g`` and report the collectives (see :func:`shard`).

    ``explain``: also find, for each collective a choice of the search put in, the
    cheapest plan that chose otherwise (:func:`shardc.sharding.search.alternatives`;
    it costs one more search per such choice), given in each record's ``alternative``.
    ``cutoff``: seconds; raise :class:`~shardc.sharding.search.Beaten` as soon as no plan can
    take at most that (the planner's pruning; a plan within it is the one found without it).
    """
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
    profile = load_profile(chip)
    mode = comm_mode(comm or profile.default_comm)
    # As the estimate does: fitted terms hold only in the model they were fitted in.
    return _run(g, mesh, bound, _method(method), priced_in(profile, mode), mode, explain, cutoff)


def _finish(g: Graph, mesh: Mesh, st: State) -> tuple[Graph, dict[int, int]]:
    """The sharded program of a final state, renumbered canonically and verified."""
    sharded, ids = renumber(replace(g, mesh=mesh, body=Block(tuple(st.outs[0]))))
    verify_sharded(sharded)
    return sharded, ids


def every_plan(g: Graph, mesh: Mesh | str | None = None, strategy: PresetChoice = None,
               attention: Attention | str | None = None, *, limit: int = 20_000) -> list[Graph]:
    """Every sharded program the candidate tables allow for ``g`` under the preset, one per
    combination of choices (no search: exponential in the program's choices, so for small
    programs).  The oracle the layout search is tested against; raises :class:`ShardcError`
    past ``limit`` partial plans."""
    mesh = resolve_mesh(g, mesh, strategy)
    if g.mesh != mesh:
        g = with_mesh(g, mesh)
    bound = make_strategy(g, mesh, strategy, attention, None)
    profile = load_profile(None)
    walk = Walk(g, mesh, bound, profile, CommMode(profile.default_comm), _post_requirements(g, mesh))
    return [_finish(g, mesh, st)[0] for st in search_every_plan(walk, _PinMessages(g), limit)]


def _method(method: Method | str) -> Method:
    if isinstance(method, Method):
        return method
    try:
        return Method(method)
    except ValueError:
        raise ShardcError(f"unknown layout search '{method}'; choose "
                          f"{' or '.join(m.value for m in Method)}") from None



def shard(g: Graph, mesh: Mesh | str | None = None, strategy: PresetChoice = None,
          attention: Attention | str | None = None, *, ffn: str | None = None,
          roles: RoleAssignment | None = None, method: Method | str = Method.SEARCH,
          chip: str | ChipProfile | None = None, comm: str | None = None) -> Graph:
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

    Within the preset, the pass chooses each op's layouts by ``method``: ``search``
    (default) finds the plan of least estimated time on ``chip`` (a profile name or
    :class:`~shardc.hardware.profile.ChipProfile`, default tpu-v4) under the ``comm``
    model (default the profile's), exactly within the candidates of
    :mod:`shardc.sharding.candidates` (:mod:`shardc.sharding.search`); ``greedy`` takes,
    op by op, the candidate moving the fewest bytes.
    """
    return shard_program(g, mesh, strategy, attention, ffn=ffn, roles=roles, method=method, chip=chip,
                         comm=comm).graph
