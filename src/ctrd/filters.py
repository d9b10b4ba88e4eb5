"""containerd's filter language (``pkg/filters``).

A filter selects objects by their fields and labels. It is a comma-separated
list of *selectors*, all of which must match (AND)::

    selectors := selector ("," selector)*
    selector  := fieldpath [operator value]
    fieldpath := field ("." field)*
    field     := quoted | [-_A-Za-z0-9]+
    operator  := "==" | "!=" | "~="
    value     := quoted | <first rune not a quote, separator or operator> [^\\s,]*
    quoted    := Go string literal in "..." (for ~= values also /.../ or |...|)

Examples: ``name==foo``, ``labels.foo`` (presence), ``labels."containerd.io/gc.root"``,
``digest~=/^sha256:ab/,labels.x!=y``. Label keys holding ``.`` or ``/`` must be
quoted. Several filter strings (:func:`parse_all`) are OR-ed; an empty list,
or any empty string among them, matches everything.

Matching (:meth:`Filter.match`) goes through an *adaptor*, a callable that
maps a field path to ``(value, present)``:

- no operator: ``present``;
- ``==``: ``present and value == wanted``;
- ``!=``: ``value != wanted`` (so it matches an absent field unless ``wanted`` is ``""``);
- ``~=``: the value regexp is searched in ``value`` (an absent field reads ``""``).

The scanner and parser are a faithful port of containerd's, including its
error messages (``filters: parse error: [name== >|,|< x]: expected value or
quoted``) and quirks: whitespace is allowed before a token but not after a
complete selector (``name==a `` is an error), ``a==`` (no value) is an error
while ``a==""`` compares with the empty string, and an unquoted value may not
start with ``"``, ``/``, ``|``, ``,``, ``.``, ``=``, ``!`` or ``~``.

Differences from containerd, on purpose:

- ``~=`` values are compiled at parse time; a bad regexp is an
  :class:`~ctrd.errdefs.InvalidArgument` (containerd logs it and matches nothing).
- Regexps are Go's (RE2 syntax), checked with Go's messages and run by RE2
  (the ``google-re2`` binding), in time linear in the input (see
  :func:`compile_regexp`).
- The cost of a filter is bounded (containerd bounds nothing): see the limits
  below, all listed in ``docs/limits.md``. A filter over a bound is an
  :class:`~ctrd.errdefs.InvalidArgument` whose message echoes only the start
  of it (:func:`ctrd.limits.echo`).
- A ``~=`` is matched against at most :data:`MAX_REGEXP_INPUT` bytes: a longer
  value never matches.
- Positions in error messages count characters, not bytes.

The parsed structure is public (:attr:`Filter.alternatives`, :class:`Selector`)
so a store may translate simple selectors into SQL.
"""

from __future__ import annotations

import enum
import functools
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

import re2

from ctrd import errdefs
from ctrd.identifiers import go_quote
from ctrd.limits import echo

__all__ = [
    "ALWAYS",
    "MAX_FILTER_LENGTH",
    "MAX_REGEXPS",
    "MAX_REGEXP_INPUT",
    "MAX_REGEXP_LENGTH",
    "MAX_REGEXP_PROGRAM",
    "MAX_SELECTORS",
    "REGEXP_MAX_MEM",
    "Adaptor",
    "Filter",
    "Operator",
    "Regexp",
    "Selector",
    "adaptor_from_mapping",
    "compile_regexp",
    "parse",
    "parse_all",
]

# Cost bounds (docs/limits.md, "Filters"). The per-row cost of a filter is at most
# MAX_SELECTORS comparisons, MAX_REGEXPS of them regexp matches; one match costs
# time linear in its input (at most MAX_REGEXP_INPUT bytes), with a factor bounded
# by the program size (at most MAX_REGEXP_PROGRAM instructions).

MAX_FILTER_LENGTH: Final = 8192
"""Bytes (UTF-8) in one filter string: room for an ``==`` on any valid label (key and value
within 4096 bytes) with its quoting."""

MAX_SELECTORS: Final = 64
"""Selectors in all the filter strings of one call together (an empty string counts as one)."""

MAX_REGEXPS: Final = 4
"""``~=`` selectors among them."""

