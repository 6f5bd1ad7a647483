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

Given ``lines`` (:class:`shardc.language.lines.LineReader`), it also takes whole
statements a line at a time: the table's reductions for the statement's first
terminal, then the rule the line derives in place of its tokens.

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
import operator
import re
from typing import Any, Callable

import lark
from lark import Token
from lark.lexer import BasicLexer, PatternStr, UnlessCallback
from lark.parse_tree_builder import ChildFilterLALR_NoPlaceholders
from lark.parsers.lalr_analysis import Shift

# lark's Token constructor without its check for a deprecated keyword (Token() itself if it has none).
_NEW_TOKEN: Callable[..., Token] = getattr(Token, "_future_new", Token)

# Kinds of action in the converted table.
_SHIFT, _REDUCE, _UNIT = 0, 1, 2


class Miss(Exception):
    """The text is not a program this driver reads: let lark parse it (and report its error)."""


class _Scan:
    """What lark's lexer for one parser state matches: one regular expression, keywords, callbacks.

    ``plain`` is lark's alternation (first alternative that matches wins); ``match`` is the same
    behind the blanks lark ignores without a callback (spaces), so that one match reads the
    blanks and the token after them.  The blanks sit in an atomic group, so a failed match never
    retries them piecemeal: where ``match`` fails, ``plain`` reads the blanks alone as lark would.
    """

    __slots__ = ("match", "plain", "ignore", "newline", "keywords", "callbacks")

    def __init__(self, lexer: BasicLexer, flags: int) -> None:
        scanner = lexer.scanner  # builds lark's scanner: terminals in its order, keywords folded
        alternatives = "|".join(f"(?P<{t.name}>{t.pattern.to_regexp()})" for t in scanner.terminals)
        self.plain = re.compile(alternatives, flags).match
        self.ignore = lexer.ignore_types
        self.newline = lexer.newline_types
        blanks = [t.pattern.to_regexp() for t in scanner.terminals
                  if t.name in self.ignore and t.name not in self.newline and t.name not in lexer.callback]
        prefix = "(?>(?:" + "|".join(blanks) + ")*)" if blanks else ""
        self.match = re.compile(f"{prefix}(?:{alternatives})", flags).match
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

    def __init__(self, parser: lark.Lark, start: str = "start", lines: Callable[[str, int, int], Any] | None = None
                 ) -> None:
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
                    pick, build = _reducer(arg, callbacks[arg])
                    acts[symbol] = (_REDUCE, (len(arg.expansion), str(arg.origin.name), pick, build))
            self.actions[state] = acts
            self.goto[state] = gotos
        self.unseen = _filtered_terminals(parser)
        self.start = table.start_states[start]
        self.end = table.end_states[start]
        self.lines = lines

    def parse(self, text: str) -> Any:
        """The value of the start rule for ``text``; :class:`Miss` if lark must read it.

        Each step either takes a whole line from ``lines`` (the rule it derives stands where its
        tokens would have been reduced to) or lexes one token in the parser's current state (lark's
        contextual lexer reads the parser's position the same way), and runs the table on it.
        """
        states: list[Any] = [self.start]
        values: list[Any] = []
        cursor = _Cursor(text)
        lines = self.lines
        while True:
            whole = lines(text, cursor.pos, cursor.line) if lines is not None and cursor.at_line_start() else None
            if whole is not None:
                self._take(whole, states, values, cursor)
                continue
            type_, tok = cursor.token(self, states[-1])
            shift = self._reduce(states, values, type_)
            if shift is _ACCEPT:
                return values[-1]
            if type_ == "$END":
                raise Miss  # the end of the text was shifted: lark says what is wrong
            states.append(shift)
            values.append(tok)

    def _take(self, whole: Any, states: list[Any], values: list[Any], cursor: _Cursor) -> None:
        """Run the table on a line read whole: the rule it derives stands where the automaton would
        have reduced its tokens to it; then its newline, if the reader read it."""
        if whole.rule is not None:
            self._reduce(states, values, whole.first)  # reading its first token would shift it now
            target = self.goto[states[-1]].get(whole.rule)
            if target is None:
                raise Miss
            states.append(target)
            values.append(whole.node)
        cursor.pos = whole.end
        if whole.newline is not None:
            shift = self._reduce(states, values, whole.newline)
            if shift is _ACCEPT:
                raise Miss
            states.append(shift)
            values.append(whole.newline if whole.newline in self.unseen else Token(whole.newline, "\n"))
        if whole.newline is not None or (whole.rule is None and cursor.text[cursor.pos - 1] == "\n"):
            cursor.line += 1
            cursor.line_start = cursor.pos

    def _reduce(self, states: list[Any], values: list[Any], type_: str) -> Any:
        """Reduce as long as the table says for the next terminal ``type_``; the state to shift it
        into, or :data:`_ACCEPT` when the text is read."""
        actions, goto = self.actions, self.goto
        while True:
            action = actions[states[-1]].get(type_)
            if action is None:
                raise Miss
            kind, arg = action
            if kind == _SHIFT:
                return arg
            if kind == _UNIT:  # `?rule: other`, one child: the child is the value
                states[-1] = goto[states[-2]][arg]
            else:
                count, name, pick, build = arg
                if count:
                    children = values[-count:]
                    del states[-count:]
                    del values[-count:]
                    values.append(build(pick(children) if pick is not None else children))
                else:
                    values.append(build([]))
                states.append(goto[states[-1]][name])
            if type_ == "$END" and states[-1] == self.end:
                return _ACCEPT


