"""The ``shardc`` command line (check, fmt) and the summary behind ``check``.

Most tests call :func:`shardc.cli.main` in-process and read its output with capsys;
one runs the installed console script.
"""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

import shardc
from shardc.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
ALL_EXAMPLES = sorted(EXAMPLES.glob("*.model"))
PALM_540B = EXAMPLES / "palm_540b_decode.model"
TINY_FFN = EXAMPLES / "tiny_ffn.model"

BAD_EINSUM = """\
model bad
dims B=2, E=4, F=8
input x : f32[B, E]
param w : f32[E, F]
y = einsum("BE,FE->BF", x, w)
output y
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code, out, err = run(capsys, *argv, "--json")
    return code, json.loads(out)  # exactly one JSON object, nothing else on stdout


# --- check ----------------------------------------------------------------------------------
def test_examples_exist() -> None:
    assert len(ALL_EXAMPLES) >= 5


@pytest.mark.parametrize("path", ALL_EXAMPLES, ids=lambda p: p.stem)
def test_check_every_example(capsys: pytest.CaptureFixture[str], path: Path) -> None:
    code, out, err = run(capsys, "check", path)
    assert code == 0, err
    assert err == ""
    assert out.splitlines()[0].split() == ["model", shardc.load(path).name]
    for label in ("mesh", "dims", "layers", "ops", "parameters", "weights", "kv cache"):
        assert any(line.startswith(label) for line in out.splitlines()), label


@pytest.mark.parametrize("path", ALL_EXAMPLES, ids=lambda p: p.stem)
def test_check_json_every_example(capsys: pytest.CaptureFixture[str], path: Path) -> None:
    code, data = run_json(capsys, "check", path)
    assert code == 0
    assert data["model"] == shardc.load(path).name
    assert data["params"]["total"] > 0


def test_check_palm_540b_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, data = run_json(capsys, "check", PALM_540B)
    assert code == 0
    assert abs(data["params"]["total"] - 540.4e9) <= 0.005 * 540.4e9
    assert data["params"]["total"] == 540_358_834_176  # the file's header comment
    assert data["kv_cache_bytes_per_token"] == 120832
    assert data["layers"] == {"total": 118, "repeats": [118]}
    assert data["mesh"] == {"spec": "4x4x4", "axes": {"x": 4, "y": 4, "z": 4}, "chips": 64}
    assert data["dims"]["E"] == 18432
    assert data["ops"]["total"] == data["ops"]["top_level"] + 118 * data["ops"]["per_layer"][0]
    assert data["params"]["total"] == data["params"]["top_level"] + 118 * data["params"]["per_layer"][0]
    assert data["weight_bytes"]["by_dtype"] == {"bf16": 2 * data["params"]["total"]}
    assert data["kv_cache_bytes"]["total"] == 120832 * 64 * 2048
    assert data["inputs"] == [{"name": "x", "type": "bf16[B, L, E]"}]
    assert {"name": "logits", "type": "bf16[B, L, V]"} in data["outputs"]
    assert {"name": "kn", "type": "bf16[B, L, D]", "per_layer": True} in data["outputs"]


def test_check_palm_540b_text(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", PALM_540B)
    assert code == 0
    assert "540.4 B (540,358,834,176)" in out
    assert "GiB" in out
    assert "120,832 bytes" in out


def test_set_and_mesh_flags(capsys: pytest.CaptureFixture[str]) -> None:
    base = shardc.summarize(shardc.load(PALM_540B))
    code, data = run_json(capsys, "check", PALM_540B, "--set", "B=128", "--set", "S=4096", "--mesh", "2x2")
    assert code == 0
    assert data["dims"]["B"] == 128 and data["dims"]["S"] == 4096
    assert data["kv_cache_bytes"]["total"] == 4 * base.total.cache_bytes
    assert data["kv_cache_bytes_per_token"] == 120832  # per token of context: unchanged
    assert data["mesh"]["chips"] == 4


def test_summary_api_and_multiple_repeats() -> None:
    g = shardc.parse(
        "model two\ndims B=2, S=3, E=4, F=4\ninput x : f32[B, E]\nparam w0 : int8[E]\n"
        "repeat 3 {\n  param w : bf16[E, F]\n  cache k : bf16[B, S, E]\n  x = x * w0\n}\n"
        "repeat 5 {\n  param g : f32[E]\n  x = x + g\n}\noutput x\n")
    s = shardc.summarize(g)
    assert [r.count for r in s.repeats] == [3, 5] and s.layers == 8
    assert s.top_level.params == 4 and s.top_level.ops == 0
    assert [r.per_layer.params for r in s.repeats] == [16, 4]
    assert s.total.params == 4 + 3 * 16 + 5 * 4
    assert s.total.ops == 3 * 1 + 5 * 1
    assert dict(s.total.weight_bytes) == {shardc.DType.F32: 5 * 4 * 4, shardc.DType.BF16: 3 * 16 * 2,
                                          shardc.DType.INT8: 4}
    assert s.total.cache_bytes == 3 * 2 * 3 * 4 * 2
    assert s.kv_cache_bytes_per_token == 3 * 4 * 2
    json.dumps(s.to_json())
    assert "per layer (line 10)" in s.to_text()


def test_no_cache_means_no_per_token() -> None:
    s = shardc.summarize(shardc.load(TINY_FFN))
    assert s.total.cache_bytes == 0 and s.kv_cache_bytes_per_token is None


# --- symbolic: a million layers of dims of 10^12 -------------------------------------------
def test_huge_model_is_symbolic(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    text = TINY_FFN.read_text()
    assert "repeat 2 {" in text
    big = tmp_path / "big.model"
    big.write_text(text.replace("repeat 2 {", "repeat 1000000 {"))
    argv = ["check", str(big), "--set", "E=1000000000000", "--json"]
    assert main(argv) == 0  # warm up: the parser's grammar is built once per process
    capsys.readouterr()

    start = time.perf_counter()
    tracemalloc.start()
    try:
        code = main(argv)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - start
    data = json.loads(capsys.readouterr().out)

    assert code == 0
    E, F = 10**12, 16
    per_layer = E + 2 * E * F  # g, win, wout
    assert data["layers"]["total"] == 1_000_000
    assert data["params"]["per_layer"] == [per_layer]
    assert data["params"]["total"] == 1_000_000 * per_layer
    assert data["weight_bytes"]["by_dtype"] == {"f32": 4 * 1_000_000 * per_layer}
    assert data["ops"]["total"] == 1_000_000 * data["ops"]["per_layer"][0]
    assert peak < 5 * 2**20, f"peak traced memory {peak} bytes"
    assert elapsed < 2.0, f"took {elapsed:.2f}s"


# --- fmt ------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ALL_EXAMPLES, ids=lambda p: p.stem)
def test_fmt_round_trips(capsys: pytest.CaptureFixture[str], path: Path, tmp_path: Path) -> None:
    code, out, err = run(capsys, "fmt", path)
    assert code == 0, err
    assert shardc.parse(out) == shardc.load(path)
    canonical = tmp_path / path.name
    canonical.write_text(out)
    assert run(capsys, "fmt", "--check", canonical)[0] == 0  # fmt output is canonical
    assert run(capsys, "fmt", canonical)[1] == out  # and fmt is idempotent


def test_fmt_check_non_canonical(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    messy = tmp_path / "messy.model"
    messy.write_text("model m\ndims B=2,E=4\ninput x:f32[B,E]\ny=gelu(x)\noutput y\n")
    code, out, _ = run(capsys, "fmt", "--check", messy)
    assert code == 1
    assert str(messy) in out
    code, data = run_json(capsys, "fmt", "--check", messy)
    assert code == 1 and data == {"file": str(messy), "canonical": False}


def test_fmt_in_place(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    messy = tmp_path / "messy.model"
    messy.write_text("model m\ndims B=2,E=4\ninput x:f32[B,E]\ny=gelu(x)\noutput y\n")
    before = shardc.load(messy)
    assert run(capsys, "fmt", "-i", messy) == (0, "", "")
    assert shardc.load(messy) == before
    assert messy.read_text() == shardc.format(before)
    assert run(capsys, "fmt", "--check", messy)[0] == 0


def test_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(TINY_FFN.read_text()))
    code, out, _ = run(capsys, "fmt", "-")
    assert code == 0 and shardc.parse(out) == shardc.load(TINY_FFN)
    monkeypatch.setattr(sys, "stdin", io.StringIO(out))
    assert run(capsys, "check", "-")[0] == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO(BAD_EINSUM))
    code, _, err = run(capsys, "check", "-")
    assert code == 2 and err.startswith("<stdin>:5:")
    assert run(capsys, "fmt", "-i", "-")[0] == 2


# --- errors ---------------------------------------------------------------------------------
@pytest.fixture
def bad_file(tmp_path: Path) -> Path:
    path = tmp_path / "bad.model"
    path.write_text(BAD_EINSUM)
    return path


def test_error_text(capsys: pytest.CaptureFixture[str], bad_file: Path) -> None:
    code, out, err = run(capsys, "check", bad_file)
    assert code == 2 and out == ""
    head, line, caret = err.splitlines()[:3]
    assert head.startswith(f"{bad_file}:5:")
    assert ": error: " in head and "einsum operand" in head
    assert line.strip() == 'y = einsum("BE,FE->BF", x, w)'
    assert caret.strip() == "^"
    assert "Traceback" not in err


def test_error_json(capsys: pytest.CaptureFixture[str], bad_file: Path) -> None:
    code, data = run_json(capsys, "check", bad_file)
    assert code == 2
    assert set(data) == {"error"}
    error = data["error"]
    assert set(error) >= {"file", "line", "col", "message"}
    assert error["file"] == str(bad_file) and error["line"] == 5 and error["col"] > 1
    assert "einsum operand" in error["message"]


def test_fmt_error(capsys: pytest.CaptureFixture[str], bad_file: Path) -> None:
    code, out, err = run(capsys, "fmt", bad_file)
    assert code == 2 and out == "" and f"{bad_file}:5:" in err


def test_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "check", tmp_path / "nope.model")
    assert code == 2 and "no such file" in err and "Traceback" not in err
    code, data = run_json(capsys, "check", tmp_path / "nope.model")
    assert code == 2 and "no such file" in data["error"]["message"]


@pytest.fixture
def partial_decl_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> tuple[Path, int]:
    """A sharded tiny_ffn (from ``shardc compile -o``) plus an input declared holding partial sums,
    completed and output like any pending partial sums: valid except for the declaration."""
    path = tmp_path / "partial_decl.model"
    assert main(["compile", str(TINY_FFN), "-o", str(path)]) == 0
    capsys.readouterr()
    lines = path.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("input x")) + 1
    lines.insert(at, "input a : f32[E, F] @ EF (partialsum-x)")
    lines += ["a1 = all_reduce(a, over=x) @ EF", "output a1"]
    path.write_text("\n".join(lines) + "\n")
    return path, at + 1


@pytest.mark.parametrize("command", ["verify", "cost", "compile", "check"])
def test_partial_sums_on_a_declaration(capsys: pytest.CaptureFixture[str], partial_decl_file: tuple[Path, int],
                                       command: str) -> None:
    path, line = partial_decl_file
    code, out, err = run(capsys, command, path)
    assert code == 2 and out == "" and "Traceback" not in err
    head, text, caret = err.splitlines()[:3]
    assert head == (f"{path}:{line}:1: error: input 'a' is declared holding pending partial sums "
                    "(EF (partialsum-x)); a declaration holds complete values")
    assert text == "input a : f32[E, F] @ EF (partialsum-x)" and caret == "^"
    code, data = run_json(capsys, command, path)
    assert code == 2 and set(data) == {"error"}
    error = data["error"]
    assert (error["file"], error["line"], error["col"]) == (str(path), line, 1)
    assert error["message"].startswith("input 'a' is declared holding pending partial sums")


def test_partial_sums_on_a_declaration_api(partial_decl_file: tuple[Path, int]) -> None:
    path, line = partial_decl_file
    g = shardc.load(path)
    assert g.is_sharded
    with pytest.raises(shardc.ShardcError, match="declared holding pending partial sums") as info:
        shardc.verify_sharded(g)
    assert info.value.line == line


@pytest.mark.parametrize("bad", ["B", "B=x", "B=", "=4", "B=0", "B=-1", "b=4", "BE=4"])
def test_set_syntax_errors(capsys: pytest.CaptureFixture[str], bad: str) -> None:
    code, out, err = run(capsys, "check", TINY_FFN, "--set", bad)
    assert code == 2 and out == ""
    assert err.startswith(f"error: --set {bad}:") and "Traceback" not in err
    code, data = run_json(capsys, "check", TINY_FFN, "--set", bad)
    assert code == 2 and data["error"]["message"].startswith(f"--set {bad}:")


def test_set_unknown_dim(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "check", TINY_FFN, "--set", "Q=4")
    assert code == 2 and "no dim Q" in err


def test_bad_mesh(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "check", TINY_FFN, "--mesh", "4y4")
    assert code == 2 and "bad mesh" in err


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "check")[0] == 2  # no FILE
    assert run(capsys, "frobnicate", TINY_FFN)[0] == 2
    assert run(capsys)[0] == 2
    assert run(capsys, "fmt", "--check", "-i", TINY_FFN)[0] == 2


@pytest.mark.parametrize("command", ["check", "fmt"])
def test_help_has_description_and_example(capsys: pytest.CaptureFixture[str], command: str) -> None:
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    assert "example:\n  shardc " + command in out
    for flag in ("--set", "--mesh", "--json"):
        assert flag in out


# --- the installed console script -----------------------------------------------------------
@pytest.mark.skipif(shutil.which("shardc") is None, reason="the shardc console script is not installed")
def test_console_script() -> None:
    proc = subprocess.run(["shardc", "check", str(TINY_FFN)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("model")
    proc = subprocess.run(["shardc", "check", str(TINY_FFN), "--set", "B"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2


@pytest.mark.parametrize("argv", [["cost", str(TINY_FFN), "--bogus", "--json"], ["nope", "--json"],
                                  ["check", "--json"], ["verify", str(TINY_FFN), "--layers", "x", "--json"]])
def test_usage_errors_are_json_under_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2 and err == ""
    data = json.loads(out)
    assert set(data) == {"error"} and data["error"]["message"] and data["error"]["line"] is None


def test_usage_errors_without_json_show_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("usage: shardc check") and "error: the following arguments" in err


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "-inf"])
def test_verify_tolerance_must_be_finite_and_not_negative(capsys: pytest.CaptureFixture[str], value: str) -> None:
    assert main(["verify", str(TINY_FFN), f"--tolerance={value}"]) == 2
    assert "--tolerance" in capsys.readouterr().err


def test_verify_max_memory_too_large_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(TINY_FFN), "--max-memory", "1e999"]) == 2
    assert "too large" in capsys.readouterr().err


@pytest.mark.parametrize("flag", [["--set", "B=128"], ["--mesh", "2x2x2"]])
def test_fmt_refuses_size_and_mesh_overrides(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                             flag: list[str]) -> None:
    path = tmp_path / "t.model"
    path.write_text(TINY_FFN.read_text())
    before = path.read_text()
    assert main(["fmt", "-i", str(path), *flag]) == 2
    assert "does not apply" in capsys.readouterr().err
    assert path.read_text() == before


def test_fmt_check_refuses_a_size_override(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """fmt --check --set B=128 called a canonical file non-canonical."""
    path = tmp_path / "t.model"
    path.write_text(shardc.format(shardc.load(TINY_FFN)))
    assert main(["fmt", "--check", str(path)]) == 0
    assert main(["fmt", "--check", str(path), "--set", "B=128"]) == 2
    assert "--set does not apply" in capsys.readouterr().err


def test_check_rejects_a_sharded_file_whose_annotation_contradicts(capsys: pytest.CaptureFixture[str],
                                                                    tmp_path: Path) -> None:
    """check exited 0 on a sharded file that compile, verify and cost reject."""
    sharded = tmp_path / "s.model"
    assert main(["compile", str(TINY_FFN), "-o", str(sharded)]) == 0
    assert main(["check", str(sharded)]) == 0
    text = sharded.read_text()
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "einsum(" in t and "@" in t)
    lines = text.splitlines()
    lines[line - 1] = lines[line - 1][:lines[line - 1].index("@")] + "@ BLF"
    sharded.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    for command in ("check", "compile", "verify", "cost"):
        assert main([command, str(sharded)]) == 2, command
        err = capsys.readouterr().err
        assert f"s.model:{line}:" in err and "is annotated BLF but its operands' layouts give" in err, err


def test_the_full_size_refusal_sizes_the_tensor_at_the_compute_dtype(capsys: pytest.CaptureFixture[str]) -> None:
    """The refusal named 'k : bf16[...] (1.0 GiB)', its f32 size, as if it were the bf16 size."""
    assert main(["verify", str(EXAMPLES / "palm_540b_decode.model")]) == 2
    err = capsys.readouterr().err
    v, e = 256128, 18432  # wemb : bf16[V, E], the largest tensor
    assert f"wemb : bf16[V, E] ({v * e * 4 / 2**30:.1f} GiB in f32, the compute dtype)" in err, err
    assert main(["verify", str(EXAMPLES / "palm_540b_decode.model"), "--dtype", "f64"]) == 2
    assert f"({v * e * 8 / 2**30:.1f} GiB in f64, the compute dtype)" in capsys.readouterr().err


def test_an_unknown_flag_shows_the_commands_usage(capsys: pytest.CaptureFixture[str]) -> None:
    """A bad flag printed the top-level usage (shardc [-h] [--version] COMMAND ...)."""
    assert main(["cost", str(TINY_FFN), "--bogus"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: shardc cost") and err.rstrip().endswith("unrecognized arguments: --bogus"), err
    assert main(["--bogus"]) == 2
    assert capsys.readouterr().err.startswith("usage: shardc [-h]")