MAX_REGEXP_LENGTH: Final = 1024
"""Bytes (UTF-8) in one ``~=`` pattern, after unquoting."""

MAX_REGEXP_PROGRAM: Final = 3000
"""RE2 instructions in a compiled pattern (forward and reverse programs each): ``\\pL`` is
about 1200, ``^sha256:[0-9a-f]{64}$`` about 130."""

REGEXP_MAX_MEM: Final = 1 << 20
"""RE2's ``max_mem`` per compiled pattern: its programs and the DFA states it caches (past
that, RE2 falls back to its NFA: still linear, slower)."""

MAX_REGEXP_INPUT: Final = 4096
"""Bytes (UTF-8) of a value a regexp is matched against; a longer value never matches. Label
keys and values together are at most 4096 bytes, digests and identifiers far less."""

Adaptor: TypeAlias = Callable[[Sequence[str]], tuple[str, bool]]
"""Maps a field path (already unquoted field names) to ``(value, present)``."""


class Operator(enum.StrEnum):
    """A selector's comparison operator (a missing operator tests presence)."""

    EQUAL = "=="
    NOT_EQUAL = "!="
    MATCHES = "~="


@dataclass(frozen=True, slots=True)
class Selector:
    """One ``fieldpath [op value]`` term of a filter.

    ``op`` is ``None`` for a presence test (``value`` is then ``""``). For
    :attr:`Operator.MATCHES` the value is compiled on construction
    (:func:`compile_regexp`), which raises :class:`~ctrd.errdefs.InvalidArgument`
    for a bad pattern.
    """

    fieldpath: tuple[str, ...]
    op: Operator | None = None
    value: str = ""
    _regex: Regexp | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fieldpath", tuple(self.fieldpath))
        if self.op is Operator.MATCHES:
            object.__setattr__(self, "_regex", compile_regexp(self.value))

    @property
    def regex(self) -> Regexp | None:
        """The compiled pattern of a ``~=`` selector, else ``None``."""
        return self._regex

    def match(self, adaptor: Adaptor) -> bool:
        """Evaluate this selector against the object behind ``adaptor``."""
        value, present = adaptor(self.fieldpath)
        if self.op is None:
            return present
        if self.op is Operator.EQUAL:
            return present and value == self.value
        if self.op is Operator.NOT_EQUAL:
            return value != self.value
        assert self._regex is not None
        return self._regex.matches(value)


@dataclass(frozen=True, slots=True)
class Filter:
    """A parsed filter: an OR of alternatives, each an AND of selectors.

    An empty alternative (no selectors) matches everything; a filter with no
    alternatives at all matches nothing (the parser never produces one).
    """

    alternatives: tuple[tuple[Selector, ...], ...]

    @property
    def matches_all(self) -> bool:
        """Whether the filter matches every object (some alternative is empty)."""
        return any(not alternative for alternative in self.alternatives)

    @property
    def has_regexp(self) -> bool:
        """Whether some selector is a ``~=`` (the costly kind to evaluate)."""
        return any(s.op is Operator.MATCHES for alternative in self.alternatives for s in alternative)

    def match(self, adaptor: Adaptor) -> bool:
        """Report whether the object behind ``adaptor`` passes the filter."""
        return any(
            all(selector.match(adaptor) for selector in alternative) for alternative in self.alternatives
        )


ALWAYS: Final = Filter(((),))
"""The filter that matches everything."""


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
    size = _utf8_len(s)
    if size > MAX_FILTER_LENGTH:
        raise errdefs.InvalidArgument(
            f"filters: filter longer than {MAX_FILTER_LENGTH} bytes ({size}): {go_quote(s)}"
        )
    if s == "":
        budget.take(None)
        return ALWAYS
    return Filter((_Parser(s, budget).parse(),))


