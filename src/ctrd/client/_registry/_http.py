"""HTTP to a registry on aiohttp: TLS per endpoint, token and basic auth, retries, errors.

One :class:`RegistrySession` serves one pull or push. :meth:`RegistrySession.request`
sends a request to an endpoint, answers a ``401`` challenge (``Bearer``: a token from the
challenge's realm for the repository scopes, with the host's credentials when there are
any; ``Basic``: the credentials), retries what a retry can fix (5xx, 408, 429, reset or
refused connections, timeouts) with a short backoff, and turns what it cannot into
:mod:`ctrd.errdefs` errors (:func:`status_error`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import random
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final
from urllib.parse import urlencode, urljoin, urlsplit

import aiohttp

from ctrd import errdefs
from ctrd.client._registry._hosts import Credentials, RegistryHost, RegistryOptions, lookup_credentials
from ctrd.limits import echo

__all__ = ["RETRY_STATUSES", "Challenge", "RegistrySession", "parse_challenges", "status_error"]

log = logging.getLogger("ctrd.client.registry")

RETRY_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})
"""Statuses a request is retried after (with its backoff)."""

_BACKOFF_START: Final = 0.1
_BACKOFF_MAX: Final = 2.0
_ERROR_BODY_MAX: Final = 64 << 10
_TOKEN_BODY_MAX: Final = 1 << 20
_DEFAULT_TOKEN_LIFE: Final = 60.0


@dataclasses.dataclass(frozen=True, slots=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: its scheme (lower case) and parameters."""

    scheme: str
    params: Mapping[str, str]


_TOKEN68 = r"[A-Za-z0-9._~+/-]+=*"
_PARAM_RE: Final = re.compile(r'\s*([A-Za-z0-9!#$%&\'*+.^_`|~-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)\s*,?')
_SCHEME_RE: Final = re.compile(r"\s*,?\s*([A-Za-z0-9!#$%&'*+.^_`|~-]+)(?:\s+|$)")


def parse_challenges(header: str) -> list[Challenge]:
    """The challenges of a ``WWW-Authenticate`` value (``Bearer realm="…",service="…"``)."""
    out: list[Challenge] = []
    pos = 0
    while pos < len(header):
        m = _SCHEME_RE.match(header, pos)
        if not m:
            break
        scheme = m.group(1).lower()
        pos = m.end()
        params: dict[str, str] = {}
        while pos < len(header):
            p = _PARAM_RE.match(header, pos)
            if not p:
                t = re.match(rf"\s*{_TOKEN68}\s*,?", header[pos:])
                if t and not params:
                    pos += t.end()
                break
            value = p.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            params[p.group(1).lower()] = value
            pos = p.end()
        out.append(Challenge(scheme, params))
    return out


def _registry_message(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return echo(text.splitlines()[0]) if text and "<" not in text[:1] else ""
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, list):
        return ""
    parts = []
    for e in errors[:4]:
        if isinstance(e, dict):
            code, message = e.get("code", ""), e.get("message", "")
            parts.append(": ".join(str(x) for x in (code, message) if x))
    return echo("; ".join(p for p in parts if p), 512)


def status_error(status: int, reason: str, what: str, body: bytes = b"") -> errdefs.Error:
    """The :mod:`ctrd.errdefs` error for a registry's final answer *status* to *what*."""
    detail = _registry_message(body)
    text = f"{what}: {status} {reason}" + (f" ({detail})" if detail else "")
    if status == 401:
        return errdefs.PermissionDenied(f"{text}: authentication required or refused")
    if status == 403:
        return errdefs.PermissionDenied(text)
    if status == 404:
        return errdefs.NotFound(text)
    if status in (405, 501):
        return errdefs.Unimplemented(text)
    if status == 409:
        return errdefs.AlreadyExists(text) if "exist" in detail.lower() else errdefs.FailedPrecondition(text)
    if status == 416:
        return errdefs.OutOfRange(text)
    if status in RETRY_STATUSES or status >= 500:
        return errdefs.Unavailable(text)
    if 400 <= status < 500:
        return errdefs.InvalidArgument(text)
    return errdefs.Unknown(f"{what}: unexpected status {status} {reason}")


