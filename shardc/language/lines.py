"""Whole statements read a line at a time: the front end's fast path for the common forms.

A ``.model`` statement is one line (only ``repeat`` spans several), and most lines are one of
a few forms: ``model``, ``mesh``, ``dims``, a declaration, ``output``, an assignment, or a
comment alone.  :class:`LineReader` reads such a line with one regular expression (an
assignment: its tokens, then precedence climbing for the expression) and builds its syntax node
(:mod:`shardc.language.syntax_tree`) as the grammar's Transformer does.  The driver
(:class:`~shardc.language.lalr.FastParser`) then hands the LALR automaton the rule the line
derives -- what the automaton would hold after reading its tokens one by one -- and goes on at
the line's end.

The expressions are made of lark's own terminal patterns (``NAME``, ``NUMBER``... read from
the parser, so they cannot drift from the grammar), each in an atomic group so that it matches
what lark's lexer matches there.  Anything else -- a line these forms do not cover, a keyword
spelling where a name stands, a malformed token, an expression nested deeper than
:data:`MAX_NESTING` -- is not read here: the reader returns None and the line is lexed and
parsed token by token as before, errors included.  ``tests/test_fast_parser.py`` checks that
both ways give the same statements on the parser's fuzz corpus and on generated lines.
"""
from __future__ import annotations

import re
from typing import Any, Callable, NamedTuple

import lark
from lark.lexer import PatternStr

from shardc.errors import Loc
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
    Name,
    Num,
    OutputStmt,
    Pin,
    Ref,
    negated,
    start_of,
    string_arg,
)

# Deeper expressions go to the LALR automaton, which reads them without recursion.
MAX_NESTING = 60


class Line(NamedTuple):
    """A line read whole: the automaton holds ``rule`` (value ``node``) where the line was.

    ``rule`` None: the line holds only a comment (and blanks), which the automaton never sees --
    nor its newline: newlines between statements are one terminal however many there are, and
    the line before this one ended with one.
    """

    first: str  # the terminal the statement starts with: the automaton's reductions before it
    rule: str | None  # the grammar rule the line derives (decl, assign, ...)
    node: Any
    end: int  # where the line ends: after its newline, if it has one
    newline: str | None  # the newline's terminal, for the automaton (None: none, or a comment alone)


class _Miss(Exception):
    """The line is not one this reader reads (the automaton reads it)."""


