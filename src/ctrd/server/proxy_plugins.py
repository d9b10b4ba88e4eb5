"""Proxy plugins from ``[proxy_plugins.<name>]``: plugins served by another gRPC daemon.

::

    [proxy_plugins.remote]
      type = "content"                 # or "snapshot" (or the full type string)
      address = "/run/containerd/containerd.sock"   # unix socket path, unix://path, or host:port
      namespace = "ctrd"               # the remote namespace every call acts in (ctrd addition)
      platform = ""                    # reported by introspection, e.g. "linux/amd64"
      exports = { key = "value" }      # extra introspection exports
      capabilities = []                # introspection capabilities

registers ``io.containerd.content.v1.remote`` (a
:class:`~ctrd.proxy.content.ProxyContentStore`) or
``io.containerd.snapshotter.v1.<name>`` (a
:class:`~ctrd.proxy.snapshots.RemoteSnapshotter` naming the remote snapshotter
``<name>``). Plugins with the same address share one connection from the
:class:`~ctrd.proxy.connection.ConnectionCache` built here (one per daemon
start); each releases it when the daemon closes it, the last release closes it.

Checked before any plugin initialises (a :class:`ConfigError` stops start-up):
an unknown ``type`` (containerd panics), a name that cannot be a plugin id, an
unusable address or namespace, a name that collides with an installed plugin,
and several enabled content plugins (installed or proxies) with no
``content_plugin`` choosing one for the metadata store.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Final

from ctrd import errdefs, identifiers
from ctrd.plugin import GROUP, InitContext, Registration, types
from ctrd.server.config import Config, ConfigError, ProxyPlugin

__all__ = ["PROXY_TYPES", "proxy_registrations"]

log = logging.getLogger("ctrd.proxy")

#: ``type`` values accepted in ``[proxy_plugins.<name>]`` and the plugin type each registers
PROXY_TYPES: Final[dict[str, str]] = {
    "content": types.CONTENT,
    types.CONTENT: types.CONTENT,
    "snapshot": types.SNAPSHOTTER,
    types.SNAPSHOTTER: types.SNAPSHOTTER,
}

_METADATA_URI: Final = f"{types.METADATA}.sqlite"


def _installed_uris() -> set[str]:
    """URIs of the plugins registered by entry point (names only: nothing is imported)."""
    import importlib_metadata

    return {ep.name for ep in importlib_metadata.entry_points(group=GROUP)}


def _check(name: str, pp: ProxyPlugin, installed: set[str]) -> tuple[str | None, list[str]]:
    """The plugin type of ``[proxy_plugins.<name>]`` and the problems found with it."""
    where = f"[proxy_plugins.{name}]"
    errors: list[str] = []
    type_ = PROXY_TYPES.get(pp.type)
    if type_ is None:
        supported = ", ".join(f'"{k}"' for k in PROXY_TYPES)
        errors.append(f'{where} type: unknown proxy plugin type "{pp.type}" (supported: {supported})')
    if not name or "." in name or "/" in name or name != name.strip():
        errors.append(f'{where}: "{name}" cannot be a plugin id (no dots, slashes or surrounding spaces)')
    if not pp.address:
        errors.append(f"{where} address: must not be empty")
    else:
        from ctrd.remote import parse_address

        try:
            parse_address(pp.address, strict=True)
        except errdefs.InvalidArgument as exc:
            errors.append(f"{where} address: {exc.context}")
    try:
        identifiers.validate(pp.namespace)
    except errdefs.InvalidArgument as exc:
        errors.append(f"{where} namespace: not a valid namespace: {exc.context}")
    parts = pp.platform.split("/")
    if pp.platform and (not all(parts) or len(parts) > 3):
        errors.append(f'{where} platform: expected "os/arch[/variant]", got "{pp.platform}"')
    if type_ is not None and f"{type_}.{name}" in installed:
        errors.append(f"{where}: {type_}.{name} is already an installed plugin; give the proxy another name")
    return type_, errors


def _check_content_choice(config: Config, proxies: Iterable[str], installed: set[str]) -> None:
    """Several enabled content plugins and no ``content_plugin``: the metadata store cannot choose."""
    disabled = set(config.disabled_plugins)
    if _METADATA_URI in disabled:
        return
    section: dict[str, Any] = config.plugins.get(_METADATA_URI) or {}
    if section.get("content_plugin"):
        return
    enabled = sorted({u for u in installed if u.rpartition(".")[0] == types.CONTENT} | set(proxies))
    enabled = [u for u in enabled if u not in disabled]
    if len(enabled) > 1:
        raise ConfigError(
            f"several content plugins are enabled ({', '.join(enabled)}) and none is chosen: set "
            f'[plugins."{_METADATA_URI}"] content_plugin to one of them, or disable the others '
            "in disabled_plugins"
        )


def _content_init(uri: str, pp: ProxyPlugin, cache: Any) -> Any:
    async def init(ic: InitContext) -> Any:
        from ctrd.proxy.content import ProxyContentStore

        _meta(ic, pp)
        conn = cache.acquire(pp.address)
        return ProxyContentStore(
            conn, pp.namespace, name=f"proxy plugin {uri}", on_close=lambda: cache.release(conn)
        )

    return init


def _snapshot_init(uri: str, name: str, pp: ProxyPlugin, cache: Any) -> Any:
    async def init(ic: InitContext) -> Any:
        from ctrd.proxy.snapshots import RemoteSnapshotter

        _meta(ic, pp)
        conn = cache.acquire(pp.address)
        return RemoteSnapshotter(
            conn, name, pp.namespace, name=f"proxy plugin {uri}", on_close=lambda: cache.release(conn)
        )

    return init


def _meta(ic: InitContext, pp: ProxyPlugin) -> None:
    ic.exports.update(pp.exports)
    ic.exports["address"] = pp.address
    ic.exports["namespace"] = pp.namespace
    ic.capabilities.extend(pp.capabilities)
    if pp.platform:
        ic.platforms.append(pp.platform)


def proxy_registrations(config: Config) -> list[Registration]:
    """Registrations for the configured proxy plugins (not dialled until first used).

    :raises ConfigError: naming every ``[proxy_plugins.<name>]`` problem found.
    """
    installed = _installed_uris()
    if not config.proxy_plugins:
        # third-party content plugins can make the choice ambiguous too
        _check_content_choice(config, [], installed)
        return []
    from ctrd.proxy.connection import ConnectionCache

    cache = ConnectionCache()
    regs: list[Registration] = []
    errors: list[str] = []
    for name, pp in sorted(config.proxy_plugins.items()):
        type_, problems = _check(name, pp, installed)
        errors.extend(problems)
        if problems or type_ is None:
            continue
        uri = f"{type_}.{name}"
        init = (
            _content_init(uri, pp, cache) if type_ == types.CONTENT else _snapshot_init(uri, name, pp, cache)
        )
        regs.append(Registration(type=type_, id=name, init=init))
    if errors:
        raise ConfigError("; ".join(errors))
    content = [r.uri for r in regs if r.type == types.CONTENT]
    if content:
        _check_content_choice(config, content, installed)
    for r in regs:
        log.debug("proxy plugin %s -> %s", r.uri, config.proxy_plugins[r.id].address)
    return regs
