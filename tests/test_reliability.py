"""Hostile input never reaches a traceback: numbers, nesting, chip files, --json, line ends.

Each case is one way a fault campaign found to crash ``shardc`` (exit 1 with a traceback), to print
something that is not JSON under ``--json``, or to pass silently; every one now exits 2 with one
message (or 0 where the input is fine).  ``test_cli_fuzz`` runs the commands on generated and
mutated programs and asserts the same of all of them (``--fuzz`` for many more).
"""
from __future__ import annotations

import contextlib
import io
import json
import random
from pathlib import Path

import pytest
from hypothesis import settings

import shardc
from shardc.cli.main import main
from shardc.language.parser import MAX_DEPTH

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "examples" / "tiny_ffn.model"
HEADER = "model m\nmesh x=2\ndims B=2, E=4\ninput x : f32[B, E]\n"
COMMANDS = ("check", "fmt", "compile", "cost", "verify")


def run(argv: list[str], stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            _stdin(stdin):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


@contextlib.contextmanager
def _stdin(text: str):
    import sys
    old, sys.stdin = sys.stdin, io.StringIO(text)
    try:
        yield
    finally:
        sys.stdin = old


def strict_json(text: str) -> object:
    def refuse(constant: str) -> object:
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def assert_clean(argv: list[str], rc: int, out: str, err: str) -> None:
    assert rc in (0, 1, 2), (argv, rc, err)
    assert "Traceback" not in err and "internal error" not in err, err
    if "--json" in argv:
        strict_json(out)


PROGRAMS = {
    "double minus": (HEADER + "y = --1\noutput x\n", "a number alone is not a tensor"),
    "minus signs": (HEADER + "y = " + "-" * 500 + "x\noutput y\n", f"nests more than {MAX_DEPTH} levels"),
    "long sum": (HEADER + "y = " + " + ".join(["x"] * 500) + "\noutput y\n", "nests more than"),
    "longer sum": (HEADER + "y = " + " + ".join(["x"] * 3000) + "\noutput y\n", "nests more than"),
    "nested calls": (HEADER + "y = " + "gelu(" * 400 + "x" + ")" * 400 + "\noutput y\n", "nests more than"),
    "huge dim": ("model m\nmesh x=2\ndims B=" + "9" * 4301 + "\ninput x : f32[B]\noutput x\n", "too large"),
    "huge axis": ("model m\nmesh x=" + "9" * 4301 + "\ndims B=2\ninput x : f32[B]\noutput x\n", "too large"),
    "huge repeat": (HEADER + "repeat " + "9" * 4301 + " {\n  x = x + x\n}\noutput x\n", "too large"),
    "repeat 1e309": (HEADER + "repeat 1" + "0" * 309 + " {\n  x = x + x\n}\noutput x\n", "too large"),
}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_hostile_programs_are_located_errors(name: str, tmp_path: Path) -> None:
    text, message = PROGRAMS[name]
    with pytest.raises(shardc.ShardcError) as info:
        shardc.parse(text, "m.model")
    assert message in info.value.message and info.value.line is not None
    path = tmp_path / "m.model"
    path.write_text(text)
    for command in COMMANDS:
        for flags in ([], ["--json"]):
            argv = [command, str(path), *flags]
            rc, out, err = run(argv)
            assert rc == 2, (argv, err)
            assert_clean(argv, rc, out, err)


def test_deepest_allowed_expression_runs_everywhere(tmp_path: Path) -> None:
    path = tmp_path / "m.model"
    path.write_text(HEADER + "y = " + " + ".join(["x"] * MAX_DEPTH) + "\noutput y\n")
    for command in COMMANDS:
        assert run([command, str(path)])[0] == 0, command


def test_cost_of_a_program_with_no_ops(tmp_path: Path) -> None:
    path = tmp_path / "m.model"
    path.write_text(HEADER + "output x\n")
    rc, out, err = run(["cost", str(path)])
    assert rc == 2 and "no operations" in err


def test_a_lone_cr_reads_the_same_from_a_file_and_stdin(tmp_path: Path) -> None:
    text = "model m # a\rmesh x=2\ndims B=2\ninput x : f32[B]\ny = x + x\noutput y\n"
    path = tmp_path / "m.model"
    path.write_bytes(text.encode())
    from_file = run(["fmt", str(path)])
    from_stdin = run(["fmt", "-"], text)
    assert from_file == from_stdin
    assert from_file[1] == shardc.format(shardc.parse(text))


CHIP = "peak_flops = 1e14\nhbm_bytes = 1e10\nhbm_bandwidth = 1e12\nlink_bandwidth = 1e10\n"
CHIPS = {
    "links = 0.5": (CHIP + "links = 0.5\n", "'links' must be a whole number"),
    "links = 6.9": (CHIP + "links = 6.9\n", "'links' must be a whole number"),
    "links = 0": (CHIP + "links = 0\n", "'links' must be a positive"),
    "nan": (CHIP.replace("1e14", "nan") + "links = 6\n", "'peak_flops' must be a positive, finite number"),
    "inf": (CHIP.replace("1e14", "inf") + "links = 6\n", "'peak_flops' must be a positive, finite number"),
    "calibration = 5": (CHIP + "links = 6\ncalibration = 5\n", "'calibration' must be a table"),
    "calibration = [1, 2]": (CHIP + "links = 6\ncalibration = [1, 2]\n", "'calibration' must be a table"),
    "calibration inf": (CHIP + 'links = 6\n[calibration]\nhop_latency = inf\ncomm = "torus"\n',
                        "calibration 'hop_latency' must be a finite number"),
    "400-digit peak_flops": (CHIP.replace("1e14", "9" * 400) + "links = 6\n",
                             "'peak_flops' must be a positive, finite number"),
    "subnormal peak_flops": (CHIP.replace("1e14", "1e-320") + "links = 6\n", "at least 1"),  # cost was inf h
    "tiny bandwidth": (CHIP.replace("1e12", "0.5") + "links = 6\n", "'hbm_bandwidth' must be a positive"),
    "400-digit hop latency": (CHIP + 'links = 6\n[calibration]\nhop_latency = ' + "9" * 400 + '\ncomm = "torus"\n',
                              "calibration 'hop_latency' must be a finite number"),
    "huge axis_multiple": (CHIP + "links = 6\naxis_multiple = " + "9" * 400 + "\n", "'axis_multiple' must be a whole"),
    "huge node_size": (CHIP + 'links = 6\ntopology = "switched"\ninternode_bandwidth = 1e9\nnode_size = ' + "9" * 400
                       + "\n", "'node_size' must be a whole number of chips, at least 1 and at most 10^18"),
    "huge links": (CHIP + "links = " + "9" * 30 + "\n",
                   "'links' must be a whole number of links, at least 1 and at most 10^18"),
    "nested arrays": ("a = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    "nested tables": ("a = " + "{x=" * 3000 + "1" + "}" * 3000 + "\n", "nested too deeply"),
}


@pytest.mark.parametrize("name", sorted(CHIPS))
def test_bad_chip_files(name: str, tmp_path: Path) -> None:
    text, message = CHIPS[name]
    chip = tmp_path / "chip.toml"
    chip.write_text(text)
    rc, out, err = run(["cost", str(TINY), "--chip-file", str(chip)])
    assert rc == 2 and message in err, err
    argv = ["cost", str(TINY), "--chip-file", str(chip), "--json"]
    rc, out, err = run(argv)
    assert rc == 2 and message in strict_json(out)["error"]["message"]  # type: ignore[index]


def test_links_written_as_a_whole_float_is_accepted(tmp_path: Path) -> None:
    chip = tmp_path / "chip.toml"
    chip.write_text(CHIP + "links = 6.0\n")
    assert run(["cost", str(TINY), "--chip-file", str(chip)])[0] == 0


FLAGS = {
    "superscript mesh": (["check", str(TINY), "--mesh", "\u00b2x2"], "bad mesh"),
    "arabic-indic mesh": (["check", str(TINY), "--mesh", "\u0664x2"], "bad mesh"),
    "huge mesh": (["check", str(TINY), "--mesh", "9" * 4301], "at most 10^18"),
    "huge named mesh": (["check", str(TINY), "--mesh", "x=" + "9" * 4301], "at most 10^18"),
    "huge --set": (["check", str(TINY), "--set", "B=" + "9" * 4301], "too large"),
    "arabic-indic tolerance": (["verify", str(TINY), "--tolerance", "\u0664"], "expected a number"),  # was 4
    "arabic-indic layers": (["verify", str(TINY), "--layers", "\u0664"], "expected a whole number"),
    "underscored seed": (["verify", str(TINY), "--seed", "1_000"], "expected a whole number"),
    "huge gather chunks": (["cost", str(TINY), "--gather-chunks", "9" * 5000], "too long"),
    "chip path": (["cost", str(TINY), "--chip", "../../x"], "unknown chip"),
    "chip path to a profile": (["cost", str(TINY), "--chip", "../profiles/tpu-v4"], "unknown chip"),
}


@pytest.mark.parametrize("name", sorted(FLAGS))
def test_bad_flags(name: str) -> None:
    argv, message = FLAGS[name]
    rc, out, err = run(argv)
    assert rc == 2 and message in err, err
    assert len(err) < 1000  # a 4,301-digit flag is not echoed back whole
    rc, out, err = run([*argv, "--json"])
    assert rc == 2 and message in strict_json(out)["error"]["message"]  # type: ignore[index]


def test_json_never_holds_nan_or_infinity(capsys: pytest.CaptureFixture[str]) -> None:
    from shardc.cli.common import emit_json
    emit_json({"a": float("nan"), "b": [float("inf"), -float("inf"), 1.5], "c": {"d": (2.0, float("nan"))}})
    assert strict_json(capsys.readouterr().out) == {"a": None, "b": [None, None, 1.5], "c": {"d": [2.0, None]}}


def test_an_internal_error_is_reported_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    import shardc.cli.main as cli

    def broken(args: object) -> int:
        raise ZeroDivisionError("boom")
    monkeypatch.setattr(cli, "cmd_check", broken)
    monkeypatch.setattr(cli, "COMMANDS", tuple(c if c.name != "check" else type(c)(
        c.name, c.help, c.example, c.add_args, broken) for c in cli.COMMANDS))
    rc, out, err = run(["check", str(TINY)])
    assert rc == 2 and "internal error: ZeroDivisionError: boom" in err and "please report it" in err
    assert "Traceback" in err  # a bug stays visible
    rc, out, err = run(["check", str(TINY), "--json"])
    obj = strict_json(out)
    assert rc == 2 and obj["error"]["internal"] is True and "boom" in obj["error"]["message"]  # type: ignore[index]


# --- the CLI fuzz ---------------------------------------------------------------------------------
_PIECES = ["-", "--", "+", "*", "(", ")", "gelu(", "9" * 30, "0", "1e999", "nan", "\r", "\n", "#", "x",
           "repeat 3 {\n", "}\n", "output x\n", "@", "\u0664", ","]


def _mutants(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    sources = [p.read_text() for p in sorted((ROOT / "examples").glob("tiny_*.model"))]
    out = []
    for _ in range(count):
        text = rng.choice(sources)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(text) + 1)
            cut = rng.choice([0, 0, 1, 3])
            text = text[:at] + rng.choice(_PIECES) * rng.choice([1, 1, 2, 300]) + text[at + cut:]
        out.append(text)
    return out


def test_cli_fuzz(tmp_path: Path) -> None:
    """Mutated programs through every command: exit 0, 1 or 2, no traceback, strict JSON under --json."""
    count = max(20, 40 * settings.default.max_examples // 100)
    seed = 0 if settings.default.derandomize else random.randrange(2**32)
    path = tmp_path / "m.model"
    for text in _mutants(count, seed):
        path.write_text(text)
        for command in COMMANDS:
            argv = [command, str(path), "--json"] if len(text) % 2 else [command, str(path)]
            if command == "verify":
                argv.append("--shrink")
            rc, out, err = run(argv)
            assert_clean(argv, rc, out, err)


def test_api_fuzz() -> None:
    """The same mutants through the library: nothing but ShardcError escapes the pipeline."""
    from shardc.cost.model import estimate
    from shardc.hardware.profile import load_profile
    from shardc.sharding.shard import shard_program
    count = max(200, 400 * settings.default.max_examples // 100)
    seed = 1 if settings.default.derandomize else random.randrange(2**32)
    profile = load_profile()
    for text in _mutants(count, seed):
        try:
            g = shardc.parse(text, "m.model")
            shardc.format(g)
            result = shard_program(g, None, None, None)
            if next(result.graph.ops(), None) is not None:
                estimate(result.graph, profile)
        except shardc.ShardcError:
            pass
