"""List filters pushed down into SQL: a necessary condition on the ``blobs`` rows of a walk.

:func:`sql_prefilter` translates what SQLite can test cheaply (``digest`` equal or
not equal, a label present or equal to a value) into a ``WHERE`` clause that every
matching row satisfies; rows it lets through are still matched exactly by
:mod:`ctrd.filters`, so a selector left out only costs time.
"""

from __future__ import annotations

from ctrd import filters

__all__ = ["sql_prefilter"]


def _sql_selector(sel: filters.Selector) -> tuple[str, tuple[str, ...]] | None:
    """A SQL condition every blob matching *sel* satisfies, or ``None`` for "any row"."""
    path = sel.fieldpath
    if path == ("digest",):
        if sel.op is filters.Operator.EQUAL:
            return "digest = ?", (sel.value,)
        if sel.op is filters.Operator.NOT_EQUAL:
            return "digest != ?", (sel.value,)
        return None
    if len(path) < 2 or path[0] != "labels":
        return None
    key = ".".join(path[1:])
    # SQLite's JSON paths compare keys as written in the stored JSON text; keep
    # to printable ASCII without quotes or escapes, where that text is the key.
    if not key or not key.isascii() or not key.isprintable() or '"' in key or "\\" in key:
        return None
    jpath = f'$."{key}"'
    if sel.op is None:
        return "json_type(labels, ?) IS NOT NULL", (jpath,)
    if sel.op is filters.Operator.EQUAL:
        return "json_extract(labels, ?) = ?", (jpath, sel.value)
    return None


def sql_prefilter(flt: filters.Filter) -> tuple[str, tuple[str, ...]]:
    """`` AND (...)`` narrowing a blobs query to rows that may match *flt* (``""`` = no narrowing).

    Each alternative contributes the AND of its translatable selectors; if one
    alternative has none, any row may match and nothing is pushed down.
    """
    ors: list[str] = []
    params: list[str] = []
    for alternative in flt.alternatives:
        conds = [c for c in map(_sql_selector, alternative) if c is not None]
        if not conds:
            return "", ()
        ors.append(" AND ".join(c[0] for c in conds))
        for c in conds:
            params.extend(c[1])
    if not ors:
        return " AND 0", ()
    return " AND ((" + ") OR (".join(ors) + "))", tuple(params)
