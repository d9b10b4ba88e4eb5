"""The filter grammar: a port of containerd's scanner and parser (``pkg/filters``), with bounds.

:func:`parse` and :func:`parse_all` turn filter strings into a
:class:`~ctrd.filters.Filter`; the grammar and the error messages are
containerd's (see :mod:`ctrd.filters`). Quoted field names and values are read
with :func:`ctrd.golang.unquote`.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Final

from ctrd import errdefs, golang
from ctrd.filters._filter import ALWAYS, Filter, Operator, Selector
from ctrd.filters._regexp import LimitExceeded, utf8_len

__all__ = ["MAX_FILTER_LENGTH", "MAX_REGEXPS", "MAX_SELECTORS", "parse", "parse_all"]

# Cost bounds (docs/limits.md, "Filters"). The per-row cost of a filter is at most
# MAX_SELECTORS comparisons, MAX_REGEXPS of them regexp matches; one match costs
# time linear in its input (at most MAX_REGEXP_INPUT bytes), with a factor bounded
# by the program size (at most MAX_REGEXP_PROGRAM instructions): see _regexp.

MAX_FILTER_LENGTH: Final = 8192
"""Bytes (UTF-8) in one filter string: room for an ``==`` on any valid label (key and value
within 4096 bytes) with its quoting."""

MAX_SELECTORS: Final = 64
"""Selectors in all the filter strings of one call together (an empty string counts as one)."""

MAX_REGEXPS: Final = 4
"""``~=`` selectors among them."""


def parse(s: str) -> Filter:
    """Parse one filter string (an AND of selectors); ``""`` matches everything.

    :raises errdefs.InvalidArgument: ``filters: parse error: [...]: <reason>``, or
        ``filters: ...`` for a filter over a bound (:data:`MAX_FILTER_LENGTH`,
        :data:`MAX_SELECTORS`, :data:`MAX_REGEXPS`, the regexp bounds).
    """
    return _parse(s, _Budget())


def parse_all(*ss: str) -> Filter:
    """Parse several filter strings, OR-ed; no strings match everything.

    The bounds on selectors (:data:`MAX_SELECTORS`, :data:`MAX_REGEXPS`) hold for
    all the strings together.

    :raises errdefs.InvalidArgument: as :func:`parse`, for the first bad string.
    """
    if not ss:
        return ALWAYS
    if len(ss) > MAX_SELECTORS:
        raise errdefs.InvalidArgument(f"filters: more than {MAX_SELECTORS} filters ({len(ss)})")
    budget = _Budget()
    alternatives: list[tuple[Selector, ...]] = []
    for s in ss:
        alternatives.extend(_parse(s, budget).alternatives)
    return Filter(tuple(alternatives))


@dataclass(slots=True)
class _Budget:
    """What is left of the bounds for the filter strings of one call."""

    selectors: int = MAX_SELECTORS
    regexps: int = MAX_REGEXPS

    def take(self, op: Operator | None) -> None:
        self.selectors -= 1
        if self.selectors < 0:
            raise errdefs.InvalidArgument(f"filters: more than {MAX_SELECTORS} selectors")
        if op is Operator.MATCHES:
            self.regexps -= 1
            if self.regexps < 0:
                raise errdefs.InvalidArgument(f"filters: more than {MAX_REGEXPS} regexp (~=) selectors")


def _parse(s: str, budget: _Budget) -> Filter:
    size = utf8_len(s)
    if size > MAX_FILTER_LENGTH:
        raise errdefs.InvalidArgument(
            f"filters: filter longer than {MAX_FILTER_LENGTH} bytes ({size}): {golang.quote(s)}"
        )
    if s == "":
        budget.take(None)
        return ALWAYS
    return Filter((_Parser(s, budget).parse(),))


# --------------------------------------------------------------------------
# Scanner (port of containerd's filters/scanner.go)

_EOF: Final = -1
_QUOTED: Final = -2
_VALUE: Final = -3
_FIELD: Final = -4
_SEPARATOR: Final = -5
_OPERATOR: Final = -6
_ILLEGAL: Final = -7

_QUOTE_RUNES: Final = frozenset(map(ord, '/|"'))
_SEPARATOR_RUNES: Final = frozenset(map(ord, ",."))
_OPERATOR_RUNES: Final = frozenset(map(ord, "=!~"))
_SIMPLE_ESCAPE_RUNES: Final = frozenset(map(ord, "abfnrtv\\"))
_LATIN1_SPACES: Final = frozenset((0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0))


def _is_space(r: int) -> bool:
    """Go's ``unicode.IsSpace``."""
    if r < 0:
        return False
    if r < 0x100:
        return r in _LATIN1_SPACES
    return unicodedata.category(chr(r)) in ("Zs", "Zl", "Zp")