class LineReader:
    """Reads the statement forms of the grammar a line at a time (module docstring).

    ``parser`` is the lark parser of ``grammars/model.lark`` (only its terminals are read), and
    ``on_comment`` is given each comment read, as lark's lexer gives its comment callback.  (A
    line the driver then cannot place makes it give the whole text to lark, which reads the
    comments again from the start.)
    """

    def __init__(self, parser: lark.Lark, on_comment: Callable[[Comment], object]) -> None:
        self.on_comment = on_comment
        newlines = [t.name for t in parser.terminals if re.fullmatch(t.pattern.to_regexp(), "\n")]
        self.newline = newlines[0] if len(newlines) == 1 else None  # None: the newline is lexed as usual
        pattern = {t.name: t.pattern.to_regexp() for t in parser.terminals}
        keyword_type = {t.pattern.value: t.name for t in parser.terminals
                        if isinstance(t.pattern, PatternStr) and re.fullmatch(pattern["NAME"], t.pattern.value)}
        ignored = [pattern[name] for name in parser.lexer_conf.ignore if name in pattern and name != "COMMENT"]
        self.keywords = frozenset(keyword_type)
        self.type_of = keyword_type
        w = "(?>(?:" + "|".join(ignored) + ")*)"  # blanks lark ignores between tokens

        def tok(name: str) -> str:
            return f"(?>{pattern[name]})"

        name, upper, number = tok("NAME"), tok("UPPER"), tok("NUMBER")
        end = f"{w}(?P<comment>{tok('COMMENT')})?"
        pin = f"(?:{w}(?P<at>@){w}(?P<layout>{upper})(?:{w}(?P<partial>{tok('PARTIAL')}))?)?"
        self.head = re.compile(f"{w}(?:(?P<word>{name})|(?P<comment>{tok('COMMENT')})$)")
        self.names = re.compile(name)
        self.uppers = re.compile(upper)
        self.pairs = re.compile(f"(?P<key>{name}|{upper}){w}={w}(?P<value>{number})")
        forms = {
            "model": f"{w}(?P<word>model){w}(?P<name>{name}){end}",
            "mesh": f"{w}(?P<word>mesh){w}(?P<body>{name}{w}={w}{number}(?:{w},{w}{name}{w}={w}{number})*){end}",
            "dims": f"{w}(?P<word>dims){w}(?P<body>{upper}{w}={w}{number}(?:{w},{w}{upper}{w}={w}{number})*){end}",
            "decl": f"{w}(?P<word>input|param|cache){w}(?P<name>{name}){w}:{w}(?P<dtype>{name}){w}"
                    f"\\[{w}(?P<body>{upper}(?:{w},{w}{upper})*){w}\\]{pin}{end}",
            "output": f"{w}(?P<word>output){w}(?P<body>{name}(?:{w},{w}{name})*){pin}{end}",
        }
        self.forms = {word: re.compile(form) for word, form in forms.items()}
        self.forms.update({"input": self.forms["decl"], "param": self.forms["decl"], "cache": self.forms["decl"]})
        self.pin_end = re.compile(f"{pin}{end}")
        self.assign_head = re.compile(f"{w}(?P<target>{name}){w}=")
        # The tokens of an expression: the alternatives are disjoint in their first character.
        self.expr_token = re.compile(
            f"{w}(?:(?P<NAME>{name})|(?P<UPPER>{upper})|(?P<NUMBER>{number})|(?P<STRING>{tok('STRING')})"
            "|(?P<punct>[-+*/(),=]))")

    # -- the entry point --------------------------------------------------------------
    def read(self, text: str, pos: int, line: int) -> Line | None:
        """The statement on the line starting at ``pos`` (line number ``line``), or None."""
        end = text.find("\n", pos)
        if end < 0:
            eol = end = len(text)
        else:
            eol = end - 1 if end > pos and text[end - 1] == "\r" else end  # the CRLF is the newline
            end += 1
        head = self.head.match(text, pos, eol)
        if head is None:
            return None
        word = head["word"]
        try:
            if word is None:
                self._comment(head, pos, line)
                return Line("", None, None, end, None)
            if word in self.forms:
                first, rule, node, m = self._form(word, text, pos, eol, line)
            elif word not in self.keywords:
                first, rule, node, m = self._assign(text, pos, eol, line)
            else:
                return None
        except _Miss:
            return None
        self._comment(m, pos, line)
        if self.newline is None or end == eol:  # the last line, without a newline; or newlines lexed as usual
            return Line(first, rule, node, eol, None)
        return Line(first, rule, node, end, self.newline)

    # -- the regular forms ---------------------------------------------------------------
    def _form(self, word: str, text: str, pos: int, eol: int, line: int) -> tuple[str, str, Any, re.Match]:
        m = self.forms[word].fullmatch(text, pos, eol)
        if m is None:
            raise _Miss
        at = Loc(line, m.start("word") - pos + 1)  # a statement's place: its first word
        node: Any
        if word == "model":
            node, rule = ModelStmt(self._word(m, "name", pos, line), at), "model_stmt"
        elif word in ("mesh", "dims"):
            pairs = tuple((self._word(p, "key", pos, line), Num(p["value"], Loc(line, p.start("value") - pos + 1)))
                          for p in self.pairs.finditer(text, m.start("body"), m.end("body")))
            node, rule = (MeshStmt(pairs, at), "mesh_stmt") if word == "mesh" else (DimsStmt(pairs, at), "dims_stmt")
        elif word == "output":
            node, rule = OutputStmt(self._listed(m, self.names, pos, line), self._pin(m, pos, line), at), "output"
        else:
            node = DeclStmt(word, self._word(m, "name", pos, line), self._word(m, "dtype", pos, line),
                            self._listed(m, self.uppers, pos, line), self._pin(m, pos, line), at)
            rule = "decl"
        return self.type_of[word], rule, node, m

    def _word(self, m: re.Match, group: str, pos: int, line: int) -> Name:
        """The name or dim in ``group`` (a keyword's spelling: lark's lexer may make it a keyword)."""
        text = m[group]
        if text in self.keywords:
            raise _Miss
        return Name(text, Loc(line, m.start(group) - pos + 1))

    def _listed(self, m: re.Match, pattern: re.Pattern, pos: int, line: int) -> tuple[Name, ...]:
        found = tuple(Name(t[0], Loc(line, t.start() - pos + 1))
                      for t in pattern.finditer(m.string, m.start("body"), m.end("body")))
        if pattern is self.names and any(n.text in self.keywords for n in found):
            raise _Miss  # (a dim is upper-case: never a keyword's spelling)
        return found

    @staticmethod
    def _pin(m: re.Match, pos: int, line: int) -> Pin | None:
        if m["layout"] is None:
            return None
        layout = Name(m["layout"], Loc(line, m.start("layout") - pos + 1))
        partial = Name(m["partial"], Loc(line, m.start("partial") - pos + 1)) if m["partial"] is not None else None
        return Pin(layout, partial, layout.loc)

    def _comment(self, m: re.Match, pos: int, line: int) -> None:
        text = m["comment"]
        if text is not None:
            self.on_comment(Comment(text, Loc(line, m.start("comment") - pos + 1)))

    # -- assignments -------------------------------------------------------------------
    def _assign(self, text: str, pos: int, eol: int, line: int) -> tuple[str, str, Any, re.Match]:
        head = self.assign_head.match(text, pos, eol)
        if head is None:
            raise _Miss
        types: list[str] = []
        values: list[str] = []
        starts: list[int] = []
        at = head.end()
        match, keywords = self.expr_token.match, self.keywords
        while (t := match(text, at, eol)) is not None:
            type_: str = t.lastgroup  # type: ignore[assignment]
            value = t[type_]
            if type_ == "punct":
                type_ = value
            elif type_ == "NAME" and value in keywords:
                raise _Miss
            at = t.end()
            types.append(type_)
            values.append(value)
            starts.append(at - len(value) - pos + 1)
        rest = self.pin_end.fullmatch(text, at, eol)  # what follows: a pin, a comment, blanks
        if rest is None or not types:
            raise _Miss
        types.append("")  # the end, so that looking one token ahead never runs off the list
        expr, used = _Expr(types, values, starts, line).climb(0, 0, 0)
        if used != len(values):
            raise _Miss
        target = Name(head["target"], Loc(line, head.start("target") - pos + 1))
        node = AssignStmt(target, expr, self._pin(rest, pos, line), target.loc)
        return "NAME", "assign", node, rest


