"""Validation of containerd identifiers (namespaces, leases, ...), and Go-style quoting.

Port of containerd's ``pkg/identifiers``: an identifier is one or more ASCII
alphanumeric runs joined by single ``.``, ``_`` or ``-`` separators, at most
76 bytes long. Valid identifiers are safe to use as filesystem path components.

:func:`go_quote` renders a string the way Go's ``%q`` verb does
(``strconv.Quote``); error messages that mirror containerd's use it.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

from ctrd import errdefs
from ctrd.limits import ECHO_CHARS

__all__ = ["MAX_LENGTH", "PATTERN", "go_quote", "validate"]

MAX_LENGTH: Final = 76
"""Maximum identifier length, in bytes (as containerd's ``len(s)``)."""

PATTERN: Final = r"^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"
"""The pattern as containerd prints it in its error message."""

# Python's ``$`` would also match before a trailing newline, so match with
# ``fullmatch`` on the unanchored body instead.
_IDENTIFIER_RE: Final = re.compile(r"[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*")

_SIMPLE_ESCAPES: Final = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def _is_go_printable(ch: str) -> bool:
    """Report whether Go's ``unicode.IsPrint`` holds for ``ch``.

    That is letters, marks, numbers, punctuation, symbols and the ASCII space
    (but no other space character).
    """
    if ch == " ":
        return True
    return unicodedata.category(ch)[0] in "LMNPS"


def go_quote(s: str, limit: int | None = ECHO_CHARS) -> str:
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
        return f"{go_quote(s[:limit], None)}…({len(s)} characters)"
    out = ['"']
    for ch in s:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
            continue
        cp = ord(ch)
        if 0xD800 <= cp <= 0xDFFF:
            out.append("\\ufffd")
        elif _is_go_printable(ch):
            out.append(ch)
        elif ch in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[ch])
        elif cp < 0x20 or cp == 0x7F:
            out.append(f"\\x{cp:02x}")
        elif cp < 0x10000:
            out.append(f"\\u{cp:04x}")
        else:
            out.append(f"\\U{cp:08x}")
    out.append('"')
    return "".join(out)


def validate(name: str) -> None:
    """Check that ``name`` is a valid containerd identifier.

    :raises errdefs.InvalidArgument: with containerd's messages:
        ``identifier must not be empty``,
        ``identifier "<name>" greater than maximum length (76 characters)`` or
        ``identifier "<name>" must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$``.
    """
    if not name:
        raise errdefs.InvalidArgument("identifier must not be empty")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_LENGTH:
        raise errdefs.InvalidArgument(
            f"identifier {go_quote(name)} greater than maximum length ({MAX_LENGTH} characters)"
        )
    if _IDENTIFIER_RE.fullmatch(name) is None:
        raise errdefs.InvalidArgument(f"identifier {go_quote(name)} must match {PATTERN}")
