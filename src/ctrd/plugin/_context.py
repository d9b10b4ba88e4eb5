"""Init context handed to each plugin, and the set of initialised plugins."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Generic, cast, overload

from pydantic import BaseModel
from typing_extensions import TypeVar

from ctrd import errdefs
from ctrd.plugin._registration import ConfigT, Registration, SkipPlugin

__all__ = ["GrpcSettings", "InitContext", "InitFn", "Plugin", "PluginSet"]

T = TypeVar("T")
ConfigT_co = TypeVar("ConfigT_co", bound=BaseModel | None, default=Any, covariant=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class GrpcSettings:
    """The daemon's ``[grpc]`` settings a plugin may need (:attr:`InitContext.grpc`).

    A plugin that serves a socket of its own (the content plugin's proxy backend)
    applies the same message size limits as the daemon's listeners.
    """

    #: the unix socket of the main listener
    address: str = ""
    #: the TCP listener (``""``: none)
    tcp_address: str = ""
    #: ``[grpc] max_recv_message_size`` / ``max_send_message_size`` (containerd's default: 16 MiB)
    max_recv_message_size: int = 16 << 20
    max_send_message_size: int = 16 << 20


@dataclasses.dataclass(eq=False)
class Plugin:
    """One plugin's outcome: instance, or the error that stopped it."""

    registration: Registration[Any]
    exports: dict[str, str] = dataclasses.field(default_factory=dict)
    capabilities: list[str] = dataclasses.field(default_factory=list)
    platforms: list[str] = dataclasses.field(default_factory=list)
    instance: Any = None
    error: BaseException | None = None
    #: the config the plugin was initialised with (validated model), if any
    config: Any = None

    @property
    def uri(self) -> str:
        """The plugin's URI."""
        return self.registration.uri

    @property
    def ok(self) -> bool:
        """Initialised without error."""
        return self.error is None

    @property
    def skipped(self) -> bool:
        """Opted out with :class:`SkipPlugin`."""
        return isinstance(self.error, SkipPlugin)


class PluginSet:
    """Plugins in initialisation order, with lookups by type and id."""

    def __init__(self) -> None:
        self._ordered: list[Plugin] = []
        self._by_uri: dict[str, Plugin] = {}

    def add(self, p: Plugin) -> None:
        """Append *p*. :raises errdefs.AlreadyExists: same URI twice."""
        if p.uri in self._by_uri:
            raise errdefs.AlreadyExists(f"plugin {p.uri} already initialized")
        self._ordered.append(p)
        self._by_uri[p.uri] = p

    def __iter__(self) -> Iterator[Plugin]:
        return iter(list(self._ordered))

    def __len__(self) -> int:
        return len(self._ordered)

    def get(self, uri: str) -> Plugin | None:
        """The plugin with *uri*, or ``None``."""
        return self._by_uri.get(uri)

    def by_type(self, type_: str) -> list[Plugin]:
        """All plugins of *type_* (whatever their outcome), in init order."""
        return [p for p in self._ordered if p.registration.type == type_]


class InitContext(Generic[ConfigT_co]):
    """What a plugin's init function receives.

    ``root`` and ``state`` are the plugin's own directories (``<root>/<uri>``,
    ``<state>/<uri>``), created on first access: ``root`` with mode 0700 (and set
    to it when it exists with another mode), ``state`` with 0711. ``config`` is the
    validated config model instance (``None`` for a plugin without a config model),
    typed by the registration's model. ``exports`` and ``capabilities`` are
    reported through introspection. ``properties`` carries containerd's
    server-wide string properties (``root``, ``state``, ``grpc.address``);
    ``grpc`` the daemon's gRPC settings, typed.

    Plugins reach each other only through the instances their init functions
    return (:meth:`get_single`, :meth:`get_by_id`, :meth:`get_by_type`); a hook
    into another plugin's object goes through a method that object's type
    declares, never by setting its attributes.
    """

    def __init__(
        self,
        plugin: Plugin,
        plugins: PluginSet,
        *,
        root: Path,
        state: Path,
        config: ConfigT_co,
        properties: Mapping[str, str] | None = None,
        grpc: GrpcSettings | None = None,
    ) -> None:
        self._plugin = plugin
        self._plugins = plugins
        self._root = root / plugin.uri
        self._root_made = False
        self._state = state / plugin.uri
        self._config = config
        self.properties: dict[str, str] = dict(properties or {})
        self._grpc = grpc if grpc is not None else GrpcSettings()

    @property
    def config(self) -> ConfigT_co:
        """The validated config model instance (``None`` when the plugin takes no configuration)."""
        return self._config

    @property
    def grpc(self) -> GrpcSettings:
        """The daemon's ``[grpc]`` settings (addresses, message size limits)."""
        return self._grpc

    @property
    def registration(self) -> Registration:
        """The registration being initialised."""
        return self._plugin.registration

    @property
    def root(self) -> Path:
        """The plugin's persistent directory (created on access, mode 0700)."""
        if not self._root_made:
            self._root.mkdir(mode=0o700, parents=True, exist_ok=True)
            if self._root.stat().st_mode & 0o077:  # made by an older ctrd (0711)
                self._root.chmod(0o700)
            self._root_made = True
        return self._root

    @property
    def state(self) -> Path:
        """The plugin's runtime-state directory (created on access)."""
        self._state.mkdir(mode=0o711, parents=True, exist_ok=True)
        return self._state

    @property
    def exports(self) -> dict[str, str]:
        """Key/values shown by introspection."""
        return self._plugin.exports

    @property
    def capabilities(self) -> list[str]:
        """Capabilities shown by introspection."""
        return self._plugin.capabilities

    @property
    def platforms(self) -> list[str]:
        """Platforms (``os/arch[/variant]``) shown by introspection."""
        return self._plugin.platforms

    @property
    def plugins(self) -> PluginSet:
        """Every plugin initialised so far (and those that failed)."""
        return self._plugins

    @overload
    def get_single(self, type_: str) -> Any: ...
    @overload
    def get_single(self, type_: str, cls: type[T] | None) -> T: ...
    def get_single(self, type_: str, cls: type[T] | None = None) -> T | Any:
        """The one working plugin instance of *type_* (checked to be a *cls*, a class or a
        runtime-checkable protocol, when given).

        :raises errdefs.NotFound: none works (the error says why).
        :raises errdefs.FailedPrecondition: several work; choose one in config.
        """
        cands = [p for p in self._plugins.by_type(type_) if p.uri != self._plugin.uri]
        ok = [p for p in cands if p.ok]
        if not ok:
            if cands:
                why = "; ".join(f"{p.uri}: {p.error}" for p in cands)
                raise errdefs.NotFound(f"no working plugin of type {type_} ({why})")
            raise errdefs.NotFound(f"no plugins registered for {type_}")
        if len(ok) > 1:
            names = ", ".join(p.uri for p in ok)
            raise errdefs.FailedPrecondition(f"multiple plugins of type {type_}: {names}")
        return self._check(ok[0], cls)

    @overload
    def get_by_id(self, type_: str, id_: str) -> Any: ...
    @overload
    def get_by_id(self, type_: str, id_: str, cls: type[T] | None) -> T: ...
    def get_by_id(self, type_: str, id_: str, cls: type[T] | None = None) -> T | Any:
        """The instance of plugin ``<type_>.<id_>``. :raises errdefs.NotFound:"""
        p = self._plugins.get(f"{type_}.{id_}")
        if p is None:
            raise errdefs.NotFound(f"plugin {type_}.{id_}")
        if not p.ok:
            raise errdefs.NotFound(f"plugin {type_}.{id_} not loaded: {p.error}")
        return self._check(p, cls)

    @overload
    def get_by_type(self, type_: str) -> dict[str, Any]: ...
    @overload
    def get_by_type(self, type_: str, cls: type[T] | None) -> dict[str, T]: ...
    def get_by_type(self, type_: str, cls: type[T] | None = None) -> dict[str, T] | dict[str, Any]:
        """``{id: instance}`` of the working plugins of *type_* (may be empty).

        :raises errdefs.FailedPrecondition: *cls* is given and an instance is not one.
        """
        return {
            p.registration.id: self._check(p, cls)
            for p in self._plugins.by_type(type_)
            if p.ok and p.uri != self._plugin.uri
        }

    @staticmethod
    def _check(p: Plugin, cls: type[T] | None) -> T | Any:
        if cls is not None and not isinstance(p.instance, cls):
            raise errdefs.FailedPrecondition(f"plugin {p.uri} is not a {cls.__name__}")
        return cast(T, p.instance)


InitFn = Callable[[InitContext[ConfigT]], Awaitable[Any]]
"""``init(ic)``: returns the plugin's instance, or raises (:class:`SkipPlugin` to opt out)."""
