"""Initialisation order from ``requires``.

Dependencies come before dependents (depth-first, post-order), ties broken by
URI so the order is deterministic. ``"*"`` puts a plugin after every plugin that
does not itself require ``"*"``. A requirement with no registered provider is
not an error here: the graph orders, init validates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ctrd.plugin._registration import Registration

__all__ = ["DependencyCycle", "order"]


class DependencyCycle(Exception):
    """The requires graph has a loop."""


def order(registrations: Iterable[Registration], disabled: Iterable[str] = ()) -> list[Registration]:
    """Return the registrations (minus *disabled* URIs) in initialisation order.

    :raises DependencyCycle: naming the plugins on the loop.
    """
    off = set(disabled)
    regs = sorted((r for r in registrations if r.uri not in off), key=lambda r: r.uri)
    star = [r for r in regs if "*" in r.requires]
    plain = [r for r in regs if "*" not in r.requires]
    by_type: dict[str, list[Registration]] = {}
    for r in regs:
        by_type.setdefault(r.type, []).append(r)

    def deps(r: Registration) -> Sequence[Registration]:
        if "*" in r.requires:
            return [p for p in plain if p.uri != r.uri]
        out: list[Registration] = []
        for t in r.requires:
            out.extend(p for p in by_type.get(t, ()) if p.uri != r.uri)
        return out

    result: list[Registration] = []
    done: set[str] = set()
    stack: list[str] = []

    def visit(r: Registration) -> None:
        if r.uri in done:
            return
        if r.uri in stack:
            loop = [*stack[stack.index(r.uri) :], r.uri]
            raise DependencyCycle("circular plugin dependency: " + " -> ".join(loop))
        stack.append(r.uri)
        for d in deps(r):
            visit(d)
        stack.pop()
        done.add(r.uri)
        result.append(r)

    for r in plain + star:
        visit(r)
    return result
