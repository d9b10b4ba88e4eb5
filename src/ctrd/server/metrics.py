"""Prometheus metrics: containerd's ``grpc_server_*`` series and ctrd's ``ctrd_*`` content series.

Everything lives in one :class:`prometheus_client.CollectorRegistry` owned by
:class:`Metrics` (never the process-global default registry), served as
``GET /v1/metrics`` in the Prometheus text format on ``[metrics] address``.

* gRPC: :class:`GrpcMetrics` observes the gRPC server's calls
  (:class:`ctrd.wire.CallObserver`), so no service has metrics code. Names,
  labels and label values are go-grpc-prometheus's (what containerd exposes),
  and every registered method is pre-initialised at 0,
  ``grpc_server_handled_total`` for all 17 codes. Methods no servable registers
  (answered UNIMPLEMENTED by grpclib itself) are not counted, as in containerd.
* Content: :class:`ContentCollector` reads live counters of the loaded plugins
  when scraped (nothing is pushed); the per-namespace gauges come from one
  ``GROUP BY`` query, refreshed by the scrape handler (before the registry is
  rendered) at most every :data:`NAMESPACE_REFRESH` seconds, and only when the
  database changed.
* Process: ``process_*``, ``python_info``, ``python_gc_*``.

``docs/metrics.md`` documents every series.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any, Final

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from ctrd.plugin import PluginSet, types
from ctrd.wire.status import CODE_NAMES

__all__ = [
    "CONTENT_TYPE",
    "HANDLING_BUCKETS",
    "NAMESPACE_MAX_AGE",
    "NAMESPACE_REFRESH",
    "ContentCollector",
    "GrpcMetrics",
    "Metrics",
]

log = logging.getLogger("ctrd.metrics")

#: Go's ``prometheus.DefBuckets``, which containerd's handling-time histogram uses
HANDLING_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf"))

#: minimum seconds between two namespace usage queries
NAMESPACE_REFRESH: Final = 2.0

#: seconds after which the namespace usage is queried again even if the database reports no change
NAMESPACE_MAX_AGE: Final = 60.0

_LABELS: Final = ("grpc_type", "grpc_service", "grpc_method")

#: the classic text format, as Go's client serves it to a plain scrape
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


class _Method:
    """The series of one registered method, bound once (a call only increments)."""

    __slots__ = ("handled", "received", "seconds", "sent", "started")

    def __init__(self, m: GrpcMetrics, kind: str, service: str, method: str) -> None:
        lv = (kind, service, method)
        self.started = m.started_total.labels(*lv)
        self.received = m.received.labels(*lv)
        self.sent = m.sent.labels(*lv)
        self.handled = {name: m.handled.labels(*lv, name) for name in CODE_NAMES.values()}
        self.seconds = m.seconds.labels(*lv) if m.seconds is not None else None


class _Record:
    """One observed call (:class:`ctrd.wire.CallRecord`)."""

    __slots__ = ("_m", "_t0", "received", "sent")

    def __init__(self, m: _Method) -> None:
        self._m = m
        self._t0 = time.perf_counter()
        self.received = m.received.inc
        self.sent = m.sent.inc

    def finished(self, code: str) -> None:
        m = self._m
        m.handled[code].inc()
        if m.seconds is not None:
            m.seconds.observe(time.perf_counter() - self._t0)


class GrpcMetrics:
    """containerd's (go-grpc-prometheus) server metrics: the gRPC server's
    :class:`~ctrd.wire.CallObserver`.

    Every method the server serves is pre-initialised (:meth:`method`),
    ``grpc_server_handled_total`` for all 17 codes; :meth:`started` counts a call
    and returns its record, which counts its messages and its end.
    """

    def __init__(self, registry: CollectorRegistry, *, histogram: bool = False) -> None:
        self.started_total = Counter(
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
            _LABELS,
            registry=registry,
        )
        self.handled = Counter(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            (*_LABELS, "grpc_code"),
            registry=registry,
        )
        self.received = Counter(
            "grpc_server_msg_received_total",
            "Total number of RPC stream messages received on the server.",
            _LABELS,
            registry=registry,
        )
        self.sent = Counter(
            "grpc_server_msg_sent_total",
            "Total number of gRPC stream messages sent by the server.",
            _LABELS,
            registry=registry,
        )
        self.seconds: Histogram | None = None
        if histogram:
            self.seconds = Histogram(
                "grpc_server_handling_seconds",
                "Histogram of response latency (seconds) of gRPC that had been application-level "
                "handled by the server.",
                _LABELS,
                buckets=HANDLING_BUCKETS,
                registry=registry,
            )
        self.denied_total = Counter(
            "ctrd_authorization_denied",
            "RPCs refused by [authorization] (answered PERMISSION_DENIED).",
            ("grpc_service", "grpc_method"),
            registry=registry,
        )
        self._methods: dict[str, _Method] = {}

    def method(self, path: str, kind: str) -> None:
        """Pre-initialise the series of *path* (``/<service>/<method>``), a call of *kind*."""
        _, service, method = path.split("/", 2)
        self._methods[path] = _Method(self, kind, service, method)

    def started(self, path: str) -> _Record | None:
        """Count a call of *path*; its record (``None`` for a method never registered)."""
        m = self._methods.get(path)
        if m is None:
            return None
        m.started.inc()
        return _Record(m)

    def denied(self, path: str) -> None:
        """Count a call of *path* refused by authorization."""
        service, _, method = path.lstrip("/").partition("/")
        self.denied_total.labels(service, method).inc()


def _instances(plugins: PluginSet, type_: str) -> list[Any]:
    return [p.instance for p in plugins.by_type(type_) if p.ok and p.instance is not None]


def _num(obj: Any, *names: str) -> float | None:
    """The first of *names* that *obj* has as a number (plugins are read defensively)."""
    for name in names:
        v = getattr(obj, name, None)
        if isinstance(v, int | float) and not isinstance(v, bool):
            return float(v)
    return None


class _NamespaceUsage:
    """Blobs and bytes per namespace, from one query, cached.

    Queried again at a scrape only when the last result is at least *interval*
    seconds old and the database committed a write since (``db.mutations``), or
    the result is older than :data:`NAMESPACE_MAX_AGE`: an idle daemon's database
    is not scanned at every scrape.
    """

    SQL: Final = (
        "SELECT n.name, COUNT(b.digest), COALESCE(SUM(b.size), 0) FROM namespaces n "
        "LEFT JOIN blobs b ON b.namespace = n.name GROUP BY n.name"
    )

    def __init__(self, interval: float = NAMESPACE_REFRESH) -> None:
        self.interval = interval
        self.rows: list[tuple[str, int, int]] = []
        self._at: float | None = None
        self._mutations: object = None
        self._lock = asyncio.Lock()

    def _stale(self, db: Any) -> bool:
        if self._at is None:
            return True
        age = time.monotonic() - self._at
        if age < self.interval:
            return False
        mutations = getattr(db, "mutations", None)
        return mutations is None or mutations != self._mutations or age >= NAMESPACE_MAX_AGE

    async def refresh(self, db: Any) -> None:
        """Query again if stale (see above); on error keep the old rows."""
        async with self._lock:
            if not self._stale(db):
                return
            mutations = getattr(db, "mutations", None)
            try:
                rows = await db.view_all(self.SQL)
            except Exception as exc:
                log.warning("cannot read namespace usage for metrics: %s", exc)
                return
            self.rows = [(str(r[0]), int(r[1]), int(r[2])) for r in rows]
            self._at = time.monotonic()
            self._mutations = mutations


class ContentCollector(Collector):
    """The ``ctrd_*`` series, read from the live plugins at each scrape.

    A family whose source plugin is not loaded (no GC scheduler, no event
    exchange) is left out rather than reported as zero.
    """

    def __init__(self, plugins: PluginSet) -> None:
        self._plugins = plugins
        self.namespaces = _NamespaceUsage()

    def describe(self) -> list[Metric]:
        return []

    async def refresh(self) -> None:
        """Refresh the cached namespace usage (from the scrape handler, on the loop)."""
        for md in _instances(self._plugins, types.METADATA):
            db = getattr(md, "db", None)
            if db is not None:
                await self.namespaces.refresh(db)
                return

    def collect(self) -> Iterator[Metric]:
        yield from self._content()
        yield from self._gc()
        yield from self._events()

    def _content(self) -> Iterator[Metric]:
        stores = [getattr(md, "content", None) for md in _instances(self._plugins, types.METADATA)]
        stores = [s for s in stores if s is not None]
        if not stores:
            return

        def total(attr: str, field: str) -> float:
            return sum(_num(getattr(s, attr, None), field) or 0.0 for s in stores)

        for name, attr, field, doc in (
            (
                "ctrd_content_ingested_bytes",
                "content_stats",
                "ingested_bytes",
                "Bytes clients wrote into ingests (Write requests' data).",
            ),
            (
                "ctrd_content_read_bytes",
                "content_stats",
                "read_bytes",
                "Bytes of committed blobs read by clients (Read).",
            ),
            (
                "ctrd_content_commits",
                "content_stats",
                "commits",
                "Commits that admitted a blob into a namespace (AlreadyExists not counted).",
            ),
            ("ctrd_content_aborts", "content_stats", "aborts", "Ingests aborted (Abort)."),
            (
                "ctrd_sharing_admissions",
                "stats",
                "admissions",
                "Writers admitted by the shared policy without uploading (blob already in another "
                "namespace).",
            ),
            (
                "ctrd_sharing_saved_bytes",
                "stats",
                "saved_bytes",
                "Bytes not uploaded thanks to shared-policy admissions.",
            ),
            (
                "ctrd_isolated_reuploads",
                "stats",
                "isolated_reuploads",
                "Uploads under the isolated policy of blobs already on disk (bytes verified, no second "
                "copy).",
            ),
        ):
            yield CounterMetricFamily(name, doc, value=total(attr, field))

        blobs = GaugeMetricFamily(
            "ctrd_namespace_blobs", "Blobs committed in the namespace.", labels=["namespace"]
        )
        size = GaugeMetricFamily(
            "ctrd_namespace_bytes",
            "Sum of the sizes of the namespace's blobs (a blob shared by namespaces counts in each).",
            labels=["namespace"],
        )
        for ns, n, nbytes in self.namespaces.rows:
            blobs.add_metric([ns], n)
            size.add_metric([ns], nbytes)
        yield blobs
        yield size

    def _gc(self) -> Iterator[Metric]:
        scheds = [getattr(g, "scheduler", g) for g in _instances(self._plugins, types.GC)]
        scheds = [s for s in scheds if _num(s, "runs") is not None]
        if not scheds:
            return
        runs = sum(_num(s, "runs") or 0.0 for s in scheds)
        yield CounterMetricFamily("ctrd_gc_runs", "Garbage collections completed.", value=runs)
        yield SummaryMetricFamily(
            "ctrd_gc_duration_seconds",
            "Time spent in completed garbage collections.",
            count_value=int(runs),
            sum_value=sum(_num(s, "total_duration", "duration") or 0.0 for s in scheds),
        )
        yield CounterMetricFamily(
            "ctrd_gc_freed_bytes",
            "Bytes the garbage collector removed from the content store.",
            value=sum(_num(s, "freed_bytes") or 0.0 for s in scheds),
        )
        if any(_num(s, "failures") is not None for s in scheds):
            yield CounterMetricFamily(
                "ctrd_gc_failures",
                "Garbage collections that failed (retried later).",
                value=sum(_num(s, "failures") or 0.0 for s in scheds),
            )

    def _events(self) -> Iterator[Metric]:
        exchanges = [e for e in _instances(self._plugins, types.EVENT) if _num(e, "subscribers") is not None]
        if not exchanges:
            return
        yield GaugeMetricFamily(
            "ctrd_events_subscribers",
            "Current event subscribers (Events.Subscribe streams and in-process).",
            value=sum(_num(e, "subscribers") or 0.0 for e in exchanges),
        )
        yield CounterMetricFamily(
            "ctrd_events_dropped",
            "Event deliveries lost because a subscriber fell too far behind.",
            value=sum(_num(e, "dropped") or 0.0 for e in exchanges),
        )
        if any(_num(e, "published") is not None for e in exchanges):
            yield CounterMetricFamily(
                "ctrd_events_published",
                "Events published or forwarded.",
                value=sum(_num(e, "published") or 0.0 for e in exchanges),
            )


class Metrics:
    """The daemon's registry, and the ``/v1/metrics`` application over it.

    :param plugins: the daemon's plugins (read at each scrape).
    :param grpc_histogram: also keep ``grpc_server_handling_seconds``.
    """

    def __init__(self, plugins: PluginSet, *, grpc_histogram: bool = False) -> None:
        # Go's client has no ``*_created`` series; they would double every counter here.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        self.grpc = GrpcMetrics(self.registry, histogram=grpc_histogram)
        self.content = ContentCollector(plugins)
        self.registry.register(self.content)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    async def render(self) -> bytes:
        """The Prometheus text exposition (namespace usage refreshed first if stale)."""
        await self.content.refresh()
        return await asyncio.to_thread(generate_latest, self.registry)

    def app(self) -> web.Application:
        """``GET /v1/metrics``."""
        app = web.Application()
        app.router.add_get("/v1/metrics", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await self.render()
        resp = web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
        resp.enable_compression()
        return resp
