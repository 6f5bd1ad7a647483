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
                callbacks.setdefault(arg[3].__name__, arg[3])  # build: the rule's method
    assert {"add", "sub"} <= set(callbacks), callbacks
    for row in wrong.actions.values():
        for symbol, (kind, arg) in list(row.items()):
            if kind == lalr._REDUCE and arg[3] == callbacks["add"]:
                row[symbol] = (kind, (arg[0], arg[1], arg[2], callbacks["sub"]))
    fast, slow = read_both(TEXTS["tiny_layer.model"], wrong)
    assert fast is not None and slow is not None and fast != slow



# --- whole lines (shardc.language.lines) ---------------------------------------------------
BLANKS = ["", " ", "  ", "\t", " \f "]
NAMES = ["x", "w_1", "aB9", "_t", "model", "output", "param", "dimsx", "einsum", "over"]
UPPERS = ["B", "E", "BE", "Bx", "BLE_xyz"]
NUMBERS = ["2", "64", "0.0625", "1e-6", "1E+3", ".5", "1.", "4x", "007"]
PINS = ["", "@ BLE_x", "@BLE_xy(partialsum-z)", "@ B (partialsum-)", "@ b", "@"]
COMMENTS = ["", "# c", "#", "# a \r b", "#é"]


def blank(rng: random.Random) -> str:
    return rng.choice(BLANKS)


def expression(rng: random.Random, depth: int = 0) -> str:
    """A random expression, mostly of the grammar's, sometimes not."""
    roll = rng.random()
    if depth > 3 or roll < 0.3:
        return rng.choice(NAMES + NUMBERS[:4])
    if roll < 0.55:
        op = rng.choice(["+", "-", "*", "/"])
        return f"{expression(rng, depth + 1)}{blank(rng)}{op}{blank(rng)}{expression(rng, depth + 1)}"
    if roll < 0.65:
        return "-" * rng.randint(1, 3) + expression(rng, depth + 1)
    if roll < 0.75:
        return f"({blank(rng)}{expression(rng, depth + 1)}{blank(rng)})"
    args = []
    for _ in range(rng.randint(0, 3)):
        kind = rng.random()
        if kind < 0.2:
            args.append('"BLE,EF->BLF"')
        elif kind < 0.35:
            args.append(rng.choice(UPPERS))
        elif kind < 0.5:
            args.append(f"{rng.choice(['over', 'dim', 'E'])}{blank(rng)}={blank(rng)}{rng.choice(UPPERS + NAMES[:2])}")
        else:
            args.append(expression(rng, depth + 1))
    return f"{rng.choice(NAMES)}({f',{blank(rng)}'.join(args)})"


def statement(rng: random.Random) -> str:
    """One random statement line (of every form the line reader reads, and some it must refuse)."""
    form = rng.randrange(7)
    name, dims = rng.choice(NAMES), f",{blank(rng)}".join(rng.sample(UPPERS, rng.randint(1, 3)))
    if form == 0:
        text = f"{name}{blank(rng)}={blank(rng)}{expression(rng)}"
    elif form == 1:
        kind = rng.choice(["param", "input", "cache"])
        text = f"{kind} {name}{blank(rng)}:{blank(rng)}{rng.choice(['f32', 'bf16', 'int8'])}[{blank(rng)}{dims}]"
    elif form == 2:
        text = "output " + f",{blank(rng)}".join(rng.sample(NAMES, rng.randint(1, 3)))
    elif form == 3:
        text = "dims " + ", ".join(f"{d}{blank(rng)}={blank(rng)}{rng.choice(NUMBERS)}"
                                   for d in rng.sample(UPPERS, rng.randint(1, 2)))
    elif form == 4:
        text = "mesh " + ", ".join(f"{a}={rng.choice(NUMBERS)}" for a in rng.sample(["x", "y", "dims"], 2))
    elif form == 5:
        text = f"model {name}"
    else:
        text = ""
    if form in (0, 1, 2):
        text += blank(rng) + rng.choice(PINS)
    return blank(rng) + text + blank(rng) + rng.choice(COMMENTS)


def generated_programs(seed: int, count: int) -> list[str]:
    """Programs of random lines, at the top level and in a repeat body, LF or CRLF line ends."""
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        lines = [statement(rng) for _ in range(rng.randint(1, 6))]
        if rng.random() < 0.4:
            at = rng.randint(0, len(lines))
            lines[at:at] = ["repeat 2 {"] + [statement(rng) for _ in range(rng.randint(1, 3))] + ["}"]
        newline = "\r\n" if rng.random() < 0.2 else "\n"
        texts.append("model m" + newline + newline.join(lines) + rng.choice(["", newline]))
    return texts


def test_whole_lines_are_read_as_lark_reads_them() -> None:
    """Random lines of every form: where the driver (and its line reader) reads a program, lark reads
    the same statements and comments; where lark fails, the driver fails."""
    agreed = 0
    for text in generated_programs(seed=3, count=examples(1500)):
        fast, slow = read_both(text)
        if slow is None:
            assert fast is None, f"the driver read text lark rejects:\n{text!r}"
        else:
            assert fast == slow, f"the driver and lark read differently:\n{text!r}"
            agreed += 1
    assert agreed > examples(1500) // 10, agreed


def test_the_line_reader_reads_the_common_forms() -> None:
    """Every statement line of the examples but ``repeat``'s own is read whole (the front end's
    speed depends on it), and so is a comment alone on its line."""
    front = parser._front()
    assert front.fast is not None and front.fast.lines is not None
    reader = front.fast.lines
    for name, text in TEXTS.items():
        source = Source(name, text)
        for number, line in enumerate(source.lines, 1):
            if not line.strip() or line.strip().startswith(("repeat", "}")):
                continue
            offset = sum(len(x) + 1 for x in text.split("\n")[:number - 1])
            with front.builder.lock:
                front.builder.begin(source)
                assert reader(text, offset, number) is not None, f"{name}:{number}: {line}"


def test_the_comparison_sees_a_wrong_line_reader() -> None:
    """A line reader that builds ``a - b`` for ``a + b`` is caught by the comparison above."""
    from dataclasses import replace

    from shardc.language import syntax_tree

    front = parser._front()
    assert front.fast is not None and front.fast.lines is not None
    right = front.fast.lines

    def wrong(text: str, pos: int, line: int):  # type: ignore[no-untyped-def]
        got = right(text, pos, line)
        if got is not None and isinstance(got.node, syntax_tree.AssignStmt) \
                and isinstance(got.node.expr, syntax_tree.BinOp) and got.node.expr.op == "+":
            got = got._replace(node=replace(got.node, expr=replace(got.node.expr, op="-")))
        return got

    driver = lalr.FastParser(front.lark, lines=wrong)
    fast, slow = read_both("model m\ny = a + b\n", driver)
    assert fast is not None and slow is not None and fast != slow
