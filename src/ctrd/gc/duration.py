"""Go duration strings (``time.ParseDuration`` / ``Duration.String``), exact to the nanosecond.

Accepted: an optional sign, then one or more ``<number><unit>`` pairs, where
the number is decimal with an optional fraction (``1``, ``1.5``, ``.5``, ``1.``)
and the unit is ``ns``, ``us``, ``µs`` (U+00B5), ``μs`` (U+03BC), ``ms``,
``s``, ``m`` or ``h``: ``"100ms"``, ``"1m30s"``, ``"1.5h"``, ``"-2s"``.
``"0"`` alone is valid. As in Go, the total must fit in a signed 64-bit count
of nanoseconds.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["DurationError", "format_duration", "parse_duration", "seconds"]

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
_MAX: Final = (1 << 63) - 1
_PART: Final = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")


class DurationError(ValueError):
    """A string is not a Go duration."""


def parse_duration(text: str) -> int:
    """Parse a Go duration string into integer nanoseconds.

    :raises DurationError: ``time: invalid duration "<text>"``, ``time: missing unit
        in duration "<text>"``, ``time: unknown unit "<u>" in duration "<text>"``
        (Go's messages).
    """
    if not isinstance(text, str):
        raise DurationError(f'duration must be a string such as "100ms" or "1m30s", not {text!r}')
    orig = text
    quoted = '"' + orig + '"'
    neg = False
    if text[:1] in ("-", "+"):
        neg = text[0] == "-"
        text = text[1:]
    if text == "0":
        return 0
    if not text:
        raise DurationError(f"time: invalid duration {quoted}")
    total = 0
    pos = 0
    while pos < len(text):
        m = _PART.match(text, pos)
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
        if total > _MAX + (1 if neg else 0):
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
    hours, rest = divmod(u, HOUR)
    minutes, rest = divmod(rest, MINUTE)
    text = _frac(rest, SECOND, 9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return sign + text


def _frac(v: int, unit: int, digits: int) -> str:
    whole, rest = divmod(v, unit)
    if not rest:
        return str(whole)
    return f"{whole}." + f"{rest:0{digits}d}".rstrip("0")
