"""The public API for tools that embed shardc: what it exports, and how it fails."""
from __future__ import annotations

import dataclasses

import shardc


def test_everything_a_result_refers_to_is_exported() -> None:
    """A tool can name the type of every object the API hands back, from ``shardc`` itself."""
    g = shardc.load("examples/tiny_ffn.model")
    result = shardc.shard_program(g)
    report = shardc.verify(shardc.shrink(result.graph))
    cost = shardc.estimate(result.graph)
    handed_back = [result, result.collectives[0], report, report.counters, cost, g.mesh,
                   result.graph.body.stmts[0].value.layout, shardc.load_profile(None)]
    for obj in handed_back:
        assert getattr(shardc, type(obj).__name__) is type(obj), type(obj).__name__
    assert set(shardc.__all__) <= set(dir(shardc))
    assert shardc.max_context  # the KV-cache context limit, beside estimate


def test_results_are_frozen() -> None:
    g = shardc.load("examples/tiny_ffn.model")
    for cls in (shardc.ShardResult, shardc.CollectiveRecord, shardc.VerifyReport, shardc.CostReport):
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, cls.__name__
    assert shardc.shard(g).is_sharded


def test_testing_without_hypothesis_says_how_to_install_it() -> None:
    """``import shardc.testing`` without the test extra names the missing package and the fix."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['hypothesis'] = None\n"  # as if Hypothesis were not installed
            "try:\n    import shardc.testing\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "pip install 'shardc[test]'" in out


def test_user_arrays_by_name_reach_reference_emulate_and_verify() -> None:
    import numpy as np
    import pytest

    g = shardc.load("examples/tiny_ffn.model")
    sizes = g.sizes
    x = np.random.default_rng(1).standard_normal([sizes[d] for d in "BLE"])
    ref = shardc.reference(g, inputs={"x": x})
    assert not np.allclose(ref["x"], shardc.reference(g)["x"])  # the user's x was used, not the seeded one
    sg = shardc.shard(g)
    run = shardc.emulate(sg, inputs={"x": x})
    np.testing.assert_allclose(run.outputs["x"], ref["x"], rtol=1e-5, atol=1e-5)
    assert shardc.verify(sg, inputs={"x": x}, source=g).passed
    # A param of the repeat has one array per layer: a leading axis of the repeat's count.
    repeat = g.repeats[0]
    win = next(d for d in repeat.body if getattr(d, "value", None) is not None and d.value.name == "win")
    stacked = np.zeros((repeat.count,) + tuple(sizes[d] for d in win.value.dims))
    assert shardc.verify(sg, inputs={"x": x, "win": stacked}).passed
    with pytest.raises(shardc.ShardcError, match=r"needs shape \[2, .*one .* per layer"):
        shardc.reference(g, inputs={"win": stacked[0]})
    with pytest.raises(shardc.ShardcError, match="'nope' is not an input, param or cache"):
        shardc.reference(g, inputs={"nope": x})
    with pytest.raises(shardc.ShardcError, match="real numbers"):
        shardc.reference(g, inputs={"x": np.full(x.shape, "a")})


def test_an_internal_error_names_the_statement(monkeypatch) -> None:
    """A failure inside an op implementation (a bug) says which statement was running."""
    import pytest

    from shardc.execute import local_ops
    from shardc.ir.graph import OpKind

    def broken(*args: object) -> object:
        raise ValueError("operands could not be broadcast")

    monkeypatch.setitem(local_ops.LOCAL_IMPLS, OpKind.GELU, broken)
    sg = shardc.shard(shardc.load("examples/tiny_ffn.model"))
    with pytest.raises(ValueError) as info:
        shardc.emulate(sg)
    assert any("while emulating" in n and "gelu" in n and "line" in n for n in info.value.__notes__)