def adaptor_from_mapping(fields: Mapping[str, str], labels: Mapping[str, str]) -> Adaptor:
    """Build an adaptor over plain mappings.

    ``labels.<k1>.<k2>...`` looks up ``labels["<k1>.<k2>..."]``; a one-field
    path ``<name>`` looks up ``fields[name]``. A key is present when it is in the
    mapping (leave empty fields out to have them count as absent). Anything else
    is absent.
    """

    def adapt(fieldpath: Sequence[str]) -> tuple[str, bool]:
        if not fieldpath:
            return "", False
        if fieldpath[0] == "labels":
            key = ".".join(fieldpath[1:])
            if key in labels:
                return labels[key], True
            return "", False
        if len(fieldpath) == 1 and fieldpath[0] in fields:
            return fields[fieldpath[0]], True
        return "", False

    return adapt


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
# Unquoting (port of containerd's filters/quote.go: Go strconv.Unquote that
# also accepts / and | as double-quote-like delimiters)


class _QuoteSyntaxError(Exception):
    pass


_UNQUOTE_SIMPLE: Final = {
    "a": 0x07,
    "b": 0x08,
    "f": 0x0C,
    "n": 0x0A,
    "r": 0x0D,
    "t": 0x09,
    "v": 0x0B,
    "\\": 0x5C,
}
_HEX_DIGITS: Final = frozenset("0123456789abcdefABCDEF")


def _unquote(s: str) -> str:
    if len(s) < 2 or s[0] != s[-1] or s[0] not in '"/|':
        raise _QuoteSyntaxError
    quote = s[0]
    body = s[1:-1]
    if "\n" in body:
        raise _QuoteSyntaxError
    buf = bytearray()
    i = 0
    while i < len(body):
        c = body[i]
        if c == quote:
            raise _QuoteSyntaxError
        if c != "\\":
            buf += c.encode("utf-8", "surrogatepass")
            i += 1
            continue
        if i + 1 >= len(body):
            raise _QuoteSyntaxError
        c = body[i + 1]
        i += 2
        if c in _UNQUOTE_SIMPLE:
            buf.append(_UNQUOTE_SIMPLE[c])
        elif c in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[c]
            digits = body[i : i + width]
            if len(digits) < width or not all(d in _HEX_DIGITS for d in digits):
                raise _QuoteSyntaxError
            i += width
            v = int(digits, 16)
            if c == "x":
                buf.append(v)  # a single byte, possibly not UTF-8
            elif v > 0x10FFFF:
                raise _QuoteSyntaxError
            else:
                if 0xD800 <= v <= 0xDFFF:  # Go encodes surrogate halves as RuneError
                    v = 0xFFFD
                buf += chr(v).encode("utf-8")
        elif "0" <= c <= "7":
            digits = c + body[i : i + 2]
            if len(digits) < 3 or not all("0" <= d <= "7" for d in digits):
                raise _QuoteSyntaxError
            i += 2
            v = int(digits, 8)
            if v > 255:
                raise _QuoteSyntaxError
            buf.append(v)
        elif c in "'\"|/":
            if c != quote:
                raise _QuoteSyntaxError
            buf.append(ord(c))
        else:
            raise _QuoteSyntaxError
    return buf.decode("utf-8", "replace")


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
        except _LimitExceeded as exc:
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
                raise self.mkerr(pos, f"unsupported operator {go_quote(text)}")
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
            return _unquote(text)
        except _QuoteSyntaxError:
            raise self.mkerr(pos, "unquoting failed: invalid syntax") from None


# --------------------------------------------------------------------------
# Go regexps: Go's syntax checked with Go's messages, then compiled by RE2


class _RegexpError(Exception):
    """A Go regexp syntax error; ``str()`` is Go's message."""

    def __init__(self, code: str, expr: str) -> None:
        super().__init__(f"error parsing regexp: {code}: `{expr}`")


class _LimitExceeded(errdefs.InvalidArgument):
    """A filter or regexp over one of the cost bounds (not wrapped with the filter's text)."""


def _utf8_len(s: str) -> int:
    return len(s) if s.isascii() else len(s.encode("utf-8", "surrogatepass"))


