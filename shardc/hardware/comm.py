"""How long a collective takes on a chip profile: the formulas, in one place.

Notation: ``K`` chips in the group of the collective's axes; ``D`` the bytes
per chip of the larger side (all-gather: its output, reduce-scatter,
all-reduce and all-to-all: their input); ``B`` the chip's interconnect
bandwidth for the group.

``paper`` mode (the paper's §3.1 analytic formulas)::

    all-gather = reduce-scatter = D / B      B = links x link bandwidth (TPU v4: 270 GB/s)
    all-reduce = 2 D / B                     (the paper drops the (K-1)/K factor)
    all-to-all = D / (4 B)

``torus`` mode (per-axis bidirectional rings, the scaling book's model)::

    all-gather = reduce-scatter = (K-1)/K * D / B
    all-reduce = 2 (K-1)/K * D / B
    all-to-all = (K-1)/K * D / (4 B)
    B = axes spanned x axis bandwidth (two links per ring: TPU v4 90 GB/s per axis)
        on a torus; the whole switch bandwidth on a switched node

Both modes add a latency term ``alpha * (ring steps)`` with
``alpha = calibration.hop_latency`` (zero in the bound), so every collective of the
calibrated estimate costs at least its hop latency times its ring steps.  On a torus a
collective over several axes runs one ring per axis, one after another, so it
takes ``sum(k_a - 1)`` steps over the axes it spans (a 4x4x4 group: 9, not
63); on a switched node it is one ring of ``K - 1`` steps.  An all-reduce
(reduce-scatter then all-gather) takes twice the steps.
"""
from __future__ import annotations

import enum
import functools
import itertools

from shardc.errors import ShardcError
from shardc.hardware.profile import ChipProfile, Topology
from shardc.ir.graph import OpKind
from shardc.ir.mesh import Mesh


class CommMode(enum.StrEnum):
    PAPER = "paper"
    TORUS = "torus"


COMM_CHOICES = tuple(m.value for m in CommMode)


def comm_mode(name: str) -> CommMode:
    """The communication model called ``name`` (``--comm``), or a ShardcError naming the choices."""
    try:
        return CommMode(name)
    except ValueError:
        raise ShardcError(f"unknown --comm mode '{name}'; choose {' or '.join(COMM_CHOICES)}") from None


def fitted_in(chip: ChipProfile, mode: CommMode) -> bool:
    """Whether the chip's calibration terms hold in ``mode``: they were fitted in it (or there are none)."""
    cal = chip.calibration
    return cal.is_zero() or cal.comm == mode.value


def priced_in(chip: ChipProfile, mode: CommMode) -> ChipProfile:
    """The profile that prices ops in ``mode``: the chip with its terms where they hold, else without."""
    return chip if fitted_in(chip, mode) else chip.uncalibrated()

# Relative to an all-gather of the same bytes.
_FACTOR = {OpKind.ALL_GATHER: 1.0, OpKind.REDUCE_SCATTER: 1.0, OpKind.ALL_REDUCE: 2.0,
           OpKind.ALL_TO_ALL: 0.25}


def group_bandwidth(axes: tuple[str, ...], mesh: Mesh, chip: ChipProfile, mode: CommMode) -> float:
    """Bytes/s a chip has for a collective over ``axes``.

    On a switched profile with nodes, a group whose chips sit in more than one node is limited by
    the inter-node link (in either mode: the paper's formulas describe one torus, not a cluster).
    """
    if spans_nodes(axes, mesh, chip):
        return chip.internode_bandwidth
    if mode is CommMode.PAPER or chip.topology is Topology.SWITCHED:
        return chip.ici_bandwidth
    spanned = sum(1 for a in axes if mesh.size(a) > 1)
    return max(spanned, 1) * chip.axis_bandwidth


def spans_nodes(axes: tuple[str, ...], mesh: Mesh, chip: ChipProfile) -> bool:
    """Whether some group of a collective over ``axes`` has chips in two nodes of a switched profile.

    Chips are numbered row-major over the mesh axes (the first axis major), and node ``n`` holds
    chips ``n * node_size`` to ``(n + 1) * node_size - 1``, as a launcher places ranks on hosts.
    """
    if chip.topology is not Topology.SWITCHED or not chip.node_size or mesh.num_chips <= chip.node_size:
        return False
    return _spans_nodes(tuple(mesh.axes), tuple(axes), chip.node_size)


@functools.lru_cache(maxsize=4096)
def _spans_nodes(mesh_axes: tuple[tuple[str, int], ...], axes: tuple[str, ...], node_size: int) -> bool:
    names = [a for a, _ in mesh_axes]
    nodes_of_group: dict[tuple[int, ...], set[int]] = {}
    for index, coords in enumerate(itertools.product(*(range(size) for _, size in mesh_axes))):
        outside = tuple(c for a, c in zip(names, coords) if a not in axes)  # which group the chip is in
        nodes = nodes_of_group.setdefault(outside, set())
        nodes.add(index // node_size)
        if len(nodes) > 1:
            return True
    return False


def collective_time(kind: OpKind, axes: tuple[str, ...], larger_side_bytes: float, mesh: Mesh,
                    chip: ChipProfile, mode: CommMode) -> tuple[float, float]:
    """(bandwidth seconds, latency seconds) of one collective (module docstring)."""
    k = mesh.group_size(axes)
    if k == 1 or kind is OpKind.SLICE:
        return 0.0, 0.0
    seconds = _FACTOR[kind] * larger_side_bytes / group_bandwidth(axes, mesh, chip, mode)
    if mode is CommMode.TORUS:
        seconds *= (k - 1) / k
    step = chip.calibration.hop_latency
    if spans_nodes(axes, mesh, chip):
        step += chip.internode_latency
    return seconds, ring_steps(kind, axes, mesh, chip) * step


def ring_steps(kind: OpKind, axes: tuple[str, ...], mesh: Mesh, chip: ChipProfile) -> int:
    """Sequential ring steps of one collective (module docstring); 0 for a group of one chip."""
    if chip.topology is Topology.SWITCHED:
        steps = mesh.group_size(axes) - 1
    else:  # one ring per torus axis, one after another
        steps = sum(mesh.size(a) - 1 for a in axes)
    return steps * (2 if kind is OpKind.ALL_REDUCE else 1)
