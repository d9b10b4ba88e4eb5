"""The parsed form of a filter and how it matches: :class:`Filter`, :class:`Selector`, adaptors."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from ctrd.filters._regexp import Regexp, compile_regexp

__all__ = ["ALWAYS", "Adaptor", "Filter", "Operator", "Selector", "adaptor_from_mapping"]

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