def _is_field_rune(r: int) -> bool:
    return r in (0x2D, 0x5F) or 0x30 <= r <= 0x39 or 0x41 <= r <= 0x5A or 0x61 <= r <= 0x7A


def _is_value_rune(r: int) -> bool:
    """Letters, marks, numbers, punctuation and symbols, but not ``,``."""
    if r < 0 or r == 0x2C or _is_space(r):
        return False
    return unicodedata.category(chr(r))[0] in "LMNPS"


def _digit_val(r: int) -> int:
    if 0x30 <= r <= 0x39:
        return r - 0x30
    if 0x61 <= r <= 0x66:
        return r - 0x61 + 10
    if 0x41 <= r <= 0x46:
        return r - 0x41 + 10
    return 16


class _Scanner:
    """Tokenizer; positions are indices into ``input``."""

    def __init__(self, text: str) -> None:
        self.input = text
        self.pos = 0
        self.ppos = 0  # bounds the current rune
        self.value = False  # the next token is a value (after an operator)
        self.err = ""

    def next(self) -> int:
        if self.pos >= len(self.input):
            return _EOF
        self.pos = self.ppos
        if self.ppos >= len(self.input):
            return _EOF
        ch = self.input[self.ppos]
        self.ppos += 1
        if ch == "\ufffd":  # Go reads U+FFFD as utf8.RuneError
            self.error("rune error")
            return _ILLEGAL
        if ch == "\x00":
            self.error("unexpected null")
            return _ILLEGAL
        return ord(ch)

    def peek(self) -> int:
        pos, ppos = self.pos, self.ppos
        ch = self.next()
        self.pos, self.ppos = pos, ppos
        return ch

    def scan(self) -> tuple[int, int, str]:
        """Return the next token as ``(position, token, text)``."""
        ch = self.next()
        pos = self.pos
        while ch >= 0:
            if ch in _QUOTE_RUNES:
                tok = _QUOTED if self._scan_quoted(ch) else _ILLEGAL
                return pos, tok, self.input[pos : self.ppos]
            if ch in _SEPARATOR_RUNES:
                self.value = False
                return pos, _SEPARATOR, self.input[pos : self.ppos]
            if ch in _OPERATOR_RUNES:
                self._scan_operator()
                self.value = True
                return pos, _OPERATOR, self.input[pos : self.ppos]
            if _is_space(ch):
                ch = self.next()
                pos = self.pos
                continue
            if self.value:
                self._scan_value()
                self.value = False
                return pos, _VALUE, self.input[pos : self.ppos]
            if _is_field_rune(ch):
                self._scan_field()
                return pos, _FIELD, self.input[pos : self.ppos]
            break
        return self.pos, ch, ""

    def _scan_field(self) -> None:
        while _is_field_rune(self.peek()):
            self.next()

    def _scan_operator(self) -> None:
        while self.peek() in _OPERATOR_RUNES:
            self.next()

    def _scan_value(self) -> None:
        while _is_value_rune(self.peek()):
            self.next()

    def _scan_quoted(self, quote: int) -> bool:
        illegal = False
        ch = self.next()  # the rune after the opening quote
        while ch != quote:
            if ch == 0x0A or ch < 0:
                self.error("quoted literal not terminated")
                return False
            if ch == 0x5C:  # backslash
                ch, legal = self._scan_escape(quote)
                if not legal:
                    illegal = True
            else:
                ch = self.next()
        return not illegal

    def _scan_escape(self, quote: int) -> tuple[int, bool]:
        ch = self.next()  # the rune after the backslash
        if ch in _SIMPLE_ESCAPE_RUNES or ch == quote:
            return self.next(), True
        if 0x30 <= ch <= 0x37:
            return self._scan_digits(ch, 8, 3)
        if ch == ord("x"):
            return self._scan_digits(self.next(), 16, 2)
        if ch == ord("u"):
            return self._scan_digits(self.next(), 16, 4)
        if ch == ord("U"):
            return self._scan_digits(self.next(), 16, 8)
        self.error("illegal escape sequence")
        return ch, False

    def _scan_digits(self, ch: int, base: int, n: int) -> tuple[int, bool]:
        while n > 0 and _digit_val(ch) < base:
            ch = self.next()
            n -= 1
        if n > 0:
            self.error("illegal numeric escape sequence")
            return ch, False
        return ch, True

    def error(self, msg: str) -> None:
        if not self.err:
            self.err = msg


