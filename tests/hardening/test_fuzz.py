"""Property-based fuzzing of every RPC against one real daemon: hypothesis-built request
messages with hostile field values, and raw protobuf bodies no encoder would produce.

What must hold for every call: the answer is a precise status (OK, or one that names the
caller's mistake or a limit; UNIMPLEMENTED only for a method ctrd does not serve or a lease
resource type it does not support; UNAVAILABLE only for a locked ingest), never UNKNOWN or
INTERNAL, it comes within :data:`DEADLINE`, every reply decodes as its message type, and
after each RPC's run the daemon has logged no traceback and still answers ``Version``.

Quick mode tries :data:`QUICK` examples per RPC and probe kind, derandomized (every run
tries the same cases); ``CTRD_LONG=1`` tries :data:`LONG` with a fresh seed each run.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from _daemon import DaemonProc, Launcher, run_sync, version_of
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ._figures import Figures
from ._probe import Victim
from ._protofuzz import BLOB, BLOB_DIGEST, LEASE, NAMESPACE, REF, Rpc, message, raw_body, rpcs

DEADLINE = 10.0
"""Every call must be answered within this many seconds (the calls' gRPC timeout)."""
QUICK = 60
"""Examples per RPC and probe kind in every run (a sixth of them for a method ctrd does not serve)."""
LONG = 1500
"""The same with ``CTRD_LONG=1``."""
ENDLESS = {
    "/containerd.services.events.v1.Events/Subscribe": 0.1,
    "/grpc.health.v1.Health/Watch": 0.0,
}
"""Streams that never end by themselves: cancelled after this many seconds (Watch: after its
first reply)."""

PRECISE = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.PERMISSION_DENIED,
}
HEADERS = st.one_of(
    st.just(NAMESPACE), st.sampled_from(["fuzz-b", None, "", "default", "Bad!", "a" * 77, "a..b"])
)
"""The ``containerd-namespace`` header (``None``: not sent)."""

RPCS = rpcs()

# the long variants take minutes per RPC
pytestmark = pytest.mark.timeout(4 * 3600 if os.environ.get("CTRD_LONG") == "1" else 120)


def _same(b: bytes) -> bytes:
    return b


