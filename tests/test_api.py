"""The public API for tools that embed shardc: what it exports, and how it fails."""
from __future__ import annotations

import dataclasses
import json
import re
import sys
import typing

import pytest

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


def _reachable(roots: list[type]) -> dict[type, str]:
    """Every shardc class the fields (and typed properties) of ``roots`` refer to, transitively,
    with the class that refers to it."""
    seen: dict[type, str] = {}

    def visit(tp: object, via: str) -> None:
        if typing.get_origin(tp) is not None:
            for arg in typing.get_args(tp):
                visit(arg, via)
        elif isinstance(tp, type) and tp.__module__.startswith("shardc") and tp not in seen:
            seen[tp] = via
            if dataclasses.is_dataclass(tp):
                names = vars(sys.modules[tp.__module__])
                hints = typing.get_type_hints(tp, names)
                for f in dataclasses.fields(tp):
                    visit(hints[f.name], tp.__name__)
                for attr, member in vars(tp).items():
                    if isinstance(member, property) and member.fget is not None:
                        visit(typing.get_type_hints(member.fget, names).get("return"), f"{tp.__name__}.{attr}")

    for root in roots:
        visit(root, "shardc")
    return seen


def test_every_class_a_result_refers_to_is_exported() -> None:
    """Walked from the exported classes through their fields' types: a report's parts (OpTime,
    Replicated, Figures, ...) and the IR a Graph is made of can all be named from ``shardc``."""
    exported = [getattr(shardc, n) for n in shardc.__all__]
    reached = _reachable([c for c in exported if isinstance(c, type)])
    missing = {t.__name__: via for t, via in reached.items() if not any(t is e for e in exported)}
    assert not missing, missing
    assert {shardc.OpTime, shardc.Replicated, shardc.Figures, shardc.Step, shardc.Op} <= set(reached)
    # The walk can fail: a class only the internals use is reached and not exported.
    from shardc.sharding.walk import State
    assert not any(State is e for e in exported) and _reachable([State])


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


