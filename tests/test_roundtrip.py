"""Print/parse round trips: ``parse(format(g)) == g`` and ``format`` is canonical.

* random well-typed programs (shardc.testing.programs), with and without a mesh,
  pins, repeat blocks, comments and odd spacing;
* golden ``fmt`` output of every example (tests/golden/<example>.model.fmt;
  regenerate with ``pytest tests/test_roundtrip.py --update-golden``);
* the complete example of docs/language.md (tests/data/language_example.model).
"""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shardc
from shardc import Layout
from shardc.ir.graph import Decl, Op
from shardc.testing import layouts, meshes, program_models, programs

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.model"))
GOLDEN = Path(__file__).parent / "golden"
LANGUAGE_EXAMPLE = Path(__file__).parent / "data" / "language_example.model"


def examples(n: int) -> int:
    """``n`` examples in the default CI profile, proportionally more under ``--fuzz``."""
    return max(1, n * settings.default.max_examples // 100)


def fmt(text: str) -> str:
    return shardc.format(shardc.parse(text))


def assert_round_trip(text: str) -> None:
    """parse(format(g)) == g, and formatting the reparsed graph changes nothing."""
    g = shardc.parse(text)
    printed = shardc.format(g)
    again = shardc.parse(printed)
    assert again == g, f"parse(format(g)) != g for\n{text}\nprinted as\n{printed}"
    assert shardc.format(again) == printed, f"format is not idempotent for\n{printed}"


# --- random programs -------------------------------------------------------------------
@settings(max_examples=examples(200))
@given(programs())
def test_random_programs_round_trip(text: str) -> None:
    assert_round_trip(text)


@settings(max_examples=examples(50))
@given(programs(mesh=meshes(), max_repeats=2, max_statements=4, trivia=False))
def test_random_pinned_programs_round_trip(text: str) -> None:
    """Always a mesh (so some values are pinned), two repeat blocks, plain text."""
    assert_round_trip(text)


@settings(max_examples=examples(30))
@given(program_models())
def test_generated_programs_define_what_the_model_says(model) -> None:
    """The strategy's own model of a program agrees with the parser (a check on the strategy)."""
    g = shardc.parse(model.text())
    assert g.name == model.name
    assert dict(g.dims) == model.sizes
    assert g.mesh == model.mesh
    assert not g.is_sharded
    top_level = {s.value.name: s.value.dims for s in g.body if isinstance(s, Decl)}
    top_level.update({s.result.name: s.result.dims for s in g.body if isinstance(s, Op)})
    for tensor in model.values():
        assert top_level[tensor.name] == tensor.dims


@settings(max_examples=examples(100))
@given(st.data())
def test_layouts_fit_their_mesh_and_round_trip(data: st.DataObject) -> None:
    mesh = data.draw(meshes())
    dims = tuple(data.draw(st.lists(st.sampled_from("BLSEFHD"), min_size=1, max_size=4, unique=True)))
    sizes = {d: data.draw(st.integers(1, 12)) for d in dims}
    layout = data.draw(layouts(dims, sizes, mesh, partial=True))
    layout.check(sizes, mesh, dims)
    text, _, partial = layout.format(mesh).partition(" ")
    assert Layout.parse(text, partial or None) == layout


# --- the examples: golden fmt output -----------------------------------------------------
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_round_trips(path: Path) -> None:
    assert_round_trip(path.read_text())


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_fmt_matches_golden(path: Path, request: pytest.FixtureRequest) -> None:
    golden = GOLDEN / f"{path.name}.fmt"
    printed = shardc.format(shardc.load(path))
    if request.config.getoption("--update-golden"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(printed)
        pytest.skip(f"rewrote {golden.name}")
    assert golden.exists(), f"no golden file {golden}; run pytest --update-golden"
    assert printed == golden.read_text()


def test_every_example_has_a_golden_file() -> None:
    """A golden file without its example is stale."""
    stale = {p.name for p in GOLDEN.glob("*.fmt")} - {f"{p.name}.fmt" for p in EXAMPLES}
    assert not stale, f"golden files without an example: {sorted(stale)}"


# --- the complete example of docs/language.md ------------------------------------------------
def test_language_example_round_trips() -> None:
    text = LANGUAGE_EXAMPLE.read_text()
    once = fmt(text)
    assert fmt(once) == once
    assert shardc.parse(once) == shardc.parse(text)
    assert_round_trip(text)


def test_language_example_keeps_its_comments() -> None:
    once = fmt(LANGUAGE_EXAMPLE.read_text())
    assert once.startswith("# PaLM-style decoder layer, decode step, multiquery attention\nmodel palm_62b\n")
    assert "repeat 64 {  # 64 identical layers; names declared inside are per layer\n" in once
    assert "  x  = x + o + f  # rebinding an outer name carries it to the next layer\n" in once


def test_language_example_is_already_canonical_but_for_comment_spacing() -> None:
    """fmt only re-spaces trailing comments: the statements of the example are canonical."""
    text = LANGUAGE_EXAMPLE.read_text()
    strip = [line.split("#")[0].rstrip() for line in text.splitlines()]
    assert [line.split("#")[0].rstrip() for line in fmt(text).splitlines()] == strip
