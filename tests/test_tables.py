"""Every op kind has an entry in every per-op table; the check itself can fail.

Per-op knowledge lives in tables keyed by :class:`~shardc.ir.graph.OpKind` (one
table per stage, as JAX keeps one per interpreter), listed in ``TABLES`` below.
Everything else -- the call names the parser accepts, reserved words, the
printer, how attributes are built and spelled, which attrs class the verifier
expects, which generator of :mod:`shardc.testing` fuzzes the op -- is derived
from the op's ``OpDef`` row.

Checklist: a new elementwise op (say ``sigmoid(a)``, or an infix operator)
needs

1. the member ``OpKind.SIGMOID`` (``shardc/ir/graph.py``);
2. its ``OpDef`` row in ``OP_DEFS`` (``shardc/ir/ops.py``): spelling, signature,
   shape rule (``same_dims`` / ``broadcast_dims``), attrs form (default: none);
3. its NumPy implementation in ``IMPLS`` (``shardc/execute/reference.py``);
4. its per-chip implementation in ``LOCAL_IMPLS`` (``shardc/execute/local_ops.py``);
5. its sharding rule in ``RULES`` (``shardc/sharding/rules.py``) and its operand
   layouts in ``CANDIDATES`` (``shardc/sharding/candidates.py``);
6. its cost row in ``COSTS`` (``shardc/sharding/counts.py``): ``ELEMENTWISE``, and its JAX
   expression in ``JAX_OPS`` (``shardc/export/to_jax.py``);
7. a word in the list of ops of ``README.md`` and a row in ``docs/language.md``
   ("Operations");
8. grammar only if it is new syntax (a new infix symbol or precedence in
   ``grammars/model.lark``, the printer's precedence table and
   ``shardc.testing._binary``); a call such as ``sigmoid(a)`` needs none.

It is then parsed, printed, verified and fuzzed (a unary call with the signature
``(a)`` and ``same_dims`` joins the activations of the random-program generator;
an op with a new shape rule needs a writer in ``shardc/testing.py``, and the test
below says so).
"""
from dataclasses import replace

import pytest

from shardc.errors import ShardcError
from shardc.execute.local_ops import LOCAL_IMPLS
from shardc.execute.reference import IMPLS
from shardc.export.to_jax import JAX_OPS
from shardc.ir.graph import Block, NoAttrs, Op, OpKind, OverAttrs
from shardc.ir.ops import OP_DEFS, AttrsForm
from shardc.ir.verifier import verify_graph
from shardc.language.lower import parse
from shardc.sharding.candidates import CANDIDATES
from shardc.sharding.counts import COSTS
from shardc.sharding.rules import RULES
from shardc.testing import FUZZED

NON_COLLECTIVE = frozenset(k for k in OpKind if not k.is_collective)

#: name -> (table, the op kinds it must cover)
TABLES: dict[str, tuple[dict, frozenset[OpKind]]] = {
    "ops.OP_DEFS (spelling, signature, shape rule, attrs)": (OP_DEFS, frozenset(OpKind)),
    "rules.RULES (sharding rule)": (RULES, frozenset(OpKind)),
    "candidates.CANDIDATES (operand layouts to try)": (CANDIDATES, frozenset(OpKind)),
    "reference.IMPLS (NumPy on whole arrays)": (IMPLS, frozenset(OpKind)),
    "local_ops.LOCAL_IMPLS (NumPy on every chip)": (LOCAL_IMPLS, frozenset(OpKind)),
    "counts.COSTS (FLOPs and HBM bytes)": (COSTS, frozenset(OpKind)),
    "to_jax.JAX_OPS (the JAX expression, for shardc export)": (JAX_OPS, frozenset(OpKind)),
    "testing.FUZZED (random-program generator)": (FUZZED, NON_COLLECTIVE),
}


def table_problems(table: dict, kinds: frozenset[OpKind]) -> list[str]:
    """What is wrong with a per-op table: kinds it lacks, keys that are not op kinds."""
    problems = [f"lacks {k.value}" for k in OpKind if k in kinds and k not in table]
    problems += [f"has key {k!r}, not an OpKind" for k in table if not isinstance(k, OpKind)]
    return problems


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_op_kind_has_an_entry(name):
    table, kinds = TABLES[name]
    assert not table_problems(table, kinds), f"{name}: {table_problems(table, kinds)}"


def test_the_check_reports_a_missing_kind_and_a_stray_key():
    table = {k: v for k, v in COSTS.items() if k is not OpKind.GELU}
    table["gelu"] = COSTS[OpKind.GELU]  # type: ignore[index]
    # A string key equals its OpKind (a StrEnum), so it is the key's type that gives it away.
    assert table_problems(table, frozenset(OpKind)) == ["has key 'gelu', not an OpKind"]
    del table["gelu"]
    assert table_problems(table, frozenset(OpKind)) == ["lacks gelu"]
    assert table_problems(FUZZED, frozenset(OpKind)) == [f"lacks {k.value}" for k in OpKind if k.is_collective]


def test_op_defs_agree_with_their_keys():
    for kind, opdef in OP_DEFS.items():
        assert opdef.kind is kind
        assert isinstance(opdef.attrs, AttrsForm)


_PROGRAM = """model m
dims B=2, E=4
input x : f32[B, E]
y = softmax(x, over=E)
output y
"""


def _with_attrs(attrs):
    g = parse(_PROGRAM)
    body = tuple(replace(s, attrs=attrs) if isinstance(s, Op) else s for s in g.body)
    return replace(g, body=Block(body))


def test_the_verifier_checks_the_attrs_class_of_each_kind():
    verify_graph(_with_attrs(OverAttrs("E")))
    with pytest.raises(ShardcError, match="softmax takes OverAttrs, but its attrs are NoAttrs") as err:
        verify_graph(_with_attrs(NoAttrs()))
    assert err.value.line == 4