def test_an_internal_error_names_the_statement(monkeypatch, capsys) -> None:
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
    # The command line's report of the bug names the statement too, as text and as JSON.
    from shardc.cli.main import main

    assert main(["verify", "examples/tiny_ffn.model"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"internal error: ValueError: operands could not be broadcast \(while emulating "
                     r"'\w+' = gelu \(line \d+\)\)", err.splitlines()[-1]), err
    assert main(["verify", "examples/tiny_ffn.model", "--json"]) == 2
    message = json.loads(capsys.readouterr().out)["error"]["message"]
    assert "while emulating" in message and "= gelu (line " in message


# --- JSON of every result ---------------------------------------------------------------------
def _plain(obj: object, where: str = "$") -> None:
    """JSON made of exactly str, int, float, bool, None, list and str-keyed dict: no enum (a StrEnum is
    a str subclass, so ``type(x) is str`` is what shows none leaked), no tuple, no array."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert type(k) is str, f"{where}: key {k!r} is a {type(k).__name__}"
            _plain(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _plain(v, f"{where}[{i}]")
    else:
        assert obj is None or type(obj) in (str, int, float, bool), f"{where}: {type(obj).__name__} {obj!r}"


def _results(path: str) -> dict[str, object]:
    """One of each result the API returns, for the program at ``path``."""
    g = shardc.load(path)
    res = shardc.shard_program(g, "2x2x2", ffn="2d-ws")
    small = shardc.shrink(res.graph)
    report = shardc.verify(small)
    assert report.counters is not None
    return {"ShardResult": res, "CollectiveRecord": res.collectives[0], "Emulation": shardc.emulate(small),
            "VerifyReport": report, "Counters": report.counters, "CostReport": shardc.estimate(res.graph),
            "Plan": shardc.plan(g, mesh="2x2x2", ffn="2d-ws", attention="heads"), "Summary": shardc.summarize(g)}


def test_every_result_has_to_json_with_stable_keys_and_no_enums() -> None:
    tiny, palm = _results("examples/tiny_layer.model"), _results("examples/palm_8b_decode.model")
    assert set(tiny) == set(palm)
    for name in tiny:
        a, b = tiny[name].to_json(), palm[name].to_json()  # type: ignore[attr-defined]
        _plain(a, name)
        _plain(b, name)
        assert list(a) == list(b), name  # the same keys in the same order, whatever the program
        assert json.loads(json.dumps(a)) == a
    mismatch = shardc.Mismatch(value="h", op="gelu", line=3, layer=0, abs_error=1.0, rel_error=0.5, message="m")
    _plain(mismatch.to_json())
    with_enum = {"kind": shardc.OpKind.EINSUM}
    try:  # the check sees an enum that json.dumps would let through
        _plain(with_enum)
    except AssertionError:
        pass
    else:
        raise AssertionError("an enum passed the check")


def test_shard_result_json_is_the_result() -> None:
    res = shardc.shard_program(shardc.load("examples/tiny_ffn.model"), "2x2x2", ffn="1d-ws")
    data = res.to_json()
    assert shardc.parse(data["program"]) == res.graph
    assert [c["value"] for c in data["collectives"]] == [c.value for c in res.collectives]
    assert data["ffn"] == "1d-ws" and data["mesh"] == "2x2x2" and data["method"] == "search"
    assert res.collectives[0].to_json() == res.collectives[0].to_json(res.graph.mesh)


# --- strings wherever an enum is ----------------------------------------------------------------
def test_strings_are_accepted_wherever_an_enum_is() -> None:
    g = shardc.load("examples/tiny_layer.model")
    by_enum = shardc.shard(g, "2x2x2", shardc.FFN.WS_2D, shardc.Attention.HEADS, method=shardc.Method.GREEDY)
    by_name = shardc.shard(g, "2x2x2", "2d-ws", "heads", method="greedy")
    assert by_enum == by_name
    assert shardc.PRESETS["2d-ws"] is shardc.PRESETS[shardc.FFN.WS_2D]
    assert shardc.bind(shardc.PRESETS["wg-x"], "2x2x2", "batch") == \
        shardc.bind(shardc.PRESETS[shardc.FFN.WG_X], "2x2x2", shardc.Attention.BATCH)
    assert shardc.estimate(by_name, comm="paper") == shardc.estimate(by_name, comm=shardc.CommMode.PAPER)
    assert shardc.TensorType("bf16", "BE") == shardc.TensorType(shardc.DType.BF16, ("B", "E"))
    assert shardc.with_weight_dtype(g, "int8") == shardc.with_weight_dtype(g, shardc.DType.INT8)
    cost = shardc.plan(g, mesh="2x2x2", objective="cost", ffn="2d-ws", attention="heads")
    assert cost.best.figures == shardc.plan(g, mesh="2x2x2", objective=shardc.Objective.COST,
                                            ffn=[shardc.FFN.WS_2D], attention="heads").best.figures
    # ... and an enum reads as its name: comparisons and JSON need no .value
    record = shardc.shard_program(g, "2x2x2").collectives[0]
    assert record.kind == str(record.kind) and json.dumps(record.kind) == f'"{record.kind}"'
    with pytest.raises(shardc.ShardcError, match="unknown dtype 'f8'; choose f32, bf16, f16, int8"):
        shardc.TensorType("f8", "B")


# --- defaults and counts that agree ------------------------------------------------------------------
def test_verify_runs_the_command_lines_default_layers() -> None:
    """verify(sg) ran every layer (2.5 s for PaLM 540B shrunk) where shardc verify runs two."""
    from shardc.cli.main import main

    sg = shardc.shrink(shardc.shard(shardc.load("examples/palm_8b_decode.model")))
    default, two, every = shardc.verify(sg), shardc.verify(sg, layers=2), shardc.verify(sg, layers=None)
    assert shardc.DEFAULT_LAYERS == 2
    assert default.counters == two.counters and default.counters != every.counters
    per_layer = two.counters.flops - shardc.verify(sg, layers=1).counters.flops
    assert every.counters.flops - two.counters.flops == pytest.approx(30 * per_layer)  # 32 layers in all
    assert main(["verify", "examples/palm_8b_decode.model", "--shrink", "--json"]) == 0


def test_collective_ops_are_the_graphs_and_statistics_are_the_rest() -> None:
    """sg.ops() has 15 collectives where res.collectives lists 17 on PaLM: the two statistics
    all-reduces inside layernorms are collectives the program runs, not ops of their own."""
    for path in ("examples/palm_540b_decode.model", "examples/gqa_decode.model", "examples/tiny_ffn.model"):
        res = shardc.shard_program(shardc.load(path), "2x2x2")
        ops = [op for op in res.graph.ops() if op.kind.is_collective]
        assert [c.value for c in res.collective_ops] == [op.result.name for op in ops]
        assert len(res.collective_ops) + len(res.statistics) == len(res.collectives)
        assert all(c.implicit and c.kind == "all_reduce" for c in res.statistics)
    assert res.statistics  # tiny_ffn's layernorm over a split E


def test_estimate_takes_the_weight_dtype() -> None:
    sg = shardc.shard(shardc.load("examples/palm_8b_decode.model"))
    bf16, int8 = shardc.estimate(sg), shardc.estimate(sg, weights="int8")
    assert int8.weight_bytes_per_chip == bf16.weight_bytes_per_chip / 2
    assert int8 == shardc.estimate(shardc.with_weight_dtype(sg, "int8"))
    assert int8.latency_s < bf16.latency_s  # decode is bound by weight loading
    with pytest.raises(shardc.ShardcError, match="unknown dtype"):
        shardc.estimate(sg, weights="int4")


def test_no_exported_name_hides_a_module() -> None:
    """``import shardc.reference`` gave the function, not the module: an exported name and a
    submodule of the same name cannot both be reached as shardc.NAME."""
    import importlib.util
    import pkgutil

    modules = {m.name for m in pkgutil.iter_modules(shardc.__path__)}
    assert {"execute", "language", "testing"} <= modules  # the walk sees the package's modules
    assert not modules & set(shardc.__all__), modules & set(shardc.__all__)
    assert callable(shardc.reference) and importlib.util.find_spec("shardc.execute.reference") is not None