_REPEAT_RE: Final = re.compile(r"\{(0|[1-9][0-9]*)(?:(,)(0|[1-9][0-9]*)?)?\}")
_MAX_REPEAT: Final = 1000
_MAX_RUNE: Final = 0x10FFFF
_PERL_CLASS_ESCAPES: Final = frozenset("dDsSwW")
_POSIX_CLASS_NAMES: Final = frozenset(
    f"[:{neg}{name}:]"
    for neg in ("", "^")
    for name in (
        "alnum",
        "alpha",
        "ascii",
        "blank",
        "cntrl",
        "digit",
        "graph",
        "lower",
        "print",
        "punct",
        "space",
        "upper",
        "word",
        "xdigit",
    )
)
_C_ESCAPES: Final = {"a": 0x07, "f": 0x0C, "n": 0x0A, "r": 0x0D, "t": 0x09, "v": 0x0B}
_OCTAL_DIGITS: Final = frozenset("01234567")


def _re2_options(max_mem: int) -> Any:
    options = re2.Options()
    options.max_mem = max_mem
    options.log_errors = False  # errors are raised, not written to the daemon's stderr
    options.never_capture = True  # groups are not reported: matching needs no submatches
    return options


_RE2_OPTIONS: Final = _re2_options(REGEXP_MAX_MEM)
# Room for programs of MAX_REGEXP_PROGRAM instructions (forward and reverse) and little
# more: a pattern far over the bound fails to compile within a millisecond, where
# REGEXP_MAX_MEM would let RE2 build tens of thousands of instructions first.
_RE2_SIZE_PROBE: Final = _re2_options(128 << 10)


@functools.lru_cache(maxsize=256)
def _unicode_class_known(name: str) -> bool:
    """Whether ``\\p{name}`` names a Unicode class (RE2's tables: Go's names and newer scripts)."""
    if not name or name[0] == "^":
        return False
    try:
        re2.compile("\\p{" + name + "}", _RE2_SIZE_PROBE)
    except re2.error:
        return False
    return True


@dataclass(slots=True)
class _Group:
    need: int = 0  # the largest repeat budget an item of the group needs (see _GoSyntax.repeat)


