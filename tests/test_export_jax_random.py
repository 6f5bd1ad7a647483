"""Exported programs of random Hypothesis programs (``shardc.testing``) match ``shardc.reference``.

Hypothesis draws the programs and meshes of up to 8 chips here; they are sharded, and all of
them are run in ONE subprocess (tests/jax_worker.py: XLA_FLAGS set before jax is imported, a
timeout) and compared with the reference.  The draws come first and the programs run after (a
subprocess per example would cost a jax start-up each), so Hypothesis does not shrink a failure:
the report prints the failing program.  The budget is ``EXAMPLES`` draws under the default
profile, fifty times more under ``pytest --fuzz``.
"""
from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from jax_cases import NEEDS_JAX, TIMEOUT, problems, run_worker

import shardc
from shardc.ir.graph import Output
from shardc.testing import meshes, program_models

pytestmark = NEEDS_JAX

#: Draws under the default profile (some shard to a program with an output, some repeat one).
EXAMPLES = 60


def sharded_random_programs(n: int) -> list[dict]:
    """Up to ``n`` random programs that shard (those a preset rejects are skipped)."""
    found: list[dict] = []
    seen: set[str] = set()

    @settings(max_examples=n * settings.default.max_examples // 100)
    @given(model=program_models(mesh=meshes(min_axes=1, max_axes=3, min_size=1, max_size=2), max_repeats=1,
                                trivia=False),
           ffn=st.sampled_from([None, "1d-ws", "2d-ws"]))
    def collect(model, ffn) -> None:
        try:
            sg = shardc.shard(shardc.parse(model.text()), model.mesh.spec(), ffn=ffn)
        except shardc.ShardcError:
            return
        if not any(isinstance(stmt, Output) for stmt, _ in sg.walk()):
            return  # nothing to compare
        program = shardc.format(sg)
        if program in seen:
            return
        seen.add(program)
        found.append({"id": f"random {len(found)}", "program": program, "against": "reference",
                      "collectives": False})  # random programs have dead code, which jax drops

    collect()
    return found


def test_exported_random_programs_match_the_reference(tmp_path: Path) -> None:
    todo = sharded_random_programs(EXAMPLES)
    assert len(todo) >= 5
    scale = max(1, len(todo) // 40)  # --fuzz: hundreds of programs in the one subprocess
    results = run_worker(todo, tmp_path, timeout=TIMEOUT * scale)
    bad = problems(results)
    programs = {c["id"]: c["program"] for c in todo}
    assert not bad, "\n\n".join(f"{p}\n{programs[p.split(':')[0]]}" for p in bad)
