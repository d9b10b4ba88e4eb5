"""Where a registry is reached, and how: containerd's hosts configuration and credentials.

:class:`RegistryOptions` is what the SDK's pull and push take. For a reference's
domain, :func:`resolve_hosts` lists the endpoints to try, in order:

- with a *hosts_dir*, the first of ``<dir>/<host>_<port>_``, ``<dir>/<host:port>``,
  ``<dir>/_default`` that exists is read: its ``hosts.toml`` (the ``[host."<url>"]``
  tables in file order, then ``server``), or, without one, its Docker-style
  certificate files (``*.crt`` CAs, ``*.cert``/``*.key`` client pairs);
- otherwise (and for a ``hosts.toml`` without ``server``) the domain itself: ``docker.io``
  is ``https://registry-1.docker.io``, a loopback host is plain HTTP, anything else HTTPS
  (*plain_http* overrides both).

Each endpoint has capabilities (``pull``, ``resolve``, ``push``; all by default), TLS
settings (``ca``, ``client``, ``skip_verify``), extra headers and ``override_path``.

Credentials for a host come from the *credentials* callback, else from the Docker
config file's ``auths`` (``$DOCKER_CONFIG/config.json``, ``~/.docker/config.json``).
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import inspect
import ipaddress
import json
import os
import tomllib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeAlias
from urllib.parse import urlsplit

from ctrd import errdefs
from ctrd.limits import echo

__all__ = [
    "Capability",
    "Credentials",
    "CredentialsCallback",
    "RegistryHost",
    "RegistryOptions",
    "docker_config_credentials",
    "is_localhost",
    "load_hosts_dir",
    "lookup_credentials",
    "resolve_hosts",
]

_DOCKER_HUB: Final = "docker.io"
_DOCKER_HUB_HOST: Final = "registry-1.docker.io"
_DOCKER_HUB_KEYS: Final = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", _DOCKER_HUB_HOST)


class Capability(enum.Flag):
    """What an endpoint may be used for (``hosts.toml``'s ``capabilities``)."""

    PULL = enum.auto()
    RESOLVE = enum.auto()
    PUSH = enum.auto()
    ALL = PULL | RESOLVE | PUSH


@dataclasses.dataclass(frozen=True, slots=True)
class Credentials:
    """A user name and secret for a registry; an empty *username* with a secret is an
    identity (refresh) token, as Docker's ``identitytoken``."""

    username: str
    secret: str

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, secret=<hidden>)"


CredentialsCallback: TypeAlias = Callable[
    [str], "Credentials | tuple[str, str] | Awaitable[Credentials | tuple[str, str] | None] | None"
]
"""``credentials(host)`` -> ``Credentials``, ``(username, secret)`` or ``None`` (none for
that host); may be a coroutine function. *host* is the endpoint's ``host[:port]``."""


@dataclasses.dataclass(frozen=True, slots=True)
class RegistryHost:
    """One endpoint of a registry."""

    host: str
    """``host[:port]`` as in a URL."""
    scheme: str = "https"
    path: str = "/v2"
    capabilities: Capability = Capability.ALL
    ca_files: tuple[str, ...] = ()
    client_pairs: tuple[tuple[str, str], ...] = ()
    """(certificate file, key file; ``""``: the key is in the certificate file)."""
    skip_verify: bool = False
    headers: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict, hash=False)

    @property
    def base_url(self) -> str:
        """``scheme://host/path``, without a trailing slash."""
        return f"{self.scheme}://{self.host}{self.path.rstrip('/')}"

    def is_mirror_for(self, domain: str) -> bool:
        """Whether this endpoint serves *domain* for another host (requests then carry
        ``?ns=<domain>``, as containerd sends them to mirrors)."""
        return self.host != domain and not (domain == _DOCKER_HUB and self.host == _DOCKER_HUB_HOST)


@dataclasses.dataclass(frozen=True, slots=True)
class RegistryOptions:
    """How the SDK reaches registries (all optional).

    :param hosts_dir: a containerd-style hosts directory (``/etc/containerd/certs.d``).
    :param credentials: ``credentials(host)``, see :data:`CredentialsCallback`; asked first.
    :param docker_config: the Docker config file whose ``auths`` are used when the callback
        has none (``None``: ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``;
        ``""``: none).
    :param plain_http: ``True``: HTTP for default endpoints; ``False``: HTTPS even for loopback
        hosts; ``None``: HTTP for loopback hosts only (containerd's default).
    :param ca_file: a CA bundle trusted for every HTTPS endpoint (besides the system's).
    :param skip_verify: do not verify servers' certificates (tests only).
    :param headers: extra headers on every request.
    :param max_concurrent_downloads: blobs downloaded (or uploaded) at once (containerd's
        ``ctr`` default: 3).
    :param retries: attempts after the first for a request failing with a 5xx, 408 or 429
        status, a reset or refused connection, or a timeout; a broken download resumes
        where it stopped.
    :param connect_timeout: seconds to connect (and to finish a TLS handshake).
    :param read_timeout: seconds to wait for each read from a registry.
    :param user_agent: the ``User-Agent`` header.
    :param trust_env: honour ``HTTP(S)_PROXY``/``NO_PROXY`` (as containerd does).
    """

    hosts_dir: str | os.PathLike[str] | None = None
    credentials: CredentialsCallback | None = None
    docker_config: str | os.PathLike[str] | None = None
    plain_http: bool | None = None
    ca_file: str | os.PathLike[str] | None = None
    skip_verify: bool = False
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    max_concurrent_downloads: int = 3
    retries: int = 3
    connect_timeout: float = 30.0
    read_timeout: float = 60.0
    user_agent: str = "ctrd/0.1"
    trust_env: bool = True

    def __post_init__(self) -> None:
        if self.max_concurrent_downloads < 1:
            raise errdefs.InvalidArgument("max_concurrent_downloads must be at least 1")
        if self.retries < 0:
            raise errdefs.InvalidArgument("retries must not be negative")