class _GoSyntax:
    """Go's ``regexp/syntax`` parser (Perl flags), kept to its checks and its errors.

    It walks the pattern as Go does and raises the first error Go would, with
    Go's text. What it tracks: whether the parse stack has an operand to repeat,
    whether the previous token was a repetition (Go rejects ``a**``), and the
    repeat budget each operand needs (Go rejects nested counted repetitions that
    expand to more than 1000 copies, ``(a{100}){11}``).
    """

    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.groups = [_Group()]
        self.operand = False  # something on top of the stack for a repetition to apply to
        self.top_need = 0  # that operand's repeat budget
        self.last_repeat = -1  # start of the previous token when it was a repetition

    def check(self) -> None:
        p = self.p
        i = 0
        while i < len(p):
            repeat = -1
            c = p[i]
            if c == "(":
                i = self.open_group(i)
            elif c == "|":
                self.fold()
                self.operand = False
                i += 1
            elif c == ")":
                if len(self.groups) == 1:
                    raise _RegexpError("unexpected )", p)
                self.fold()
                need = self.groups.pop().need
                self.push(need)
                i += 1
            elif c in "*+?":
                repeat = i
                i = self.repeat(i, i + 1, None)
            elif c == "{" and (m := _REPEAT_RE.match(p, i)):
                lo = int(m.group(1))
                hi = lo if m.group(2) is None else (int(m.group(3)) if m.group(3) else -1)
                if lo > _MAX_REPEAT or hi > _MAX_REPEAT or (hi >= 0 and lo > hi):
                    raise _RegexpError("invalid repeat count", m.group(0))
                repeat = i
                i = self.repeat(i, m.end(), (lo, hi))
            elif c == "[":
                i = self.char_class(i)
                self.push(0)
            elif c == "\\":
                i = self.escape(i)
            else:
                self.push(0)
                i += 1
            self.last_repeat = repeat
        if len(self.groups) > 1:
            raise _RegexpError("missing closing )", p)

    def fold(self) -> None:
        """The top operand is complete: count its budget in its group's."""
        if self.operand:
            group = self.groups[-1]
            group.need = max(group.need, self.top_need)

    def push(self, need: int) -> None:
        self.fold()
        self.operand = True
        self.top_need = need

    def repeat(self, start: int, end: int, counts: tuple[int, int] | None) -> int:
        """A repetition ``p[start:end]`` (``counts``: ``(min, max)`` of ``{..}``, max -1 if open)."""
        p = self.p
        if end < len(p) and p[end] == "?":
            end += 1
        if self.last_repeat >= 0:
            raise _RegexpError("invalid nested repetition operator", p[self.last_repeat : end])
        if not self.operand:
            raise _RegexpError("missing argument to repetition operator", p[start:end])
        if counts is not None:
            # Go's repeatIsValid, as the smallest budget that passes it: x{m} of
            # an operand needing k copies needs m*max(k, 1); x{0} needs none.
            lo, hi = counts
            if hi == 0:
                need = 0
            else:
                m = hi if hi > 0 else lo
                need = self.top_need if m == 0 else min(m * max(self.top_need, 1), _MAX_REPEAT + 1)
            if (lo >= 2 or hi >= 2) and need > _MAX_REPEAT:
                raise _RegexpError("invalid repeat count", p[start:end])
            self.top_need = need
        return end

    def open_group(self, i: int) -> int:
        p = self.p
        if not p.startswith("(?", i):
            self.groups.append(_Group())
            self.operand = False
            return i + 1
        # Named groups: (?P<name>re), and (?<name>re) as Go 1.22 accepts.
        if (p.startswith("(?P<", i) and len(p) - i > 4) or (p.startswith("(?<", i) and len(p) - i > 3):
            begin = i + (4 if p[i + 2] == "P" else 3)
            end = p.find(">", i)
            if end < 0:
                raise _RegexpError("invalid named capture", p[i:])
            name = p[begin:end]
            if not name or not all(ch == "_" or (ch.isascii() and ch.isalnum()) for ch in name):
                raise _RegexpError("invalid named capture", p[i : end + 1])
            self.groups.append(_Group())
            self.operand = False
            return end + 1
        # Flags and non-capturing groups: (?flags) (?flags:re), flags := [imsU]* [- [imsU]+]
        negate = False
        saw_flag = False
        j = i + 2
        while j < len(p):
            c = p[j]
            j += 1
            if c in "imsU":
                saw_flag = True
            elif c == "-" and not negate:
                negate = True
                saw_flag = False
            elif c in ":)":
                if negate and not saw_flag:
                    break
                if c == ":":
                    self.groups.append(_Group())
                    self.operand = False
                return j  # (?flags) pushes nothing: the operand stays
            else:
                break
        raise _RegexpError("invalid or unsupported Perl syntax", p[i:j])

    def escape(self, i: int) -> int:
        p = self.p
        if i + 1 < len(p):
            c = p[i + 1]
            if c in "AbBz":
                self.push(0)
                return i + 2
            if c == "C":
                raise _RegexpError("invalid escape sequence", "\\C")
            if c == "Q":
                end = p.find("\\E", i + 2)
                literal_end = len(p) if end < 0 else end
                if literal_end > i + 2:  # an empty \Q\E pushes nothing
                    self.push(0)
                return len(p) if end < 0 else end + 2
            if c in "pP":
                i = self.unicode_class(i)
                self.push(0)
                return i
            if c in _PERL_CLASS_ESCAPES:
                self.push(0)
                return i + 2
        i = self.single_escape(i)
        self.push(0)
        return i

    def unicode_class(self, i: int) -> int:
        """``\\pL``, ``\\p{Name}``, ``\\P{^Name}`` at ``p[i]``; the index after it."""
        p = self.p
        if i + 2 >= len(p):  # "\p" at the very end: an empty name
            raise _RegexpError("invalid character class range", p[i:])
        if p[i + 2] != "{":
            seq = p[i : i + 3]
            name = p[i + 2]
        else:
            end = p.find("}", i)
            if end < 0:
                raise _RegexpError("invalid character class range", p[i:])
            seq = p[i : end + 1]
            name = p[i + 3 : end]
        if name.startswith("^"):
            name = name[1:]
        if name != "Any" and not _unicode_class_known(name):
            raise _RegexpError("invalid character class range", seq)
        return i + len(seq)

    def single_escape(self, i: int) -> int:
        """The escape of one character at ``p[i] == "\\"``; the index after it."""
        p = self.p
        if i + 1 >= len(p):
            raise _RegexpError("trailing backslash at end of expression", "")
        c = p[i + 1]
        j = i + 2
        if c.isascii() and not c.isalnum():
            return j
        if "1" <= c <= "7" and not (j < len(p) and p[j] in _OCTAL_DIGITS):
            pass  # a single non-zero digit would be a backreference: unsupported
        elif "0" <= c <= "7":
            for _ in range(2):
                if j < len(p) and p[j] in _OCTAL_DIGITS:
                    j += 1
            return j
        elif c == "x" and j < len(p):
            if p[j] == "{":  # \x{h...}: one or more hex digits, at most U+10FFFF
                j += 1
                value = 0
                digits = 0
                while j < len(p):
                    d = p[j]
                    j += 1
                    if d == "}":
                        if digits:
                            return j
                        break
                    if d not in _HEX_DIGITS:
                        break
                    value = value * 16 + int(d, 16)
                    if value > _MAX_RUNE:
                        break
                    digits += 1
            else:  # \xhh: exactly two hex digits
                two = p[j : j + 2]
                if len(two) == 2 and all(d in _HEX_DIGITS for d in two):
                    return j + 2
                j += len(two)
        elif c in _C_ESCAPES:
            return j
        raise _RegexpError("invalid escape sequence", p[i:j])

    def char_class(self, start: int) -> int:
        """The class ``[...]`` at ``p[start]``; the index after it."""
        p = self.p
        i = start + 1
        if i < len(p) and p[i] == "^":
            i += 1
        first = True  # "]" is a literal as the first item
        while i >= len(p) or p[i] != "]" or first:
            first = False
            if p.startswith("[:", i) and len(p) - i > 2:
                end = p.find(":]", i + 2)
                if end >= 0:
                    name = p[i : end + 2]
                    if name not in _POSIX_CLASS_NAMES:
                        raise _RegexpError("invalid character class range", name)
                    i = end + 2
                    continue
            if p.startswith("\\", i) and i + 1 < len(p):
                if p[i + 1] in "pP":
                    i = self.unicode_class(i)
                    continue
                if p[i + 1] in _PERL_CLASS_ESCAPES:
                    i += 2
                    continue
            item = i
            lo, i = self.class_char(i, start)
            if len(p) - i >= 2 and p[i] == "-" and p[i + 1] != "]":
                hi, i = self.class_char(i + 1, start)
                if hi < lo:
                    raise _RegexpError("invalid character class range", p[item:i])
        return i + 1

    def class_char(self, i: int, start: int) -> tuple[int, int]:
        """The character at ``p[i]`` in a class (maybe escaped): ``(code point, next index)``."""
        p = self.p
        if i >= len(p):
            raise _RegexpError("missing closing ]", p[start:])
        if p[i] != "\\":
            return ord(p[i]), i + 1
        j = self.single_escape(i)
        return _escaped_rune(p[i:j]), j


