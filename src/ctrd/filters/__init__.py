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

Layout: the grammar (scanner and parser) is ``_parser``, the parsed form and
matching ``_filter``, the regexp dialect ``_regexp`` (RE2 with bounds) over
``_gosyntax`` (Go's syntax checks); quoted strings are read with
:func:`ctrd.golang.unquote`.
"""

from __future__ import annotations

from ctrd.filters._filter import ALWAYS, Adaptor, Filter, Operator, Selector, adaptor_from_mapping
from ctrd.filters._parser import MAX_FILTER_LENGTH, MAX_REGEXPS, MAX_SELECTORS, parse, parse_all
from ctrd.filters._regexp import (
    MAX_REGEXP_INPUT,
    MAX_REGEXP_LENGTH,
    MAX_REGEXP_PROGRAM,
    REGEXP_MAX_MEM,
    Regexp,
    compile_regexp,
)

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
