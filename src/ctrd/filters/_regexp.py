"""Go regexps for ``~=`` values: Go's syntax, checked with Go's messages, run by RE2.

:func:`compile_regexp` accepts what Go's ``regexp.Compile`` accepts and
rejects the rest with Go's message for the first error Go finds: the walker of
:mod:`ctrd.filters._gosyntax` reproduces Go's ``regexp/syntax`` checks, then RE2
(the ``google-re2`` binding) compiles the pattern, with bounds on its size, and
matches in time linear in the input.
"""

from __future__ import annotations

import functools
from typing import Any, Final

import re2

from ctrd import errdefs
from ctrd.filters._gosyntax import GoSyntax, GoSyntaxError
from ctrd.limits import echo

__all__ = [
    "MAX_REGEXP_INPUT",
    "MAX_REGEXP_LENGTH",
    "MAX_REGEXP_PROGRAM",
    "REGEXP_MAX_MEM",
    "Regexp",
    "compile_regexp",
]

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


class LimitExceeded(errdefs.InvalidArgument):
    """A filter or regexp over one of the cost bounds (not wrapped with the filter's text)."""


def utf8_len(s: str) -> int:
    """The length of *s* in UTF-8 bytes (lone surrogates count as three)."""
    return len(s) if s.isascii() else len(s.encode("utf-8", "surrogatepass"))


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
        return LimitExceeded(f"error parsing regexp: expression too large: `{echo(pattern)}`")
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
    size = utf8_len(pattern)
    if size > MAX_REGEXP_LENGTH:
        raise LimitExceeded(
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
        GoSyntax(pattern, _unicode_class_known).check()
    except GoSyntaxError as exc:
        raise errdefs.InvalidArgument(str(exc)) from None
    try:
        probe = re2.compile(pattern, _RE2_SIZE_PROBE)
        # Both programs are built (RE2 would build the reverse one at the first match,
        # and fail that match if it did not fit) and must be within the bound.
        sizes = (probe.programsize, probe.reverseprogramsize)
        if min(sizes) < 0 or max(sizes) > MAX_REGEXP_PROGRAM:
            raise LimitExceeded(f"error parsing regexp: expression too large: `{echo(pattern)}`")
        compiled = re2.compile(pattern, _RE2_OPTIONS)
        compiled.reverseprogramsize  # noqa: B018 (builds the reverse program now)
    except re2.error as exc:
        raise _re2_error(pattern, exc) from None
    return Regexp(pattern, compiled)
