"""Every local matmul of the emulator reaches BLAS (times nothing).

``np.matmul`` hands each matrix of a batch to BLAS only when the two inner dims of both operands
are one contiguous matrix (row- or column-major); otherwise it runs its own loop, some 50 times
slower.  The emulator's two-operand einsums all go through ``local_ops.matmul``; these tests wrap
it and check every operand it receives, for every einsum of every example under every preset
that applies, on 2x2x2 and 4x4x4, shrunk (dims at least 8 where the model allows).  The check
here is written from NumPy's rule, not imported from the code under test; a mutation that skips
the emulator's layout choice shows it can fail.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

import shardc
from shardc.execute import local_ops
from shardc.execute.emulate import emulate
from shardc.execute.verification import shrink, verify
from shardc.ir.graph import EinsumAttrs, OpKind
from shardc.sharding.shard import shard_program

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.model"))
PRESETS = list(itertools.product(("1d-ws", "2d-ws", "wg-x", "wg-xy", "wg-xyz"), ("heads", "batch")))


def blas_ready(x: np.ndarray) -> bool:
    """Each matrix is contiguous: unit stride along one inner dim and the other's stride the length
    of that one (a dim of size 1 has no meaningful stride).  NumPy's own rule for BLAS is a little
    looser (it also takes rows further apart than their length); this is the sufficient one."""
    if x.ndim < 2:
        return True
    m, n = x.shape[-2:]
    sm, sn = x.strides[-2:]
    item = x.itemsize
    c_order = (n == 1 or sn == item) and (m == 1 or sm == n * item)
    f_order = (m == 1 or sm == item) and (n == 1 or sn == m * item)
    return c_order or f_order


class Watch:
    """Wraps ``local_ops.matmul``: records each call's operand shapes and whether both reach BLAS."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[tuple[int, ...], tuple[int, ...], bool]] = []
        inner = local_ops.matmul

        def watched(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
            self.calls.append((a.shape, b.shape, blas_ready(a) and blas_ready(b)))
            return inner(a, b, out)

        monkeypatch.setattr(local_ops, "matmul", watched)

    def off_blas(self) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
        return [(a, b) for a, b, ok in self.calls if not ok]


def programs(path: Path, mesh: str) -> list[tuple[str, shardc.Graph]]:
    """The example sharded under every preset that applies (H padded to 64 where 1d-ws needs it), shrunk."""
    out = []
    for ffn, attention in PRESETS:
        sizes = {"H": 64} if path.stem.startswith("palm") and ffn == "1d-ws" else {}
        g = shardc.parse(path.read_text(encoding="utf-8"), str(path), sizes=sizes)
        try:
            sg = shard_program(g, mesh, ffn, attention).graph
        except shardc.ShardcError:
            continue  # a dim the preset cannot split on this mesh
        out.append((f"{ffn}/{attention}", shrink(sg, floor=8)))
    return out


def two_operand_einsums(g: shardc.Graph) -> int:
    return sum(1 for op in g.ops() if op.kind is OpKind.EINSUM and len(op.attrs_as(EinsumAttrs).inputs) == 2)


@pytest.mark.parametrize("mesh", ["2x2x2", "4x4x4"])
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_einsum_hands_blas_ready_operands_to_matmul(path: Path, mesh: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    watch = Watch(monkeypatch)
    cases = programs(path, mesh)
    if not cases:
        pytest.skip(f"no preset splits {path.stem} on {mesh}")
    for name, sg in cases:
        before = len(watch.calls)
        # Watching every value turns fusion off: each einsum is one product, as the program says.
        emulate(sg, 0, "f32", layers=1, on_value=lambda op, layer, a: None)
        assert len(watch.calls) - before == two_operand_einsums(sg), name  # every einsum went through matmul
        emulate(sg, 0, "f32", layers=1)  # fused: an einsum computed slice by slice, each slice a product
        assert not watch.off_blas(), (name, watch.off_blas())


# Operands whose memory order fights the product: the batch dim innermost, contracted dims in
# different orders in the two operands, a contracted dim outermost.
AWKWARD = """\
model awkward
mesh x=2, y=2
dims B=4, L=8, E=16, F=8, H=4, D=8
input x : f32[L, E, B] @ L_xEB
input w : f32[F, E, B] @ F_yEB
y = einsum("LEB,FEB->BLF", x, w) @ BL_xF_y
input u : f32[H, D, B] @ HDB_x
param v : f32[D, H, F] @ DHF_y
z = einsum("HDB,DHF->BF", u, v) @ B_xF_y
output y, z
"""


def test_awkward_operand_orders_reach_blas_and_compute_the_einsum(monkeypatch: pytest.MonkeyPatch) -> None:
    watch = Watch(monkeypatch)
    report = verify(shardc.parse(AWKWARD), 0, "f64")
    assert report.passed, report.first_mismatch
    assert len(watch.calls) == 2 and not watch.off_blas(), watch.calls


def test_the_check_fails_when_the_layout_choice_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutation: take any view of the operands as ready (never copy one into the product's order)."""
    watch = Watch(monkeypatch)
    monkeypatch.setattr(local_ops, "_blas_ready", lambda view: True)
    emulate(shardc.parse(AWKWARD), 0, "f32")
    assert watch.off_blas()


def test_blas_ready_on_views() -> None:
    a = np.zeros((3, 4, 5), np.float32)
    assert blas_ready(a) and blas_ready(a.swapaxes(1, 2))  # row-major, and a transposed view
    assert not blas_ready(a[:, :, ::2])  # a strided inner dim
    assert not blas_ready(np.zeros((4, 3, 5), np.float32).transpose(1, 0, 2))  # rows 15 floats apart, not 5
    assert blas_ready(np.zeros((2, 7, 1), np.float32)[:, :, ::3])  # size 1: its stride does not matter
