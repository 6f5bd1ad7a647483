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

from shardc.hardware.profile import ChipProfile, Topology
from shardc.ir.graph import OpKind
from shardc.ir.mesh import Mesh


class CommMode(enum.Enum):
    PAPER = "paper"
    TORUS = "torus"


COMM_CHOICES = tuple(m.value for m in CommMode)

# Relative to an all-gather of the same bytes.
_FACTOR = {OpKind.ALL_GATHER: 1.0, OpKind.REDUCE_SCATTER: 1.0, OpKind.ALL_REDUCE: 2.0,
           OpKind.ALL_TO_ALL: 0.25}


def group_bandwidth(axes: tuple[str, ...], mesh: Mesh, chip: ChipProfile, mode: CommMode) -> float:
    """Bytes/s a chip has for a collective over ``axes``."""
    if mode is CommMode.PAPER or chip.topology is Topology.SWITCHED:
        return chip.ici_bandwidth
    spanned = sum(1 for a in axes if mesh.size(a) > 1)
    return max(spanned, 1) * chip.axis_bandwidth


def collective_time(kind: OpKind, axes: tuple[str, ...], larger_side_bytes: float, mesh: Mesh,
                    chip: ChipProfile, mode: CommMode) -> tuple[float, float]:
    """(bandwidth seconds, latency seconds) of one collective (module docstring)."""
    k = mesh.group_size(axes)
    if k == 1 or kind is OpKind.SLICE:
        return 0.0, 0.0
    seconds = _FACTOR[kind] * larger_side_bytes / group_bandwidth(axes, mesh, chip, mode)
    if mode is CommMode.TORUS:
        seconds *= (k - 1) / k
    return seconds, ring_steps(kind, axes, mesh, chip) * chip.calibration.hop_latency


def ring_steps(kind: OpKind, axes: tuple[str, ...], mesh: Mesh, chip: ChipProfile) -> int:
    """Sequential ring steps of one collective (module docstring); 0 for a group of one chip."""
    if chip.topology is Topology.SWITCHED:
        steps = mesh.group_size(axes) - 1
    else:  # one ring per torus axis, one after another
        steps = sum(mesh.size(a) - 1 for a in axes)
    return steps * (2 if kind is OpKind.ALL_REDUCE else 1)
