"""A private OCI registry for tests: Debian's ``docker-registry`` (distribution 2.8).

:class:`Registry` runs ``docker-registry serve <dir>/config.yml`` on a free loopback port
with its storage in its own directory, optionally behind basic auth (an ``htpasswd`` file
of bcrypt hashes; needs the ``bcrypt`` package), token auth (a realm of yours) and TLS (a
certificate and key of yours). :meth:`Registry.access_log` parses the requests it served,
so a test can count what was downloaded::

    with running_registry() as reg:
        ...push, pull...
        assert reg.count("GET", "/blobs/") == 0

:mod:`ctrd.testing.images` builds and pushes test images to it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import secrets
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from ctrd.testing._process import START_TIMEOUT, DaemonError, DaemonProcess, short_tmpdir

__all__ = [
    "REGISTRY",
    "AccessEntry",
    "Registry",
    "TokenAuth",
    "htpasswd_line",
    "registry_available",
    "running_registry",
    "start_registry",
]

REGISTRY: Final = "/usr/bin/docker-registry"
"""Debian's registry binary (``apt-get install docker-registry``)."""

_LISTEN_RE: Final = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
_ACCESS_RE: Final = re.compile(
    r'^(?P<ip>\S+) - (?P<user>\S+) \[(?P<time>[^\]]+)\] "(?P<method>[A-Z]+) (?P<uri>\S+) [^"]*" '
    r"(?P<status>\d{3}) (?P<bytes>\d+|-)"
)


def registry_available(binary: str = REGISTRY) -> bool:
    """Whether Debian's ``docker-registry`` is installed."""
    return os.access(binary, os.X_OK)


def htpasswd_line(user: str, password: str) -> str:
    """An ``htpasswd`` line with a bcrypt hash (the only kind distribution accepts)."""
    import bcrypt  # a test dependency, needed only for basic auth

    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    return f"{user}:{hashed}"


@dataclasses.dataclass(frozen=True, slots=True)
class TokenAuth:
    """Token (bearer) auth: tokens from *realm*, JWTs signed by a key whose certificate
    chains to *root_cert_bundle* (a PEM file), for *service*, issued by *issuer*."""

    realm: str
    service: str
    issuer: str
    root_cert_bundle: str


@dataclasses.dataclass(frozen=True, slots=True)
class AccessEntry:
    """One request of the registry's access log."""

    method: str
    uri: str
    status: int
    size: int
    user: str = "-"

    @property
    def path(self) -> str:
        """The URI without its query."""
        return self.uri.split("?", 1)[0]


def _yaml_str(s: str | os.PathLike[str]) -> str:
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