# --------------------------------------------------------------------------
# Parser (port of containerd's filters/parser.go)

_OPERATORS: Final = {op.value: op for op in Operator}


def _rune_str(r: int) -> str:
    """Go's ``string(rune)``: invalid runes (our negative tokens) read as U+FFFD."""
    return chr(r) if r >= 0 else "\ufffd"


class _Parser:
    def __init__(self, text: str, budget: _Budget) -> None:
        self.input = text
        self.scanner = _Scanner(text)
        self.budget = budget

    def mkerr(self, pos: int, msg: str) -> errdefs.InvalidArgument:
        if pos < len(self.input):
            before = self.input[:pos]
            location = self.input[pos : pos + 1]
            after = self.input[pos + 1 :]
            where = f"[{before} >|{location}|< {after}]"
        else:
            where = f"[{self.input}]"
        return errdefs.InvalidArgument(f"filters: parse error: {where}: {msg}")

    def parse(self) -> tuple[Selector, ...]:
        selectors = [self.selector()]
        while True:
            tok = self.scanner.peek()
            if tok == ord(","):
                pos, tok, _ = self.scanner.scan()
                if tok != _SEPARATOR:
                    raise self.mkerr(pos, "expected a separator")
                selectors.append(self.selector())
            elif tok == _EOF:
                return tuple(selectors)
            else:
                raise self.mkerr(self.scanner.ppos, f"unexpected input: {_rune_str(tok)}")

    def selector(self) -> Selector:
        fieldpath = self.fieldpath()
        if self.scanner.peek() in (ord(","), _EOF):
            self.budget.take(None)
            return Selector(fieldpath)
        op = self.operator()
        pos, value = self.value(allow_alt_quotes=op is Operator.MATCHES)
        self.budget.take(op)  # before compiling: the compilations of one call are bounded too
        try:
            return Selector(fieldpath, op, value)
        except LimitExceeded as exc:
            raise errdefs.InvalidArgument(f"filters: {exc.context}") from None
        except errdefs.InvalidArgument as exc:
            raise self.mkerr(pos, exc.context) from None

    def fieldpath(self) -> tuple[str, ...]:
        fields = [self.field()]
        while self.scanner.peek() == ord("."):
            pos, tok, _ = self.scanner.scan()
            if tok != _SEPARATOR:
                raise self.mkerr(pos, "expected a field separator (`.`)")
            fields.append(self.field())
        return tuple(fields)

    def field(self) -> str:
        pos, tok, text = self.scanner.scan()
        if tok == _FIELD:
            return text
        if tok == _QUOTED:
            return self.unquote(pos, text, allow_alts=False)
        if tok == _ILLEGAL:
            raise self.mkerr(pos, self.scanner.err)
        raise self.mkerr(pos, "expected field or quoted")

    def operator(self) -> Operator:
        pos, tok, text = self.scanner.scan()
        if tok == _OPERATOR:
            op = _OPERATORS.get(text)
            if op is None:
                raise self.mkerr(pos, f"unsupported operator {golang.quote(text)}")
            return op
        if tok == _ILLEGAL:
            raise self.mkerr(pos, self.scanner.err)
        raise self.mkerr(pos, 'expected an operator ("=="|"!="|"~=")')

    def value(self, *, allow_alt_quotes: bool) -> tuple[int, str]:
        pos, tok, text = self.scanner.scan()
        if tok in (_VALUE, _FIELD):
            return pos, text
        if tok == _QUOTED:
            return pos, self.unquote(pos, text, allow_alts=allow_alt_quotes)
        if tok == _ILLEGAL:
            raise self.mkerr(pos, self.scanner.err)
        raise self.mkerr(pos, "expected value or quoted")

    def unquote(self, pos: int, text: str, *, allow_alts: bool) -> str:
        if not allow_alts and text[0] not in "'\"":
            raise self.mkerr(pos, "invalid quote encountered")
        try:
            return golang.unquote(text, '"/|')
        except ValueError:
            raise self.mkerr(pos, "unquoting failed: invalid syntax") from None
