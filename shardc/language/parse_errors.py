"""Syntax errors in words: a lark parse error -> a located :class:`~shardc.errors.ShardcError`.

lark reports what it met and the terminals it would have taken there; these
messages never show its token names.  They say what was expected in words
("expected ',' or ']' after a dim"), after what, and what was found, and point
at the token (or the end of the file) with its line and column.
"""
from __future__ import annotations

import re

from lark import Token
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from shardc.errors import Loc, ShardcError, Source, source_lines

__all__ = ["syntax_error"]


def syntax_error(err: UnexpectedInput, source: Source) -> ShardcError:
    """The ShardcError for lark's ``err`` on ``source``: located, in words."""
    return _syntax_error(err, source, _previous(err))


# How each terminal reads in an error message.
_WORDS: dict[str, str] = {
    "NAME": "a name",
    "UPPER": "a dim",
    "NUMBER": "a number",
    "STRING": 'a string such as "BLE,EF->BLF"',
    "PARTIAL": "(partialsum-AXES)",
    "_NL": "end of line",
    "$END": "end of file",
    "COMMA": "','",
    "COLON": "':'",
    "EQUAL": "'='",
    "LSQB": "'['",
    "RSQB": "']'",
    "LPAR": "'('",
    "RPAR": "')'",
    "LBRACE": "'{'",
    "CLOSE_BRACE": "'}'",
    "AT": "'@'",
    "PLUS": "'+'",
    "MINUS": "'-'",
    "STAR": "'*'",
    "SLASH": "'/'",
    "MODEL": "'model'",
    "MESH": "'mesh'",
    "DIMS": "'dims'",
    "INPUT": "'input'",
    "PARAM": "'param'",
    "CACHE": "'cache'",
    "REPEAT": "'repeat'",
    "OUTPUT": "'output'",
}

# Keywords of the grammar: using one as a name gets a message of its own.
_KEYWORD_TYPES = {"MODEL", "MESH", "DIMS", "INPUT", "PARAM", "CACHE", "REPEAT", "OUTPUT"}


def _describe(tok: Token | None) -> str:
    if tok is None:
        return "the start of the file"
    if tok.type == "_NL":
        return "end of line"
    if tok.type in ("NAME",):
        return f"'{tok}'"
    if tok.type == "UPPER":
        return f"'{tok}'"
    if tok.type == "NUMBER":
        return f"number {tok}"
    if tok.type == "STRING":  # the string itself reads better than 'a string such as ...'
        return str(tok)
    if tok.type == "$END":
        return "end of file"
    return _WORDS.get(tok.type, f"'{tok}'")


def _char(ch: str) -> str:
    """A character for a message: itself if printable, else its code point (U+000D)."""
    return f"'{ch}'" if ch.isprintable() else f"U+{ord(ch):04X}"


def _expected_words(expected: set[str]) -> str:
    if {"NAME", "NUMBER", "LPAR", "MINUS"} <= expected:
        rest = expected - {"NAME", "NUMBER", "LPAR", "MINUS", "STRING", "UPPER"}
        what = "an argument" if "STRING" in expected else "an expression"
        return what + (" or " + _expected_words(rest) if rest else "")
    # Statements can start with many keywords: say "a statement" once instead of listing
    # them (blank lines and the end of the file are always allowed there, so leave them out).
    if len({"MODEL", "MESH", "DIMS", "INPUT", "PARAM", "CACHE", "OUTPUT"} & expected) >= 4:
        return "a statement" + (" or '}'" if "CLOSE_BRACE" in expected else "")
    if "_NL" in expected:  # "end of line" covers the end of the file
        expected = expected - {"$END"}
    words = sorted({_WORDS.get(t, t.lower()) for t in expected if not t.startswith("__")})
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def _accepted(err: UnexpectedToken) -> set[str]:
    """The terminals the parser would have accepted where ``err`` happened.

    ``err.expected`` comes from the lexer when the contextual lexer fails, and
    there keywords hide inside NAME and a lexer state may be shared by parser
    states ('}' offered at the top level); the parser's own answer is exact.
    """
    try:
        accepted = set(err.interactive_parser.accepts())
    except Exception:  # an old lark, or no interactive parser: fall back to the lexer's set
        accepted = set()
    return accepted or set(err.expected)


def _syntax_error(err: UnexpectedInput, source: Source, prev: Token | None) -> ShardcError:
    """Turn a lark error into a located ShardcError that says what was expected."""
    if isinstance(err, UnexpectedCharacters):
        return _character_error(err, source, prev)
    if isinstance(err, UnexpectedToken):
        return _token_error(err, source, prev)
    if isinstance(err, UnexpectedEOF):
        return ShardcError("unexpected end of file", source, _end_loc(source))
    return ShardcError(str(err), source)


