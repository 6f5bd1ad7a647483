"""A fast LALR(1) driver for the tables lark builds from ``grammars/model.lark``.

lark's own parser spends most of its time per token in general machinery: a
lexer object per call, a ``LineCounter``, assertions that compare grammar rules
by value, a callback chain per reduction.  :class:`FastParser` runs the *same*
automaton with the same lexer, reading lark's products rather than the grammar:

* the parse table (``states``: action per terminal, goto per rule) and the
  start and end states;
* lark's contextual lexer: in each parser state, the terminals lark's own lexer
  for that state tries, in lark's order (first alternative that matches wins),
  with its keyword mapping (a NAME spelled ``model`` becomes MODEL where lark's
  lexer makes it so), its ignored terminals and the lexer callbacks;
* the callbacks lark made for each rule (the Transformer given to ``Lark`` with
  lark's child filters around it), so the value returned is what
  ``Lark.parse`` returns.

It reads only well-formed text.  Whenever it cannot go on -- a character no
terminal matches, a token the table has no action for -- it raises
:class:`Miss` and the caller parses the text again with ``Lark.parse``, whose
error (the very exception lark raises, with its interactive parser) is what the
user is told about.  So the language is lark's, errors are lark's, and the only
thing this module decides is how fast a valid program is read.
"""
from __future__ import annotations

import copy
import functools
import re
from typing import Any, Callable, Iterator

import lark
from lark import Token
from lark.lexer import BasicLexer, PatternStr, UnlessCallback
from lark.parsers.lalr_analysis import Shift

# lark's Token constructor without its check for a deprecated keyword (Token() itself if it has none).
_NEW_TOKEN: Callable[..., Token] = getattr(Token, "_future_new", Token)

# Kinds of action in the converted table.
_SHIFT, _REDUCE, _UNIT = 0, 1, 2


class Miss(Exception):
    """The text is not a program this driver reads: let lark parse it (and report its error)."""


class _Scan:
    """What lark's lexer for one parser state matches: one regular expression, keywords, callbacks."""

    __slots__ = ("match", "ignore", "newline", "keywords", "callbacks")

    def __init__(self, lexer: BasicLexer, flags: int) -> None:
        scanner = lexer.scanner  # builds lark's scanner: terminals in its order, keywords folded
        alternatives = "|".join(f"(?P<{t.name}>{t.pattern.to_regexp()})" for t in scanner.terminals)
        self.match = re.compile(alternatives, flags).match
        self.ignore = lexer.ignore_types
        self.newline = lexer.newline_types
        self.keywords: dict[str, dict[str, str]] = {}  # type -> {spelling: keyword type}
        self.callbacks: dict[str, Callable[[Token], Token]] = {}
        for type_, callback in lexer.callback.items():
            words = _keywords(callback)
            if words is not None:
                self.keywords[type_] = words
            else:
                self.callbacks[type_] = callback


def _keywords(callback: object) -> dict[str, str] | None:
    """The spelling -> type map of lark's keyword callback, if it is one of plain strings."""
    if not isinstance(callback, UnlessCallback):
        return None
    words: dict[str, str] = {}
    for term in callback.scanner.terminals:
        if not isinstance(term.pattern, PatternStr) or term.pattern.flags:
            return None
        words.setdefault(term.pattern.value, term.name)
    return words


