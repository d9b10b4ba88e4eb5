"""Validation of containerd identifiers (namespaces, leases, ...).

Port of containerd's ``pkg/identifiers``: an identifier is one or more ASCII
alphanumeric runs joined by single ``.``, ``_`` or ``-`` separators, at most
76 bytes long. Valid identifiers are safe to use as filesystem path components.
"""

from __future__ import annotations

import re
from typing import Final

from ctrd import errdefs, golang

__all__ = ["MAX_LENGTH", "PATTERN", "go_quote", "validate"]

MAX_LENGTH: Final = 76
"""Maximum identifier length, in bytes (as containerd's ``len(s)``)."""

PATTERN: Final = r"^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"
"""The pattern as containerd prints it in its error message."""

# Python's ``$`` would also match before a trailing newline, so match with
# ``fullmatch`` on the unanchored body instead.
_IDENTIFIER_RE: Final = re.compile(r"[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*")

go_quote: Final = golang.quote
"""The former name of :func:`ctrd.golang.quote` (:mod:`ctrd.metadata` still uses it)."""


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
            f"identifier {golang.quote(name)} greater than maximum length ({MAX_LENGTH} characters)"
        )
    if _IDENTIFIER_RE.fullmatch(name) is None:
        raise errdefs.InvalidArgument(f"identifier {golang.quote(name)} must match {PATTERN}")