@dataclass
class Fuzz:
    """The module's daemon, one grpcio channel to it, and what the probes found."""

    daemon: DaemonProc
    channel: grpc.Channel
    tried: dict[str, int] = field(default_factory=dict)
    unexpected: dict[str, list[str]] = field(default_factory=dict)
    slowest: dict[str, float] = field(default_factory=dict)
    codes: dict[tuple[str, str], int] = field(default_factory=dict)

    def call(
        self, rpc: Rpc, bodies: list[bytes], namespace: str | None
    ) -> tuple[Any, str, float, list[bytes]]:
        """One call of *rpc* (a stream sends every body): (status, details, seconds, replies)."""
        metadata = [("containerd-namespace", namespace)] if namespace is not None else []
        replies: list[bytes] = []
        cancelled = False
        t0 = time.monotonic()
        try:
            if rpc.kind == "unary_unary":
                unary = self.channel.unary_unary(
                    rpc.path, request_serializer=_same, response_deserializer=_same
                )
                replies.append(unary(bodies[0], metadata=metadata, timeout=DEADLINE))
            elif rpc.kind == "unary_stream":
                stream = self.channel.unary_stream(
                    rpc.path, request_serializer=_same, response_deserializer=_same
                )
                call = stream(bodies[0], metadata=metadata, timeout=DEADLINE)
                after = ENDLESS.get(rpc.path)
                if after is None:
                    replies.extend(call)
                else:

                    def cancel() -> None:
                        nonlocal cancelled
                        cancelled = True
                        call.cancel()

                    timer = threading.Timer(after, cancel) if after else None
                    if timer is not None:
                        timer.start()
                    try:
                        for reply in call:
                            replies.append(reply)
                            if timer is None:
                                cancel()
                    finally:
                        if timer is not None:
                            timer.cancel()
            elif rpc.kind == "stream_stream":
                bidi = self.channel.stream_stream(
                    rpc.path, request_serializer=_same, response_deserializer=_same
                )
                replies.extend(bidi(iter(bodies), metadata=metadata, timeout=DEADLINE))
            else:
                client = self.channel.stream_unary(
                    rpc.path, request_serializer=_same, response_deserializer=_same
                )
                replies.append(client(iter(bodies), metadata=metadata, timeout=DEADLINE))
            code, details = grpc.StatusCode.OK, ""
        except grpc.RpcError as err:
            e: Any = err
            code, details = e.code(), e.details() or ""
            del e  # (it and its traceback's frames, holding the bodies, would form a cycle)
            if cancelled and code is grpc.StatusCode.CANCELLED:
                code = grpc.StatusCode.OK
        return code, details, time.monotonic() - t0, replies

    def probe(self, group: str, rpc: Rpc, bodies: list[bytes], namespace: str | None) -> None:
        """Call, and record whatever is not a precise answer in time."""
        code, details, elapsed, replies = self.call(rpc, bodies, namespace)
        self.tried[group] = self.tried.get(group, 0) + 1
        self.slowest[group] = max(self.slowest.get(group, 0.0), elapsed)
        self.codes[group, code.name] = self.codes.get((group, code.name), 0) + 1
        problem = ""
        if not _precise(rpc, code, details):
            problem = f"{code.name}: {details[:300]!r}"
        elif elapsed >= DEADLINE:
            problem = f"answered after {elapsed:.1f} s"
        else:
            for reply in replies:
                try:
                    rpc.reply.parse(reply)
                except Exception as exc:
                    problem = f"undecodable reply ({exc!r}): {reply[:100]!r}"
                    break
        if problem:
            shown = [b[:200] for b in bodies[:3]]
            self.unexpected.setdefault(group, []).append(
                f"{rpc.path} {problem} <- ns={namespace!r} bodies={shown!r}"
            )

    def finish(self, group: str, rpc: Rpc, figures: Figures, tried: int) -> None:
        """After one RPC's run: record the figures; no unexpected answer, no traceback, Version answers."""
        gc.collect()  # what the run left in cycles may hold megabytes of bodies
        tracebacks = self.daemon.log().count("Traceback")
        figures.add(group, "cases tried", tried)
        figures.add(group, "unexpected statuses", len(self.unexpected.get(group, [])))
        figures.add(group, "tracebacks logged", tracebacks)
        figures.add(group, "max answer time (ms)", self.slowest.get(group, 0.0) * 1000)
        for (g, code), n in self.codes.items():
            if g == group:
                figures.add(group, f"cases answered {code}", n)
        self.codes = {k: v for k, v in self.codes.items() if k[0] != group}
        found = [u for u in self.unexpected.get(group, []) if u.startswith(rpc.path + " ")]
        assert not found, f"{len(found)} unexpected answers, e.g.:\n" + "\n".join(u[:600] for u in found[:8])
        assert tracebacks == 0, self.daemon.log()[-5000:]
        assert run_sync(lambda: version_of(self.daemon.socket, timeout=DEADLINE), timeout=DEADLINE + 5)


def _precise(rpc: Rpc, code: Any, details: str) -> bool:
    if not rpc.served:
        return code is grpc.StatusCode.UNIMPLEMENTED
    if code in PRECISE:
        return True
    if code is grpc.StatusCode.UNAVAILABLE:
        return "locked" in details
    if code is grpc.StatusCode.UNIMPLEMENTED:  # leases: "resource type ... not supported yet"
        return rpc.path.startswith("/containerd.services.leases.v1.Leases/") and "not supported" in details
    return False


async def _seed(sock: str) -> None:
    """What the probes find: a blob, an open ingest and a lease in ``fuzz``, a second namespace."""
    from ctrd.client import Client

    async with Client(sock, namespace=NAMESPACE) as client:
        await client.content.ingest("seed", BLOB, labels={"containerd.io/gc.root": "fuzz"})
        await client.leases.create(LEASE)
        await client.namespaces.create("fuzz-b", {"a": "b"})
        async with client.content.writer(REF) as writer:
            await writer.write(b"partial")


