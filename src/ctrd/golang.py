"""Go's text formats, as containerd prints and parses them: quoted strings and durations.

ctrd answers with containerd's messages and reads containerd's config, so a
few of Go's standard formats are needed exactly:

- :func:`quote` renders a string as Go's ``%q`` verb (``strconv.Quote``) does;
  error messages that repeat a client's value use it.
- :func:`unquote` reads a Go double-quoted string literal (``strconv.Unquote``),
  optionally with other delimiters, as containerd's filter language quotes
  values (``/.../`` and ``|...|``).
- :func:`parse_duration` and :func:`format_duration` are ``time.ParseDuration``
  and ``Duration.String``, exact to the nanosecond: the config's
  ``schedule_delay = "100ms"`` and the durations ctrd logs.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

from ctrd.limits import ECHO_CHARS

__all__ = [
    "HOUR",
    "MICROSECOND",
    "MILLISECOND",
    "MINUTE",
    "NANOSECOND",
    "SECOND",
    "DurationError",
    "format_duration",
    "format_seconds",
    "parse_duration",
    "quote",
    "seconds",
    "unquote",
]

# --------------------------------------------------------------------------
# Quoted strings

_QUOTE_ESCAPES: Final = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def _is_print(ch: str) -> bool:
    """Go's ``unicode.IsPrint``: letters, marks, numbers, punctuation, symbols and the ASCII space."""
    if ch == " ":
        return True
    return unicodedata.category(ch)[0] in "LMNPS"


def quote(s: str, limit: int | None = ECHO_CHARS) -> str:
    """Return ``s`` double-quoted with Go ``strconv.Quote`` (``%q``) escapes.

    A string longer than *limit* characters (``None``: no limit) is quoted up to
    the limit and followed by ``…(<n> characters)``: error messages quote what a
    client sent, and must stay short whatever it sent (:mod:`ctrd.limits`).

    ``"`` and ``\\`` are backslashed; ``\\a \\b \\f \\n \\r \\t \\v`` use their
    short forms; other non-printable characters become ``\\xhh`` (below U+0020
    and U+007F), ``\\uhhhh`` or ``\\Uhhhhhhhh``. Printable non-ASCII characters
    are kept as they are. Lone surrogates (invalid runes) become ``\\ufffd``.
    """
    if limit is not None and len(s) > limit:
        return f"{quote(s[:limit], None)}…({len(s)} characters)"
    out = ['"']
    for ch in s:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
            continue
        cp = ord(ch)
        if 0xD800 <= cp <= 0xDFFF:
            out.append("\\ufffd")
        elif _is_print(ch):
            out.append(ch)
        elif ch in _QUOTE_ESCAPES:
            out.append(_QUOTE_ESCAPES[ch])
        elif cp < 0x20 or cp == 0x7F:
            out.append(f"\\x{cp:02x}")
        elif cp < 0x10000:
            out.append(f"\\u{cp:04x}")
        else:
            out.append(f"\\U{cp:08x}")
    out.append('"')
    return "".join(out)


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
_UNQUOTE_WIDTHS: Final = {"x": 2, "u": 4, "U": 8}


def unquote(s: str, quotes: str = '"') -> str:
    """Read the Go string literal *s*, delimited by one of *quotes* (Go ``strconv.Unquote``).

    With the default ``'"'`` this is Go's interpreted string literal. containerd's
    filters also take ``/`` and ``|`` as delimiters (``quotes='"/|'``); whatever
    the delimiter, it is the only quote character that may be backslash-escaped.
    Escapes: ``\\a \\b \\f \\n \\r \\t \\v \\\\``, ``\\xhh`` and ``\\ooo`` (one byte
    each, possibly not UTF-8: such bytes read as U+FFFD), ``\\uhhhh`` and
    ``\\Uhhhhhhhh`` (a surrogate half reads as U+FFFD, as in Go).

    :raises ValueError: ``invalid syntax`` (Go's ``strconv.ErrSyntax``).
    """
    if len(s) < 2 or s[0] != s[-1] or s[0] not in quotes:
        raise ValueError("invalid syntax")
    delimiter = s[0]
    body = s[1:-1]
    if "\n" in body:
        raise ValueError("invalid syntax")
    buf = bytearray()
    i = 0
    while i < len(body):
        c = body[i]
        if c == delimiter:
            raise ValueError("invalid syntax")
        if c != "\\":
            buf += c.encode("utf-8", "surrogatepass")
            i += 1
            continue
        if i + 1 >= len(body):
            raise ValueError("invalid syntax")
        i = _unquote_escape(body, i + 2, body[i + 1], delimiter, buf)
    return buf.decode("utf-8", "replace")


