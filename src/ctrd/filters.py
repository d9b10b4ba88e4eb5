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
- Regexps use Go RE2 syntax, translated to Python :mod:`re` (see
  :func:`compile_regexp`); Unicode classes ``\\p{..}``/``\\P{..}`` are rejected.
- Positions in error messages count characters, not bytes.

The parsed structure is public (:attr:`Filter.alternatives`, :class:`Selector`)
so a store may translate simple selectors into SQL.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from ctrd import errdefs
from ctrd.identifiers import go_quote

__all__ = [
    "ALWAYS",
    "Adaptor",
    "Filter",
    "Operator",
    "Selector",
    "adaptor_from_mapping",
    "compile_regexp",
    "parse",
    "parse_all",
]

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
    _regex: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fieldpath", tuple(self.fieldpath))
        if self.op is Operator.MATCHES:
            object.__setattr__(self, "_regex", compile_regexp(self.value))

    @property
    def regex(self) -> re.Pattern[str] | None:
        """The compiled (Python) pattern of a ``~=`` selector, else ``None``."""
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
        return self._regex.search(value) is not None


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

    def match(self, adaptor: Adaptor) -> bool:
        """Report whether the object behind ``adaptor`` passes the filter."""
        return any(
            all(selector.match(adaptor) for selector in alternative) for alternative in self.alternatives
        )


ALWAYS: Final = Filter(((),))
"""The filter that matches everything."""


def parse(s: str) -> Filter:
    """Parse one filter string (an AND of selectors); ``""`` matches everything.

    :raises errdefs.InvalidArgument: ``filters: parse error: [...]: <reason>``.
    """
    if s == "":
        return ALWAYS
    return Filter((_Parser(s).parse(),))


def parse_all(*ss: str) -> Filter:
    """Parse several filter strings, OR-ed; no strings match everything.

    :raises errdefs.InvalidArgument: as :func:`parse`, for the first bad string.
    """
    if not ss:
        return ALWAYS
    alternatives: list[tuple[Selector, ...]] = []
    for s in ss:
        alternatives.extend(parse(s).alternatives)
    return Filter(tuple(alternatives))


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
    def __init__(self, text: str) -> None:
        self.input = text
        self.scanner = _Scanner(text)

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
            return Selector(fieldpath)
        op = self.operator()
        pos, value = self.value(allow_alt_quotes=op is Operator.MATCHES)
        try:
            return Selector(fieldpath, op, value)
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
# Go (RE2) regexp syntax, translated to Python's re


class _RegexpError(Exception):
    """A Go regexp syntax error; ``str()`` is Go's message."""

    def __init__(self, code: str, expr: str) -> None:
        super().__init__(f"error parsing regexp: {code}: `{expr}`")


_MAX_RUNE: Final = 0x10FFFF
_Ranges: TypeAlias = tuple[tuple[int, int], ...]


def _negate(ranges: _Ranges) -> _Ranges:
    out: list[tuple[int, int]] = []
    nxt = 0
    for lo, hi in sorted(ranges):
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = max(nxt, hi + 1)
    if nxt <= _MAX_RUNE:
        out.append((nxt, _MAX_RUNE))
    return tuple(out)


def _chars(spec: str) -> _Ranges:
    """``"a-z_"``-style spec (pairs and singles, no escapes) to ranges."""
    out: list[tuple[int, int]] = []
    i = 0
    while i < len(spec):
        if i + 2 < len(spec) and spec[i + 1] == "-":
            out.append((ord(spec[i]), ord(spec[i + 2])))
            i += 3
        else:
            out.append((ord(spec[i]), ord(spec[i])))
            i += 1
    return tuple(out)


_PERL_CLASSES: Final[dict[str, _Ranges]] = {
    "d": _chars("0-9"),
    "s": _chars("\t\n\f\r "),
    "w": _chars("0-9A-Za-z_"),
}
_PERL_CLASSES.update({k.upper(): _negate(v) for k, v in list(_PERL_CLASSES.items())})