def transport_error(exc: BaseException, what: str) -> errdefs.Error:
    """The :mod:`ctrd.errdefs` error for a failure to talk to a registry at all."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return errdefs.Unavailable(f"{what}: TLS certificate not trusted: {exc.certificate_error}")
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
        return errdefs.Unavailable(f"{what}: TLS failed: {exc}")
    if isinstance(exc, TimeoutError):
        return errdefs.DeadlineExceeded(f"{what}: timed out")
    if isinstance(exc, aiohttp.InvalidURL):
        return errdefs.InvalidArgument(f"{what}: invalid URL {exc}")
    return errdefs.Unavailable(
        f"{what}: {type(exc).__name__}: {exc}" if str(exc) else f"{what}: {type(exc).__name__}"
    )


def retryable(exc: BaseException) -> bool:
    """Whether a request failing with *exc* may succeed when sent again."""
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError | aiohttp.InvalidURL):
        return False
    return isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError | TimeoutError)


async def backoff(attempt: int) -> None:
    """Sleep before retry *attempt* (1, 2, …): jittered, doubling from 0.1 s up to 2 s."""
    await asyncio.sleep(random.uniform(0.5, 1.0) * min(_BACKOFF_START * (2 ** (attempt - 1)), _BACKOFF_MAX))


@dataclasses.dataclass
class _HostAuth:
    challenge: Challenge | None = None
    tokens: dict[str, tuple[str, float]] = dataclasses.field(default_factory=dict)
    credentials: Credentials | None = None
    looked_up: bool = False


class RegistrySession:
    """The HTTP side of one pull or push (use as ``async with``)."""

    def __init__(self, options: RegistryOptions, domain: str) -> None:
        self.options = options
        self.domain = domain
        self._session: aiohttp.ClientSession | None = None
        self._ssl: dict[tuple[object, ...], ssl.SSLContext | bool] = {}
        self._auth: dict[str, _HostAuth] = {}
        self._auth_locks: dict[str, asyncio.Lock] = {}

    async def __aenter__(self) -> RegistrySession:
        o = self.options
        timeout = aiohttp.ClientTimeout(
            total=None, connect=o.connect_timeout, sock_connect=o.connect_timeout, sock_read=o.read_timeout
        )
        self._session = aiohttp.ClientSession(
            timeout=timeout,
            headers={"User-Agent": o.user_agent, "Accept-Encoding": "identity"},
            auto_decompress=False,
            trust_env=o.trust_env,
            connector=aiohttp.TCPConnector(limit=max(8, 2 * o.max_concurrent_downloads)),
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- TLS ---------------------------------------------------------------------------------

    def ssl_for(self, host: RegistryHost) -> ssl.SSLContext | bool:
        """The TLS settings of *host* (``True``: the defaults).

        :raises errdefs.InvalidArgument: a CA or client certificate file that cannot be loaded.
        """
        if host.scheme != "https":
            return True
        key = (host.host, host.ca_files, host.client_pairs, host.skip_verify)
        got = self._ssl.get(key)
        if got is not None:
            return got
        if not (host.ca_files or host.client_pairs or host.skip_verify):
            self._ssl[key] = True
            return True
        ctx = ssl.create_default_context()
        for ca in host.ca_files:
            try:
                ctx.load_verify_locations(cafile=ca)
            except (OSError, ssl.SSLError) as exc:
                raise errdefs.InvalidArgument(f"unable to load CA certificate {ca}: {exc}") from None
        for cert, keyfile in host.client_pairs:
            try:
                ctx.load_cert_chain(cert, keyfile or None)
            except (OSError, ssl.SSLError) as exc:
                raise errdefs.InvalidArgument(f"unable to load client certificate {cert}: {exc}") from None
        if host.skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        self._ssl[key] = ctx
        return ctx

    # -- auth --------------------------------------------------------------------------------

    def _host_auth(self, host: RegistryHost) -> _HostAuth:
        return self._auth.setdefault(host.host, _HostAuth())

    async def _credentials(self, host: RegistryHost) -> Credentials | None:
        state = self._host_auth(host)
        if not state.looked_up:
            state.credentials = await lookup_credentials(host.host, self.options)
            state.looked_up = True
        return state.credentials

    async def _authorization(self, host: RegistryHost, scopes: Sequence[str]) -> str | None:
        state = self._host_auth(host)
        ch = state.challenge
        if ch is None:
            return None
        if ch.scheme == "basic":
            creds = await self._credentials(host)
            if creds is None or not creds.username:
                return None
            raw = f"{creds.username}:{creds.secret}".encode()
            return "Basic " + base64.b64encode(raw).decode("ascii")
        if ch.scheme == "bearer":
            key = " ".join(sorted(set(scopes) | _challenge_scopes(ch)))
            lock = self._auth_locks.setdefault(host.host, asyncio.Lock())
            async with lock:
                cached = state.tokens.get(key)
                if cached is not None and cached[1] > time.monotonic():
                    return "Bearer " + cached[0]
                token, life = await self._fetch_token(host, ch, key.split(" ") if key else [])
                state.tokens[key] = (token, time.monotonic() + max(life - 5.0, 1.0))
                return "Bearer " + token
        return None

    async def _fetch_token(self, host: RegistryHost, ch: Challenge, scopes: list[str]) -> tuple[str, float]:
        realm = ch.params.get("realm", "")
        parts = urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise errdefs.PermissionDenied(
                f"{host.host}: bearer challenge with an invalid realm {echo(realm)!r}"
            )
        creds = await self._credentials(host)
        service = ch.params.get("service", "")
        what = f"token from {parts.scheme}://{parts.netloc}{parts.path} for {host.host}"
        assert self._session is not None
        tls = self.ssl_for(dataclasses.replace(host, scheme=parts.scheme, host=parts.netloc))
        for attempt in range(self.options.retries + 1):
            if attempt:
                await backoff(attempt)
            try:
                if creds is not None and not creds.username:
                    # an identity token: OAuth2 refresh-token grant
                    form = {"grant_type": "refresh_token", "refresh_token": creds.secret, "client_id": "ctrd"}
                    if service:
                        form["service"] = service
                    if scopes:
                        form["scope"] = " ".join(scopes)
                    ctx = self._session.post(realm, data=form, ssl=tls)
                else:
                    query = [("service", service)] if service else []
                    query += [("scope", s) for s in scopes]
                    url = realm + (("&" if parts.query else "?") + urlencode(query) if query else "")
                    headers = {}
                    if creds is not None:
                        raw = f"{creds.username}:{creds.secret}".encode()
                        headers["Authorization"] = "Basic " + base64.b64encode(raw).decode("ascii")
                    ctx = self._session.get(url, headers=headers, ssl=tls)
                async with ctx as resp:
                    body = await resp.content.read(_TOKEN_BODY_MAX)
                    if resp.status in RETRY_STATUSES and attempt < self.options.retries:
                        continue
                    if resp.status != 200:
                        raise status_error(resp.status, resp.reason or "", what, body)
            except errdefs.Error:
                raise
            except Exception as exc:
                if retryable(exc) and attempt < self.options.retries:
                    continue
                raise transport_error(exc, what) from None
            try:
                doc = json.loads(body)
            except ValueError:
                raise errdefs.PermissionDenied(f"{what}: the answer is not JSON") from None
            token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
            if not isinstance(token, str) or not token:
                raise errdefs.PermissionDenied(f"{what}: the answer holds no token")
            life = doc.get("expires_in")
            return token, float(life) if isinstance(life, int | float) and life > 0 else _DEFAULT_TOKEN_LIFE
        raise errdefs.Unavailable(f"{what}: no answer")  # pragma: no cover - the loop returns or raises

    def _challenged(self, host: RegistryHost, header: str, had_auth: bool, scopes: Sequence[str]) -> bool:
        """Record a 401's challenge; whether sending again with authorization may help."""
        challenges = parse_challenges(header)
        usable = [c for c in challenges if c.scheme in ("bearer", "basic")]
        if not usable:
            return False
        ch = next((c for c in usable if c.scheme == "bearer"), usable[0])
        state = self._host_auth(host)
        if had_auth:
            # refused with a token: only a challenge for other scopes is worth one more try
            retry = (
                ch.scheme == "bearer"
                and state.challenge is not None
                and state.challenge.scheme == "bearer"
                and (
                    ch.params.get("error") == "insufficient_scope"
                    or bool(_challenge_scopes(ch) - set(scopes))
                )
            )
            if retry:
                state.challenge = ch
                state.tokens.clear()
            return retry
        state.challenge = ch
        return True

    # -- requests ----------------------------------------------------------------------------

    def url(self, host: RegistryHost, repo: str, *parts: str, query: Mapping[str, str] | None = None) -> str:
        """``<host's base>/<repo>/<parts…>``, with ``ns=<domain>`` for a mirror."""
        q = dict(query or {})
        if host.is_mirror_for(self.domain):
            q["ns"] = self.domain
        url = "/".join([host.base_url, repo, *parts])
        return url + ("?" + urlencode(q) if q else "")

    @contextlib.asynccontextmanager
    async def request(
        self,
        host: RegistryHost,
        method: str,
        url: str,
        what: str,
        *,
        scopes: Sequence[str],
        headers: Mapping[str, str] | None = None,
        body: Callable[[], Any] | None = None,
        ok: Iterable[int] = (200,),
        retry: bool = True,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send *method* *url* (with *body()* as its body, made anew for each attempt) and
        yield the response once its status is one of *ok*.

        :raises errdefs.Error: the final status (:func:`status_error`) or the transport
            failure (:func:`transport_error`), after the retries.
        """
        assert self._session is not None, "RegistrySession used outside async with"
        ok = frozenset(ok)
        tls = self.ssl_for(host)
        attempts = 0
        auth_rounds = 0
        while True:
            send = {k: ", ".join(v) for k, v in host.headers.items()}
            send.update(headers or {})
            authorization = await self._authorization(host, scopes)
            if authorization:
                send["Authorization"] = authorization
            try:
                resp = await self._session.request(
                    method, url, headers=send, data=body() if body else None, ssl=tls, allow_redirects=True
                )
            except errdefs.Error:
                raise
            except Exception as exc:
                if retry and retryable(exc) and attempts < self.options.retries:
                    attempts += 1
                    log.debug("%s: %s; retry %d", what, exc, attempts)
                    await backoff(attempts)
                    continue
                raise transport_error(exc, what) from None
            try:
                if resp.status == 401 and auth_rounds < 2:
                    header = resp.headers.get("WWW-Authenticate", "")
                    if self._challenged(host, header, bool(authorization), scopes):
                        auth_rounds += 1
                        resp.release()
                        continue
                if resp.status in ok:
                    yield resp
                    return
                if retry and resp.status in RETRY_STATUSES and attempts < self.options.retries:
                    attempts += 1
                    log.debug("%s: %d; retry %d", what, resp.status, attempts)
                    resp.release()
                    await backoff(attempts)
                    continue
                try:
                    err_body = await resp.content.read(_ERROR_BODY_MAX) if method != "HEAD" else b""
                except Exception:
                    err_body = b""
                if resp.status == 401 and not authorization and (await self._credentials(host)) is None:
                    raise errdefs.PermissionDenied(
                        f"{what}: 401 Unauthorized: authentication required, "
                        f"and there are no credentials for {host.host}"
                    )
                raise status_error(resp.status, resp.reason or "", what, err_body)
            finally:
                resp.release()

    @staticmethod
    def location(resp: aiohttp.ClientResponse) -> str:
        """The absolute URL of a response's ``Location`` header.

        :raises errdefs.Unknown: there is none.
        """
        loc = resp.headers.get("Location", "")
        if not loc:
            raise errdefs.Unknown(f"{resp.method} {resp.url}: {resp.status} without a Location header")
        return urljoin(str(resp.url), loc)


def _challenge_scopes(ch: Challenge) -> set[str]:
    raw = ch.params.get("scope", "")
    return {s for s in raw.split(" ") if s}
