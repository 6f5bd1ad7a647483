"""Comments and blank lines of a source file, attached to the statements they belong to.

The formatter keeps a user's comments: a comment on the same line as a
statement stays at the end of that line; comment lines above a statement stay
above it; comments before a ``}`` or at the end of the file stay there.  A
blank line before a statement (or before its comment lines) is kept as one
blank line, and so is a blank line between comment lines or between them and
their statement (written as an empty string in ``Trivia.before``).  Anchors
are keyed by ``id()`` of the AST statement, ``("close", id(repeat))`` for a
repeat's ``}`` and ``0`` for the end of the file.
"""
from __future__ import annotations

import bisect
from typing import Hashable

from shardc.ir.graph import Trivia
from shardc.language import syntax_tree as ast


def _anchors(stmts: tuple[ast.Stmt, ...]) -> list[tuple[int, Hashable]]:
    out: list[tuple[int, Hashable]] = []
    for stmt in stmts:
        out.append((stmt.loc.line, id(stmt)))
        if isinstance(stmt, ast.RepeatStmt):
            out.extend(_anchors(stmt.body))
            out.append((stmt.close.line, ("close", id(stmt))))
    return out


def attach_trivia(module: ast.Module) -> dict[Hashable, Trivia]:
    """Map each anchor to the comments and blank line that belong to it (no entry: none)."""
    anchors = _anchors(module.stmts)
    lines = module.source.lines
    end_line = len(lines) + 1
    anchors.append((end_line, 0))
    on_line = {line: key for line, key in anchors}
    starts = [line for line, _ in anchors]  # in source order, so sorted
    before: dict[Hashable, list[tuple[int, str]]] = {}
    after: dict[Hashable, str] = {}
    for comment in module.comments:
        key = on_line.get(comment.loc.line)
        text = comment.text.rstrip()
        if key is not None and key != 0:
            after[key] = text
            continue
        nxt = anchors[bisect.bisect_right(starts, comment.loc.line)][1]  # the first anchor below it
        before.setdefault(nxt, []).append((comment.loc.line, text))
    result: dict[Hashable, Trivia] = {}
    prev_line = 0
    for line, key in anchors:
        leading = before.get(key)
        first = leading[0][0] if leading else line
        blank = prev_line > 0 and first > prev_line + 1 and any(
            not lines[i - 1].strip() for i in range(prev_line + 1, min(first, end_line)) if i <= len(lines))
        prev_line = line
        if leading or blank or key in after:  # an anchor with nothing around it has no entry
            result[key] = Trivia(_with_gaps(leading or [], line, lines), after.get(key), blank)
    return result


def _with_gaps(leading: list[tuple[int, str]], line: int, lines: list[str]) -> tuple[str, ...]:
    """Comment texts with "" wherever blank lines separated them (or the last from ``line``)."""
    if not leading:
        return ()
    if len(leading) == 1 and leading[0][0] == line - 1:  # one comment line right above: no gap to look for
        return (leading[0][1],)
    out: list[str] = []
    marks = [n for n, _ in leading] + [line]
    for (n, text), nxt in zip(leading, marks[1:]):
        out.append(text)
        if nxt > n + 1 and any(not lines[i - 1].strip() for i in range(n + 1, nxt) if i <= len(lines)):
            out.append("")
    return tuple(out)
