"""Go's ``regexp/syntax`` checks, reproduced: the first error Go would report, in Go's words.

:class:`GoSyntax` walks a pattern as Go's parser does (Perl flags) and raises
:class:`GoSyntaxError` with Go's message for the first error Go finds, so that
:func:`~ctrd.filters.compile_regexp` rejects exactly what ``regexp.Compile``
rejects before RE2 compiles the rest. Which names ``\\p{...}`` accepts is the
engine's knowledge: the caller passes it in.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = ["GoSyntax", "GoSyntaxError"]


class GoSyntaxError(Exception):
    """A Go regexp syntax error; ``str()`` is Go's message."""

    def __init__(self, code: str, expr: str) -> None:
        super().__init__(f"error parsing regexp: {code}: `{expr}`")


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
_HEX_DIGITS: Final = frozenset("0123456789abcdefABCDEF")


@dataclass(slots=True)
class _Group:
    need: int = 0  # the largest repeat budget an item of the group needs (see GoSyntax.repeat)


class GoSyntax:
    """Go's ``regexp/syntax`` parser (Perl flags), kept to its checks and its errors.

    It walks the pattern as Go does and raises the first error Go would, with
    Go's text. What it tracks: whether the parse stack has an operand to repeat,
    whether the previous token was a repetition (Go rejects ``a**``), and the
    repeat budget each operand needs (Go rejects nested counted repetitions that
    expand to more than 1000 copies, ``(a{100}){11}``).
    """

    def __init__(self, pattern: str, unicode_class_known: Callable[[str], bool]) -> None:
        self.p = pattern
        self.unicode_class_known = unicode_class_known  # whether \p{name} names a class
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
                    raise GoSyntaxError("unexpected )", p)
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
                    raise GoSyntaxError("invalid repeat count", m.group(0))
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
            raise GoSyntaxError("missing closing )", p)

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
            raise GoSyntaxError("invalid nested repetition operator", p[self.last_repeat : end])
        if not self.operand:
            raise GoSyntaxError("missing argument to repetition operator", p[start:end])
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
                raise GoSyntaxError("invalid repeat count", p[start:end])
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
                raise GoSyntaxError("invalid named capture", p[i:])
            name = p[begin:end]
            if not name or not all(ch == "_" or (ch.isascii() and ch.isalnum()) for ch in name):
                raise GoSyntaxError("invalid named capture", p[i : end + 1])
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
        raise GoSyntaxError("invalid or unsupported Perl syntax", p[i:j])

    def escape(self, i: int) -> int:
        p = self.p
        if i + 1 < len(p):
            c = p[i + 1]
            if c in "AbBz":
                self.push(0)
                return i + 2
            if c == "C":
                raise GoSyntaxError("invalid escape sequence", "\\C")
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
            raise GoSyntaxError("invalid character class range", p[i:])
        if p[i + 2] != "{":
            seq = p[i : i + 3]
            name = p[i + 2]
        else:
            end = p.find("}", i)
            if end < 0:
                raise GoSyntaxError("invalid character class range", p[i:])
            seq = p[i : end + 1]
            name = p[i + 3 : end]
        if name.startswith("^"):
            name = name[1:]
        if name != "Any" and not self.unicode_class_known(name):
            raise GoSyntaxError("invalid character class range", seq)
        return i + len(seq)

    def single_escape(self, i: int) -> int:
        """The escape of one character at ``p[i] == "\\"``; the index after it."""
        p = self.p
        if i + 1 >= len(p):
            raise GoSyntaxError("trailing backslash at end of expression", "")
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
            end = _hex_escape_end(p, j)
            if end > 0:
                return end
            j = -end
        elif c in _C_ESCAPES:
            return j
        raise GoSyntaxError("invalid escape sequence", p[i:j])

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
                        raise GoSyntaxError("invalid character class range", name)
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
                    raise GoSyntaxError("invalid character class range", p[item:i])
        return i + 1

    def class_char(self, i: int, start: int) -> tuple[int, int]:
        """The character at ``p[i]`` in a class (maybe escaped): ``(code point, next index)``."""
        p = self.p
        if i >= len(p):
            raise GoSyntaxError("missing closing ]", p[start:])
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


def _hex_escape_end(p: str, j: int) -> int:
    """Where a ``\\x`` escape whose argument starts at ``p[j]`` ends, or minus the index of the
    character that makes it invalid: ``\\x{h...}`` (one or more hex digits, at most U+10FFFF)
    or ``\\xhh`` (exactly two hex digits)."""
    if p[j] != "{":
        two = p[j : j + 2]
        if len(two) == 2 and all(d in _HEX_DIGITS for d in two):
            return j + 2
        return -(j + len(two))
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
    return -j