def is_localhost(host: str) -> bool:
    """Whether *host* (``host[:port]``) is ``localhost`` or a loopback address."""
    name = host
    if name.startswith("["):
        name = name[1 : name.find("]")]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _host_dir_names(host: str) -> list[str]:
    names = []
    idx = host.rfind(":")
    if idx > 0 and not host.endswith("]"):
        names.append(f"{host[:idx]}_{host[idx + 1 :]}_")
    names += [host, "_default"]
    return names


def _abs(p: str, base: Path) -> str:
    return p if os.path.isabs(p) else str(base / p)


def _strings(value: object, what: str, where: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise errdefs.InvalidArgument(f"{where}: invalid {what} {echo(repr(value))}")


@dataclasses.dataclass
class _Parsed:
    host: str = ""
    scheme: str = ""
    path: str = "/v2"
    capabilities: Capability = Capability.ALL
    ca_files: tuple[str, ...] = ()
    client_pairs: tuple[tuple[str, str], ...] = ()
    skip_verify: bool | None = None
    headers: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)


def _parse_server(server: str, override: bool, out: _Parsed, where: str) -> None:
    url = server if server.startswith(("http://", "https://")) else "https://" + server
    parts = urlsplit(url)
    if not parts.netloc or parts.scheme not in ("http", "https"):
        raise errdefs.InvalidArgument(f"{where}: invalid server {echo(server)!r}")
    out.scheme, out.host = parts.scheme, parts.netloc
    path = os.path.normpath(parts.path) if parts.path else ""
    if path in ("", "/", "."):
        path = ""
    if not override and not path.endswith("/v2"):
        path += "/v2"
    out.path = path


def _parse_client(raw: object, base: Path, where: str) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    items = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else [None]
    for item in items:
        if isinstance(item, str):
            pairs.append((_abs(item, base), ""))
        elif isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item):
            pairs.append((_abs(item[0], base), _abs(item[1], base)))
        else:
            raise errdefs.InvalidArgument(f"{where}: invalid client {echo(repr(raw))}")
    return tuple(pairs)


def _parse_capabilities(caps: object, where: str) -> Capability:
    out = Capability(0)
    for name in _strings(caps, "capabilities", where):
        try:
            out |= Capability[name.upper()]
        except KeyError:
            raise errdefs.InvalidArgument(f"{where}: unknown capability {echo(name)!r}") from None
    return out


def _parse_entry(server: str, table: Mapping[str, Any], base: Path, where: str) -> _Parsed:
    out = _Parsed()
    override = table.get("override_path", False)
    if not isinstance(override, bool):
        raise errdefs.InvalidArgument(f"{where}: override_path must be a boolean")
    if server:
        _parse_server(server, override, out, where)
    if table.get("capabilities") is not None:
        out.capabilities = _parse_capabilities(table["capabilities"], where)
    if "ca" in table:
        out.ca_files = tuple(_abs(p, base) for p in _strings(table["ca"], "ca", where))
    if "client" in table:
        out.client_pairs = _parse_client(table["client"], base, where)
    skip = table.get("skip_verify")
    if skip is not None and not isinstance(skip, bool):
        raise errdefs.InvalidArgument(f"{where}: skip_verify must be a boolean")
    out.skip_verify = skip
    header = table.get("header", {})
    if not isinstance(header, dict):
        raise errdefs.InvalidArgument(f"{where}: header must be a table")
    out.headers = {k: tuple(_strings(v, f"header {k}", where)) for k, v in header.items()}
    return out


