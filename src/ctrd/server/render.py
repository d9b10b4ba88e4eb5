"""Render configs as TOML: ``ctrd config default`` and ``ctrd config dump``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from ctrd.server.config import Config, ConfigError, default_paths, format_validation_error

__all__ = ["default_config", "dump_config", "toml_value"]


def toml_value(v: Any) -> str:
    """One TOML value (strings, numbers, booleans, lists, inline tables)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if hasattr(v, "value") and isinstance(v.value, str):  # enums
        return json.dumps(v.value)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(x)}" for k, x in v.items()) + "}"
    return json.dumps(str(v))


def _table(
    lines: list[str], header: str, values: Mapping[str, Any], docs: Mapping[str, str], *, array: bool = False
) -> None:
    lines.append("")
    lines.append(f"[[{header}]]" if array else f"[{header}]")
    for k, v in values.items():
        if docs.get(k):
            lines.append(f"  # {docs[k]}")
        lines.append(f"  {k} = {toml_value(v)}")


def _plugin_defaults() -> list[tuple[str, Mapping[str, Any], Mapping[str, str]]]:
    from ctrd.plugin import discover

    out: list[tuple[str, Mapping[str, Any], Mapping[str, str]]] = []
    for d in discover():
        model = d.registration.config
        if model is None:
            continue
        inst = model()
        docs = {name: (f.description or "") for name, f in model.model_fields.items()}
        out.append((d.registration.uri, inst.model_dump(mode="json"), docs))
    return sorted(out, key=lambda x: x[0])


def default_config() -> str:
    """A complete, commented default configuration."""
    root, state, sock = default_paths()
    lines = [
        "# ctrd configuration (containerd version-2 layout).",
        "version = 2",
        "# persistent data (blobs, metadata database); each plugin gets <root>/<plugin uri>",
        f"root = {toml_value(root)}",
        "# runtime state; must differ from root",
        f"state = {toml_value(state)}",
        "# more config files merged in order (relative to this file; globs allowed)",
        "imports = []",
        '# plugin URIs not to load, e.g. "io.containerd.grpc.v1.healthcheck"',
        "disabled_plugins = []",
        "# plugin URIs that must load, or start-up fails",
        "required_plugins = []",
    ]
    _table(
        lines,
        "grpc",
        {
            "address": sock,
            "tcp_address": "",
            "tcp_tls_cert": "",
            "tcp_tls_key": "",
            "tcp_tls_ca": "",
            "uid": 0,
            "gid": 0,
            "max_recv_message_size": 16 << 20,
            "max_send_message_size": 16 << 20,
        },
        {
            "address": "unix socket of the gRPC API (mode 0660)",
            "tcp_address": "optional host:port; TLS when tcp_tls_cert and tcp_tls_key are set",
            "uid": "owner of the socket (0 = leave as is)",
            "max_recv_message_size": "largest accepted message, bytes",
        },
    )
    _table(
        lines,
        "debug",
        {"address": "", "level": "info", "format": "text"},
        {
            "address": "debug HTTP endpoint: absolute path = unix socket, else host:port; empty = off",
            "level": "trace|debug|info|warn|error",
            "format": "text|json",
        },
    )
    _table(
        lines,
        "metrics",
        {"address": "", "grpc_histogram": False},
        {
            "address": "Prometheus /v1/metrics on host:port (TCP only); empty = off",
            "grpc_histogram": "also export grpc_server_handling_seconds (a histogram per method)",
        },
    )
    _table(
        lines,
        "authorization",
        {"enabled": False},
        {
            "enabled": "namespace authorization (docs/authorization.md); false = every client of the socket "
            "may act in every namespace, as in containerd",
        },
    )
    lines.extend(
        [
            "  # one table per principal; a client matching none is denied (root and the daemon's own uid",
            "  # are unrestricted on the unix socket unless a principal lists them in uids):",
            "  # [[authorization.principals]]",
            '  #   name = "team-a"                     # for logs',
            "  #   uids = [1000]                       # unix-socket peers (SO_PEERCRED); gids likewise",
            '  #   tls_subjects = ["team-a.example"]   # CN or DNS SAN of a verified TLS client cert',
            '  #   namespaces = ["team-a", "team-a-*"] # glob patterns of the namespaces it may act in',
            "  #   manage_namespaces = false           # may create/update/delete them (labels too)",
        ]
    )
    lines.append("")
    lines.append('# [proxy_plugins.<name>] type = "content"|"snapshot", address = "<socket>"')
    lines.append("[proxy_plugins]")
    lines.append("")
    lines.append("[plugins]")
    for uri, values, docs in _plugin_defaults():
        _table(lines, f"plugins.{json.dumps(uri)}", values, docs)
    return "\n".join(lines) + "\n"


def dump_config(cfg: Config) -> str:
    """The effective configuration, with each plugin's defaults filled in."""
    from ctrd.plugin import discover

    regs = {d.registration.uri: d.registration for d in discover()}
    lines = [
        f"version = {cfg.version}",
        f"root = {toml_value(cfg.root)}",
        f"state = {toml_value(cfg.state)}",
        f"disabled_plugins = {toml_value(cfg.disabled_plugins)}",
        f"required_plugins = {toml_value(cfg.required_plugins)}",
    ]
    _table(lines, "grpc", cfg.grpc.model_dump(mode="json"), {})
    _table(lines, "debug", cfg.debug.model_dump(mode="json"), {})
    _table(lines, "metrics", cfg.metrics.model_dump(mode="json"), {})
    _table(lines, "authorization", {"enabled": cfg.authorization.enabled}, {})
    for principal in cfg.authorization.principals:
        _table(lines, "authorization.principals", principal.model_dump(mode="json"), {}, array=True)
    for name, pp in sorted(cfg.proxy_plugins.items()):
        _table(lines, f"proxy_plugins.{json.dumps(name)}", pp.model_dump(mode="json"), {})
    uris = sorted(set(cfg.plugins) | {u for u, r in regs.items() if r.config is not None})
    for uri in uris:
        reg = regs.get(uri)
        section = cfg.plugins.get(uri, {})
        try:
            values = (
                reg.config.model_validate(section).model_dump(mode="json") if reg and reg.config else section
            )
        except ValidationError as exc:
            source = cfg.plugin_sources.get(uri, "<config>")
            raise ConfigError(format_validation_error(exc, source, f"plugins.{json.dumps(uri)}")) from exc
        _table(lines, f"plugins.{json.dumps(uri)}", values, {})
    return "\n".join(lines) + "\n"
