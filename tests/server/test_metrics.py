"""Prometheus metrics: ``/v1/metrics`` scraped over its real TCP socket after real gRPC calls.

In-process daemons (real unix socket, real HTTP listener, the test's event loop)
check the gRPC series (pre-initialisation, codes of handler errors, cancelled
streams and deadlines, unknown methods, the optional histogram) and the
``ctrd_*`` content series under both sharing policies. Subprocess tests go
through the ``daemon`` fixture. Every scrape is parsed with prometheus_client's
parser and compared with exact deltas.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import shutil
import socket
import time
import urllib.request
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest
from _daemon import Launcher, run_ctr, run_sync, short_tmpdir
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from prometheus_client.parser import text_string_to_metric_families

from ctrd import errdefs, namespaces
from ctrd.api.containerd.services.content import v1 as content_api
from ctrd.api.containerd.services.events import v1 as events_api
from ctrd.api.google.protobuf import Empty
from ctrd.client import RemoteContentStore
from ctrd.content.helpers import read_blob, write_blob
from ctrd.plugin import Plugin, PluginSet, Registration
from ctrd.server.config import Config, ConfigError, DebugConfig, GrpcConfig, MetricsConfig, from_mapping
from ctrd.server.daemon import Daemon, StartupError
from ctrd.server.metrics import HANDLING_BUCKETS, ContentCollector, Metrics
from ctrd.wire.server import KINDS as GRPC_TYPES
from ctrd.wire.status import CODE_NAMES

CONTENT = "containerd.services.content.v1.Content"
WRITE_PATH = f"/{CONTENT}/Write"

Key = tuple[str, frozenset[tuple[str, str]]]


def parse(text: str) -> dict[Key, float]:
    """Every sample of a scrape, by (sample name, labels)."""
    out: dict[Key, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def key(name: str, **labels: str) -> Key:
    return name, frozenset(labels.items())


def grpc(name: str, method: str, type_: str = "unary", service: str = CONTENT, **more: str) -> Key:
    return key(name, grpc_type=type_, grpc_service=service, grpc_method=method, **more)


def handled(method: str, code: str, type_: str = "unary", service: str = CONTENT) -> Key:
    return grpc("grpc_server_handled_total", method, type_, service, grpc_code=code)


def delta(before: Mapping[Key, float], after: Mapping[Key, float]) -> dict[Key, float]:
    """``grpc_*`` and ``ctrd_*`` series whose value changed (a new series counts from 0).

    ``ctrd_gc_*`` are left out: the GC scheduler runs in the background on its own timer.
    """
    return {
        k: v - before.get(k, 0.0)
        for k, v in after.items()
        if k[0].startswith(("grpc_", "ctrd_")) and not k[0].startswith("ctrd_gc_") and v != before.get(k, 0.0)
    }


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


MISSING = digest(b"not stored anywhere")

#: blobs written here are GC roots: no lease holds them, and the collector must not take them
ROOT = {"containerd.io/gc.root": "test"}


# -- in-process daemon ------------------------------------------------------------------------


class Running:
    def __init__(self, daemon: Daemon, sock: str) -> None:
        self.daemon = daemon
        self.sock = sock
        self.url = f"http://{daemon.http_addresses['metrics']}/v1/metrics"
        assert daemon.metrics is not None
        daemon.metrics.content.namespaces.interval = 0.0  # no caching between scrapes here

    async def scrape(self) -> dict[Key, float]:
        async with aiohttp.ClientSession() as s, s.get(self.url) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            return parse(await resp.text())

    @contextlib.asynccontextmanager
    async def store(self, namespace: str) -> AsyncIterator[RemoteContentStore]:
        ch = Channel(path=self.sock)
        try:
            yield RemoteContentStore(ch, namespace=namespace, timeout=10)
        finally:
            ch.close()


@contextlib.asynccontextmanager
async def running(
    *, histogram: bool = False, policy: str = "shared", metrics: str = "127.0.0.1:0"
) -> AsyncIterator[Running]:
    tmp = short_tmpdir()
    sock = str(tmp / "s.sock")
    cfg = Config(
        root=str(tmp / "root"),
        state=str(tmp / "state"),
        grpc=GrpcConfig(address=sock),
        metrics=MetricsConfig(address=metrics, grpc_histogram=histogram),
        plugins={"io.containerd.metadata.v1.sqlite": {"content_sharing_policy": policy}},
    )
    d = Daemon(cfg)
    await d.start()
    try:
        yield Running(d, sock)
    finally:
        await d.stop(drain_timeout=2.0)
        shutil.rmtree(tmp, ignore_errors=True)


async def wait_for(pred: Any, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


# -- gRPC series ------------------------------------------------------------------------------


async def test_every_registered_method_is_preinitialised_at_zero() -> None:
    async with running() as r:
        m = await r.scrape()
        methods = {path: h.cardinality for s in r.daemon.servables() for path, h in s.__mapping__().items()}
        assert f"/{CONTENT}/Info" in methods
        assert WRITE_PATH in methods
        for path, card in methods.items():
            _, service, method = path.split("/")
            t = GRPC_TYPES[card]
            for name in (
                "grpc_server_started_total",
                "grpc_server_msg_received_total",
                "grpc_server_msg_sent_total",
            ):
                assert m[grpc(name, method, t, service)] == 0.0, (name, path)
            for code in CODE_NAMES.values():
                assert m[handled(method, code, t, service)] == 0.0, (code, path)
        handled_series = [k for k in m if k[0] == "grpc_server_handled_total"]
        assert len(handled_series) == 17 * len(methods)
        assert m[handled("Write", "OK", "bidi_stream")] == 0.0
        assert m[handled("Read", "Unauthenticated", "server_stream")] == 0.0
        # no histogram unless configured; no *_created series (Go's client has none)
        assert not any(k[0].startswith("grpc_server_handling_seconds") for k in m)
        assert not any(k[0].endswith("_created") for k in m)
        # process and platform collectors
        assert m[key("process_open_fds")] > 0
        assert any(k[0] == "python_info" for k in m)


async def test_not_found_info_is_counted_once() -> None:
    async with running() as r:
        before = await r.scrape()
        async with r.store("default") as st:
            with pytest.raises(errdefs.NotFound):
                await st.info(MISSING)
        after = await r.scrape()
        assert delta(before, after) == {
            grpc("grpc_server_started_total", "Info"): 1.0,
            grpc("grpc_server_msg_received_total", "Info"): 1.0,
            handled("Info", "NotFound"): 1.0,
        }


async def test_handler_errors_are_counted_with_their_code() -> None:
    async with running() as r:
        before = await r.scrape()
        async with r.store("default") as st:
            with pytest.raises(errdefs.InvalidArgument):
                await st.info("sha256:nothex")
            with pytest.raises(errdefs.NotFound):
                await st.abort("no-such-ref")
            with pytest.raises(errdefs.NotFound):
                await read_blob(st, MISSING)
        # no namespace: FailedPrecondition, raised before the handler's own code
        ch = Channel(path=r.sock)
        try:
            with pytest.raises(GRPCError) as ei:
                await content_api.ContentStub(ch).info(content_api.InfoRequest(digest=MISSING))
            assert ei.value.status is Status.FAILED_PRECONDITION
        finally:
            ch.close()
        d = delta(before, await r.scrape())
        # read_blob asks Info first (NotFound) and never opens a Read stream
        assert {k: v for k, v in d.items() if k[0] == "grpc_server_handled_total"} == {
            handled("Info", "InvalidArgument"): 1.0,
            handled("Info", "NotFound"): 1.0,
            handled("Info", "FailedPrecondition"): 1.0,
            handled("Abort", "NotFound"): 1.0,
        }
        assert d[grpc("grpc_server_started_total", "Info")] == 3.0
        assert d[grpc("grpc_server_started_total", "Abort")] == 1.0


async def test_successful_write_counts_messages_both_ways() -> None:
    data = b"x" * 3000
    async with running() as r:
        before = await r.scrape()
        async with r.store("default") as st:
            await write_blob(st, "ref-1", data, total=len(data), expected=digest(data), labels=ROOT)
            assert await read_blob(st, digest(data)) == data
        d = delta(before, await r.scrape())
        assert d[grpc("grpc_server_started_total", "Write", "bidi_stream")] == 1.0
        assert d[handled("Write", "OK", "bidi_stream")] == 1.0
        received = d[grpc("grpc_server_msg_received_total", "Write", "bidi_stream")]
        sent = d[grpc("grpc_server_msg_sent_total", "Write", "bidi_stream")]
        assert received >= 2  # at least the opening STAT and the COMMIT
        assert sent == received + 1  # containerd sends the last response twice
        assert d[handled("Read", "OK", "server_stream")] == 1.0
        assert d[grpc("grpc_server_msg_received_total", "Read", "server_stream")] == 1.0
        assert d[grpc("grpc_server_msg_sent_total", "Read", "server_stream")] == 1.0  # one chunk


async def _open_write(ch: Channel, timeout: float | None = None) -> Any:
    stream = ch.request(
        WRITE_PATH,
        Cardinality.STREAM_STREAM,
        content_api.WriteContentRequest,
        content_api.WriteContentResponse,
        metadata={namespaces.GRPC_HEADER: "default"},
        timeout=timeout,
    )
    await stream.__aenter__()
    await stream.send_message(
        content_api.WriteContentRequest(action=content_api.WriteAction.STAT, ref="cancel-me")
    )
    resp = await stream.recv_message()
    assert resp is not None
    return stream


async def test_cancelled_stream_is_counted_as_canceled() -> None:
    async with running() as r:
        before = await r.scrape()
        ch = Channel(path=r.sock)
        try:
            stream = await _open_write(ch)
            await stream.cancel()
            await stream.__aexit__(None, None, None)

            async def counted() -> bool:
                return (await r.scrape()).get(handled("Write", "Canceled", "bidi_stream"), 0.0) == 1.0

            await wait_for(counted, "Write counted as Canceled")
        finally:
            ch.close()
        d = delta(before, await r.scrape())
        assert {k: v for k, v in d.items() if k[0] == "grpc_server_handled_total"} == {
            handled("Write", "Canceled", "bidi_stream"): 1.0
        }
        assert d[grpc("grpc_server_msg_received_total", "Write", "bidi_stream")] == 1.0
        assert d[grpc("grpc_server_msg_sent_total", "Write", "bidi_stream")] == 1.0


async def test_deadline_is_counted_as_deadline_exceeded() -> None:
    async with running() as r:
        before = await r.scrape()
        ch = Channel(path=r.sock)
        try:
            stream = await _open_write(ch, timeout=0.3)
            # not awaiting the stream, so the client does not reset it at its own deadline first
            await asyncio.sleep(0.6)
            # DEADLINE_EXCEEDED trailers then a reset: which the client reports first varies
            with pytest.raises((GRPCError, StreamTerminatedError)):
                await stream.recv_message()
            with contextlib.suppress(Exception):
                await stream.__aexit__(None, None, None)

            async def counted() -> bool:
                return (await r.scrape()).get(handled("Write", "DeadlineExceeded", "bidi_stream"), 0.0) == 1.0

            await wait_for(counted, "Write counted as DeadlineExceeded")
        finally:
            ch.close()
        d = delta(before, await r.scrape())
        assert {k: v for k, v in d.items() if k[0] == "grpc_server_handled_total"} == {
            handled("Write", "DeadlineExceeded", "bidi_stream"): 1.0
        }


async def test_unknown_method_is_not_counted() -> None:
    from grpclib.client import UnaryUnaryMethod

    async with running() as r:
        before = await r.scrape()
        ch = Channel(path=r.sock)
        try:
            with pytest.raises(GRPCError) as ei:
                await UnaryUnaryMethod(ch, "/containerd.services.tasks.v1.Tasks/List", Empty, Empty)(Empty())
            assert ei.value.status is Status.UNIMPLEMENTED
        finally:
            ch.close()
        after = await r.scrape()
        assert not any(k[0].startswith("grpc_") for k in delta(before, after))
        assert not any(("grpc_service", "containerd.services.tasks.v1.Tasks") in k[1] for k in after)


async def test_handling_histogram_when_configured() -> None:
    async with running(histogram=True) as r:
        m = await r.scrape()
        # pre-initialised, with Go's default buckets
        buckets = sorted(
            float(dict(k[1])["le"])
            for k in m
            if k[0] == "grpc_server_handling_seconds_bucket" and ("grpc_method", "Info") in k[1]
        )
        assert buckets == sorted(HANDLING_BUCKETS)
        async with r.store("default") as st:
            with pytest.raises(errdefs.NotFound):
                await st.info(MISSING)
        d = delta(m, await r.scrape())
        assert d[grpc("grpc_server_handling_seconds_count", "Info")] == 1.0
        assert 0.0 < d[grpc("grpc_server_handling_seconds_sum", "Info")] < 5.0
        assert d[grpc("grpc_server_handling_seconds_bucket", "Info", le="+Inf")] == 1.0


# -- content series ---------------------------------------------------------------------------


async def test_content_counters_and_namespace_gauges_under_shared() -> None:
    data = bytes(range(256)) * 40  # 10240 bytes
    dg = digest(data)
    async with running(policy="shared") as r:
        before = await r.scrape()
        async with r.store("ns-a") as a, r.store("ns-b") as b:
            await write_blob(a, "blob", data, total=len(data), expected=dg, labels=ROOT)
            assert await read_blob(a, dg) == data
            await write_blob(
                b, "blob", data, total=len(data), expected=dg, labels=ROOT
            )  # admitted: no upload
            w = await a.writer("to-abort", total=5)
            await w.write(b"12345")
            await w.close()
            await a.abort("to-abort")
        after = await r.scrape()
        d = delta(before, after)
        assert d[key("ctrd_content_ingested_bytes_total")] == len(data) + 5
        assert d[key("ctrd_content_read_bytes_total")] == len(data)
        assert d[key("ctrd_content_commits_total")] == 2.0
        assert d[key("ctrd_content_aborts_total")] == 1.0
        assert d[key("ctrd_sharing_admissions_total")] == 1.0
        assert d[key("ctrd_sharing_saved_bytes_total")] == len(data)
        assert key("ctrd_isolated_reuploads_total") not in d
        assert after[key("ctrd_namespace_blobs", namespace="ns-a")] == 1.0
        assert after[key("ctrd_namespace_blobs", namespace="ns-b")] == 1.0
        assert after[key("ctrd_namespace_bytes", namespace="ns-a")] == len(data)
        assert after[key("ctrd_namespace_bytes", namespace="ns-b")] == len(data)
        async with r.store("ns-b") as b:
            await b.delete(dg)
        m = await r.scrape()
        assert m[key("ctrd_namespace_blobs", namespace="ns-b")] == 0.0
        assert m[key("ctrd_namespace_bytes", namespace="ns-b")] == 0.0


async def test_isolated_reupload_is_counted() -> None:
    data = b"isolated" * 1000
    dg = digest(data)
    async with running(policy="isolated") as r:
        before = await r.scrape()
        async with r.store("ns-a") as a, r.store("ns-b") as b:
            await write_blob(a, "blob", data, total=len(data), expected=dg, labels=ROOT)
            await write_blob(b, "blob", data, total=len(data), expected=dg, labels=ROOT)  # every byte again
        d = delta(before, await r.scrape())
        assert d[key("ctrd_isolated_reuploads_total")] == 1.0
        assert d[key("ctrd_content_ingested_bytes_total")] == 2 * len(data)
        assert d[key("ctrd_content_commits_total")] == 2.0
        assert key("ctrd_sharing_admissions_total") not in d
        assert key("ctrd_sharing_saved_bytes_total") not in d


async def test_event_subscribers_gauge() -> None:
    async with running() as r:
        m = await r.scrape()
        assert m[key("ctrd_events_subscribers")] == 0.0
        assert m[key("ctrd_events_dropped_total")] == 0.0
        ch = Channel(path=r.sock)
        try:
            stub = events_api.EventsStub(ch)
            it = stub.subscribe(events_api.SubscribeRequest())
            task = asyncio.ensure_future(it.__anext__())

            async def subscribed() -> bool:
                return (await r.scrape())[key("ctrd_events_subscribers")] == 1.0

            await wait_for(subscribed, "one subscriber")
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        finally:
            ch.close()

        async def gone() -> bool:
            return (await r.scrape())[key("ctrd_events_subscribers")] == 0.0

        await wait_for(gone, "no subscriber")
        m = await r.scrape()
        assert (
            m[handled("Subscribe", "Canceled", "server_stream", "containerd.services.events.v1.Events")]
            == 1.0
        )


def _fake_plugins(**instances: Any) -> PluginSet:
    ps = PluginSet()
    for i, (type_, inst) in enumerate(instances.items()):
        reg = Registration(type=type_.replace("_", "."), id=f"p{i}", init=_never)
        ps.add(Plugin(reg, instance=inst))
    return ps


async def _never(ic: Any) -> Any:
    raise AssertionError("not initialised in this test")


def _collect(plugins: PluginSet) -> dict[Key, float]:
    out: dict[Key, float] = {}
    for fam in ContentCollector(plugins).collect():
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def test_gc_series_read_the_scheduler_defensively() -> None:
    class Sched:
        runs = 3
        failures = 1
        total_duration = 1.5
        freed_bytes = 4096

    class Wrapped:
        scheduler = Sched()

    for inst in (Sched(), Wrapped()):
        m = _collect(_fake_plugins(io_containerd_gc_v1=inst))
        assert m[key("ctrd_gc_runs_total")] == 3.0
        assert m[key("ctrd_gc_duration_seconds_count")] == 3.0
        assert m[key("ctrd_gc_duration_seconds_sum")] == 1.5
        assert m[key("ctrd_gc_freed_bytes_total")] == 4096.0
        assert m[key("ctrd_gc_failures_total")] == 1.0
    # a GC plugin without counters (or none at all): no ctrd_gc_* series, no error
    assert not any(k[0].startswith("ctrd_gc") for k in _collect(_fake_plugins(io_containerd_gc_v1=object())))
    assert _collect(PluginSet()) == {}


# -- configuration and lifecycle ---------------------------------------------------------------


@pytest.mark.parametrize("address", ["/run/ctrd/metrics.sock", "127.0.0.1", "localhost:http", "::1:80"])
def test_metrics_address_must_be_tcp(address: str) -> None:
    with pytest.raises(ConfigError, match=r"metrics\.address: must be a TCP host:port") as ei:
        from_mapping({"metrics": {"address": address}})
    assert "Value error" not in str(ei.value)


def test_metrics_and_debug_addresses_accepted() -> None:
    cfg = from_mapping({"metrics": {"address": "[::1]:1338"}, "debug": {"address": "/run/ctrd/debug.sock"}})
    assert cfg.metrics.address == "[::1]:1338"
    cfg = from_mapping({"debug": {"address": "0.0.0.0:6060"}})
    assert cfg.debug == DebugConfig(address="0.0.0.0:6060")
    with pytest.raises(ConfigError, match=r"debug\.address: must be an absolute unix socket path or a TCP"):
        from_mapping({"debug": {"address": "debug.sock"}})


async def test_no_metrics_without_an_address() -> None:
    tmp = short_tmpdir()
    try:
        cfg = Config(
            root=str(tmp / "root"), state=str(tmp / "state"), grpc=GrpcConfig(address=str(tmp / "s.sock"))
        )
        d = Daemon(cfg)
        await d.start()
        try:
            assert d.metrics is None
            assert d.http_addresses == {}
        finally:
            await d.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def test_metrics_port_in_use_fails_start_up() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        tmp = short_tmpdir()
        try:
            cfg = Config(
                root=str(tmp / "root"),
                state=str(tmp / "state"),
                grpc=GrpcConfig(address=str(tmp / "s.sock")),
                metrics=MetricsConfig(address=f"127.0.0.1:{port}"),
            )
            with pytest.raises(StartupError, match=rf"failed to listen on 127\.0\.0\.1:{port} \(metrics\)"):
                await Daemon(cfg).start()
            assert not (tmp / "s.sock").exists()  # the gRPC socket never appeared
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


async def test_non_loopback_address_warns(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with running(metrics="0.0.0.0:0") as r:
        assert r.daemon.http_addresses["metrics"].startswith("0.0.0.0:")
    assert any("is not a loopback address" in rec.getMessage() for rec in caplog.records)
    caplog.clear()
    async with running(metrics="127.0.0.1:0"):
        pass
    assert not any("is not a loopback address" in rec.getMessage() for rec in caplog.records)


def test_registry_is_not_the_global_one() -> None:
    from prometheus_client import REGISTRY

    m = Metrics(PluginSet())
    assert m.registry is not REGISTRY
    assert "grpc_server_started" not in REGISTRY._names_to_collectors


# -- subprocess -------------------------------------------------------------------------------

METRICS_ADDR = re.compile(r'serving\.\.\. address=([0-9.]+:\d+)" module=ctrd\.metrics')


def _scrape_url(url: str) -> dict[Key, float]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return parse(resp.read().decode())


@pytest.mark.parametrize("policy", ["shared", "isolated"])
def test_scrape_a_daemon_process(daemon: Launcher, policy: str) -> None:
    d = daemon(
        '[metrics]\naddress = "127.0.0.1:0"\n'
        f'[plugins."io.containerd.metadata.v1.sqlite"]\ncontent_sharing_policy = "{policy}"\n'
    )
    url = f"http://{d.wait_for_log(METRICS_ADDR.pattern).group(1)}/v1/metrics"
    before = _scrape_url(url)
    t0 = time.monotonic()
    for code in CODE_NAMES.values():
        assert before[handled("Write", code, "bidi_stream")] == 0.0
    assert before[grpc("grpc_server_msg_sent_total", "Write", "bidi_stream")] == 0.0
    data = b"subprocess" * 500
    dg = digest(data)

    async def calls() -> None:
        ch = Channel(path=d.socket)
        try:
            a = RemoteContentStore(ch, namespace="a", timeout=10)
            b = RemoteContentStore(ch, namespace="b", timeout=10)
            with pytest.raises(errdefs.NotFound):
                await a.info(dg)
            await write_blob(a, "r", data, total=len(data), expected=dg, labels=ROOT)
            assert await read_blob(a, dg) == data
            await write_blob(b, "r", data, total=len(data), expected=dg, labels=ROOT)
        finally:
            ch.close()

    run_sync(calls)
    time.sleep(max(0.0, 2.1 - (time.monotonic() - t0)))  # the namespace gauges refresh at most every 2 s
    after = _scrape_url(url)
    d_ = delta(before, after)
    assert d_[handled("Info", "NotFound")] == 1.0
    assert d_[handled("Write", "OK", "bidi_stream")] == 2.0
    assert d_[key("ctrd_content_commits_total")] == 2.0
    assert d_[key("ctrd_content_read_bytes_total")] == len(data)
    assert after[key("ctrd_namespace_blobs", namespace="a")] == 1.0
    assert after[key("ctrd_namespace_bytes", namespace="b")] == len(data)
    if policy == "shared":
        assert d_[key("ctrd_content_ingested_bytes_total")] == len(data)
        assert d_[key("ctrd_sharing_admissions_total")] == 1.0
        assert d_[key("ctrd_sharing_saved_bytes_total")] == len(data)
        assert key("ctrd_isolated_reuploads_total") not in d_
    else:
        assert d_[key("ctrd_content_ingested_bytes_total")] == 2 * len(data)
        assert d_[key("ctrd_isolated_reuploads_total")] == 1.0
        assert key("ctrd_sharing_admissions_total") not in d_


@pytest.mark.interop
def test_ctr_content_get_missing_counts_not_found_info(daemon: Launcher) -> None:
    d = daemon('[metrics]\naddress = "127.0.0.1:0"\n')
    url = f"http://{d.wait_for_log(METRICS_ADDR.pattern).group(1)}/v1/metrics"
    before = _scrape_url(url)
    res = run_ctr(d.socket, "content", "get", MISSING)
    assert res.returncode != 0
    assert "not found" in res.stderr
    d_ = delta(before, _scrape_url(url))
    assert d_[handled("Info", "NotFound")] == 1.0
    assert d_[grpc("grpc_server_started_total", "Info")] == 1.0
