"""Daemon configuration: containerd's version-2 TOML layout.

``version`` (absent = 2; 3 is read the same way), ``imports``, ``root``,
``state``, ``[grpc]``, ``[debug]``, ``[metrics]``, ``[authorization]`` (ctrd's own),
``disabled_plugins``,
``required_plugins``, ``[plugins."<uri>"]`` (validated later by each plugin's
own model) and ``[proxy_plugins.<name>]``. Keys containerd has and ctrd does
not use are accepted and logged as ignored; any other unknown key is an error.
"""

from __future__ import annotations

import copy
import glob
import logging
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ctrd import authz

__all__ = [
    "AuthorizationConfig",
    "Config",
    "ConfigError",
    "DebugConfig",
    "GrpcConfig",
    "MetricsConfig",
    "PrincipalConfig",
    "ProxyPlugin",
    "default_paths",
    "format_validation_error",
    "load",
    "split_host_port",
]

log = logging.getLogger("ctrd.config")

DEFAULT_MAX_MSG: Final = 16 << 20

#: containerd keys ctrd accepts and ignores, per table ("" = top level)
IGNORED_KEYS: Final[Mapping[str, frozenset[str]]] = {
    "": frozenset({"temp", "oom_score", "plugin_dir", "ttrpc", "cgroup", "timeouts", "stream_processors"}),
    "debug": frozenset({"uid", "gid"}),
    "grpc": frozenset({"tcp_tls_common_name"}),
}


#: containerd plugin URIs whose config sections ctrd reads as those of its own plugin
PLUGIN_ALIASES: Final[Mapping[str, str]] = {
    "io.containerd.metadata.v1.bolt": "io.containerd.metadata.v1.sqlite",
}


class ConfigError(Exception):
    """The configuration cannot be used; the message names file, section and key."""


def split_host_port(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``; an empty host means every interface) as (host, port).

    :raises ValueError: no port, a port that is not a number in 0..65535, or a path.
    """
    host, sep, port = address.rpartition(":")
    if not sep or "/" in address or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{address!r} is not a TCP address host:port")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"{address!r} is not a TCP address host:port")
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{address!r}: an IPv6 host must be in brackets, as [::1]:port")
    return host, int(port)


def _explicit_host(address: str) -> None:
    """Refuse ``:port``: an empty host would listen on every interface without saying so.

    :raises ValueError: the host part of *address* is empty.
    """
    host, port = split_host_port(address)
    if not host:
        raise ValueError(
            f"{address!r} has no host, which would listen on every interface: write "
            f"0.0.0.0:{port} or [::]:{port} if that is meant, or 127.0.0.1:{port} for this machine only"
        )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GrpcConfig(_Strict):
    """``[grpc]``: where and how the gRPC server listens."""

    address: str = ""
    tcp_address: str = ""
    tcp_tls_cert: str = ""
    tcp_tls_key: str = ""
    tcp_tls_ca: str = ""
    uid: int = 0
    gid: int = 0
    max_recv_message_size: int = Field(default=DEFAULT_MAX_MSG, gt=0)
    max_send_message_size: int = Field(default=DEFAULT_MAX_MSG, gt=0)


class DebugConfig(_Strict):
    """``[debug]``: log level/format and the debug HTTP endpoint."""

    address: str = ""
    level: str = ""
    format: Literal["", "text", "json"] = ""

    @field_validator("level")
    @classmethod
    def _level(cls, v: str) -> str:
        ok = {"", "trace", "debug", "info", "warn", "warning", "error", "fatal", "panic"}
        if v.lower() not in ok:
            raise ValueError(f"unknown log level {v!r}")
        return v.lower()

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        if v and not os.path.isabs(v):
            try:
                split_host_port(v)
            except ValueError as exc:
                raise ValueError(f"must be an absolute unix socket path or a TCP host:port: {exc}") from None
            _explicit_host(v)
        return v


class MetricsConfig(_Strict):
    """``[metrics]``: Prometheus endpoint."""

    address: str = ""
    grpc_histogram: bool = False

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        if v:
            try:
                split_host_port(v)
            except ValueError as exc:
                raise ValueError(
                    f"must be a TCP host:port (metrics are served on TCP only, as in containerd): {exc}"
                ) from None
            _explicit_host(v)
        return v


_Id = Annotated[int, Field(ge=0, le=authz.MAX_UID)]


class PrincipalConfig(_Strict):
    """``[[authorization.principals]]``: who (any of uids, gids, TLS subjects) may act in which namespaces.

    Values are not coerced (``"true"`` is not a boolean here): a security setting takes TOML's own types.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str = Field(default="", max_length=64)
    uids: list[_Id] = Field(default_factory=list, max_length=authz.MAX_IDS)
    gids: list[_Id] = Field(default_factory=list, max_length=authz.MAX_IDS)
    tls_subjects: list[Annotated[str, Field(min_length=1, max_length=authz.MAX_SUBJECT_LENGTH)]] = Field(
        default_factory=list, max_length=authz.MAX_IDS
    )
    namespaces: list[str] = Field(default_factory=list, max_length=authz.MAX_PATTERNS)
    manage_namespaces: bool = False

    @field_validator("namespaces")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        for pattern in v:
            authz.validate_pattern(pattern)
        return v

    @model_validator(mode="after")
    def _someone(self) -> PrincipalConfig:
        if not (self.uids or self.gids or self.tls_subjects):
            raise ValueError("a principal needs at least one of uids, gids, tls_subjects")
        return self


