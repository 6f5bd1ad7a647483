"""Every op kind has an entry in every per-op table (shape, sharding, candidates, NumPy, per chip)."""
import pytest

from shardc.execute.local_ops import LOCAL_IMPLS
from shardc.execute.reference import IMPLS
from shardc.ir.graph import OpKind
from shardc.ir.ops import OP_DEFS
from shardc.sharding.candidates import CANDIDATES
from shardc.sharding.rules import RULES

TABLES = {
    "ops.OP_DEFS (spelling, signature, shape rule)": OP_DEFS,
    "rules.RULES (sharding rule)": RULES,
    "candidates.CANDIDATES (operand layouts to try)": CANDIDATES,
    "reference.IMPLS (NumPy on whole arrays)": IMPLS,
    "local_ops.LOCAL_IMPLS (NumPy on every chip)": LOCAL_IMPLS,
}


@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_op_kind_has_an_entry(table):
    missing = [k.value for k in OpKind if k not in TABLES[table]]
    assert not missing, f"{table} lacks {missing}"
    extra = [k for k in TABLES[table] if not isinstance(k, OpKind)]
    assert not extra


def test_op_defs_agree_with_their_keys():
    for kind, opdef in OP_DEFS.items():
        assert opdef.kind is kind
