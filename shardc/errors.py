"""Errors that shardc reports to its users, and how they are rendered.

Every problem a user can cause -- bad source text, an impossible layout, an
unknown flag value -- is a :class:`ShardcError`.  It carries the source text
and a 1-based line/column when there is a location, and renders as::

    palm.model:14:33: error: einsum operand 2 has dims [E, F] but the spec says "FE"
      f  = einsum("BLF,FE->BLE", u, win)
                                    ^

(exactly as in docs/language.md: the source line as written, indentation included).

The command line prints :meth:`ShardcError.render` (or :meth:`to_json` under
``--json``) and exits with status 2; no traceback is ever shown for these.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass


def source_lines(text: str) -> list[str]:
    """The lines of ``text`` as the parser counts them: split at '\n' only.

    (``str.splitlines`` also splits at form feeds, '\x85', '\u2028'..., which
    the lexer treats as ordinary characters, so line numbers would drift.)
    """
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    return lines


@dataclass(frozen=True)
class Source:
    """The text of one program and the name it is reported under."""

    filename: str
    text: str

    @functools.cached_property
    def lines(self) -> list[str]:
        """:func:`source_lines` of the text, split once: every statement's location reads it, so splitting
        per call made the front end quadratic.  (cached_property writes the instance ``__dict__``
        directly, which a frozen dataclass allows; the cache is no field, so equality ignores it.)"""
        return source_lines(self.text)

    def line_text(self, line: int) -> str:
        """The text of 1-based ``line`` without its newline ('' when out of range)."""
        lines = self.lines
        if 1 <= line <= len(lines):
            return lines[line - 1]
        return ""


@dataclass(frozen=True)
class Loc:
    """A 1-based position in a source file (line 0 means 'no location')."""

    line: int = 0
    col: int = 0

    def __bool__(self) -> bool:
        return self.line > 0


NOLOC = Loc()


def render_diagnostic(severity: str, message: str, source: Source | None, loc: Loc, hint: str | None = None) -> str:
    """``file:line:col: SEVERITY: message``, then the source line and a caret under the column."""
    if source is not None and loc:
        head = f"{source.filename}:{loc.line}:{loc.col}: {severity}: {message}"
        text = source.line_text(loc.line)
        # Keep tabs so the caret lines up under the same terminal column.
        pad = "".join("\t" if ch == "\t" else " " for ch in text[: max(loc.col - 1, 0)])
        out = [head, text, pad + "^"]  # the line as written, the caret under its column
    elif source is not None:
        out = [f"{source.filename}: {severity}: {message}"]
    else:
        out = [f"{severity}: {message}"]
    if hint:
        out.append(f"  hint: {hint}")
    return "\n".join(out)


class ShardcError(Exception):
    """A user-facing error, optionally located in a source file."""

    def __init__(
        self,
        message: str,
        source: Source | None = None,
        loc: Loc | None = None,
        *,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.source = source
        self.loc = loc if loc is not None else NOLOC
        self.hint = hint

    @property
    def filename(self) -> str | None:
        return self.source.filename if self.source is not None else None

    @property
    def line(self) -> int | None:
        return self.loc.line if self.loc else None

    @property
    def col(self) -> int | None:
        return self.loc.col if self.loc else None

    def located(self, source: Source, loc: Loc) -> "ShardcError":
        """This error with a location filled in (kept if it already has one)."""
        if self.loc and self.source is not None:
            return self
        return ShardcError(self.message, source, loc if not self.loc else self.loc, hint=self.hint)

    def render(self) -> str:
        """``file:line:col: error: message``, then the source line and a caret."""
        return render_diagnostic("error", self.message, self.source, self.loc, self.hint)

    def to_json(self) -> dict[str, object]:
        """The error as ``{"error": {"file", "line", "col", "message"}}``."""
        message = self.message if not self.hint else f"{self.message} (hint: {self.hint})"
        return {
            "error": {
                "file": self.filename,
                "line": self.line,
                "col": self.col,
                "message": message,
            }
        }

    def __str__(self) -> str:
        return self.render()