class FastParser:
    """Parses text as ``parser.parse(text)`` would, for text lark accepts; :class:`Miss` otherwise."""

    def __init__(self, parser: lark.Lark, start: str = "start") -> None:
        frontend = parser.parser
        lexer = frontend.lexer
        if parser.options.parser != "lalr" or not isinstance(lexer, lark.lexer.ContextualLexer) \
                or parser.lexer_conf.use_bytes or parser.options.postlex is not None \
                or parser.options.propagate_positions:
            raise TypeError("FastParser needs a Lark(parser='lalr', lexer='contextual') parser on str text")
        table = frontend.parser.parser.parse_table
        callbacks = frontend.parser.parser.callbacks
        flags = parser.lexer_conf.g_regex_flags
        scans: dict[int, _Scan] = {}
        self.scan = {state: scans.setdefault(id(sub), _Scan(sub, flags))  # type: ignore[arg-type]
                     for state, sub in lexer.lexers.items()}
        self.actions: dict[Any, dict[str, tuple]] = {}
        self.goto: dict[Any, dict[str, Any]] = {}
        for state, row in table.states.items():
            acts: dict[str, tuple] = {}
            gotos: dict[str, Any] = {}
            for key, (action, arg) in row.items():
                symbol = str(key)  # lark's rule names are Tokens, whose == is slow Python
                if action is Shift and not symbol.isupper() and not symbol.startswith("$"):
                    gotos[symbol] = arg  # a rule: where the parser goes after reducing it
                elif action is Shift:
                    acts[symbol] = (_SHIFT, arg)
                elif _is_unit(arg):
                    acts[symbol] = (_UNIT, str(arg.origin.name))
                else:
                    callback = _inlined(arg, callbacks[arg])
                    acts[symbol] = (_REDUCE, (len(arg.expansion), str(arg.origin.name), callback))
            self.actions[state] = acts
            self.goto[state] = gotos
        self.unseen = _filtered_terminals(parser)
        self.start = table.start_states[start]
        self.end = table.end_states[start]

    def parse(self, text: str) -> Any:
        """The value of the start rule for ``text``; :class:`Miss` if lark must read it."""
        actions, goto, end = self.actions, self.goto, self.end
        states: list[Any] = [self.start]
        values: list[Any] = []
        for type_, tok in self._tokens(text, states):
            while True:  # reduce as long as the table says, then shift the token
                row = actions[states[-1]]
                if type_ not in row:
                    raise Miss
                kind, arg = row[type_]
                if kind == _SHIFT:
                    states.append(arg)
                    values.append(tok)
                    break
                if kind == _UNIT:  # `?rule: other`, one child: the child is the value
                    states[-1] = goto[states[-2]][arg]
                else:
                    count, name, callback = arg
                    children = values[-count:] if count else []
                    if count:
                        del states[-count:]
                        del values[-count:]
                    values.append(callback(children))
                    states.append(goto[states[-1]][name])
                if type_ == "$END" and states[-1] == end:
                    return values[-1]
        raise Miss  # the end of the text was shifted: lark says what is wrong

    def _tokens(self, text: str, states: list[Any]) -> Iterator[tuple[str, Any]]:
        """(type, token) for each token of ``text`` lexed in the parser's current state, then $END.

        ``states`` is the parser's stack, read as each token is asked for (as lark's contextual
        lexer reads the parser's position).  A token no rule keeps is given as its type alone.
        """
        scan_of, unseen, new_token = self.scan, self.unseen, _NEW_TOKEN
        pos, line, line_start, size = 0, 1, 0, len(text)
        while pos < size:
            scan = scan_of[states[-1]]
            m = scan.match(text, pos)
            if m is None:
                raise Miss
            type_: str = m.lastgroup  # type: ignore[assignment]  # every alternative is a named group
            value = m.group()
            start, tok_line, column = pos, line, pos - line_start + 1
            pos = m.end()
            if type_ in scan.newline:
                count = value.count("\n")
                if count:
                    line += count
                    line_start = start + value.rindex("\n") + 1
            if type_ in scan.ignore:  # white space; a comment goes to its callback
                if type_ in scan.callbacks:
                    scan.callbacks[type_](new_token(type_, value, start, tok_line, column))
                continue
            if type_ in scan.callbacks:
                tok = scan.callbacks[type_](new_token(type_, value, start, tok_line, column))
                yield tok.type, tok
                continue
            if type_ in scan.keywords:  # lark's keyword callback, as a table
                type_ = scan.keywords[type_].get(value, type_)
            yield type_, (type_ if type_ in unseen else new_token(type_, value, start, tok_line, column))
        yield "$END", Token("$END", "", pos, line, pos - line_start + 1)


def _is_unit(rule: Any) -> bool:
    """A ``?rule`` reduced from one kept rule: lark's callback returns that child unchanged."""
    if not rule.options.expand1 or rule.alias or len(rule.expansion) != 1 or rule.options.empty_indices:
        return False
    (symbol,) = rule.expansion
    return not symbol.is_term and not symbol.name.startswith("_")


def _filtered_terminals(parser: lark.Lark) -> frozenset[str]:
    """Terminals that no rule keeps as a child (lark's child filters drop them all: punctuation, keywords)."""
    if parser.options.keep_all_tokens:
        return frozenset()
    kept: set[str] = set()
    every: set[str] = set()
    for rule in parser.rules:
        for symbol in rule.expansion:
            if symbol.is_term:
                every.add(str(symbol.name))
                if rule.options.keep_all_tokens or not getattr(symbol, "filter_out", False):
                    kept.add(str(symbol.name))
    return frozenset(every - kept)


class _Inlined:
    """What a rule lark inlines gives its parent (``_rule``, and the helpers behind ``x*``, ``x+``).

    lark builds a Tree for it, whose children the parent's child filter splices in; the parent
    reads nothing else, so its children alone do.
    """

    __slots__ = ("children",)

    def __init__(self, children: list) -> None:
        self.children = children


def _inlined(rule: Any, callback: Callable[[list], Any]) -> Callable[[list], Any]:
    """``callback`` for ``rule``, or for a rule lark inlines, one that makes an :class:`_Inlined`
    where lark's makes a Tree (lark's child filter kept in front of it)."""
    if not str(rule.origin.name).startswith("_") or rule.options.expand1:
        return callback
    if isinstance(callback, functools.partial):  # no filter: lark's default node builder itself
        return _Inlined
    if isinstance(getattr(callback, "node_builder", None), functools.partial):
        fast: Any = copy.copy(callback)
        fast.node_builder = _Inlined
        return fast
    return callback
