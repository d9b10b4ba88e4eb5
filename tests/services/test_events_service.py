"""EventsService over a real Exchange, through real stubs and ctrd's interceptor; and the events
the built-in services publish, end to end through an in-process daemon."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.const import Status as G
from grpclib.exceptions import GRPCError

from ctrd import namespaces
from ctrd.api.containerd.events import ContentCreate, ContentDelete, NamespaceCreate
from ctrd.api.containerd.services.events import v1 as api
from ctrd.api.containerd.services.namespaces import v1 as ns_api
from ctrd.api.google import protobuf as pb
from ctrd.client import RemoteContentStore
from ctrd.content import sha256_of, write_blob
from ctrd.events.exchange import Exchange, RawEvent
from ctrd.server.config import Config, GrpcConfig
from ctrd.server.daemon import Daemon
from ctrd.services.events import EventsService, envelope_to_proto, payload_from_any
from ctrd.wire.typeurl import GOOGLE_PREFIX, pack_event, unpack_event

from .conftest import Serve

MD = {namespaces.GRPC_HEADER: "default"}


class Sub:
    """A Subscribe stream read by a background task."""

    def __init__(self, channel: Channel, exchange: Exchange | None, *filters: str) -> None:
        self.stub = api.EventsStub(channel, metadata=MD)
        self.filters = list(filters)
        self.exchange = exchange
        self.queue: asyncio.Queue[api.Envelope | BaseException | None] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        try:
            async for env in self.stub.subscribe(api.SubscribeRequest(filters=self.filters)):
                await self.queue.put(env)
            await self.queue.put(None)
        except BaseException as exc:
            await self.queue.put(exc)
            raise

    async def __aenter__(self) -> Sub:
        before = self.exchange.subscribers if self.exchange is not None else 0
        self.task = asyncio.create_task(self._run())
        if self.exchange is not None:  # wait until the server registered the subscription
            for _ in range(500):
                if self.exchange.subscribers > before:
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("subscription not registered")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task

    async def next(self, timeout: float = 5.0) -> api.Envelope:
        item = await asyncio.wait_for(self.queue.get(), timeout)
        assert isinstance(item, api.Envelope), item
        return item

    async def end(self, timeout: float = 5.0) -> BaseException | None:
        item = await asyncio.wait_for(self.queue.get(), timeout)
        assert not isinstance(item, api.Envelope), item
        return item

    def empty(self) -> bool:
        return self.queue.empty()


@pytest.fixture
def exchange() -> Exchange:
    return Exchange(queue_size=4)


@pytest.fixture
async def channel(serve: Serve, exchange: Exchange) -> AsyncIterator[Channel]:
    async with serve(EventsService(exchange)) as ch:
        yield ch


@pytest.fixture
def stub(channel: Channel) -> api.EventsStub:
    return api.EventsStub(channel, metadata=MD)


async def grpc_error(coro: object) -> GRPCError:
    with pytest.raises(GRPCError) as ei:
        await coro  # type: ignore[misc]
    return ei.value


# -- payload conversion ----------------------------------------------------------------------


def test_payload_from_any() -> None:
    known = pack_event(ContentDelete(digest="sha256:1"))
    assert known.type_url == "containerd.events.ContentDelete"
    raw = payload_from_any(known)
    assert raw == RawEvent("containerd.events.ContentDelete", known.value)
    assert raw is not None
    assert raw.decoded == ContentDelete(digest="sha256:1")
    prefixed = pb.Any(type_url=GOOGLE_PREFIX + "containerd.events.ContentDelete", value=known.value)
    raw = payload_from_any(prefixed)
    assert raw is not None
    assert raw.type_url == prefixed.type_url
    assert raw.decoded == ContentDelete(digest="sha256:1")
    unknown = pb.Any(type_url="example.com/Thing", value=b"\x08\x01")
    raw = payload_from_any(unknown)
    assert raw == RawEvent("example.com/Thing", b"\x08\x01")
    assert raw.decoded is None
    assert payload_from_any(None) is None


# -- Publish / Forward -------------------------------------------------------------------------


async def test_publish_requires_namespace(channel: Channel, exchange: Exchange) -> None:
    bare = api.EventsStub(channel)
    err = await grpc_error(bare.publish(api.PublishRequest(topic="/x", event=pack_event(ContentDelete()))))
    assert err.status is G.FAILED_PRECONDITION
    assert err.message == "failed publishing event: namespace is required: failed precondition"
    bad = api.EventsStub(channel, metadata={namespaces.GRPC_HEADER: "bad/ns"})
    err = await grpc_error(bad.publish(api.PublishRequest(topic="/x")))
    assert err.status is G.INVALID_ARGUMENT
    assert exchange.published == 0


@pytest.mark.parametrize("topic", ["", "x", "/", "/a//b", "/a b"])
async def test_publish_validates_topic(stub: api.EventsStub, topic: str) -> None:
    err = await grpc_error(stub.publish(api.PublishRequest(topic=topic)))
    assert err.status is G.INVALID_ARGUMENT
    assert (err.message or "").startswith("envelope topic")


async def test_publish_and_subscribe(channel: Channel, stub: api.EventsStub, exchange: Exchange) -> None:
    async with Sub(channel, exchange) as sub:
        before = _dt.datetime.now(_dt.UTC)
        known = pb.Any(
            type_url=GOOGLE_PREFIX + "containerd.events.ContentDelete",
            value=bytes(ContentDelete(digest="sha256:abc")),
        )
        await stub.publish(api.PublishRequest(topic="/content/delete", event=known))
        unknown = pb.Any(type_url="example.com/Custom", value=b"opaque")
        other_ns = api.EventsStub(channel, metadata={namespaces.GRPC_HEADER: "other"})
        await other_ns.publish(api.PublishRequest(topic="/custom/thing", event=unknown))
        await stub.publish(api.PublishRequest(topic="/no/payload"))

        e1 = await sub.next()
        assert (e1.namespace, e1.topic) == ("default", "/content/delete")
        assert e1.event is not None
        assert e1.event == known  # passed on unchanged, as containerd does
        assert unpack_event(e1.event) == ContentDelete(digest="sha256:abc")
        assert e1.timestamp is not None
        assert before <= e1.timestamp <= _dt.datetime.now(_dt.UTC)
        e2 = await sub.next()
        assert (e2.namespace, e2.topic) == ("other", "/custom/thing")
        assert e2.event is not None
        assert (e2.event.type_url, e2.event.value) == ("example.com/Custom", b"opaque")  # passed through
        e3 = await sub.next()
        assert e3.topic == "/no/payload"
        assert e3.event is None


async def test_subscribe_filters(channel: Channel, stub: api.EventsStub, exchange: Exchange) -> None:
    async with (
        Sub(channel, exchange, "event.digest==sha256:1") as by_digest,
        Sub(channel, exchange, "namespace==other", 'topic=="/namespaces/create"') as ored,
    ):
        other = api.EventsStub(channel, metadata={namespaces.GRPC_HEADER: "other"})
        await stub.publish(
            api.PublishRequest(topic="/content/delete", event=pack_event(ContentDelete("sha256:1")))
        )
        await stub.publish(
            api.PublishRequest(topic="/content/delete", event=pack_event(ContentDelete("sha256:2")))
        )
        await other.publish(api.PublishRequest(topic="/x/y", event=pb.Any(type_url="u", value=b"")))
        await stub.publish(
            api.PublishRequest(topic="/namespaces/create", event=pack_event(NamespaceCreate("n")))
        )
        e = await by_digest.next()
        assert e.event is not None
        assert unpack_event(e.event) == ContentDelete("sha256:1")
        assert [(await ored.next()).topic for _ in range(2)] == ["/x/y", "/namespaces/create"]
        await asyncio.sleep(0.05)
        assert by_digest.empty()
        assert ored.empty()


async def test_subscribe_bad_filter(stub: api.EventsStub, exchange: Exchange) -> None:
    async def first() -> Any:
        async for env in stub.subscribe(api.SubscribeRequest(filters=["namespace=="])):
            return env
        return None

    err = await grpc_error(first())
    assert err.status is G.INVALID_ARGUMENT
    assert (err.message or "").startswith("failed parsing subscription filters: filters: parse error")
    assert exchange.subscribers == 0


async def test_subscription_ends_with_the_stream(channel: Channel, exchange: Exchange) -> None:
    async with Sub(channel, exchange):
        assert exchange.subscribers == 1
    for _ in range(200):
        if exchange.subscribers == 0:
            break
        await asyncio.sleep(0.01)
    assert exchange.subscribers == 0


async def test_slow_subscriber_gets_resource_exhausted(
    channel: Channel, stub: api.EventsStub, exchange: Exchange
) -> None:
    async with Sub(channel, exchange) as sub:
        # a burst published without yielding: the handler cannot drain its queue (size 4) meanwhile
        for i in range(10):
            await exchange.publish("default", f"/burst/e{i}", ContentDelete(digest=f"d{i}"))
        assert [(await sub.next()).topic for _ in range(4)] == [f"/burst/e{i}" for i in range(4)]
        err = await sub.end()
        assert isinstance(err, GRPCError)
        assert err.status is G.RESOURCE_EXHAUSTED
        assert "disconnected: too slow, missed 6 events" in (err.message or "")
    assert (exchange.dropped, exchange.disconnected) == (6, 1)
    # publishing goes on for everybody else
    await stub.publish(api.PublishRequest(topic="/after"))


async def test_forward(channel: Channel, stub: api.EventsStub, exchange: Exchange) -> None:
    ts = _dt.datetime(2021, 5, 6, 7, 8, 9, 123456, tzinfo=_dt.UTC)
    async with Sub(channel, exchange) as sub:
        env = api.Envelope(
            timestamp=ts, namespace="elsewhere", topic="/fwd/ed", event=pack_event(ContentDelete("sha256:f"))
        )
        await stub.forward(api.ForwardRequest(envelope=env))
        got = await sub.next()
        assert (got.timestamp, got.namespace, got.topic) == (ts, "elsewhere", "/fwd/ed")
        assert got.event is not None
        assert unpack_event(got.event) == ContentDelete("sha256:f")
    for bad, message in [
        (api.Envelope(namespace="ns", topic="/t"), "timestamp must be set on forwarded event"),
        (api.Envelope(timestamp=ts, namespace="", topic="/t"), "event envelope has invalid namespace"),
        (api.Envelope(timestamp=ts, namespace="ns", topic="t"), "envelope topic"),
    ]:
        err = await grpc_error(stub.forward(api.ForwardRequest(envelope=bad)))
        assert err.status is G.INVALID_ARGUMENT
        assert (err.message or "").startswith(message)
    err = await grpc_error(stub.forward(api.ForwardRequest()))
    assert err.status is G.INVALID_ARGUMENT


def test_envelope_to_proto_skips_unencodable() -> None:
    from ctrd.events.exchange import Envelope

    ts = _dt.datetime.now(_dt.UTC)
    assert envelope_to_proto(Envelope(ts, "ns", "/t", object())) is None
    msg = envelope_to_proto(Envelope(ts, "ns", "/t", RawEvent("a.B", b"x")))
    assert msg is not None
    assert msg.event == pb.Any(type_url="a.B", value=b"x")


# -- end to end: the built-in services publish through the exchange plugin -----------------------


@contextlib.asynccontextmanager
async def running_daemon() -> AsyncIterator[tuple[Daemon, Channel]]:
    with tempfile.TemporaryDirectory(prefix="ctrd-", dir="/tmp") as d:
        sock = f"{d}/s.sock"
        # no garbage collector: the unleased test blob must survive until the test deletes it
        cfg = Config(
            root=f"{d}/root",
            state=f"{d}/state",
            grpc=GrpcConfig(address=sock),
            disabled_plugins=["io.containerd.gc.v1.scheduler"],
        )
        daemon = Daemon(cfg)
        await daemon.start()
        ch = Channel(path=sock)
        try:
            yield daemon, ch
        finally:
            ch.close()
            await daemon.stop(drain_timeout=2.0)


async def test_daemon_publishes_namespace_and_content_events() -> None:
    async with running_daemon() as (_daemon, ch):
        sub = Sub(ch, None)
        async with sub:
            nss = ns_api.NamespacesStub(ch, metadata=MD)
            # the subscription is registered once an event reaches it
            await nss.create(ns_api.CreateNamespaceRequest(namespace=ns_api.Namespace(name="probe")))
            assert (await sub.next()).topic == "/namespaces/create"

            await nss.create(ns_api.CreateNamespaceRequest(namespace=ns_api.Namespace(name="evns")))
            await nss.update(
                ns_api.UpdateNamespaceRequest(namespace=ns_api.Namespace(name="evns", labels={"k": "v"}))
            )
            store = RemoteContentStore(ch, namespace="evns")
            data = b"hello events"
            d = sha256_of(data)
            await write_blob(store, "r1", data, expected=d)
            await write_blob(store, "r2", data, expected=d)  # already there: no second create
            await store.delete(d)
            await nss.delete(ns_api.DeleteNamespaceRequest(name="evns"))

            got = [await sub.next() for _ in range(5)]
            assert [(e.namespace, e.topic) for e in got] == [
                ("default", "/namespaces/create"),
                ("default", "/namespaces/update"),
                ("evns", "/content/create"),
                ("evns", "/content/delete"),
                ("evns", "/namespaces/delete"),  # in the deleted namespace
            ]
            payloads = [unpack_event(e.event) for e in got if e.event is not None]
            assert got[0].event is not None
            assert got[0].event.type_url == "containerd.events.NamespaceCreate"
            assert payloads[2] == ContentCreate(digest=d, size=len(data))
            assert got[2].event is not None
            assert got[2].event.type_url == "containerd.events.ContentCreate"
            assert payloads[3] == ContentDelete(digest=d)
            await asyncio.sleep(0.05)
            assert sub.empty()
