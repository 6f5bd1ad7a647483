"""Parsing ``.model`` text into an AST (the first stage of the pipeline).

The grammar lives in ``grammars/model.lark`` (installed with the package as the data of
``shardc.grammars``); lark parses it with LALR(1) and a
contextual lexer.  A :class:`lark.Transformer` turns the parse tree into the
small frozen dataclasses of :mod:`shardc.language.syntax_tree`, one
method per grammar rule/alias.  Nothing here knows about types or scopes:
that is :mod:`shardc.language.lower`'s job.

Parse errors never leak lark's token names; :func:`_syntax_error` says what
was expected in words ("expected ',' or ']' after a dim").
"""
from __future__ import annotations

import functools
import importlib.resources
import re
import threading

import lark
from lark import Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from shardc.errors import Loc, ShardcError, Source, source_lines
from shardc.language.syntax_tree import (
    AssignStmt,
    BinOp,
    Call,
    Comment,
    DeclStmt,
    DimArg,
    DimsStmt,
    KwArg,
    MeshStmt,
    ModelStmt,
    Module,
    Name,
    Neg,
    Num,
    OutputStmt,
    Pin,
    Ref,
    RepeatStmt,
    StrArg,
    start_of,
)

# The AST is re-exported: lowering and users read it as syntax.Name, syntax.Call...
__all__ = ["grammar_text", "parse_module"]


# --- parse tree -> AST ------------------------------------------------------------
def _loc(tok: Token) -> Loc:
    return Loc(tok.line or 0, tok.column or 0)


def _name(tok: Token) -> Name:
    return Name(str(tok), _loc(tok))


class _ToAst(Transformer):
    """One method per grammar rule or alias; returns AST nodes."""

    def __init__(self, source: Source) -> None:
        super().__init__()
        self.source = source

    def _stmt_loc(self, line: int) -> Loc:
        """Statements start their line: point at its first non-blank character."""
        text = self.source.line_text(line)
        return Loc(line, len(text) - len(text.lstrip()) + 1)

    def start(self, items: list) -> tuple:
        return tuple(items)

    def model_stmt(self, items: list) -> ModelStmt:
        (name,) = items
        return ModelStmt(_name(name), self._stmt_loc(name.line))

    def axis_size(self, items: list) -> tuple[Name, Num]:
        name, size = items
        return _name(name), Num(str(size), _loc(size))

    def mesh_stmt(self, items: list) -> MeshStmt:
        return MeshStmt(tuple(items), self._stmt_loc(items[0][0].loc.line))

    def dim_size(self, items: list) -> tuple[Name, Num]:
        dim, size = items
        return _name(dim), Num(str(size), _loc(size))

    def dims_stmt(self, items: list) -> DimsStmt:
        return DimsStmt(tuple(items), self._stmt_loc(items[0][0].loc.line))

    def decl_kind(self, items: list) -> Token:
        return items[0]

    def dim_list(self, items: list) -> tuple[Name, ...]:
        return tuple(_name(t) for t in items)

    def decl(self, items: list) -> DeclStmt:
        kind, name, dtype, dims = items[:4]
        pin = items[4] if len(items) > 4 else None
        return DeclStmt(str(kind), _name(name), _name(dtype), dims, pin, _loc(kind))

    def assign(self, items: list) -> AssignStmt:
        target, expr = items[:2]
        pin = items[2] if len(items) > 2 else None
        return AssignStmt(_name(target), expr, pin, _loc(target))

    def output(self, items: list) -> OutputStmt:
        pin = items[-1] if isinstance(items[-1], Pin) else None
        names = tuple(_name(t) for t in items if isinstance(t, Token))
        return OutputStmt(names, pin, self._stmt_loc(names[0].loc.line))

    def repeat(self, items: list) -> RepeatStmt:
        count, *body, close = items
        return RepeatStmt(Num(str(count), _loc(count)), tuple(body), self._stmt_loc(count.line), _loc(close))

    def pin(self, items: list) -> Pin:
        layout = _name(items[0])
        partial = _name(items[1]) if len(items) > 1 else None
        return Pin(layout, partial, Loc(layout.loc.line, layout.loc.col))

    # expressions
    def _binop(self, op: str, items: list) -> BinOp:
        left, right = items
        return BinOp(op, left, right, start_of(left))

    def add(self, items: list) -> BinOp:
        return self._binop("+", items)

    def sub(self, items: list) -> BinOp:
        return self._binop("-", items)

    def mul(self, items: list) -> BinOp:
        return self._binop("*", items)

    def div(self, items: list) -> BinOp:
        return self._binop("/", items)

    def neg(self, items: list) -> Neg:
        (operand,) = items
        loc = start_of(operand)
        return Neg(operand, Loc(loc.line, max(loc.col - 1, 1)))

    def number(self, items: list) -> Num:
        (tok,) = items
        return Num(str(tok), _loc(tok))

    def ref(self, items: list) -> Ref:
        (tok,) = items
        return Ref(str(tok), _loc(tok))

    def call(self, items: list) -> Call:
        func, *args = items
        return Call(_name(func), tuple(a for a in args if a is not None), _loc(func))

    def string_arg(self, items: list) -> StrArg:
        (tok,) = items
        return StrArg(str(tok)[1:-1], _loc(tok))

    def dim_arg(self, items: list) -> DimArg:
        (tok,) = items
        return DimArg(_name(tok))

    def kwarg(self, items: list) -> KwArg:
        key, value = items
        return KwArg(_name(key), _name(value))