_ACCEPT = object()  # what _reduce returns when the start rule is reduced at the end of the text


class _Cursor:
    """Where the driver is in the text: offset, line, and the offset where the line starts."""

    __slots__ = ("text", "pos", "line", "line_start")

    def __init__(self, text: str) -> None:
        self.text, self.pos, self.line, self.line_start = text, 0, 1, 0

    def at_line_start(self) -> bool:
        return self.pos == self.line_start and self.pos < len(self.text)

    def token(self, parser: FastParser, state: Any) -> tuple[str, Any]:
        """(type, token) of the next token lexed in parser state ``state``, past blanks and comments
        (a comment goes to its callback); ``$END`` at the end.  A token no rule keeps is given as
        its type alone."""
        text = self.text
        scan = parser.scan[state]
        while self.pos < len(text):
            m = scan.match(text, self.pos) or scan.plain(text, self.pos)
            if m is None:
                raise Miss
            type_: str = m.lastgroup  # type: ignore[assignment]  # every alternative is a named group
            value = m[type_]
            start, line, column = m.end() - len(value), self.line, m.end() - len(value) - self.line_start + 1
            self.pos = m.end()
            if type_ in scan.newline and "\n" in value:
                self.line += value.count("\n")
                self.line_start = start + value.rindex("\n") + 1
            callback = scan.callbacks.get(type_)
            if type_ in scan.ignore:  # white space; a comment goes to its callback
                if callback is not None:
                    callback(_NEW_TOKEN(type_, value, start, line, column))
                continue
            if callback is not None:
                tok = callback(_NEW_TOKEN(type_, value, start, line, column))
                return tok.type, tok
            if type_ in scan.keywords:  # lark's keyword callback, as a table
                type_ = scan.keywords[type_].get(value, type_)
            return type_, (type_ if type_ in parser.unseen else _NEW_TOKEN(type_, value, start, line, column))
        return "$END", Token("$END", "", self.pos, self.line, self.pos - self.line_start + 1)


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


def _reducer(rule: Any, callback: Callable[[list], Any]) -> tuple[Callable[[list], Any] | None, Callable]:
    """(pick, build) for reducing ``rule``: the value is ``build(pick(children))`` (``pick`` None: all).

    lark's callback is its child filter around the rule's method: the filter keeps the children the
    rule keeps (punctuation and keywords go) and splices in those of inlined rules.  Where nothing is
    spliced the kept children are fixed positions, picked here with one ``itemgetter`` and handed
    to the method itself; otherwise lark's own filter runs, with :class:`_Inlined` for the Tree lark
    would build for an inlined rule.
    """
    if str(rule.origin.name).startswith("_") and not rule.options.expand1:
        return None, _inlined(callback)
    if isinstance(callback, ChildFilterLALR_NoPlaceholders) \
            and not any(expand for _, expand in callback.to_include):
        keep = [i for i, _ in callback.to_include]
        if keep == list(range(len(rule.expansion))):
            return None, callback.node_builder
        if len(keep) == 1:
            (only,) = keep
            return (lambda children: (children[only],)), callback.node_builder
        return operator.itemgetter(*keep), callback.node_builder
    return None, callback


def _inlined(callback: Callable[[list], Any]) -> Callable[[list], Any]:
    """``callback`` for a rule lark inlines (``_rule``, and the helpers behind ``x*``, ``x+``), making an
    :class:`_Inlined` where lark's makes a Tree (lark's child filter kept in front of it)."""
    if isinstance(callback, functools.partial):  # no filter: lark's default node builder itself
        return _Inlined
    if isinstance(getattr(callback, "node_builder", None), functools.partial):
        fast: Any = copy.copy(callback)
        fast.node_builder = _Inlined
        return fast
    return callback
