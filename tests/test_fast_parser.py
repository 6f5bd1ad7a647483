"""The fast LALR driver reads what lark reads, as lark reads it.

:class:`shardc.language.lalr.FastParser` runs lark's own tables and lexer for the grammar, and
text it cannot read is parsed again by lark.  Here texts of the parser fuzz -- the examples, the
sharded programs ``compile`` writes, single-token mutations of both, token soup -- are read both
ways: wherever the driver gives statements they equal lark's (comments too), wherever lark fails
the driver fails, and every valid program is read by the driver itself (so the speed of the
front end is the driver's, not the fallback's).
"""
from __future__ import annotations

import random

import pytest
from lark.exceptions import UnexpectedInput
from test_fuzz import TEXTS, VOCABULARY, examples, mutate, tokenize

import shardc
from shardc.errors import Source
from shardc.language import lalr, parser

SHARDED = {f"{name}.sharded": shardc.format(shardc.shard_program(shardc.parse(TEXTS[name]),
                                                                  shardc.Mesh.parse("2x2x2")).graph)
           for name in ("tiny_ffn.model", "tiny_layer.model")}
VALID = {**TEXTS, **SHARDED}


def read_both(text: str, fast: lalr.FastParser | None = None) -> tuple[object, object]:
    """(driver's result, lark's result) for ``text``: (statements, comments), or None where it fails."""
    front = parser._front()
    fast = fast or front.fast
    assert fast is not None
    results: list[object] = []
    with front.builder.lock:
        for read, failure in ((fast.parse, lalr.Miss), (front.lark.parse, UnexpectedInput)):
            front.builder.begin(Source("t.model", text))
            try:
                results.append((read(text), tuple(front.builder.comments)))
            except failure:
                results.append(None)
    return results[0], results[1]


def corpus(seed: int, count: int) -> list[str]:
    """The valid programs, then ``count`` random single-token mutations and token soups."""
    rng = random.Random(seed)
    texts = list(VALID.values())
    for _ in range(count):
        tokens = tokenize(rng.choice(texts[:len(VALID)]))
        at = rng.randrange(len(tokens))
        texts.append(mutate(tokens, rng.choice(["delete", "duplicate", "replace"]), at, rng.choice(VOCABULARY)))
        texts.append(" ".join(rng.choices(VOCABULARY, k=rng.randrange(1, 30))))
    return texts


def test_the_driver_is_in_use() -> None:
    assert parser._front().fast is not None, "the installed lark is not laid out as shardc.language.lalr reads it"


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_programs_are_read_by_the_driver(name: str) -> None:
    fast, slow = read_both(VALID[name])
    assert slow is not None and fast == slow


def test_the_driver_agrees_with_lark() -> None:
    agreed = 0
    for text in corpus(seed=14, count=examples(600)):  # more under --fuzz
        fast, slow = read_both(text)
        if slow is None:
            assert fast is None, f"the driver read text lark rejects:\n{text}"
        elif fast is not None:
            assert fast == slow, f"the driver and lark read differently:\n{text}"
            agreed += 1
    assert agreed > examples(600) // 20, agreed  # enough mutants still parse for the comparison to mean something


def test_the_comparison_sees_a_wrong_driver() -> None:
    """A driver that builds ``a - b`` for ``a + b`` is caught by the comparison above."""
    wrong = lalr.FastParser(parser._front().lark)
    callbacks = {}
    for row in wrong.actions.values():
        for kind, arg in row.values():
            if kind == lalr._REDUCE and arg[1] == "sum":
                callbacks.setdefault(arg[2].node_builder.__name__, arg[2])  # type: ignore[union-attr]
    assert {"add", "sub"} <= set(callbacks), callbacks
    for row in wrong.actions.values():
        for symbol, (kind, arg) in list(row.items()):
            if kind == lalr._REDUCE and arg[2] is callbacks["add"]:
                row[symbol] = (kind, (arg[0], arg[1], callbacks["sub"]))
    fast, slow = read_both(TEXTS["tiny_layer.model"], wrong)
    assert fast is not None and slow is not None and fast != slow

