"""Exported JAX programs on the 2x2x2 mesh of 8 host devices match shardc (see tests/jax_cases.py)."""
from pathlib import Path

from jax_cases import NEEDS_JAX, check_mesh

pytestmark = NEEDS_JAX


def test_exported_programs_on_2x2x2_match_the_emulator_and_its_collectives(tmp_path: Path) -> None:
    check_mesh("2x2x2", tmp_path)