_MALFORMED_PARTIAL = "malformed partial sum: write (partialsum-AXES) with no spaces, e.g. (partialsum-yz)"


def _character_error(err: UnexpectedCharacters, source: Source, prev: Token | None) -> ShardcError:
    """The lexer met a character no token starts with."""
    # lark declares pos_in_stream only by a None default on UnexpectedInput; the lexer
    # sets it to the offset of the character, so it is read with the type it has.
    pos: int | None = getattr(err, "pos_in_stream", None)
    ch = source.text[pos] if pos is not None and pos < len(source.text) else ""
    loc = Loc(err.line, err.column)
    if ch == "\t" or ch == " ":
        return ShardcError("unexpected white space", source, loc)
    if ch == '"':
        return ShardcError("unterminated string: a string ends with '\"' on the same line", source, loc)
    if ch == "(" and prev is not None and prev.type == "UPPER":
        return ShardcError(_MALFORMED_PARTIAL, source, loc)
    return ShardcError(f"unexpected character {_char(ch)}", source, loc)


def _token_error(err: UnexpectedToken, source: Source, prev: Token | None) -> ShardcError:
    """The parser met a token it cannot take there: the first rule that explains it, in order."""
    tok = err.token
    expected = _accepted(err)
    loc = Loc(tok.line or 0, tok.column or 0) if tok.type != "$END" else _end_loc(source)
    for rule in (_misused_word_error, _block_or_layout_error):
        error = rule(tok, prev, expected, source, loc)
        if error is not None:
            return error
    return _expected_error(tok, prev, expected, source, loc)


def _misused_word_error(tok: Token, prev: Token | None, expected: set[str], source: Source,
                        loc: Loc) -> ShardcError | None:
    """An empty program, a reserved word used as a name, dims without a comma between them."""
    if tok.type == "$END" and not re.sub(r"#[^\n]*", "", source.text).strip():
        return ShardcError("the program is empty: it starts with 'model NAME'", source, loc)
    if tok.type in _KEYWORD_TYPES and "NAME" in expected:
        return ShardcError(f"'{tok}' is a reserved word and cannot be used as a name", source, loc)
    if prev is not None and prev.type in _KEYWORD_TYPES and tok.type in ("EQUAL", "COLON"):
        return ShardcError(f"'{prev}' is a reserved word and cannot be used as a name", source,
                           Loc(prev.line or 0, prev.column or 0))
    if prev is not None and prev.type == "UPPER" and tok.type == "UPPER" and "RSQB" in expected:
        return ShardcError("expected ',' or ']' after a dim", source, loc)
    return None


def _block_or_layout_error(tok: Token, prev: Token | None, expected: set[str], source: Source,
                           loc: Loc) -> ShardcError | None:
    """A repeat block left open, a stray '}', a layout or partial sum written with spaces."""
    # Only a repeat body needs more than the end of the file after a statement.
    if tok.type == "$END" and ("CLOSE_BRACE" in expected or expected == {"_NL"}):
        return ShardcError("the repeat block is not closed: expected '}' on a line of its own", source, loc)
    if tok.type == "CLOSE_BRACE" and "CLOSE_BRACE" not in expected:
        at_start = prev is None or prev.type == "_NL"
        where = "has no open repeat block" if at_start else "must stand alone on its line"
        return ShardcError(f"'}}' {where}", source, loc)
    if "PARTIAL" in expected and tok.type == "LPAR":
        return ShardcError(_MALFORMED_PARTIAL, source, loc)
    if "PARTIAL" in expected and tok.type == "NAME" and str(tok).startswith("_"):
        return ShardcError(f"a layout is one token: write {prev}{tok} with no space", source, loc)
    return None


def _expected_error(tok: Token, prev: Token | None, expected: set[str], source: Source, loc: Loc) -> ShardcError:
    """The general message: what the parser expected, after what, and what it found."""
    found = _describe(tok)
    after = f" after {_describe(prev)}" if prev is not None and prev.type != "_NL" else ""
    if tok.type == "_NL" and "CLOSE_BRACE" in expected and "NAME" not in expected:
        return ShardcError("'{' must end its line", source, loc)
    message = f"expected {_expected_words(expected)}{after}, found {found}"
    if tok.type == "_NL" and ({"RPAR", "RSQB"} & expected):
        message += " (parentheses and brackets close on the line that opens them)"
    return ShardcError(message, source, loc)


def _end_loc(source: Source) -> Loc:
    lines = source_lines(source.text) or [""]
    return Loc(len(lines), len(lines[-1]) + 1)


def _previous(err: UnexpectedInput) -> Token | None:
    """The last token the parser accepted before the error (lark keeps a history of one)."""
    history = getattr(err, "token_history", None)
    return history[-1] if history else None
