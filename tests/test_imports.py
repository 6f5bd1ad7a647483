"""Names that moved to a module of their own stay importable from where they were.

Users (and older code) import these from the module that used to define them; each
name must be the very object of its new home, not a copy.
"""
from __future__ import annotations

import importlib

import pytest

MOVED = {
    ("shardc.shard", "shardc.sharded"): (
        "CollectiveRecord", "ShardResult", "STATS_PER_ROW", "STATS_ITEMSIZE", "stats_bytes",
        "verify_sharded", "collectives_of"),
    ("shardc.emulate", "shardc.local_ops"): ("LOCAL_IMPLS", "batched_einsum"),
    ("shardc.syntax", "shardc.syntax_tree"): (
        "Name", "Num", "Ref", "BinOp", "Neg", "StrArg", "DimArg", "KwArg", "Call", "Expr", "Arg", "Pin",
        "ModelStmt", "MeshStmt", "DimsStmt", "DeclStmt", "AssignStmt", "OutputStmt", "RepeatStmt",
        "Stmt", "Comment", "Module"),
}


@pytest.mark.parametrize("old, new", sorted(MOVED))
def test_moved_names_are_reexported(old, new):
    old_module, new_module = importlib.import_module(old), importlib.import_module(new)
    for name in MOVED[old, new]:
        assert getattr(old_module, name) is getattr(new_module, name), f"{old}.{name}"
        assert name in old_module.__all__, f"{old}.__all__ lacks {name}"