def _parse_hosts_toml(path: Path) -> list[_Parsed]:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise errdefs.InvalidArgument(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise errdefs.InvalidArgument(f"{path}: invalid TOML: {exc}") from None
    base = path.parent
    hosts: list[_Parsed] = []
    tables = doc.get("host", {})
    if not isinstance(tables, dict):
        raise errdefs.InvalidArgument(f"{path}: host must be a table of tables")
    for url, table in tables.items():  # TOML tables keep their order
        if not isinstance(table, dict):
            raise errdefs.InvalidArgument(f"{path}: host {echo(url)!r} must be a table")
        hosts.append(_parse_entry(url, table, base, f"{path} [host.{url!r}]"))
    server = doc.get("server", "")
    if not isinstance(server, str):
        raise errdefs.InvalidArgument(f"{path}: server must be a string")
    hosts.append(_parse_entry(server, doc, base, str(path)))
    return hosts


def _parse_cert_dir(directory: Path) -> list[_Parsed]:
    entry = _Parsed()
    cas: list[str] = []
    pairs: list[tuple[str, str]] = []
    for f in sorted(directory.iterdir()):
        if not f.is_file():
            continue
        if f.name.endswith(".crt"):
            cas.append(str(f))
        elif f.name.endswith(".cert"):
            key = f.with_name(f.name[: -len(".cert")] + ".key")
            pairs.append((str(f), str(key) if key.exists() else ""))
    entry.ca_files, entry.client_pairs = tuple(cas), tuple(pairs)
    return [entry]


def load_hosts_dir(hosts_dir: str | os.PathLike[str], domain: str) -> list[_Parsed] | None:
    """The entries configured for *domain* under *hosts_dir* (``None``: no directory for it)."""
    root = Path(hosts_dir)
    for name in _host_dir_names(domain):
        d = root / name
        if d.is_dir():
            toml_file = d / "hosts.toml"
            return _parse_hosts_toml(toml_file) if toml_file.exists() else _parse_cert_dir(d)
    return None


def resolve_hosts(domain: str, options: RegistryOptions) -> list[RegistryHost]:
    """The endpoints for *domain*, in the order they are tried (see the module docstring).

    :raises errdefs.InvalidArgument: a malformed ``hosts.toml``.
    """
    entries = load_hosts_dir(options.hosts_dir, domain) if options.hosts_dir is not None else None
    if entries is None:
        entries = [_Parsed()]
    last = entries[-1]
    if not last.host:
        if domain == _DOCKER_HUB:
            last.host, last.scheme = _DOCKER_HUB_HOST, "https"
        elif is_localhost(domain) and options.plain_http is not False:
            last.host, last.scheme = domain, "http"
        else:
            last.host, last.scheme = domain, "http" if options.plain_http else "https"
        last.path = "/v2"
    out = []
    extra_ca = (str(options.ca_file),) if options.ca_file else ()
    for e in entries:
        headers: dict[str, tuple[str, ...]] = {k: (v,) for k, v in options.headers.items()}
        headers.update(e.headers)
        out.append(
            RegistryHost(
                host=e.host,
                scheme=e.scheme or "https",
                path=e.path,
                capabilities=e.capabilities,
                ca_files=e.ca_files + extra_ca,
                client_pairs=e.client_pairs,
                skip_verify=options.skip_verify if e.skip_verify is None else e.skip_verify,
                headers=headers,
            )
        )
    return out


def _docker_config_path(option: str | os.PathLike[str] | None) -> Path | None:
    if option is not None:
        return Path(option) if str(option) else None
    env = os.environ.get("DOCKER_CONFIG")
    if env:
        return Path(env) / "config.json"
    return Path.home() / ".docker" / "config.json"


def _config_key_host(key: str) -> str:
    if "://" in key:
        key = urlsplit(key).netloc
    return key.split("/", 1)[0]


def docker_config_credentials(host: str, config: str | os.PathLike[str] | None = None) -> Credentials | None:
    """The credentials Docker's config file holds for *host* (``auths``: ``auth`` as base64
    ``user:password``, or ``username``/``password``, or ``identitytoken``); ``None`` when it
    has none or cannot be read.

    Docker Hub's entry (``https://index.docker.io/v1/``) serves ``docker.io`` and
    ``registry-1.docker.io``.
    """
    path = _docker_config_path(config)
    if path is None:
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    auths = doc.get("auths") if isinstance(doc, dict) else None
    if not isinstance(auths, dict):
        return None
    wanted = {host}
    if host in _DOCKER_HUB_KEYS:
        wanted.update(_config_key_host(k) for k in _DOCKER_HUB_KEYS)
    for key, entry in auths.items():
        if _config_key_host(key) not in wanted or not isinstance(entry, dict):
            continue
        token = entry.get("identitytoken")
        if isinstance(token, str) and token:
            return Credentials("", token)
        auth = entry.get("auth")
        if isinstance(auth, str) and auth:
            try:
                user, _, secret = base64.b64decode(auth).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                continue
            return Credentials(user, secret)
        name, password = entry.get("username"), entry.get("password")
        if isinstance(name, str) and isinstance(password, str) and name:
            return Credentials(name, password)
    return None


async def lookup_credentials(host: str, options: RegistryOptions) -> Credentials | None:
    """*options*' callback's answer for *host*, else the Docker config's."""
    if options.credentials is not None:
        got: Any = options.credentials(host)
        if inspect.isawaitable(got):
            got = await got
        if isinstance(got, Credentials):
            return got
        if isinstance(got, Sequence) and len(got) == 2 and all(isinstance(x, str) for x in got):
            return Credentials(got[0], got[1])
        if got is not None:
            raise errdefs.InvalidArgument(
                "credentials callback must return Credentials, (username, secret) or None"
            )
    return docker_config_credentials(host, options.docker_config)