def _escaped_rune(esc: str) -> int:
    """The code point of a valid single-character escape (``\\n``, ``\\101``, ``\\x{263a}``...)."""
    c = esc[1]
    if c == "x":
        return int(esc[3:-1] if esc[2] == "{" else esc[2:], 16)
    if c.isdigit():
        return int(esc[1:], 8)
    return _C_ESCAPES.get(c, ord(c))


# RE2's error codes, as Go words them (RE2 gives the same argument as Go).
_RE2_CODES: Final = (
    ("bad repetition operator", "invalid nested repetition operator"),
    ("no argument for repetition operator", "missing argument to repetition operator"),
    ("invalid repetition size", "invalid repeat count"),
    ("missing )", "missing closing )"),
    ("unexpected )", "unexpected )"),
    ("missing ]", "missing closing ]"),
    ("invalid escape sequence", "invalid escape sequence"),
    ("invalid character class range", "invalid character class range"),
    ("invalid character class", "invalid character class"),
    ("trailing \\", "trailing backslash at end of expression"),
    ("invalid named capture group", "invalid named capture"),
    ("invalid perl operator", "invalid or unsupported Perl syntax"),
    ("invalid UTF-8", "invalid UTF-8"),
)


def _re2_error(pattern: str, exc: Exception) -> errdefs.InvalidArgument:
    """An RE2 compile failure as Go would word it."""
    raw = exc.args[0] if exc.args else b""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    if text.startswith("pattern too large"):
        return _LimitExceeded(f"error parsing regexp: expression too large: `{echo(pattern)}`")
    for re2_code, go_code in _RE2_CODES:
        if text.startswith(re2_code + ": "):
            return errdefs.InvalidArgument(f"error parsing regexp: {go_code}: `{text[len(re2_code) + 2 :]}`")
    return errdefs.InvalidArgument(f"error parsing regexp: {text}: `{echo(pattern)}`")


