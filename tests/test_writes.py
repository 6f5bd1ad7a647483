"""Writes never destroy: ``-o`` and ``fmt -i`` replace only what the user asked to replace.

Every target here lives in pytest's temporary folder; a FIFO stands in for a device such as
``/dev/null`` (a test must never point its output at a real device).
"""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from shardc.cli.common import write_atomically
from shardc.cli.main import main
from shardc.errors import ShardcError

ROOT = Path(__file__).resolve().parent.parent
TINY_FFN = ROOT / "examples" / "tiny_ffn.model"


def write_while_reading(fifo: Path, target: Path, text: str) -> list[str]:
    """``write_atomically(target, text)`` while another thread reads ``fifo``; what it read."""
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    write_atomically(target, text)
    reader.join(timeout=10)
    return got


def test_a_fifo_is_written_into_not_replaced(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert write_while_reading(fifo, fifo, "model m\n") == ["model m\n"]
    assert fifo.is_fifo()  # still the FIFO, not a regular file put in its place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]  # no temporary left behind


def test_a_symlink_to_a_fifo_is_written_through(tmp_path: Path) -> None:
    """``/dev/stdout`` is a symlink to the process's standard output, often a pipe."""
    fifo, link = tmp_path / "pipe", tmp_path / "stdout"
    os.mkfifo(fifo)
    link.symlink_to(fifo)
    assert write_while_reading(fifo, link, "model m\n") == ["model m\n"]
    assert link.is_symlink() and fifo.is_fifo()


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="no /proc/self/fd")
@pytest.mark.parametrize("mode", ["a", "w"])
def test_a_name_of_an_open_file_is_appended_to(tmp_path: Path, mode: str) -> None:
    """``-o /dev/stdout >> log.txt``: /dev/stdout links to /proc/self/fd/1, which resolves to log.txt.

    Renaming over that would replace the log and what it held (and leave the stream writing into a
    deleted file): the text is appended to the stream instead, ``>`` (``w``) or ``>>`` (``a``) alike.
    """
    log, link = tmp_path / "log.txt", tmp_path / "stdout"
    log.write_text("earlier lines\n")
    with open(log, mode) as stream:
        stream.write("" if mode == "a" else "fresh\n")
        stream.flush()
        link.symlink_to(f"/proc/self/fd/{stream.fileno()}")
        inode = log.stat().st_ino
        write_atomically(link, "model m\n")
    assert log.stat().st_ino == inode  # the same file, not one renamed into its place
    assert log.read_text() == ("earlier lines\n" if mode == "a" else "fresh\n") + "model m\n"
    assert link.is_symlink() and sorted(p.name for p in tmp_path.iterdir()) == ["log.txt", "stdout"]


def test_a_regular_file_is_replaced_keeping_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "out.model"
    target.write_text("old\n")
    target.chmod(0o640)
    write_atomically(target, "new\n")
    assert target.read_text() == "new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.model"]


def test_a_symlink_to_a_file_is_written_through(tmp_path: Path) -> None:
    target, link = tmp_path / "real.model", tmp_path / "link.model"
    target.write_text("old\n")
    link.symlink_to(target)
    write_atomically(link, "new\n")
    assert link.is_symlink() and target.read_text() == "new\n"


def test_a_read_only_file_is_refused_even_for_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "locked.model"
    target.write_text("keep me\n")
    target.chmod(0o444)
    assert main(["compile", str(TINY_FFN), "-o", str(target)]) == 2
    assert "it is read-only" in capsys.readouterr().err
    assert target.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["locked.model"]


def test_the_temporary_is_removed_on_ctrl_c(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.model"
    target.write_text("old\n")

    def interrupted(src: object, dst: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomically(target, "new\n")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.model"]


def test_a_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ShardcError, match="no such directory"):
        write_atomically(tmp_path / "no" / "such.model", "x\n")


def test_a_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ShardcError, match="it is a directory"):
        write_atomically(tmp_path, "x\n")


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another owner")
def test_the_owner_is_kept_when_root_replaces_a_file(tmp_path: Path) -> None:
    target = tmp_path / "theirs.model"
    target.write_text("old\n")
    os.chown(target, 12345, 12345)
    write_atomically(target, "new\n")
    assert (target.stat().st_uid, target.stat().st_gid) == (12345, 12345)


@pytest.mark.parametrize("redirect", ["w", "a"])
def test_dev_stdout_into_a_file_keeps_the_program_and_the_report(tmp_path: Path, redirect: str) -> None:
    """``shardc compile F -o /dev/stdout > out.txt``: the program is written through standard output
    itself, so the report printed after it follows it instead of overwriting it (``>`` or ``>>``)."""
    out = tmp_path / "out.txt"
    out.write_text("" if redirect == "w" else "earlier\n")
    with open(out, redirect) as stream:
        done = subprocess.run([sys.executable, "-c", "from shardc.cli.main import main; raise SystemExit(main())",
                               "compile", str(TINY_FFN), "-o", "/dev/stdout"],
                              stdout=stream, stderr=subprocess.PIPE, text=True, check=False)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    program = text.index("model tiny_ffn")
    assert text.startswith("" if redirect == "w" else "earlier\n")
    assert "collectives on mesh" in text[program:]  # the report, after the whole program
    assert text.count("model tiny_ffn") == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
