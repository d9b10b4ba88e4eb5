"""Plugin registrations: declared data, no work at import time."""

from __future__ import annotations

import builtins
import dataclasses
from typing import TYPE_CHECKING, Any, Generic

from pydantic import BaseModel
from typing_extensions import TypeVar

if TYPE_CHECKING:
    from ctrd.plugin._context import InitFn

__all__ = ["ConfigT", "InvalidRegistration", "Registration", "SkipPlugin"]

ConfigT = TypeVar("ConfigT", bound=BaseModel | None, default=Any)
"""A plugin's config model (``None`` for a plugin that takes no configuration)."""


class SkipPlugin(Exception):
    """Raised by an init function to opt out (recorded as skipped, not failed)."""

    def __init__(self, reason: str = "") -> None:
        self.reason = reason
        super().__init__(reason)

    def __str__(self) -> str:
        return f"skip plugin: {self.reason}" if self.reason else "skip plugin"


class InvalidRegistration(ValueError):
    """A registration is malformed (empty type or id, bad requires)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Registration(Generic[ConfigT]):
    """What a plugin declares.

    ``requires`` names plugin *types*; ``"*"`` means every other plugin and must
    stand alone. ``config`` is a pydantic model whose defaults are the plugin's
    defaults; the config file section ``[plugins."<uri>"]`` is validated with it
    and ``init`` receives the instance as ``ic.config``, typed: a registration is
    generic over its config model (``Registration[SchedulerConfig]`` has an init
    taking ``InitContext[SchedulerConfig]``). Without ``config``, ``ic.config`` is
    ``None``.
    """

    type: str
    id: str
    init: InitFn[ConfigT]
    requires: tuple[str, ...] = ()
    config: builtins.type[ConfigT] | None = None

    def __post_init__(self) -> None:
        if not self.type:
            raise InvalidRegistration("plugin: no type")
        if not self.id:
            raise InvalidRegistration("plugin: no id")
        if "*" in self.requires and len(self.requires) > 1:
            raise InvalidRegistration(f"{self.uri}: invalid requires: '*' must stand alone")
        if self.type in self.requires:
            raise InvalidRegistration(f"{self.uri}: invalid requires: a plugin cannot require its own type")

    @property
    def uri(self) -> str:
        """``<type>.<id>``, e.g. ``io.containerd.content.v1.content``."""
        return f"{self.type}.{self.id}"


def split_uri(uri: str) -> tuple[str, str]:
    """Split ``<type>.<id>`` at the last dot."""
    type_, sep, id_ = uri.rpartition(".")
    if not sep or not type_ or not id_:
        raise InvalidRegistration(f"invalid plugin URI {uri!r}, expected <type>.<id>")
    return type_, id_