class Registry(DaemonProcess):
    """``docker-registry serve <dir>/config.yml`` on ``127.0.0.1:<free port>``.

    :param htpasswd: user -> password: basic auth with these users.
    :param token: token auth (exclusive with *htpasswd*).
    :param tls: (certificate file, key file): serve HTTPS.
    :param directory: default: a fresh directory under ``/tmp``, removed on :meth:`stop`.
    """

    kind = "registry"

    def __init__(
        self,
        directory: Path | None = None,
        *,
        htpasswd: Mapping[str, str] | None = None,
        token: TokenAuth | None = None,
        tls: tuple[str, str] | None = None,
        binary: str = REGISTRY,
        keep: bool | None = None,
    ) -> None:
        if htpasswd and token:
            raise ValueError("a registry has one kind of auth")
        owned = directory is None
        directory = short_tmpdir("reg-t-") if directory is None else directory
        config_path = directory / "config.yml"
        super().__init__(
            directory,
            [binary, "serve", str(config_path)],
            "",
            config_path=config_path,
            keep=not owned if keep is None else keep,
        )
        self.htpasswd = dict(htpasswd or {})
        self.token = token
        self.tls = tls
        self.port = 0

    @property
    def storage(self) -> Path:
        """Where the registry keeps repositories and blobs."""
        return self.directory / "storage"

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>``, the registry part of references."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``http(s)://127.0.0.1:<port>``."""
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def config(self) -> str:
        """The ``config.yml`` written at start."""
        lines = [
            "version: 0.1",
            "log:",
            "  level: info",
            "  accesslog:",
            "    disabled: false",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {_yaml_str(self.storage)}",
            "  delete:",
            "    enabled: true",
            "  maintenance:",
            "    uploadpurging:",
            "      enabled: false",
            "http:",
            "  addr: 127.0.0.1:0",
            f"  secret: {secrets.token_hex(16)}",
        ]
        if self.tls:
            lines += [
                "  tls:",
                f"    certificate: {_yaml_str(self.tls[0])}",
                f"    key: {_yaml_str(self.tls[1])}",
            ]
        if self.htpasswd:
            lines += [
                "auth:",
                "  htpasswd:",
                "    realm: ctrd-test",
                f"    path: {_yaml_str(self.directory / 'htpasswd')}",
            ]
        if self.token:
            t = self.token
            lines += [
                "auth:",
                "  token:",
                f"    realm: {_yaml_str(t.realm)}",
                f"    service: {_yaml_str(t.service)}",
                f"    issuer: {_yaml_str(t.issuer)}",
                f"    rootcertbundle: {_yaml_str(t.root_cert_bundle)}",
            ]
        return "\n".join(lines) + "\n"

    def prepare(self) -> None:
        super().prepare()
        self.storage.mkdir(exist_ok=True)
        if self.htpasswd:
            entries = "".join(htpasswd_line(u, p) + "\n" for u, p in self.htpasswd.items())
            (self.directory / "htpasswd").write_text(entries)
        assert self.config_path is not None
        self.config_path.write_text(self.config())

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Wait for the port in the log, then for ``GET /v2/`` to answer (any status)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise DaemonError(f"registry exited with {self.proc.returncode}:\n{self.log()}")
            m = _LISTEN_RE.search(self.log())
            if m:
                self.port = int(m.group(1))
                if self._answers():
                    return
            if time.monotonic() > deadline:
                raise DaemonError(f"registry did not answer within {timeout}s:\n{self.log()}")
            time.sleep(0.02)

    def _answers(self) -> bool:
        ctx = ssl._create_unverified_context() if self.tls else None
        try:
            with urllib.request.urlopen(f"{self.url}/v2/", timeout=2, context=ctx):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    # -- observation ----------------------------------------------------------------------

    def access_log(self) -> list[AccessEntry]:
        """Every request served so far, in order."""
        out = []
        for line in self.log().splitlines():
            m = _ACCESS_RE.match(line)
            if m:
                size = m.group("bytes")
                out.append(
                    AccessEntry(
                        method=m.group("method"),
                        uri=m.group("uri"),
                        status=int(m.group("status")),
                        size=0 if size == "-" else int(size),
                        user=m.group("user"),
                    )
                )
        return out

    def mark(self) -> int:
        """The number of requests logged so far: pass it to :meth:`requests` as *since*."""
        return len(self.access_log())

    def requests(self, method: str = "", contains: str = "", *, since: int = 0) -> list[AccessEntry]:
        """Logged requests (after the first *since*) with *method* whose path contains *contains*."""
        return [
            e for e in self.access_log()[since:] if (not method or e.method == method) and contains in e.path
        ]

    def blob_gets(self, digest: str = "", *, since: int = 0) -> list[AccessEntry]:
        """Successful blob downloads (``GET …/blobs/<digest>``, 200 or 206)."""
        return [e for e in self.requests("GET", "/blobs/" + digest, since=since) if e.status in (200, 206)]

    def sync(self, timeout: float = 10.0) -> int:
        """Send a probe request and wait until it is logged, so that every request answered
        before is logged too (the log lags the answers a little); returns :meth:`mark`."""
        probe = secrets.token_hex(8)
        ctx = ssl._create_unverified_context() if self.tls else None
        with contextlib.suppress(urllib.error.HTTPError):
            urllib.request.urlopen(f"{self.url}/v2/?probe={probe}", timeout=5, context=ctx).close()
        self.wait_for(lambda: any(probe in e.uri for e in self.access_log()), timeout, "the probe in the log")
        return self.mark()


def start_registry(*, timeout: float = START_TIMEOUT, **options: Any) -> Registry:
    """Start a :class:`Registry` (*options* are its keyword arguments) and wait until it answers.

    :raises DaemonError: docker-registry is missing, exited, or did not answer in time.
    """
    binary = options.get("binary", REGISTRY)
    if not registry_available(binary):
        raise DaemonError(f"{binary} is not installed (apt-get install docker-registry)")
    reg = Registry(**options)
    reg.start(timeout)
    return reg


@contextlib.contextmanager
def running_registry(**options: Any) -> Iterator[Registry]:
    """:func:`start_registry` as a context manager: stopped and removed on exit."""
    reg = start_registry(**options)
    try:
        yield reg
    finally:
        reg.stop()
