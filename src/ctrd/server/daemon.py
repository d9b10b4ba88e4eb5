"""Daemon lifecycle: discover and initialise plugins, serve, shut down.

Plugins initialise in ``requires`` order; skipped and failed plugins are
recorded (introspection shows them), never fatal unless listed in
``required_plugins``. Plugins close in reverse init order.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from pydantic import ValidationError

from ctrd import errdefs
from ctrd.plugin import (
    DependencyCycle,
    Discovered,
    GrpcSettings,
    InitContext,
    Plugin,
    PluginSet,
    Registration,
    SkipPlugin,
    discover,
    order,
    types,
)
from ctrd.server.config import Config, ConfigError, format_validation_error

if TYPE_CHECKING:
    from ctrd.server.authz import Authorizer
    from ctrd.server.metrics import Metrics
    from ctrd.server.rootlock import RootLock

__all__ = ["ROOT_MODE", "STATE_MODE", "Daemon", "StartupError"]

log = logging.getLogger("ctrd")

ROOT_MODE: Final = 0o700
"""Mode of the root directory (set at every start): nobody else reaches the data under it."""

STATE_MODE: Final = 0o711
"""Mode of the state directory: others may traverse it to a socket whose own mode lets them in."""


class StartupError(Exception):
    """The daemon cannot start; the message says why."""


class Daemon:
    """One ctrd daemon: its plugins and its listeners."""

    def __init__(self, config: Config, registrations: Sequence[Registration] | None = None) -> None:
        self.config = config
        self._explicit = list(registrations) if registrations is not None else None
        self.plugins = PluginSet()
        self.distributions: dict[str, str] = {}
        self._closers: list[tuple[str, Any]] = []
        self._grpc: Any = None
        self._http: list[Any] = []
        #: the Prometheus registry and ``/v1/metrics`` app; ``None`` unless ``[metrics] address``
        self.metrics: Metrics | None = None
        self._dumps: set[asyncio.Task[None]] = set()
        self.started_at = time.time()
        self._stopped = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._root_lock: RootLock | None = None
        #: the signal that cut the drain short (a second SIGINT/SIGTERM), else ``None``
        self.forced_by: int | None = None

    # -- plugins -------------------------------------------------------------------------

    def _registrations(self) -> list[Registration]:
        if self._explicit is not None:
            return self._explicit
        found: list[Discovered] = discover()
        self.distributions = {d.registration.uri: d.distribution for d in found}
        regs = [d.registration for d in found]
        from ctrd.server.proxy_plugins import proxy_registrations

        regs.extend(proxy_registrations(self.config))
        return regs

    def _configs(self, regs: Iterable[Registration]) -> dict[str, Any]:
        cfg = self.config
        known = {r.uri for r in regs}
        for uri in cfg.plugins:
            if uri not in known:
                log.warning("config section [plugins.%r] names no registered plugin; ignored", uri)
        for uri in cfg.disabled_plugins:
            if uri not in known:
                log.warning("disabled plugin %s is not registered", uri)
        out: dict[str, Any] = {}
        errors: list[str] = []
        disabled = set(cfg.disabled_plugins)
        for r in regs:
            if r.uri in disabled:  # not loaded, so its section is not checked (as containerd)
                continue
            if r.config is None:
                if cfg.plugins.get(r.uri):
                    errors.append(
                        f'{cfg.plugin_sources.get(r.uri, "<config>")}: [plugins."{r.uri}"]: '
                        "this plugin takes no configuration"
                    )
                continue
            try:
                out[r.uri] = r.config.model_validate(cfg.plugins.get(r.uri, {}))
            except ValidationError as exc:
                errors.append(
                    format_validation_error(
                        exc, cfg.plugin_sources.get(r.uri, "<config>"), f'plugins."{r.uri}"'
                    )
                )
        if errors:
            raise ConfigError("; ".join(errors))
        return out

    async def load_plugins(self) -> None:
        """Initialise every enabled plugin. :raises StartupError, ConfigError:"""
        cfg = self.config
        regs = self._registrations()
        configs = self._configs(regs)
        try:
            ordered = order(regs, cfg.disabled_plugins)
        except DependencyCycle as exc:
            raise StartupError(str(exc)) from exc
        present_types = {r.type for r in ordered}
        root, state = Path(cfg.root), Path(cfg.state)
        props = {"grpc.address": cfg.grpc.address, "root": str(root), "state": str(state)}
        grpc = GrpcSettings(
            address=cfg.grpc.address,
            tcp_address=cfg.grpc.tcp_address,
            max_recv_message_size=cfg.grpc.max_recv_message_size,
            max_send_message_size=cfg.grpc.max_send_message_size,
        )
        for reg in ordered:
            p = Plugin(reg, config=configs.get(reg.uri))
            self.plugins.add(p)
            lacking = [
                t
                for t in reg.requires
                if t != types.ALL and t in present_types and not any(q.ok for q in self.plugins.by_type(t))
            ]
            if lacking:
                p.error = errdefs.FailedPrecondition(
                    "no working plugin of required type " + ", ".join(lacking)
                )
                log.warning("failed to load plugin %s: %s", reg.uri, p.error)
                continue
            ic: InitContext[Any] = InitContext(
                p, self.plugins, root=root, state=state, config=p.config, properties=props, grpc=grpc
            )
            log.debug("loading plugin %s", reg.uri)
            try:
                p.instance = await reg.init(ic)
            except SkipPlugin as exc:
                p.error = exc
                log.info("skip loading plugin %s: %s", reg.uri, exc)
            except Exception as exc:
                p.error = exc
                log.warning("failed to load plugin %s: %s", reg.uri, exc)
            else:
                self._closers.append((reg.uri, p.instance))
        missing = [u for u in cfg.required_plugins if self.plugins.get(u) is None]
        if missing:
            raise StartupError(f"required plugin {missing} not included")
        for uri in cfg.required_plugins:
            p2 = self.plugins.get(uri)
            assert p2 is not None
            if not p2.ok:
                raise StartupError(f"load required plugin {uri}: {p2.error}")

    async def close_plugins(self) -> None:
        """Close plugin instances in reverse init order."""
        while self._closers:
            uri, inst = self._closers.pop()
            for name in ("aclose", "close"):
                fn = getattr(inst, name, None)
                if fn is None or not callable(fn):
                    continue
                try:
                    res = fn()
                    if inspect.isawaitable(res):
                        await res
                except Exception:
                    log.exception("error closing plugin %s", uri)
                break

    # -- serving -------------------------------------------------------------------------

    def servables(self) -> list[Any]:
        """Instances of working gRPC plugins."""
        return [
            p.instance
            for p in self.plugins.by_type(types.GRPC)
            if p.ok and hasattr(p.instance, "__mapping__")
        ]

    async def start(self) -> None:
        """Load plugins, then listen. The socket appears only when everything is ready.

        Listeners start in this order: ``[metrics]``, ``[debug]``, the TCP address,
        then the unix socket, so a failing listener leaves no socket behind; on any
        failure whatever was started is stopped and the plugins closed again.
        """
        from ctrd.wire.server import GrpcListener

        cfg = self.config
        try:
            cfg.validate_paths()
        except ConfigError as exc:
            raise StartupError(str(exc)) from exc
        tls = self._tls()  # before anything opens: a bad certificate path is a start-up error
        # as containerd: the root is the owner's alone (also fixes up a root an older ctrd
        # made 0711), the state directory can be traversed to reach the sockets
        for d, mode in ((cfg.root, ROOT_MODE), (cfg.state, STATE_MODE)):
            os.makedirs(d, mode=mode, exist_ok=True)
            os.chmod(d, mode)
        self._lock_root()
        t0 = time.monotonic()
        try:
            await self.load_plugins()
            if cfg.metrics.address:
                from ctrd.server.metrics import Metrics

                self.metrics = Metrics(self.plugins, grpc_histogram=cfg.metrics.grpc_histogram)
            self._grpc = GrpcListener(
                self.servables(),
                max_recv=cfg.grpc.max_recv_message_size,
                max_send=cfg.grpc.max_send_message_size,
                observer=self.metrics.grpc if self.metrics is not None else None,
                authorizer=self._authorizer(),
            )
            for starter in self._http_starters():
                self._http.append(await starter())
            if cfg.grpc.tcp_address:
                try:
                    await self._grpc.start_tcp(cfg.grpc.tcp_address, tls=tls)
                except (errdefs.Error, OSError, ValueError) as exc:
                    raise StartupError(f"failed to listen on {cfg.grpc.tcp_address}: {exc}") from exc
                log.info("serving... address=%s", cfg.grpc.tcp_address)
            try:
                await self._grpc.start_unix(cfg.grpc.address, uid=cfg.grpc.uid, gid=cfg.grpc.gid)
            except (errdefs.Error, OSError) as exc:
                raise StartupError(f"failed to listen on {cfg.grpc.address}: {exc}") from exc
        except BaseException:
            # whatever initialised is closed again (reverse order), e.g. when a required
            # plugin failed or the socket is in use
            await self.stop()
            raise
        log.info("serving... address=%s", cfg.grpc.address)
        log.info("ctrd successfully booted in %.6fs", time.monotonic() - t0)

    def _authorizer(self) -> Authorizer | None:
        """The :class:`~ctrd.server.authz.Authorizer` of ``[authorization]``; ``None`` when off.

        Superusers: root and the daemon's own uid (both can read the database anyway).
        """
        auth = self.config.authorization
        if not auth.enabled:
            return None
        from ctrd.server.authz import Authorizer

        try:
            policy = auth.policy(superusers=sorted({0, os.geteuid()}))
        except ValueError as exc:
            raise StartupError(f"[authorization]: {exc}") from exc
        log.info(
            "authorization enabled: %d principal(s); unrestricted uids on the unix socket: %s",
            len(policy.principals),
            ",".join(str(u) for u in sorted(policy.superusers)) or "none",
        )
        g = self.config.grpc
        if g.tcp_address and not (g.tcp_tls_cert and g.tcp_tls_key and g.tcp_tls_ca):
            log.warning(
                "authorization: the TCP listener %s does not verify client certificates "
                "(tcp_tls_cert, tcp_tls_key and tcp_tls_ca are needed): its clients match no principal",
                g.tcp_address,
            )
        return Authorizer(policy)

    def _lock_root(self) -> None:
        """Hold ``<root>/ctrd.lock`` until :meth:`stop` (:mod:`ctrd.server.rootlock`).

        :raises StartupError: another daemon holds the root (the message names its pid).
        """
        from ctrd.server.rootlock import RootInUse, RootLock

        lock = RootLock(self.config.root)
        try:
            lock.acquire()
        except RootInUse as exc:
            raise StartupError(str(exc)) from None
        except OSError as exc:
            raise StartupError(f"cannot lock {lock.path}: {exc.strerror or exc}") from None
        self._root_lock = lock

    def _http_starters(self) -> list[Callable[[], Awaitable[Any]]]:
        """What listens before the gRPC socket: ``[metrics]``, then ``[debug]`` (each when configured).

        Each starter returns an object whose ``cleanup()`` :meth:`stop` awaits.
        """
        starters: list[Callable[[], Awaitable[Any]]] = []
        cfg = self.config
        metrics = self.metrics
        if metrics is not None:
            starters.append(lambda: self._serve_http("metrics", metrics.app(), cfg.metrics.address))
        if cfg.debug.address:
            from ctrd.server.debug import DebugApp

            starters.append(
                lambda: self._serve_http("debug", DebugApp(self).app(), cfg.debug.address, unix=True)
            )
        return starters

    @property
    def grpc_inflight(self) -> int | None:
        """gRPC calls being served now (``None`` while not listening)."""
        return self._grpc.inflight if self._grpc is not None else None

    @property
    def http_addresses(self) -> dict[str, str]:
        """Where the HTTP endpoints listen, by name (``metrics``, ``debug``): the bound address."""
        return {h.name: h.bound for h in self._http if hasattr(h, "bound") and hasattr(h, "name")}

    async def _serve_http(self, name: str, app: Any, address: str, *, unix: bool = False) -> Any:
        from ctrd.server.http import HttpListener

        listener = HttpListener(name, app, address, unix=unix)
        try:
            await listener.start()
        except (errdefs.Error, OSError) as exc:
            raise StartupError(f"failed to listen on {address} ({name}): {exc}") from exc
        return listener

    def dump_stacks(self) -> None:
        """Log every task's and thread's stack (SIGUSR1, like containerd's goroutine dump)."""
        from ctrd.server.pprof import log_stack_dump

        task = asyncio.get_running_loop().create_task(log_stack_dump(), name="ctrd-stack-dump")
        self._dumps.add(task)
        task.add_done_callback(self._dumps.discard)

    def _tls(self) -> ssl.SSLContext | None:
        """The TLS context of the TCP listener (``None``: plain TCP or no TCP address).

        :raises StartupError: a certificate, key or CA file cannot be read or used
            (the message names the key and the file).
        """
        g = self.config.grpc
        if not (g.tcp_address and g.tcp_tls_cert and g.tcp_tls_key):
            return None
        files = (
            ("tcp_tls_cert", g.tcp_tls_cert),
            ("tcp_tls_key", g.tcp_tls_key),
            ("tcp_tls_ca", g.tcp_tls_ca),
        )
        for key, path in files:
            if not path:
                continue
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise StartupError(f"[grpc] {key} {path}: {exc.strerror or exc}") from None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ctx.load_cert_chain(g.tcp_tls_cert, g.tcp_tls_key)
        except (ssl.SSLError, OSError) as exc:
            raise StartupError(
                f"[grpc] tcp_tls_cert {g.tcp_tls_cert} / tcp_tls_key {g.tcp_tls_key}: {exc}"
            ) from None
        if g.tcp_tls_ca:
            try:
                ctx.load_verify_locations(g.tcp_tls_ca)
            except (ssl.SSLError, OSError) as exc:
                raise StartupError(f"[grpc] tcp_tls_ca {g.tcp_tls_ca}: {exc}") from None
            ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.set_alpn_protocols(["h2"])
        return ctx

    async def stop(self, drain_timeout: float = 10.0) -> None:
        """Stop listening, drain in-flight calls, close plugins in reverse order."""
        # Endless streams (event subscriptions) would hold the drain for its whole
        # bound: end them first, cleanly, so they finish like any other call.
        for p in self.plugins.by_type(types.EVENT):
            closer = getattr(p.instance, "close", None) if p.ok else None
            if callable(closer):
                try:
                    res = closer()
                    if inspect.isawaitable(res):
                        await res
                except Exception:
                    log.exception("error closing event plugin %s", p.uri)
        if self._grpc is not None:
            await self._grpc.stop(drain_timeout)
            self._grpc = None
        for h in reversed(self._http):
            try:
                await h.cleanup()
            except Exception:
                log.exception("error stopping http listener")
        self._http.clear()
        await self.close_plugins()
        if self._root_lock is not None:
            self._root_lock.release()
            self._root_lock = None
        self._stopped.set()

    def request_stop(self) -> None:
        """Ask :meth:`run` to stop (signal handlers call this)."""
        self._stop_requested.set()

    def _on_stop_signal(self, signo: int) -> None:
        """SIGINT/SIGTERM: the first one stops gracefully, another one during the stop cuts the drain."""
        if not self._stop_requested.is_set():
            self._stop_requested.set()
            return
        if self.forced_by is not None:
            return
        self.forced_by = signo
        import signal

        inflight = self.grpc_inflight or 0
        log.warning(
            "received %s while stopping: not waiting for %d in-flight call(s)",
            signal.Signals(signo).name,
            inflight,
        )
        if self._grpc is not None:
            self._grpc.cut_drain()

    async def run(self) -> None:
        """Start, serve until SIGINT/SIGTERM (or :meth:`request_stop`), then stop.

        SIGUSR1 (from before start-up) logs every task's and thread's stack. The
        stop drains in-flight calls (up to its bound); a second SIGINT/SIGTERM meanwhile
        ends the wait: the remaining calls are cancelled, the plugins closed as usual,
        and :attr:`forced_by` tells the caller which signal did it (the exit status is then
        non-zero).
        """
        import signal

        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, self.dump_stacks)
        try:
            await self.start()
            # What start-up built (modules, config, plugins) lives as long as the daemon:
            # move it out of the collector's generations so full collections skip it.
            gc.freeze()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._on_stop_signal, sig)
            try:
                await self._stop_requested.wait()
                log.info("stopping ctrd")
            finally:
                try:
                    await self.stop()
                finally:
                    for sig in (signal.SIGINT, signal.SIGTERM):
                        loop.remove_signal_handler(sig)
        finally:
            loop.remove_signal_handler(signal.SIGUSR1)