_POSIX_CLASSES: Final[dict[str, _Ranges]] = {
    "alnum": _chars("0-9A-Za-z"),
    "alpha": _chars("A-Za-z"),
    "ascii": ((0x00, 0x7F),),
    "blank": _chars("\t "),
    "cntrl": ((0x00, 0x1F), (0x7F, 0x7F)),
    "digit": _chars("0-9"),
    "graph": _chars("!-~"),
    "lower": _chars("a-z"),
    "print": _chars(" -~"),
    "punct": _chars("!-/:-@[-`{-~"),
    "space": _chars("\t\n\v\f\r "),
    "upper": _chars("A-Z"),
    "word": _chars("0-9A-Za-z_"),
    "xdigit": _chars("0-9A-Fa-f"),
}
_POSIX_GROUPS: Final[dict[str, _Ranges]] = {f"[:{k}:]": v for k, v in _POSIX_CLASSES.items()} | {
    f"[:^{k}:]": _negate(v) for k, v in _POSIX_CLASSES.items()
}

_C_ESCAPES: Final = {"a": 0x07, "f": 0x0C, "n": 0x0A, "r": 0x0D, "t": 0x09, "v": 0x0B}
_REPEAT_RE: Final = re.compile(r"\{(0|[1-9][0-9]*)(?:(,)(0|[1-9][0-9]*)?)?\}")
_MAX_REPEAT: Final = 1000
_PY_FLAGS: Final = frozenset("ims")

_NOTHING: Final = 0  # at the start of a group or alternative: nothing to repeat
_ATOM: Final = 1
_REPEAT: Final = 2


def _esc(cp: int) -> str:
    if cp < 0x100:
        return f"\\x{cp:02x}"
    if cp < 0x10000:
        return f"\\u{cp:04x}"
    return f"\\U{cp:08x}"


def _class(ranges: _Ranges, *, negated: bool = False) -> str:
    if not ranges:
        return "(?s:.)" if negated else "(?!)"
    items = "".join(_esc(lo) if lo == hi else f"{_esc(lo)}-{_esc(hi)}" for lo, hi in ranges)
    return f"[{'^' if negated else ''}{items}]"


def _flag_group(flags: frozenset[str]) -> str:
    on = "".join(f for f in "ims" if f in flags)
    off = "".join(f for f in "ims" if f not in flags)
    return f"(?{on}-{off}:" if off else f"(?{on}:"


@dataclass(slots=True)
class _Frame:
    saved: frozenset[str]  # Go flags to restore when the group closes
    base: frozenset[str]  # Python flags in effect at the start of the group
    extra: int = 0  # scoped flag groups opened by mid-group (?flags)


