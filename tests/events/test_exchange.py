"""The in-process event exchange: validation, filters, fan-out, slow subscribers."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as _dt
import logging

import pytest

from ctrd import errdefs
from ctrd.events import Publisher
from ctrd.events.exchange import Envelope, Exchange, RawEvent, event_field, validate_envelope, validate_topic


@dataclasses.dataclass
class Deleted:
    digest: str


@dataclasses.dataclass
class NsEvent:
    name: str
    labels: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Nested:
    inner: NsEvent
    flag: bool = False
    size: int = 0
    _private: str = "hidden"


def drain(sub: object) -> list[Envelope]:
    """Envelopes already queued on *sub*, without waiting."""
    out = []
    queue = sub._queue  # type: ignore[attr-defined]
    while queue:
        out.append(queue.popleft())
    return out


def test_is_a_publisher() -> None:
    assert isinstance(Exchange(), Publisher)


@pytest.mark.parametrize(
    ("topic", "message"),
    [
        ("", 'envelope topic "": must not be empty'),
        ("a/b", "envelope topic \"a/b\": must start with '/'"),
        ("/", 'envelope topic "/": must have at least one component'),
        ("/a//b", 'envelope topic "/a//b": failed validation on component "": identifier must not be empty'),
        (
            "/a/b c",
            'envelope topic "/a/b c": failed validation on component "b c": identifier "b c" must match',
        ),
    ],
)
def test_validate_topic(topic: str, message: str) -> None:
    with pytest.raises(errdefs.InvalidArgument) as ei:
        validate_topic(topic)
    assert str(ei.value).startswith(message)


def test_valid_topics() -> None:
    for topic in ("/content/delete", "/namespaces/create", "/a", "/a-b/c_d.e"):
        validate_topic(topic)


async def test_publish_validates_namespace_and_topic() -> None:
    ex = Exchange()
    with pytest.raises(errdefs.FailedPrecondition, match=r"^failed publishing event: namespace is required"):
        await ex.publish("", "/a", None)
    with pytest.raises(errdefs.InvalidArgument, match=r"^failed publishing event: namespace validation: "):
        await ex.publish("bad/ns", "/a", None)
    with pytest.raises(errdefs.InvalidArgument, match="envelope topic"):
        await ex.publish("default", "nope", None)
    assert ex.published == 0


async def test_publish_stamps_utc_and_fans_out_to_all_namespaces() -> None:
    ex = Exchange()
    a, b = ex.subscribe(), ex.subscribe()
    assert ex.subscribers == 2
    before = _dt.datetime.now(_dt.UTC)
    await ex.publish("ns1", "/t/one", Deleted("d1"))
    await ex.publish("ns2", "/t/two", Deleted("d2"))
    for sub in (a, b):
        e1, e2 = drain(sub)
        assert (e1.namespace, e1.topic, e1.event) == ("ns1", "/t/one", Deleted("d1"))
        assert (e2.namespace, e2.topic, e2.event) == ("ns2", "/t/two", Deleted("d2"))
        assert e1.timestamp.tzinfo is _dt.UTC
        assert before <= e1.timestamp <= e2.timestamp <= _dt.datetime.now(_dt.UTC)
    assert ex.published == 2


async def test_subscription_sees_only_later_events_and_ends_on_close() -> None:
    ex = Exchange()
    await ex.publish("ns", "/early", None)
    sub = ex.subscribe()

    async def consume() -> list[str]:
        return [env.topic async for env in sub]

    task = asyncio.create_task(consume())
    await ex.publish("ns", "/late", None)
    await asyncio.sleep(0)
    sub.close()
    assert await asyncio.wait_for(task, 1) == ["/late"]
    assert ex.subscribers == 0
    await ex.publish("ns", "/after", None)  # nobody left: fine
    sub.close()  # idempotent


async def test_context_managers_unregister() -> None:
    ex = Exchange()
    with ex.subscribe():
        assert ex.subscribers == 1
    assert ex.subscribers == 0
    async with ex.subscribe():
        assert ex.subscribers == 1
    assert ex.subscribers == 0


async def test_exchange_close_ends_every_subscription() -> None:
    ex = Exchange()
    subs = [ex.subscribe() for _ in range(3)]
    tasks = [asyncio.create_task(anext(s, None)) for s in subs]
    await asyncio.sleep(0)
    ex.close()
    assert await asyncio.gather(*tasks) == [None, None, None]
    assert ex.subscribers == 0


def test_event_field() -> None:
    ev = Nested(inner=NsEvent("n", {"k": "v", "a.b": "c"}), flag=True, size=3)
    assert event_field(ev, ["inner", "name"]) == ("n", True)
    assert event_field(ev, ["inner", "labels", "k"]) == ("v", True)
    assert event_field(ev, ["inner", "labels", "a", "b"]) == ("c", True)
    assert event_field(ev, ["inner", "labels", "x"]) == ("", False)
    assert event_field(ev, ["flag"]) == ("true", True)
    assert event_field(ev, ["size"]) == ("", False)  # numbers have no field adaptor in containerd either
    assert event_field(ev, ["_private"]) == ("", False)
    assert event_field(ev, ["missing"]) == ("", False)
    assert event_field(ev, []) == ("", False)
    assert event_field(NsEvent(""), ["name"]) == ("", False)  # empty string: absent
    assert event_field(NsEvent("x"), ["labels", "k"]) == ("", False)  # empty map: absent
    assert event_field(RawEvent("t", b""), ["type_url"]) == ("", False)  # undecoded: no fields
    assert event_field(RawEvent("t", b"", decoded=Deleted("x")), ["digest"]) == ("x", True)
    assert event_field(None, ["x"]) == ("", False)


async def test_filters() -> None:
    ex = Exchange()
    subs = {
        "ns": ex.subscribe("namespace==a"),
        "topic": ex.subscribe('topic~="^/content/"'),
        "digest": ex.subscribe("event.digest==sha256:1"),
        "name-label": ex.subscribe("event.name==n1,event.labels.team==x"),
        "or": ex.subscribe("namespace==b", "event.digest"),
        "presence": ex.subscribe("event.name"),
        "all": ex.subscribe(),
        "empty-string": ex.subscribe(""),
    }
    events = [
        ("a", "/content/delete", Deleted("sha256:1")),
        ("b", "/content/delete", Deleted("sha256:2")),
        ("c", "/namespaces/create", NsEvent("n1", {"team": "x"})),
        ("c", "/namespaces/create", NsEvent("n1")),
        ("b", "/raw", RawEvent("x.Y", b"\x01")),
    ]
    for ns, topic, ev in events:
        await ex.publish(ns, topic, ev)
    got = {k: [events.index((e.namespace, e.topic, e.event)) for e in drain(s)] for k, s in subs.items()}
    assert got == {
        "ns": [0],
        "topic": [0, 1],
        "digest": [0],
        "name-label": [2],
        "or": [0, 1, 4],
        "presence": [2, 3],
        "all": [0, 1, 2, 3, 4],
        "empty-string": [0, 1, 2, 3, 4],
    }


def test_bad_filter() -> None:
    ex = Exchange()
    with pytest.raises(
        errdefs.InvalidArgument, match=r"^failed parsing subscription filters: filters: parse error"
    ):
        ex.subscribe("namespace==")
    assert ex.subscribers == 0


async def test_forward_keeps_the_envelope() -> None:
    ex = Exchange()
    sub = ex.subscribe()
    ts = _dt.datetime(2020, 1, 2, 3, 4, 5, 678000, tzinfo=_dt.UTC)
    await ex.forward(Envelope(ts, "ns", "/fwd", Deleted("d")))
    await ex.forward(Envelope(ts.replace(tzinfo=None), "ns", "/naive", None))
    e1, e2 = drain(sub)
    assert e1 == Envelope(ts, "ns", "/fwd", Deleted("d"))
    assert e2.timestamp == ts
    assert e2.timestamp.tzinfo is _dt.UTC
    with pytest.raises(errdefs.InvalidArgument, match=r"^event envelope has invalid namespace: "):
        await ex.forward(Envelope(ts, "", "/x", None))
    with pytest.raises(errdefs.InvalidArgument, match="envelope topic"):
        await ex.forward(Envelope(ts, "ns", "x", None))
    with pytest.raises(errdefs.InvalidArgument, match=r"^timestamp must be set on forwarded event"):
        validate_envelope("ns", "/x", None)


async def test_slow_subscriber_is_disconnected(caplog: pytest.LogCaptureFixture) -> None:
    ex = Exchange(queue_size=3)
    slow = ex.subscribe(name="slow one")
    fast = ex.subscribe("namespace==ns", name="fast")
    filtered = ex.subscribe('topic=="/other"', name="filtered")  # matches nothing: never overflows
    fast_got: list[str] = []

    async def fast_consumer() -> None:
        async for env in fast:
            fast_got.append(env.topic)
            if len(fast_got) == 10:
                return

    task = asyncio.create_task(fast_consumer())
    with caplog.at_level(logging.WARNING, logger="ctrd.events"):
        for i in range(10):
            await ex.publish("ns", f"/e{i}", None)  # never blocks on the slow subscriber
            await asyncio.sleep(0)  # the fast consumer keeps up
        assert slow.pending == 3  # bounded: nothing queued past the limit
        assert "event subscriber #1 (slow one) is too slow: 3 events pending; disconnecting it" in caplog.text
        await asyncio.wait_for(task, 1)
        # the slow subscriber gets what was queued, then the error
        got = [(await anext(slow)).topic for _ in range(3)]
        assert got == ["/e0", "/e1", "/e2"]
        with pytest.raises(errdefs.ResourceExhausted) as ei:
            await anext(slow)
    assert str(ei.value) == (
        "event subscriber #1 (slow one) disconnected: too slow, missed 7 events: resource exhausted"
    )
    assert "event subscriber #1 (slow one) disconnected: too slow, missed 7 events" in caplog.text
    assert fast_got == [f"/e{i}" for i in range(10)]
    assert (ex.dropped, ex.disconnected, ex.published) == (7, 1, 10)
    assert ex.subscribers == 2  # fast and filtered remain
    with pytest.raises(StopAsyncIteration):
        await anext(slow)
    fast.close()
    filtered.close()
    assert ex.subscribers == 0


async def test_missed_counts_only_matching_events() -> None:
    ex = Exchange(queue_size=1)
    sub = ex.subscribe("namespace==a")
    for ns in ("a", "a", "b", "a", "b"):
        await ex.publish(ns, "/t", None)
    assert (await anext(sub)).namespace == "a"
    with pytest.raises(errdefs.ResourceExhausted, match="missed 2 events"):
        await anext(sub)
    assert ex.dropped == 2


async def test_publishers_never_wait_and_memory_stays_bounded() -> None:
    ex = Exchange(queue_size=16)
    subs = [ex.subscribe() for _ in range(20)]  # nobody reads
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for i in range(5000):
        await ex.publish("ns", "/flood", i)
    assert loop.time() - t0 < 5
    assert all(s.pending == 16 for s in subs)
    assert ex.dropped == 20 * (5000 - 16)
    assert ex.disconnected == 20


async def test_closing_an_overflowed_subscription_logs_the_count(caplog: pytest.LogCaptureFixture) -> None:
    ex = Exchange(queue_size=1)
    sub = ex.subscribe(name="gone")
    with caplog.at_level(logging.WARNING, logger="ctrd.events"):
        for _ in range(4):
            await ex.publish("ns", "/t", None)
        sub.close()  # e.g. the client went away before draining
    assert "event subscriber #1 (gone) disconnected: too slow, missed 3 events" in caplog.text
    assert ex.subscribers == 0


def test_queue_size_must_be_positive() -> None:
    with pytest.raises(errdefs.InvalidArgument):
        Exchange(queue_size=0)