def _unquote_escape(body: str, i: int, c: str, delimiter: str, buf: bytearray) -> int:
    """The escape ``\\<c>`` (whose argument starts at *i*) appended to *buf*; the index after it."""
    if c in _UNQUOTE_SIMPLE:
        buf.append(_UNQUOTE_SIMPLE[c])
        return i
    if c in _UNQUOTE_WIDTHS:
        width = _UNQUOTE_WIDTHS[c]
        digits = body[i : i + width]
        if len(digits) < width or not all(d in _HEX_DIGITS for d in digits):
            raise ValueError("invalid syntax")
        v = int(digits, 16)
        if c == "x":
            buf.append(v)  # a single byte, possibly not UTF-8
        elif v > 0x10FFFF:
            raise ValueError("invalid syntax")
        else:
            if 0xD800 <= v <= 0xDFFF:  # Go encodes surrogate halves as RuneError
                v = 0xFFFD
            buf += chr(v).encode("utf-8")
        return i + width
    if "0" <= c <= "7":
        digits = c + body[i : i + 2]
        if len(digits) < 3 or not all("0" <= d <= "7" for d in digits):
            raise ValueError("invalid syntax")
        v = int(digits, 8)
        if v > 255:
            raise ValueError("invalid syntax")
        buf.append(v)
        return i + 2
    if c in "'\"|/" and c == delimiter:
        buf.append(ord(c))
        return i
    raise ValueError("invalid syntax")


# --------------------------------------------------------------------------
# Durations
#
# Accepted: an optional sign, then one or more ``<number><unit>`` pairs, where
# the number is decimal with an optional fraction (``1``, ``1.5``, ``.5``, ``1.``)
# and the unit is ``ns``, ``us``, ``µs`` (U+00B5), ``μs`` (U+03BC), ``ms``,
# ``s``, ``m`` or ``h``: ``"100ms"``, ``"1m30s"``, ``"1.5h"``, ``"-2s"``.
# ``"0"`` alone is valid. As in Go, the total must fit in a signed 64-bit count
# of nanoseconds.

NANOSECOND: Final = 1
MICROSECOND: Final = 1000 * NANOSECOND
MILLISECOND: Final = 1000 * MICROSECOND
SECOND: Final = 1000 * MILLISECOND
MINUTE: Final = 60 * SECOND
HOUR: Final = 60 * MINUTE

_UNITS: Final = {
    "ns": NANOSECOND,
    "us": MICROSECOND,
    "\u00b5s": MICROSECOND,
    "\u03bcs": MICROSECOND,
    "ms": MILLISECOND,
    "s": SECOND,
    "m": MINUTE,
    "h": HOUR,
}
_MAX_DURATION: Final = (1 << 63) - 1
_PART: Final = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")


class DurationError(ValueError):
    """A string is not a Go duration."""


def parse_duration(text: str) -> int:
    """Parse a Go duration string (``"100ms"``, ``"1m30s"``, ``"-1.5h"``, ``"0"``) into nanoseconds.

    :raises DurationError: ``time: invalid duration "<text>"``, ``time: missing unit
        in duration "<text>"``, ``time: unknown unit "<u>" in duration "<text>"``
        (Go's messages).
    """
    if not isinstance(text, str):
        raise DurationError(f'duration must be a string such as "100ms" or "1m30s", not {text!r}')
    quoted = '"' + text + '"'
    neg = False
    rest = text
    if rest[:1] in ("-", "+"):
        neg = rest[0] == "-"
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise DurationError(f"time: invalid duration {quoted}")
    total = 0
    pos = 0
    while pos < len(rest):
        m = _PART.match(rest, pos)
        assert m is not None  # the pattern can match the empty string
        whole, frac, unit = m.group(1), m.group(2), m.group(3)
        if not whole and not frac:
            # no digits at all (".s", "s", or a leading unit)
            raise DurationError(f"time: invalid duration {quoted}")
        if not unit:
            raise DurationError(f"time: missing unit in duration {quoted}")
        scale = _UNITS.get(unit)
        if scale is None:
            raise DurationError(f'time: unknown unit "{unit}" in duration {quoted}')
        value = int(whole or "0") * scale
        if frac:
            value += int(frac) * scale // 10 ** len(frac)
        total += value
        if total > _MAX_DURATION + (1 if neg else 0):
            raise DurationError(f"time: invalid duration {quoted}")
        pos = m.end()
    return -total if neg else total


def seconds(text: str) -> float:
    """:func:`parse_duration` in (float) seconds."""
    return parse_duration(text) / SECOND


def format_duration(ns: int) -> str:
    """Render integer nanoseconds as Go's ``Duration.String`` does.

    ``0s``, ``300ns``, ``1.5µs``, ``100ms``, ``1.5s``, ``1m30s``, ``1h0m0s``.
    """
    ns = int(ns)
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    u = abs(ns)
    if u < SECOND:
        if u < MICROSECOND:
            return f"{sign}{u}ns"
        if u < MILLISECOND:
            return sign + _frac(u, MICROSECOND, 3) + "µs"
        return sign + _frac(u, MILLISECOND, 6) + "ms"
    hours, rem = divmod(u, HOUR)
    minutes, rem = divmod(rem, MINUTE)
    text = _frac(rem, SECOND, 9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return sign + text


def format_seconds(secs: float) -> str:
    """:func:`format_duration` of a (float) number of seconds, rounded to the nanosecond."""
    return format_duration(round(secs * SECOND))


def _frac(v: int, unit: int, digits: int) -> str:
    whole, rest = divmod(v, unit)
    if not rest:
        return str(whole)
    return f"{whole}." + f"{rest:0{digits}d}".rstrip("0")