class AuthorizationConfig(_Strict):
    """``[authorization]``: namespace authorization (docs/authorization.md); off by default."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    enabled: bool = False
    principals: list[PrincipalConfig] = Field(default_factory=list, max_length=authz.MAX_PRINCIPALS)

    def policy(self, *, superusers: Sequence[int] = (0,)) -> authz.Policy:
        """The policy of these principals (unnamed ones are called ``#<n>``, from 1)."""
        return authz.Policy(
            [
                authz.Principal(
                    name=p.name or f"#{i}",
                    uids=frozenset(p.uids),
                    gids=frozenset(p.gids),
                    tls_subjects=frozenset(p.tls_subjects),
                    namespaces=tuple(p.namespaces),
                    manage_namespaces=p.manage_namespaces,
                )
                for i, p in enumerate(self.principals, 1)
            ],
            superusers=superusers,
        )


class ProxyPlugin(_Strict):
    """``[proxy_plugins.<name>]``: a plugin served by another gRPC daemon."""

    type: str
    address: str
    namespace: str = "ctrd"
    platform: str = ""
    exports: dict[str, str] = Field(default_factory=dict)
    capabilities: list[str] = Field(default_factory=list)


class Config(_Strict):
    """The whole daemon configuration after merging imports."""

    version: int = 2
    root: str = ""
    state: str = ""
    imports: list[str] = Field(default_factory=list)
    disabled_plugins: list[str] = Field(default_factory=list)
    required_plugins: list[str] = Field(default_factory=list)
    grpc: GrpcConfig = Field(default_factory=GrpcConfig)
    debug: DebugConfig = Field(default_factory=DebugConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    authorization: AuthorizationConfig = Field(default_factory=AuthorizationConfig)
    plugins: dict[str, dict[str, Any]] = Field(default_factory=dict)
    proxy_plugins: dict[str, ProxyPlugin] = Field(default_factory=dict)
    #: which file last set each ``[plugins."<uri>"]`` section (for messages)
    plugin_sources: dict[str, str] = Field(default_factory=dict, exclude=True)

    @field_validator("version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v > 3:
            raise ValueError(f"expected containerd config version equal to or less than 3, got {v}")
        if v < 2:
            raise ValueError(f"config version {v} is not supported; use version = 2")
        return v

    def validate_paths(self) -> None:
        """Start-up checks on root/state/address. :raises ConfigError:"""
        if not self.root:
            raise ConfigError("root must be specified")
        if not self.state:
            raise ConfigError("state must be specified")
        if os.path.abspath(self.root) == os.path.abspath(self.state):
            raise ConfigError("root and state must be different paths")
        if not self.grpc.address:
            raise ConfigError("grpc address cannot be empty")

    def with_overrides(
        self, *, root: str | None = None, state: str | None = None, address: str | None = None
    ) -> Config:
        """A copy with command-line overrides applied."""
        upd: dict[str, Any] = {}
        if root:
            upd["root"] = root
        if state:
            upd["state"] = state
        if address:
            upd["grpc"] = self.grpc.model_copy(update={"address": address})
        return self.model_copy(update=upd)


def default_paths() -> tuple[str, str, str]:
    """(root, state, socket) defaults: system paths as root, else per-user ones."""
    if os.geteuid() == 0:
        return "/var/lib/ctrd", "/run/ctrd", "/run/ctrd/ctrd.sock"
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    run = os.environ.get("XDG_RUNTIME_DIR") or os.path.join(
        os.environ.get("TMPDIR", "/tmp"), f"ctrd-{os.geteuid()}"
    )
    state = os.path.join(run, "ctrd")
    return os.path.join(data, "ctrd"), state, os.path.join(state, "ctrd.sock")


def format_validation_error(err: ValidationError, source: str, section: str) -> str:
    """Render a pydantic error as ``<file>: [<section>] <key>: <problem>`` lines."""
    lines = []
    for e in err.errors():
        key = ".".join(str(x) for x in e["loc"]) or "(section)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        where = f"[{section}] " if section else ""
        lines.append(f"{source}: {where}{key}: {msg}")
    return "; ".join(lines)


def _merge(dst: dict[str, Any], src: Mapping[str, Any], *, top: bool) -> None:
    for k, v in src.items():
        if top and k in ("proxy_plugins", "timeouts", "stream_processors") and isinstance(v, dict):
            cur = dst.setdefault(k, {})
            for name, val in v.items():
                cur[name] = copy.deepcopy(val)
        elif isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v, top=False)
        elif isinstance(v, list) and isinstance(dst.get(k), list):
            for item in v:
                if item not in dst[k]:
                    dst[k].append(item)
        else:
            dst[k] = copy.deepcopy(v)


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from exc


def _load_tree(path: Path, seen: set[Path], sources: dict[str, str]) -> dict[str, Any]:
    path = path.resolve()
    seen.add(path)
    data = _read(path)
    for uri in data.get("plugins") or {}:
        sources[uri] = str(path)
    merged: dict[str, Any] = {}
    imports = data.get("imports") or []
    if not isinstance(imports, list) or not all(isinstance(i, str) for i in imports):
        raise ConfigError(f"{path}: imports: must be a list of paths")
    own = {k: v for k, v in data.items()}
    _merge(merged, own, top=True)
    for pattern in imports:
        full = pattern if os.path.isabs(pattern) else str(path.parent / pattern)
        matches = sorted(glob.glob(full)) if glob.has_magic(full) else [full]
        for m in matches:
            mp = Path(m).resolve()
            if mp in seen:
                continue
            sub = _load_tree(mp, seen, sources)
            _merge(merged, sub, top=True)
    return merged


def _strip_ignored(data: dict[str, Any], source: str) -> None:  # mutates data
    for section, keys in IGNORED_KEYS.items():
        table = data if not section else data.get(section)
        if not isinstance(table, dict):
            continue
        for k in sorted(keys & table.keys()):
            log.info(
                "ignoring containerd config key %s (not used by ctrd) in %s",
                f"{section}.{k}" if section else k,
                source,
            )
            del table[k]


def _apply_aliases(work: dict[str, Any], source: str, sources: dict[str, str] | None) -> None:
    """Read containerd's sections for plugins ctrd replaces as those of ctrd's (mutates *work*).

    ``[plugins."io.containerd.metadata.v1.bolt"]`` from an existing containerd
    config configures ctrd's metadata plugin: its keys (``content_sharing_policy``
    above all) must not be dropped. A key set differently in both sections is an
    error; so is a key ctrd's plugin does not have (its model says so later, naming
    the section).
    """
    for key in ("disabled_plugins", "required_plugins"):
        names = work.get(key)
        if isinstance(names, list):
            work[key] = [PLUGIN_ALIASES.get(n, n) if isinstance(n, str) else n for n in names]
    plugins = work.get("plugins")
    if not isinstance(plugins, dict):
        return
    for alias, uri in PLUGIN_ALIASES.items():
        section = plugins.pop(alias, None)
        if section is None:
            continue
        where = (sources or {}).pop(alias, source)
        if not isinstance(section, dict):
            raise ConfigError(f'{where}: [plugins."{alias}"]: must be a table')
        own = plugins.setdefault(uri, {})
        if not isinstance(own, dict):
            raise ConfigError(f'{where}: [plugins."{uri}"]: must be a table')
        for key, value in section.items():
            if key in own and own[key] != value:
                raise ConfigError(
                    f'{where}: [plugins."{alias}"] {key} = {value!r} contradicts '
                    f'[plugins."{uri}"] {key} = {own[key]!r} (ctrd reads both sections as one)'
                )
            own[key] = value
        if sources is not None:
            sources.setdefault(uri, where)
        log.info('reading [plugins."%s"] in %s as [plugins."%s"]', alias, where, uri)


def from_mapping(
    data: Mapping[str, Any], source: str = "<config>", sources: dict[str, str] | None = None
) -> Config:
    """Validate a parsed TOML mapping. :raises ConfigError:"""
    work: dict[str, Any] = copy.deepcopy(dict(data))
    if "plugin_sources" in work:  # an internal field, not a config key
        raise ConfigError(f"{source}: plugin_sources: unknown key")
    _strip_ignored(work, source)
    _apply_aliases(work, source, sources)
    try:
        cfg = Config.model_validate(work)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, "")) from exc
    for name in cfg.disabled_plugins + cfg.required_plugins:
        if "." not in name:
            raise ConfigError(f"{source}: invalid plugin URI {name!r} expect io.containerd.x.vx")
    if sources:
        cfg = cfg.model_copy(update={"plugin_sources": dict(sources)})
    return cfg


def load(path: str | os.PathLike[str] | None, *, sources: Sequence[str] = ()) -> Config:
    """Load *path* (with its imports) or, when ``None``, the embedded defaults.

    :raises ConfigError: unreadable file, bad TOML, unknown key, bad value.
    """
    del sources
    if path is None:
        root, state, sock = default_paths()
        return Config(root=root, state=state, grpc=GrpcConfig(address=sock))
    p = Path(path)
    srcs: dict[str, str] = {}
    data = _load_tree(p, set(), srcs)
    data.pop("imports", None)
    cfg = from_mapping(data, str(p), srcs)
    root, state, sock = default_paths()
    upd: dict[str, Any] = {}
    if "root" not in data:
        upd["root"] = root
    if "state" not in data:
        upd["state"] = state
    if not cfg.grpc.address:
        upd["grpc"] = cfg.grpc.model_copy(update={"address": sock})
    return cfg.model_copy(update=upd) if upd else cfg
