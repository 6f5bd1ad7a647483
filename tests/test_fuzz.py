"""Parser fuzz: whatever the text, ``shardc.parse`` returns a Graph or raises ShardcError.

Inputs: random strings and bytes, random "token soup" from the language's own
vocabulary, and single-token mutations (delete / duplicate / replace) of the
examples -- every one of them systematically for the small examples, random ones
(up to three at a time) for all.  Every error must be located (these are all
errors in the source text) and render as ``file:line:col: error: ...`` with the
source line and a caret under the column.  A mutant that still parses must
round-trip through the printer.

The default run makes a few thousand parses in a few seconds; ``--fuzz`` makes
many more (random seeds, 50x the Hypothesis examples, and every vocabulary token
at every position of the tiny examples).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shardc

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.model")) + [Path(__file__).parent / "data" / "language_example.model"]
TEXTS = {p.name: p.read_text() for p in EXAMPLES}
SMALL = ["tiny_ffn.model", "tiny_layer.model", "language_example.model"]
FILENAME = "fuzz.model"

# Tokens of the language, near misses, and junk.
VOCABULARY = [
    # keywords, dtypes, ops, collectives, keyword-argument names
    "model", "mesh", "dims", "input", "param", "cache", "repeat", "output",
    "f32", "bf16", "f16", "int8", "f64",
    "einsum", "gelu", "relu", "silu", "tanh", "exp", "layernorm", "rmsnorm", "softmax", "sum",
    "causal", "relabel", "all_gather", "reduce_scatter", "all_reduce", "all_to_all", "slice",
    "over", "dim", "from", "to", "over=E", "over=x", "dim=F",
    # punctuation
    "(", ")", "[", "]", "{", "}", ",", ":", "=", "@", "+", "-", "*", "/", "->", "==", "\"",
    # strings, numbers, layouts, dims, names
    '"BLE,EF->BLF"', '"BLE->"', '"BB->B"', '""', '"ble"',
    "0", "1", "4096", "0.0625", "1e-6", "1E+6", "1.", ".5", "1e", "4x", "1e999", "99999999999999999999",
    "BLE_xyz", "BLE_x", "B_xLE", "E_xF_yz", "BLE_xx", "BLE_q", "_x", "(partialsum-yz)", "(partialsum-)",
    "(partialsum-x", "B", "L", "E", "Q", "BL", "x", "h", "zz", "_", "Abc", "x1", "__",
    # layout of text, and junk
    "\n", "\n\n", "\r\n", "\r", "\t", " ", "#", "# comment", "}\n", "{\n",
    "$", "%", "\\", "\x00", "\x0c", "\u00e9", "\U0001f642", "\u2028", "\ufeff",
]

# One lexical token of the examples (whitespace runs and newlines are tokens too).
_TOKEN_RE = re.compile(r'"[^"\n]*"|#[^\n]*|\(partialsum-[a-z]*\)|[A-Za-z0-9_.]+|\r?\n|[ \t]+|.')


def tokenize(text: str) -> list[str]:
    return _TOKEN_RE.findall(text)


def examples(n: int) -> int:
    """``n`` examples in the default CI profile, proportionally more under ``--fuzz``."""
    return max(1, n * settings.default.max_examples // 100)


def check_parse(text: str) -> None:
    """Parse ``text``: a Graph that round-trips, or a located, well-rendered ShardcError."""
    try:
        g = shardc.parse(text, FILENAME)
    except shardc.ShardcError as err:
        check_error(err)
        return
    printed = shardc.format(g)
    again = shardc.parse(printed)
    assert again == g, f"round trip failed for\n{text!r}\nprinted as\n{printed}"
    assert shardc.format(again) == printed, f"format is not idempotent for\n{text!r}"


def check_error(err: shardc.ShardcError) -> None:
    assert err.message and "\n" not in err.message, repr(err.message)
    assert err.line is not None and err.col is not None, f"no location: {err.render()}"
    assert err.line >= 1 and err.col >= 1, err.render()
    lines = err.render().split("\n")
    assert lines[0].startswith(f"{FILENAME}:{err.line}:{err.col}: error: "), lines[0]
    assert not any(line.startswith("Traceback") for line in lines)
    # Only '\n' ends a line (a form feed or U+2028 in a comment does not).
    source_line = err.source.text.split("\n")[err.line - 1].removesuffix("\r")
    assert err.col <= len(source_line) + 1, (err.render(), err.col)
    assert lines[1] == source_line
    caret = lines[2]
    assert caret.endswith("^") and len(caret) == err.col, (err.render(), err.col)


def mutate(tokens: list[str], op: str, at: int, new: str = "") -> str:
    """``tokens`` with the one at ``at`` deleted, duplicated or replaced by ``new``."""
    if op == "delete":
        return "".join(tokens[:at] + tokens[at + 1:])
    if op == "duplicate":
        return "".join(tokens[:at + 1] + tokens[at:])
    return "".join(tokens[:at] + [new] + tokens[at + 1:])


# --- random text ---------------------------------------------------------------------
@settings(max_examples=examples(500))
@given(st.text())
def test_random_text(text: str) -> None:
    check_parse(text)


@settings(max_examples=examples(150))
@given(st.binary())
def test_random_bytes(data: bytes) -> None:
    check_parse(data.decode("utf-8", errors="replace"))
    check_parse(data.decode("latin-1"))


@settings(max_examples=examples(500))
@given(st.lists(st.sampled_from(VOCABULARY), max_size=40), st.sampled_from(["", " ", "\n"]))
def test_token_soup(tokens: list[str], sep: str) -> None:
    check_parse(sep.join(tokens))


@settings(max_examples=examples(200))
@given(st.lists(st.sampled_from(VOCABULARY), max_size=25))
def test_token_soup_after_a_valid_header(tokens: list[str]) -> None:
    """Get past 'model' so that the soup reaches the statements."""
    header = "model m\nmesh x=2, y=2\ndims B=2, L=4, E=8, F=16\ninput x : f32[B, L, E]\n"
    check_parse(header + " ".join(tokens) + "\n")


# --- mutations of the examples ----------------------------------------------------------
@st.composite
def mutants(draw: st.DrawFn) -> str:
    """An example with one to three random single-token mutations."""
    tokens = tokenize(TEXTS[draw(st.sampled_from(sorted(TEXTS)))])
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["delete", "duplicate", "replace", "replace"]))
        at = draw(st.integers(0, len(tokens) - 1))
        tokens = tokenize(mutate(tokens, op, at, draw(st.sampled_from(VOCABULARY))))
    return "".join(tokens)


@settings(max_examples=examples(600))
@given(mutants())
def test_random_mutations_of_the_examples(text: str) -> None:
    check_parse(text)


@pytest.mark.parametrize("name", SMALL)
def test_every_single_token_deletion_and_duplication(name: str) -> None:
    tokens = tokenize(TEXTS[name])
    for at, token in enumerate(tokens):
        if not token.isspace() or "\n" in token:
            check_parse(mutate(tokens, "delete", at))
            check_parse(mutate(tokens, "duplicate", at))


@pytest.mark.parametrize("name", ["tiny_layer.model"])
def test_every_single_token_replacement(name: str, pytestconfig: pytest.Config) -> None:
    """Every vocabulary token at every position (every 7th position unless --fuzz)."""
    tokens = tokenize(TEXTS[name])
    step = 1 if pytestconfig.getoption("--fuzz") else 7
    for at in range(0, len(tokens), step):
        for new in VOCABULARY[at % 3::3] if step > 1 else VOCABULARY:
            check_parse(mutate(tokens, "replace", at, new))


def test_the_examples_themselves_parse() -> None:
    for name, text in TEXTS.items():
        shardc.parse(text, name)


# --- line breaks that are not '\n' ------------------------------------------------------------
OTHER_BREAKS = ["\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029"]


@pytest.mark.parametrize("brk", OTHER_BREAKS, ids=[f"U+{ord(c):04X}" for c in OTHER_BREAKS])
def test_error_after_a_comment_with_an_odd_line_break_shows_the_right_line(brk: str) -> None:
    """str.splitlines() breaks lines at these; the lexer does not (only at '\n')."""
    text = f"model m  # a{brk}b\ndims B=2\ninput x : f32[Q]\n"
    with pytest.raises(shardc.ShardcError) as info:
        shardc.parse(text, FILENAME)
    assert (info.value.line, info.value.col) == (3, 15)
    assert info.value.render().split("\n")[1:3] == ["input x : f32[Q]", "              ^"]
    check_error(info.value)


@pytest.mark.parametrize("brk", OTHER_BREAKS, ids=[f"U+{ord(c):04X}" for c in OTHER_BREAKS])
def test_fmt_keeps_blank_lines_after_a_comment_with_an_odd_line_break(brk: str) -> None:
    text = f"model m\n# a{brk}b\ndims B=2\ninput x : f32[B]\n\ninput y : f32[B]\n"
    printed = shardc.format(shardc.parse(text))
    assert "input x : f32[B]\n\ninput y : f32[B]\n" in printed