class Regexp:
    """A compiled ``~=`` value: a Go regexp run by RE2 (linear time in the input).

    Built by :func:`compile_regexp`. It matches ``str`` values as Go matches
    strings, on their UTF-8 bytes; a value longer than :data:`MAX_REGEXP_INPUT`
    bytes never matches (the bound on the cost of one match).
    """

    __slots__ = ("_re", "pattern")

    def __init__(self, pattern: str, compiled: Any) -> None:
        self.pattern = pattern
        """The Go source of the regexp."""
        self._re = compiled

    def __repr__(self) -> str:
        return f"Regexp({self.pattern!r})"

    def matches(self, text: str) -> bool:
        """Whether the regexp matches somewhere in *text* (Go's ``MatchString``)."""
        if len(text) > MAX_REGEXP_INPUT:
            return False
        data = text.encode("utf-8", "surrogatepass")
        return len(data) <= MAX_REGEXP_INPUT and self._re.search(data) is not None

    def find(self, text: str) -> str | None:
        """The leftmost match in *text* (Go's ``FindString``), ``None`` when there is none."""
        if len(text) > MAX_REGEXP_INPUT:
            return None
        data = text.encode("utf-8", "surrogatepass")
        if len(data) > MAX_REGEXP_INPUT:
            return None
        m = self._re.search(data)
        return None if m is None else bytes(m.group(0)).decode("utf-8", "surrogatepass")


def compile_regexp(pattern: str) -> Regexp:
    """Compile a Go regexp (what ``regexp.Compile`` accepts) with RE2.

    Go's syntax and semantics: leftmost-first matching, ``$`` and ``\\z`` only
    at the very end without ``(?m)``, ASCII ``\\d \\s \\w \\b`` and POSIX
    classes, Unicode classes (``\\pL``, ``\\p{Greek}``, ``\\PN``), ``(?imsU)``
    flags, ``\\Q..\\E``; backreferences, lookarounds and ``\\C`` are rejected,
    with Go's message for the first error Go finds. The cost is bounded: at
    most :data:`MAX_REGEXP_LENGTH` bytes of pattern, programs of at most
    :data:`MAX_REGEXP_PROGRAM` RE2 instructions, :data:`REGEXP_MAX_MEM` of memory.

    :raises errdefs.InvalidArgument: ``error parsing regexp: <reason>: `<expr>```.
    """
    size = _utf8_len(pattern)
    if size > MAX_REGEXP_LENGTH:
        raise _LimitExceeded(
            f"error parsing regexp: expression longer than {MAX_REGEXP_LENGTH} bytes "
            f"({size}): `{echo(pattern)}`"
        )
    try:
        pattern.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise errdefs.InvalidArgument(
            f"error parsing regexp: invalid UTF-8: `{pattern[exc.start :]}`"
        ) from None
    try:
        _GoSyntax(pattern).check()
    except _RegexpError as exc:
        raise errdefs.InvalidArgument(str(exc)) from None
    try:
        probe = re2.compile(pattern, _RE2_SIZE_PROBE)
        # Both programs are built (RE2 would build the reverse one at the first match,
        # and fail that match if it did not fit) and must be within the bound.
        sizes = (probe.programsize, probe.reverseprogramsize)
        if min(sizes) < 0 or max(sizes) > MAX_REGEXP_PROGRAM:
            raise _LimitExceeded(f"error parsing regexp: expression too large: `{echo(pattern)}`")
        compiled = re2.compile(pattern, _RE2_OPTIONS)
        compiled.reverseprogramsize  # noqa: B018 (builds the reverse program now)
    except re2.error as exc:
        raise _re2_error(pattern, exc) from None
    return Regexp(pattern, compiled)
