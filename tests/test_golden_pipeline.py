"""Golden outputs of the whole pipeline: ``shardc compile`` and ``shardc cost`` on every example.

The safety net for refactors: every example under every preset (``--ffn`` × ``--attention``) on three
meshes (2x2x2, 4x4x4 and the two-axis 4x4) is compiled with ``--explain``; its whole output (the
preset, the sharded program, the collectives table) or its error message is compared with
``tests/golden/compile/<example>.<mesh>.txt``.  On 4x4x4 the cost report of each combination is
compared too (``tests/golden/cost/<example>.txt``), and on 2x2x2 the emulator's report and counters
for the shrunk program (``tests/golden/verify/<example>.txt``).  The PaLM files are also run with their heads
padded to 64 (``--set H=64``), as the paper does, so that the presets which split heads 64 ways
are exercised rather than refused.

A behaviour change shows up as a diff of these files.  When the change is intended, regenerate
them with ``pytest tests/test_golden_pipeline.py --update-golden`` and review the diff.
"""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from shardc.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.model"))
GOLDEN = ROOT / "tests" / "golden"
MESHES = ("2x2x2", "4x4x4", "4x4")
FFN = ("none", "1d-ws", "2d-ws", "wg-x", "wg-xy", "wg-xyz")
ATTENTION = ("heads", "batch")


def variants(path: Path) -> list[list[str]]:
    """Size overrides to run: as written, and for PaLM also with heads padded to 64."""
    return [[], ["--set", "H=64"]] if path.stem.startswith("palm_") else [[]]


_PASSED_ERRORS = re.compile(r"^(PASSED: .*?)\(max relative error [^,]+, max absolute error [^;]+; ", re.M)


def run_cli(argv: list[str]) -> str:
    """Run ``shardc`` in-process; the transcript of its exit status, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    text = f"$ shardc {' '.join(argv[0:1] + [Path(argv[1]).name] + argv[2:])}\n"
    text += f"exit {code}\n{out.getvalue()}"
    if err.getvalue():
        text += f"--- stderr\n{err.getvalue()}"
    text = text.replace(f"{ROOT}/", "")  # the checkout's folder is not part of the behaviour
    # A passing run's rounding error depends on the BLAS kernels of the machine, not on shardc.
    return _PASSED_ERRORS.sub(r"\1(rounding errors below the tolerance; ", text)


def transcript(command: str, path: Path, extra: list[str]) -> str:
    parts = []
    for sets in variants(path):
        for ffn in FFN:
            for attention in ATTENTION:
                parts.append(run_cli([command, str(path), f"--ffn={ffn}", f"--attention={attention}",
                                      *sets, *extra]))
    return "\n".join(parts)


def check_golden(request: pytest.FixtureRequest, golden: Path, text: str) -> None:
    if request.config.getoption("--update-golden"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text, encoding="utf-8")
        return
    assert golden.exists(), f"no golden file {golden}; run pytest {__file__} --update-golden"
    expected = golden.read_text(encoding="utf-8")
    if text != expected:
        # Report the first differing line rather than two walls of text.
        for n, (got, want) in enumerate(zip(text.splitlines(), expected.splitlines()), 1):
            assert got == want, f"{golden.name}:{n} differs"
        assert text == expected, f"{golden.name}: length differs"


@pytest.mark.parametrize("mesh", MESHES)
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_compile_golden(request: pytest.FixtureRequest, path: Path, mesh: str) -> None:
    text = transcript("compile", path, [f"--mesh={mesh}", "--explain"])
    check_golden(request, GOLDEN / "compile" / f"{path.stem}.{mesh}.txt", text)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_cost_golden(request: pytest.FixtureRequest, path: Path) -> None:
    text = transcript("cost", path, ["--mesh=4x4x4"])
    check_golden(request, GOLDEN / "cost" / f"{path.stem}.txt", text)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_verify_golden(request: pytest.FixtureRequest, path: Path) -> None:
    text = transcript("verify", path, ["--mesh=2x2x2", "--shrink", "--layers=1"])
    check_golden(request, GOLDEN / "verify" / f"{path.stem}.txt", text)


def test_golden_check_can_fail(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """The comparison is an oracle that can fail: one changed character is caught."""
    if request.config.getoption("--update-golden"):
        pytest.skip("comparing is off while updating")
    golden = tmp_path / "g.txt"
    golden.write_text("exit 0\nBLE_xyz\n", encoding="utf-8")
    check_golden(request, golden, "exit 0\nBLE_xyz\n")
    with pytest.raises(AssertionError, match="g.txt:2 differs"):
        check_golden(request, golden, "exit 0\nBLE_xy\n")
    with pytest.raises(AssertionError, match="length differs"):
        check_golden(request, golden, "exit 0\nBLE_xyz\nmore\n")


def test_no_golden_records_an_internal_error() -> None:
    """A golden regenerated over a crash would make the crash the expected output."""
    for path in sorted(GOLDEN.rglob("*.txt")):
        text = path.read_text(encoding="utf-8")
        assert "Traceback" not in text and "internal error" not in text, path.name