_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


class _Expr:
    """The grammar's expressions by precedence climbing, as the Transformer builds them.

    ``?sum`` and ``?product`` are left-associative, unary minus binds tighter than ``*`` and ``/``,
    an ``atom`` is a number, a name, a call or a parenthesised expression, and a call's argument is
    an expression, a string, a dim, or ``key=value``.  A token sequence the grammar does not derive
    raises :class:`_Miss`.  Each method takes the index of its first token and returns the node
    and the index after it.
    """

    __slots__ = ("types", "values", "starts", "line")

    def __init__(self, types: list[str], values: list[str], starts: list[int], line: int) -> None:
        self.types, self.values, self.starts, self.line = types, values, starts, line

    def climb(self, i: int, lowest: int, depth: int) -> tuple[Any, int]:
        """The expression at ``i`` whose operators bind at least as tightly as ``lowest``."""
        if depth > MAX_NESTING:
            raise _Miss
        left, i = self.operand(i, depth)
        types = self.types
        while (level := _PRECEDENCE.get(types[i], 0)) > lowest:
            op = types[i]
            right, i = self.climb(i + 1, level, depth + 1)
            left = BinOp(op, left, right, start_of(left))
        return left, i

    def operand(self, i: int, depth: int) -> tuple[Any, int]:
        """Unary minus signs, then an atom."""
        types = self.types
        signs = 0
        while types[i] == "-":
            i += 1
            signs += 1
        if signs > MAX_NESTING:
            raise _Miss
        value, i = self.atom(i, depth)
        for _ in range(signs):
            value = negated(value)
        return value, i

    def atom(self, i: int, depth: int) -> tuple[Any, int]:
        types, kind = self.types, self.types[i]
        if kind == "NUMBER":
            return Num(self.values[i], Loc(self.line, self.starts[i])), i + 1
        if kind == "(":
            inner, i = self.climb(i + 1, 0, depth + 1)
            if types[i] != ")":
                raise _Miss
            return inner, i + 1
        if kind != "NAME":
            raise _Miss
        loc = Loc(self.line, self.starts[i])
        if types[i + 1] != "(":
            return Ref(self.values[i], loc), i + 1
        func = Name(self.values[i], loc)
        i += 2
        args: list[Any] = []
        if types[i] != ")":
            while True:
                arg, i = self.arg(i, depth + 1)
                args.append(arg)
                if types[i] != ",":
                    break
                i += 1
            if types[i] != ")":
                raise _Miss
        return Call(func, tuple(args), loc), i + 1

    def arg(self, i: int, depth: int) -> tuple[Any, int]:
        types, kind = self.types, self.types[i]
        if kind == "STRING":
            return string_arg(self.values[i], Loc(self.line, self.starts[i])), i + 1
        if kind in ("NAME", "UPPER") and types[i + 1] == "=":
            if types[i + 2] not in ("NAME", "UPPER"):
                raise _Miss
            key = Name(self.values[i], Loc(self.line, self.starts[i]))
            return KwArg(key, Name(self.values[i + 2], Loc(self.line, self.starts[i + 2]))), i + 3
        if kind == "UPPER":
            return DimArg(Name(self.values[i], Loc(self.line, self.starts[i]))), i + 1
        return self.climb(i, 0, depth)
