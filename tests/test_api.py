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
