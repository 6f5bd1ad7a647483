"""``shardc sweep`` and :mod:`shardc.planner.sweep`: each point is the planner's best, the outputs have
their shape, infeasible points are reported, the Pareto frontier is right, and the figures are drawn.

Everything here runs on the tiny examples with small chip lists, so the file takes a few seconds.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import shardc
from shardc.cli.main import main
from shardc.cli.sweep import ProgressBar, to_csv
from shardc.planner.sweep import FIELDS, SweepPoint, layout_sweep, pareto, pareto_indices, sweep

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "examples" / "tiny_ffn.model")


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def tiny_points() -> list[SweepPoint]:
    return sweep([TINY], chips=[2, 4], batches=[1, 2], weights=["bf16", "int8"], jobs=1)


# --- the points -------------------------------------------------------------------------------
def test_each_point_is_the_planners_best(tiny_points: list[SweepPoint]) -> None:
    g = shardc.load(TINY)
    assert [(p.weights, p.chips, p.batch) for p in tiny_points] == [
        (w, n, b) for w in ("bf16", "int8") for n in (2, 4) for b in (1, 2)]
    for p in tiny_points:
        best = shardc.plan(g, p.chips, batch=p.batch, weights=[p.weights], pad="any").best
        c, f = best.candidate, best.figures
        assert p.feasible and p.model == "tiny_ffn" and p.phase == "prefill"
        assert (p.mesh, p.ffn, p.attention, p.weights) == (c.mesh.spec(), c.ffn.value, c.attention.value,
                                                           c.weights.value)
        assert p.latency_s == f.latency_s and p.per_token_latency_s == f.per_token_latency_s
        assert p.cost_chip_ms_per_token == pytest.approx(f.cost_chip_s_per_token * 1e3)
        assert (p.mfu, p.memory_bytes_per_chip, p.tokens) == (f.mfu, f.memory_bytes_per_chip, f.tokens)
        assert p.plot_latency_s == p.latency_s  # a prefill file: the whole pass


def test_worker_processes_give_the_same_points_in_the_same_order(tiny_points: list[SweepPoint]) -> None:
    seen: list[tuple[int, int]] = []
    points = sweep([TINY], chips=[2, 4], batches=[1, 2], weights=["bf16", "int8"], jobs=2,
                   progress=lambda done, total: seen.append((done, total)))
    assert points == tiny_points
    assert seen == [(i, 8) for i in range(1, 9)]


def test_a_decode_file_plots_the_per_token_latency() -> None:
    g = shardc.parse(Path(TINY).read_text(), sizes={"L": 1})
    (p,) = sweep([g], chips=[2], batches=[2], weights=["bf16"], jobs=1)
    assert p.phase == "decode" and p.plot_latency_s == p.per_token_latency_s == p.latency_s


def test_infeasible_points_are_reported_with_the_reason() -> None:
    huge = shardc.parse(Path(TINY).read_text(), sizes={"E": 2 ** 20, "F": 2 ** 20})
    points = sweep([huge], chips=[3, 4], batches=[1], weights=["bf16"], jobs=1)
    assert [p.feasible for p in points] == [False, False]
    assert "no mesh of 3 chips" in (points[0].reason or "")
    assert "do not fit in HBM" in (points[1].reason or "")
    assert points[1].latency_s is None and points[1].mesh is None


def test_a_program_without_a_batch_is_one_error() -> None:
    text = "model m\ndims E=4\ninput x : f32[E]\nparam g : f32[E]\ny = x * g\noutput y\n"
    with pytest.raises(shardc.ShardcError, match="no dim B"):
        sweep([shardc.parse(text)], chips=[2], batches=[1], jobs=1)


# --- the Pareto frontier --------------------------------------------------------------------
def brute_front(pairs: list[tuple[float, float]]) -> set[int]:
    """Indices no other pair dominates (<= in both, < in one); of equal pairs only the first."""
    def beaten(i: int) -> bool:
        a = pairs[i]
        return any((b[0] <= a[0] and b[1] <= a[1] and b != a) or (b == a and j < i) for j, b in enumerate(pairs))
    return {i for i in range(len(pairs)) if not beaten(i)}


def test_pareto_on_hand_made_points() -> None:
    pairs = [(1.0, 10.0), (2.0, 5.0), (2.0, 6.0), (3.0, 5.0), (4.0, 1.0), (0.5, 20.0), (4.0, 1.0)]
    assert pareto_indices(pairs) == [5, 0, 1, 4]
    assert set(pareto_indices(pairs)) == brute_front(pairs)


def test_the_frontier_check_can_fail() -> None:
    pairs = [(1.0, 10.0), (2.0, 5.0), (3.0, 7.0)]
    assert brute_front(pairs) == {0, 1}
    assert set(range(len(pairs))) != brute_front(pairs)  # keeping every point would be caught
    assert {0} != brute_front(pairs)  # and so would dropping a frontier point


@given(st.lists(st.tuples(st.integers(1, 6), st.integers(1, 6)), max_size=12))
def test_pareto_equals_brute_force(raw: list[tuple[int, int]]) -> None:
    pairs = [(float(a), float(b)) for a, b in raw]
    front = pareto_indices(pairs)
    assert set(front) == brute_front(pairs)
    assert [pairs[i][0] for i in front] == sorted(pairs[i][0] for i in front)


def test_pareto_of_points_skips_infeasible_ones() -> None:
    def pt(lat: float | None, cost: float | None) -> SweepPoint:
        return SweepPoint("m", "decode", 8, 1, "bf16", lat is not None, latency_s=lat, per_token_latency_s=lat,
                          cost_chip_ms_per_token=cost)
    a, b, c, bad = pt(1.0, 3.0), pt(2.0, 1.0), pt(2.0, 2.0), pt(None, None)
    assert pareto([bad, c, b, a]) == [a, b]


# --- the command line -------------------------------------------------------------------------
def test_text_table_stars_the_frontier_and_lists_infeasible_points() -> None:
    status, out, _ = run(["sweep", TINY, "--chips", "3,2,4", "--batch", "1,2", "--weights", "bf16", "--jobs", "1"])
    assert status == 0, out
    assert "tiny_ffn (prefill), bf16 weights" in out and "infeasible: 3 chips, B=1: no mesh of 3 chips" in out
    assert any(line.lstrip().startswith("*") for line in out.splitlines())


def test_json_shape(tmp_path: Path) -> None:
    status, out, err = run(["sweep", TINY, TINY, "--chips", "2", "--batch", "2", "--weights", "bf16,int8",
                            "--json", "--jobs", "1"])
    assert status == 0, err
    data = json.loads(out)
    assert [(p["weights"], p["chips"]) for p in data["points"]] == [("bf16", 2), ("int8", 2)] * 2
    assert set(data["points"][0]) == set(FIELDS) | {"pareto"} and err == ""


@pytest.mark.parametrize("argv, message", [
    (["sweep", "no_such.model", "--json"], "no_such.model"),
    (["sweep", TINY, "--chips", "eight", "--json"], "--chips eight"),
    (["sweep", TINY, "--mesh", "2x2", "--json"], "--mesh"),
    (["sweep", TINY, "--jobs", "0", "--json"], "--jobs 0"),
    (["sweep", TINY, "--weights", "fp4", "--json", "--chips", "2", "--batch", "1"], "fp4"),
])
def test_json_errors_are_json(argv: list[str], message: str) -> None:
    status, out, _ = run(argv)
    assert status == 2
    assert message in json.loads(out)["error"]["message"]


def test_csv_shape(tmp_path: Path, tiny_points: list[SweepPoint]) -> None:
    target = tmp_path / "sweep.csv"
    status, _, err = run(["sweep", TINY, "--chips", "2,3", "--batch", "1,2", "--weights", "bf16", "--jobs", "1",
                          "--csv", str(target)])
    assert status == 0, err
    rows = list(csv.DictReader(target.open()))
    assert list(rows[0]) == list(FIELDS) and len(rows) == 4
    assert [r["feasible"] for r in rows] == ["True", "True", "False", "False"]
    assert rows[2]["latency_s"] == "" and "no mesh" in rows[2]["reason"]
    assert to_csv(tiny_points).count("\n") == len(tiny_points) + 1


def test_progress_bar() -> None:
    out = io.StringIO()
    bar = ProgressBar(out, enabled=True, after=0.0)
    for i in range(1, 4):
        bar(i, 3)
    bar.close()
    assert "\r[" in out.getvalue() and "] 3/3 points" in out.getvalue() and out.getvalue().endswith("\r")
    quiet = io.StringIO()
    hidden = ProgressBar(quiet, enabled=False, after=0.0)
    hidden(1, 1)
    hidden.close()
    assert quiet.getvalue() == ""
    late = io.StringIO()
    ProgressBar(late, enabled=True, after=60.0)(1, 2)  # a sweep shorter than the delay shows nothing
    assert late.getvalue() == ""


# --- the figures ------------------------------------------------------------------------------
def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    target = tmp_path / "fig1.png"
    status, _, err = run(["sweep", TINY, "--chips", "2,4", "--batch", "1,2", "--jobs", "1", "--plot", str(target)])
    assert status == 0, err
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_layouts_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    target = tmp_path / "fig3.png"
    status, out, err = run(["sweep", TINY, "--mesh", "2x2", "--batch", "1,2", "--plot-layouts", str(target)])
    assert status == 0, err
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "2d-ws" in out and "wg-xyz" in out


def test_layout_sweep_sums_the_collectives() -> None:
    g = shardc.load(TINY)
    points = layout_sweep(g, "2x2", [1, 2])
    assert [(p.ffn, p.batch) for p in points][:2] == [("1d-ws", 1), ("1d-ws", 2)] and len(points) == 10
    p = next(p for p in points if p.ffn == "2d-ws" and p.batch == 2)
    sg = shardc.shard(shardc.parse(Path(TINY).read_text(), sizes={"B": 2}), "2x2", "2d-ws", "heads")
    assert p.comm_s == pytest.approx(sum(shardc.estimate(sg).breakdown_by_collective.values()))
    assert p.tokens == 2 * 4


def test_a_missing_matplotlib_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import shardc.cli.plot as plot

    real = plot.importlib.util.find_spec
    monkeypatch.setattr(plot.importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib"
                        else real(name, *a))
    status, _, err = run(["sweep", TINY, "--chips", "2", "--batch", "1", "--plot", str(tmp_path / "x.png")])
    assert status == 2 and 'pip install -e ".[plot]"' in err
    status, out, _ = run(["sweep", TINY, "--plot-layouts", str(tmp_path / "x.png"), "--json"])
    assert status == 2 and "matplotlib" in json.loads(out)["error"]["message"]