# --- the parser ---------------------------------------------------------------------
def grammar_text() -> str:
    """The text of ``grammars/model.lark``, installed with the package as ``shardc.grammars``."""
    return importlib.resources.files("shardc.grammars").joinpath("model.lark").read_text(encoding="utf-8")


class _Recorder:
    """Collects comments (for the formatter) while lexing.

    lark fixes lexer callbacks when the parser is built, and building the LALR
    tables is the slow part, so one parser is built and shares this recorder;
    the lock keeps concurrent parses from mixing their records.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.comments: list[Comment] = []

    def reset(self) -> None:
        self.comments = []

    def comment(self, tok: Token) -> Token:
        self.comments.append(Comment(str(tok), _loc(tok)))
        return tok


_RECORDER = _Recorder()


@functools.lru_cache(maxsize=1)
def _parser() -> lark.Lark:
    callbacks = {"COMMENT": _RECORDER.comment}
    return lark.Lark(
        grammar_text(),
        parser="lalr",
        lexer="contextual",
        maybe_placeholders=True,
        lexer_callbacks=callbacks,
    )


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


def parse_module(text: str, filename: str = "<string>") -> Module:
    """Parse ``.model`` text into a :class:`Module` (syntax only), or raise ShardcError."""
    source = Source(filename, text)
    parser = _parser()
    with _RECORDER.lock:
        _RECORDER.reset()
        try:
            tree = parser.parse(text)
        except UnexpectedInput as err:
            raise _syntax_error(err, source, _previous(err)) from None
        finally:
            comments = tuple(_RECORDER.comments)
            _RECORDER.reset()
    _check_depth(tree, source)
    stmts = _ToAst(source).transform(tree)
    return Module(stmts, comments, source)


# How deeply an expression may nest: operators chained (a + b + ... is a left-nested tree), unary
# minus signs, parentheses and calls.  Far beyond any real program, and low enough that every later
# stage (lowering, printing, the executors) stays within Python's recursion limit.
MAX_DEPTH = 200


def _check_depth(tree: lark.Tree, source: Source) -> None:
    """A located ShardcError if the parse tree nests deeper than :data:`MAX_DEPTH` (checked without recursion)."""
    stack: list[tuple[lark.Tree, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH + 2:  # start -> statement -> the expression's levels
            raise ShardcError(f"the expression nests more than {MAX_DEPTH} levels deep (operators chained, "
                              "signs, parentheses or calls); split it into several assignments",
                              source, _first_loc(node))
        stack.extend((child, depth + 1) for child in node.children if isinstance(child, lark.Tree))


def _first_loc(node: lark.Tree) -> Loc:
    """Where the text of ``node`` starts: its first token."""
    while True:  # down the first children, without recursion
        for child in node.children:
            if isinstance(child, Token):
                return _loc(child)
            if isinstance(child, lark.Tree):
                node = child
                break
        else:
            return Loc(1, 1)


def _previous(err: UnexpectedInput) -> Token | None:
    """The last token the parser accepted before the error (lark keeps a history of one)."""
    history = getattr(err, "token_history", None)
    return history[-1] if history else None