@pytest.fixture(scope="module")
def fuzz(request: pytest.FixtureRequest) -> Iterator[Fuzz]:
    """One daemon for the module (seeded), and a grpcio channel to it."""
    launcher = Launcher()
    failed_before = request.session.testsfailed
    channel: grpc.Channel | None = None
    try:
        d = launcher()
        asyncio.run(_seed(d.socket))
        channel = grpc.insecure_channel(
            f"unix:{d.socket}",
            options=[("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)],
        )
        yield Fuzz(d, channel)
    finally:
        if channel is not None:
            channel.close()
        launcher.cleanup(request.session.testsfailed > failed_before)


def _settings(rpc: Rpc, long_run: bool) -> settings:
    examples = LONG if long_run else QUICK
    return settings(
        max_examples=examples if rpc.served else examples // 6,
        deadline=None,
        derandomize=not long_run,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # every case is kept: no shrinking
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )


def _bodies(rpc: Rpc, one: st.SearchStrategy[bytes]) -> st.SearchStrategy[list[bytes]]:
    if rpc.kind.startswith("stream"):
        return st.lists(one, max_size=4)
    return st.lists(one, min_size=1, max_size=1)


@pytest.mark.parametrize("rpc", RPCS, ids=lambda r: r.name)
def test_typed_requests_get_precise_answers(fuzz: Fuzz, rpc: Rpc, long_run: bool, figures: Figures) -> None:
    """Messages of the RPC's request type, every field absent or hostile."""
    group = "fuzzing: typed messages"
    before = fuzz.tried.get(group, 0)

    @_settings(rpc, long_run)
    @given(bodies=_bodies(rpc, message(rpc.request).map(bytes)), namespace=HEADERS)
    def probe(bodies: list[bytes], namespace: str | None) -> None:
        fuzz.probe(group, rpc, bodies, namespace)

    probe()
    fuzz.finish(group, rpc, figures, fuzz.tried[group] - before)


@pytest.mark.parametrize("rpc", RPCS, ids=lambda r: r.name)
def test_raw_bodies_get_precise_answers(fuzz: Fuzz, rpc: Rpc, long_run: bool, figures: Figures) -> None:
    """Random bytes, mutated valid encodings, fields of the right numbers with the wrong shapes."""
    group = "fuzzing: raw bodies"
    before = fuzz.tried.get(group, 0)

    @_settings(rpc, long_run)
    @given(bodies=_bodies(rpc, raw_body(rpc.request)), namespace=HEADERS)
    def probe(bodies: list[bytes], namespace: str | None) -> None:
        fuzz.probe(group, rpc, bodies, namespace)

    probe()
    fuzz.finish(group, rpc, figures, fuzz.tried[group] - before)


def test_every_served_rpc_is_fuzzed(fuzz: Fuzz) -> None:
    """The enumeration covers what the daemon serves: one generated service per gRPC plugin it
    reports working, and every enumerated method is routed (not UNIMPLEMENTED for an empty body)."""
    from ctrd.api.containerd.services.introspection import v1 as intro_api

    rpc = next(r for r in RPCS if r.path.endswith("Introspection/Plugins"))
    body = bytes(intro_api.PluginsRequest(filters=["type==io.containerd.grpc.v1"]))
    code, details, _, replies = fuzz.call(rpc, [body], NAMESPACE)
    assert code is grpc.StatusCode.OK, details
    plugins = intro_api.PluginsResponse.parse(replies[0]).plugins
    working = {p.id for p in plugins if p.init_err is None}
    served = {r.path.rsplit("/", 1)[0] for r in RPCS if r.served}
    assert len(served) == len(working), (sorted(served), sorted(working))
    for r in RPCS:
        if r.served and r.path not in ENDLESS:
            code, details, _, _ = fuzz.call(r, [b""], NAMESPACE)
            assert "not found" not in details.lower() or code is not grpc.StatusCode.UNIMPLEMENTED, r.path


REDOS = ("(a+)+$", "(a|aa)*b", "(x+x+)+y", "^(a?){64}a{64}$")
"""Patterns a backtracking regexp engine takes exponential time on."""


def test_filter_regexps_cannot_stall_the_daemon(fuzz: Fuzz, figures: Figures) -> None:
    """Filters with backtracking-prone regexps over 4000-character labels and event fields:
    every List and Publish is answered within the deadline, and another client all along
    (with Python's re one such List stalled the whole daemon indefinitely)."""
    from ctrd.api.containerd.events import ContentCreate
    from ctrd.api.containerd.services.content import v1 as content_api
    from ctrd.api.containerd.services.events import v1 as events_api
    from ctrd.api.containerd.services.leases import v1 as leases_api
    from ctrd.api.google import protobuf as pb

    by_path = {r.path: r for r in RPCS}
    long = "a" * 4000

    def call(path: str, message: Any) -> tuple[Any, str, float]:
        code, details, elapsed, _ = fuzz.call(by_path[path], [bytes(message)], "redos")
        return code, details, elapsed

    code, details, _ = call(
        "/containerd.services.leases.v1.Leases/Create",
        leases_api.CreateRequest(id="redos", labels={"a": long}),
    )
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.ALREADY_EXISTS), details
    commit = content_api.WriteContentRequest(
        action=content_api.WriteAction.COMMIT,
        ref="redos",
        data=BLOB,
        expected=BLOB_DIGEST,
        labels={"a": long},
    )
    code, details, _ = call("/containerd.services.content.v1.Content/Write", commit)
    assert code is grpc.StatusCode.OK, details
    subscribe = by_path["/containerd.services.events.v1.Events/Subscribe"]
    stream = fuzz.channel.unary_stream(subscribe.path, request_serializer=_same, response_deserializer=_same)
    subscription = stream(
        bytes(events_api.SubscribeRequest(filters=[f"event.digest~=/{p}/" for p in REDOS])),
        timeout=DEADLINE * 4,
    )
    slowest = 0.0
    try:
        with Victim(fuzz.daemon.socket) as victim:
            for pattern in REDOS:
                for path, request in (
                    ("/containerd.services.leases.v1.Leases/List", leases_api.ListRequest),
                    ("/containerd.services.content.v1.Content/List", content_api.ListContentRequest),
                ):
                    code, details, elapsed = call(path, request(filters=[f"labels.a~=/{pattern}/"]))
                    assert code is grpc.StatusCode.OK, (path, pattern, details)
                    slowest = max(slowest, elapsed)
            event = pb.Any(
                type_url="containerd.events.ContentCreate", value=bytes(ContentCreate(digest=long))
            )
            code, details, elapsed = call(
                "/containerd.services.events.v1.Events/Publish",
                events_api.PublishRequest(topic="/redos", event=event),
            )
            assert code is grpc.StatusCode.OK, details
            slowest = max(slowest, elapsed)
            time.sleep(0.2)
    finally:
        subscription.cancel()
    figures.add("fuzzing: backtracking regexps", "cases tried", len(REDOS) * 2 + 1)
    figures.add("fuzzing: backtracking regexps", "max answer time (ms)", slowest * 1000)
    figures.add("fuzzing: backtracking regexps", "max victim latency (ms)", victim.worst * 1000)
    assert slowest < DEADLINE
    assert victim.worst < DEADLINE
    assert not victim.errors
    assert "Traceback" not in fuzz.daemon.log()


def test_unknown_fields_cannot_stall_the_daemon(fuzz: Fuzz, figures: Figures) -> None:
    """A million one-byte unknown fields (2 MiB) in a request, and in a published event's
    payload: answered within the deadline, another client served meanwhile (betterproto2
    keeps unknown fields in time quadratic in their number: the Info took ~35 s, a 16 MiB
    one hours, all other clients waiting)."""
    from ctrd.api.containerd.events import ContentCreate
    from ctrd.api.containerd.services.events import v1 as events_api
    from ctrd.api.google import protobuf as pb

    by_path = {r.path: r for r in RPCS}
    unknown = b"\x78\x00" * 1_000_000
    event = pb.Any(type_url="containerd.events.ContentCreate", value=bytes(ContentCreate(size=1)) + unknown)
    cases = [
        ("/containerd.services.content.v1.Content/Info", unknown, grpc.StatusCode.INVALID_ARGUMENT),
        ("/containerd.services.leases.v1.Leases/List", unknown, grpc.StatusCode.OK),
        (
            "/containerd.services.events.v1.Events/Publish",
            bytes(events_api.PublishRequest(topic="/unknown", event=event)),
            grpc.StatusCode.OK,
        ),
    ]
    slowest = 0.0
    with Victim(fuzz.daemon.socket) as victim:
        for path, body, expected in cases:
            code, details, elapsed, _ = fuzz.call(by_path[path], [body], NAMESPACE)
            assert code is expected, (path, code, details)
            slowest = max(slowest, elapsed)
    group = "fuzzing: a million unknown fields"
    figures.add(group, "cases tried", len(cases))
    figures.add(group, "max answer time (ms)", slowest * 1000)
    figures.add(group, "max victim latency (ms)", victim.worst * 1000)
    assert slowest < DEADLINE
    assert victim.worst < DEADLINE
    assert not victim.errors
    assert "Traceback" not in fuzz.daemon.log()