class _RegexpTranslator:
    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0
        self.out: list[str] = []
        self.flags: frozenset[str] = frozenset()
        self.frames = [_Frame(frozenset(), frozenset())]
        self.names: set[str] = set()
        self.last = _NOTHING

    def translate(self) -> str:
        p = self.p
        while self.i < len(p):
            c = p[self.i]
            if c == "(":
                self.open_group()
            elif c == ")":
                self.close_group()
            elif c == "|":
                frame = self.frames[-1]
                self.out.append(")" * frame.extra + "|")
                frame.extra = 0
                if self.py_flags() != frame.base:
                    self.out.append(_flag_group(self.flags))
                    frame.extra = 1
                self.i += 1
                self.last = _NOTHING
            elif c in "*+?":
                self.repeat(c, self.i + 1)
            elif c == "{" and (m := _REPEAT_RE.match(p, self.i)):
                lo = int(m.group(1))
                hi = lo if m.group(2) is None else (int(m.group(3)) if m.group(3) else -1)
                if lo > _MAX_REPEAT or hi > _MAX_REPEAT or (hi >= 0 and lo > hi):
                    raise _RegexpError("invalid repeat count", m.group(0))
                q = f"{{{lo}}}" if m.group(2) is None else f"{{{lo},{'' if hi < 0 else hi}}}"
                self.repeat(q, m.end())
            elif c == "[":
                self.out.append(self.char_class())
                self.last = _ATOM
            elif c == "\\":
                self.escape()
            else:
                if c == "^":
                    self.out.append("(?:^)")
                elif c == "$":
                    self.out.append("(?:$)" if "m" in self.flags else "(?:\\Z)")
                elif c == ".":
                    self.out.append(".")
                else:
                    self.out.append(re.escape(c))
                self.i += 1
                self.last = _ATOM
        if len(self.frames) > 1:
            raise _RegexpError("missing closing )", p)
        self.out.append(")" * self.frames[0].extra)
        return "".join(self.out)

    def py_flags(self) -> frozenset[str]:
        return self.flags & _PY_FLAGS

    def repeat(self, op: str, end: int) -> None:
        start = self.i
        if self.last == _NOTHING:
            raise _RegexpError("missing argument to repetition operator", self.p[start:end])
        lazy = False
        if end < len(self.p) and self.p[end] == "?":
            lazy = True
            end += 1
        if self.last == _REPEAT:
            raise _RegexpError("invalid nested repetition operator", self.p[start:end])
        if "U" in self.flags:
            lazy = not lazy
        self.out.append(op + ("?" if lazy else ""))
        self.i = end
        self.last = _REPEAT

    def open_group(self) -> None:
        p, i = self.p, self.i
        if not p.startswith("(?", i):
            self.frames.append(_Frame(self.flags, self.py_flags()))
            self.out.append("(")
            self.i += 1
            self.last = _NOTHING
            return
        if (p.startswith("(?P<", i) and len(p) - i > 4) or (p.startswith("(?<", i) and len(p) - i > 3):
            begin = i + (4 if p[i + 2] == "P" else 3)
            end = p.find(">", i)
            if end < 0:
                raise _RegexpError("invalid named capture", p[i:])
            name = p[begin:end]
            if not name or not all(ch == "_" or (ch.isascii() and ch.isalnum()) for ch in name):
                raise _RegexpError("invalid named capture", p[i : end + 1])
            if name in self.names:
                raise _RegexpError("duplicate capture group name", p[i : end + 1])
            self.names.add(name)
            self.frames.append(_Frame(self.flags, self.py_flags()))
            self.out.append("(")
            self.i = end + 1
            self.last = _NOTHING
            return
        # Flags and non-capturing groups: (?flags) (?flags:re), flags := [imsU]* [- [imsU]+]
        flags = set(self.flags)
        negate = False
        saw_flag = False
        j = i + 2
        while j < len(p):
            c = p[j]
            j += 1
            if c in "imsU":
                if negate:
                    flags.discard(c)
                else:
                    flags.add(c)
                saw_flag = True
            elif c == "-" and not negate:
                negate = True
                saw_flag = False
            elif c in ":)":
                if negate and not saw_flag:
                    break
                new = frozenset(flags)
                if c == ":":
                    self.frames.append(_Frame(self.flags, new & _PY_FLAGS))
                    self.out.append(_flag_group(new) if new & _PY_FLAGS != self.py_flags() else "(?:")
                    self.last = _NOTHING
                elif new & _PY_FLAGS != self.py_flags():
                    self.out.append(_flag_group(new))
                    self.frames[-1].extra += 1
                    self.last = _NOTHING
                self.flags = new
                self.i = j
                return
            else:
                break
        raise _RegexpError("invalid or unsupported Perl syntax", p[i:j])

    def close_group(self) -> None:
        if len(self.frames) == 1:
            raise _RegexpError("unexpected )", self.p)
        frame = self.frames.pop()
        self.out.append(")" * frame.extra + ")")
        self.flags = frame.saved
        self.i += 1
        self.last = _ATOM

    def escape(self) -> None:
        p, i = self.p, self.i
        if i + 1 >= len(p):
            raise _RegexpError("trailing backslash at end of expression", "")
        c = p[i + 1]
        assertions = {"A": "(?:\\A)", "z": "(?:\\Z)", "b": "(?a:\\b)", "B": "(?a:\\B)"}
        if c in assertions:
            self.out.append(assertions[c])
            self.i += 2
        elif c == "C":
            raise _RegexpError("invalid escape sequence", "\\C")
        elif c == "Q":
            end = p.find("\\E", i + 2)
            literal = p[i + 2 :] if end < 0 else p[i + 2 : end]
            self.i = len(p) if end < 0 else end + 2
            if literal:
                # Escaped character by character, so a following repetition
                # applies to the last character only, as in Go.
                self.out.append(re.escape(literal))
                self.last = _ATOM
            return
        elif c in "pP":
            raise _RegexpError("unsupported Unicode class (\\p, \\P) in ctrd", p[i : i + 2])
        elif c in _PERL_CLASSES:
            self.out.append(_class(_PERL_CLASSES[c]))
            self.i += 2
        else:
            cp, self.i = self.parse_escape(i)
            self.out.append(_esc(cp))
        self.last = _ATOM

    def parse_escape(self, i: int) -> tuple[int, int]:
        """Decode the single-character escape at ``p[i] == "\\"``; return (rune, next index)."""
        p = self.p
        if i + 1 >= len(p):
            raise _RegexpError("trailing backslash at end of expression", "")
        c = p[i + 1]
        j = i + 2
        if c.isascii() and not c.isalnum():
            return ord(c), j
        if "1" <= c <= "7" and not (j < len(p) and "0" <= p[j] <= "7"):
            pass  # a single non-zero digit would be a backreference: unsupported
        elif "0" <= c <= "7":
            r = ord(c) - 0x30
            for _ in range(2):
                if j < len(p) and "0" <= p[j] <= "7":
                    r = r * 8 + ord(p[j]) - 0x30
                    j += 1
            return r, j
        elif c == "x" and j < len(p):
            if p[j] == "{":  # \x{h...}: one or more hex digits
                k = j + 1
                r = 0
                nhex = 0
                while k < len(p):
                    d = p[k]
                    k += 1
                    if d == "}":
                        if nhex:
                            return r, k
                        break
                    if d not in _HEX_DIGITS:
                        break
                    r = r * 16 + int(d, 16)
                    if r > _MAX_RUNE:
                        break
                    nhex += 1
                j = k
            else:  # \xhh: exactly two hex digits
                two = p[j : j + 2]
                if len(two) == 2 and all(d in _HEX_DIGITS for d in two):
                    return int(two, 16), j + 2
                j += len(two)
        elif c in _C_ESCAPES:
            return _C_ESCAPES[c], j
        raise _RegexpError("invalid escape sequence", p[i:j])

    def char_class(self) -> str:
        p = self.p
        start = self.i
        i = start + 1
        negated = False
        if i < len(p) and p[i] == "^":
            negated = True
            i += 1
        ranges: list[tuple[int, int]] = []
        first = True
        while i >= len(p) or p[i] != "]" or first:
            if i >= len(p):
                raise _RegexpError("missing closing ]", p[start:])
            first = False
            if p.startswith("[:", i) and len(p) - i > 2:
                end = p.find(":]", i + 2)
                if end >= 0:
                    name = p[i : end + 2]
                    if name not in _POSIX_GROUPS:
                        raise _RegexpError("invalid character class range", name)
                    ranges.extend(_POSIX_GROUPS[name])
                    i = end + 2
                    continue
            if p[i] == "\\" and i + 1 < len(p):
                if p[i + 1] in "pP":
                    raise _RegexpError("unsupported Unicode class (\\p, \\P) in ctrd", p[i : i + 2])
                if p[i + 1] in _PERL_CLASSES:
                    ranges.extend(_PERL_CLASSES[p[i + 1]])
                    i += 2
                    continue
            item_start = i
            lo, i = self.class_char(i, start)
            hi = lo
            if len(p) - i >= 2 and p[i] == "-" and p[i + 1] != "]":
                hi, i = self.class_char(i + 1, start)
                if hi < lo:
                    raise _RegexpError("invalid character class range", p[item_start:i])
            ranges.append((lo, hi))
        self.i = i + 1
        return _class(tuple(ranges), negated=negated)

    def class_char(self, i: int, start: int) -> tuple[int, int]:
        if i >= len(self.p):
            raise _RegexpError("missing closing ]", self.p[start:])
        if self.p[i] == "\\":
            return self.parse_escape(i)
        return ord(self.p[i]), i + 1


def compile_regexp(pattern: str) -> re.Pattern[str]:
    """Compile a Go (RE2) regexp into an equivalent Python pattern.

    Go's semantics are kept where Python's differ: ``$`` (without ``(?m)``) and
    ``\\z`` match only at the very end; ``\\d \\s \\w \\b`` and POSIX classes
    (``[[:alpha:]]``) are ASCII; octal ``\\123`` and ``\\x{..}`` escapes;
    ``\\Q..\\E``; ``{,n}`` is literal; flags ``(?imsU)`` may appear mid-pattern;
    backreferences, lookarounds, possessive and nested repetitions are
    rejected, as Go rejects them. Unicode classes (``\\pL``, ``\\p{Greek}``)
    are not supported.

    :raises errdefs.InvalidArgument: ``error parsing regexp: <reason>: `<expr>```.
    """
    try:
        translated = _RegexpTranslator(pattern).translate()
        return re.compile(translated)
    except _RegexpError as exc:
        raise errdefs.InvalidArgument(str(exc)) from None
    except (re.error, RecursionError, OverflowError) as exc:
        raise errdefs.InvalidArgument(f"error parsing regexp: {exc}: `{pattern}`") from None
