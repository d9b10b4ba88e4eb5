"""Plugin discovery through the ``ctrd.plugins`` entry-point group.

Each entry point is named by its plugin URI, so a package that fails to import
still appears under that type and id (with the import error as init error).
Built-in plugins register through the same group as third-party packages.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Final

import importlib_metadata

from ctrd.plugin._registration import InvalidRegistration, Registration, split_uri

__all__ = ["GROUP", "Discovered", "discover"]

GROUP: Final = "ctrd.plugins"
log = logging.getLogger("ctrd.plugin")


@dataclasses.dataclass(frozen=True)
class Discovered:
    """A registration found by entry point, and the distribution that provides it."""

    registration: Registration
    distribution: str


def _broken(uri: str, exc: BaseException) -> Registration:
    type_, id_ = split_uri(uri)

    async def _fail(_ic: Any) -> None:
        raise exc

    return Registration(type=type_, id=id_, init=_fail)


def discover(group: str = GROUP) -> list[Discovered]:
    """Load every entry point of *group* into registrations.

    A failing import or a mismatched name becomes a registration whose init
    raises that error, so the failure is reported by introspection.
    """
    found: list[Discovered] = []
    seen: set[str] = set()
    for ep in sorted(importlib_metadata.entry_points(group=group), key=lambda e: e.name):
        if ep.name in seen:
            log.warning("duplicate plugin entry point %s ignored (%s)", ep.name, ep.value)
            continue
        seen.add(ep.name)
        dist = ep.dist.name if ep.dist is not None else "unknown"
        try:
            reg = ep.load()
            if not isinstance(reg, Registration):
                raise InvalidRegistration(f"entry point {ep.name} = {ep.value} is not a Registration")
            if reg.uri != ep.name:
                raise InvalidRegistration(f"entry point {ep.name} names plugin {reg.uri}")
        except Exception as exc:
            log.warning("failed to load plugin %s from %s: %s", ep.name, dist, exc)
            try:
                reg = _broken(ep.name, exc)
            except InvalidRegistration as bad:
                log.error("ignoring entry point %s: %s", ep.name, bad)
                continue
        found.append(Discovered(reg, dist))
    return found
