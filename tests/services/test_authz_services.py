"""Namespace authorization through ctrd's real call handling (in memory): the edge check, the
Namespaces and Events services' own checks, the denial log line and the metrics."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.const import Status as G
from grpclib.exceptions import GRPCError
from prometheus_client import CollectorRegistry

from ctrd import namespaces
from ctrd.api.containerd.events import ContentDelete
from ctrd.api.containerd.services.events import v1 as ev_api
from ctrd.api.containerd.services.namespaces import v1 as ns_api
from ctrd.api.google.protobuf import FieldMask
from ctrd.authz import Peer, Policy, Principal
from ctrd.events.exchange import Exchange
from ctrd.server.authz import Authorizer
from ctrd.server.metrics import GrpcMetrics
from ctrd.services.events import EventsService
from ctrd.services.namespaces import NamespacesService
from ctrd.wire.typeurl import pack_event

from .conftest import Serve
from .test_events_service import Sub
from .test_namespaces_service import FakeNamespaces, FakePublisher

POLICY = Policy(
    [
        Principal("team-a", uids=frozenset({1000}), namespaces=("team-a", "team-a-*")),
        Principal(
            "admin-a", uids=frozenset({1001}), namespaces=("team-a", "team-a-*"), manage_namespaces=True
        ),
    ]
)
TEAM_A, ADMIN_A, ROOT, NOBODY = (Peer("unix", uid=u, gid=u, pid=1) for u in (1000, 1001, 0, 4242))

NS = "/containerd.services.namespaces.v1.Namespaces/"
EV = "/containerd.services.events.v1.Events/"


def md(ns: str | None) -> dict[str, str]:
    return {namespaces.GRPC_HEADER: ns} if ns else {}


class World:
    def __init__(self) -> None:
        self.store = FakeNamespaces()
        self.store.ns = {"default": {}, "team-a": {"k": "v"}, "team-a-ci": {}, "team-b": {"s": "1"}}
        self.publisher = FakePublisher()
        self.exchange = Exchange(queue_size=64)
        self.registry = CollectorRegistry()
        self.metrics = GrpcMetrics(self.registry)

    def denied(self, service: str, method: str) -> float:
        v = self.registry.get_sample_value(
            "ctrd_authorization_denied_total", {"grpc_service": service, "grpc_method": method}
        )
        return v or 0.0

    def handled(self, service: str, method: str, code: str) -> float:
        labels = {"grpc_service": service, "grpc_method": method, "grpc_code": code, "grpc_type": "unary"}
        return self.registry.get_sample_value("grpc_server_handled_total", labels) or 0.0


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def connect(serve: Serve, world: World) -> Any:
    @contextlib.asynccontextmanager
    async def as_peer(peer: Peer) -> AsyncIterator[Channel]:
        az = Authorizer(POLICY)
        services = (NamespacesService(world.store, world.publisher), EventsService(world.exchange))
        async with serve(
            *services, authorizer=az, observer=world.metrics, identify=lambda transport: peer
        ) as ch:
            yield ch

    return as_peer


async def status_of(coro: Any) -> G:
    with pytest.raises(GRPCError) as ei:
        await coro
    return ei.value.status


async def test_namespaces_list_get_and_changes_for_a_restricted_principal(connect: Any, world: World) -> None:
    async with connect(TEAM_A) as ch:
        stub = ns_api.NamespacesStub(ch, metadata=md("default"))  # ctr's header; List/Get ignore it
        listed = await stub.list(ns_api.ListNamespacesRequest())
        assert [n.name for n in listed.namespaces] == ["team-a", "team-a-ci"]
        got = await stub.get(ns_api.GetNamespaceRequest(name="team-a"))
        assert got.namespace is not None
        assert got.namespace.labels == {"k": "v"}
        assert await status_of(stub.get(ns_api.GetNamespaceRequest(name="team-b"))) is G.PERMISSION_DENIED
        # the shareable-label attack: no namespace label may be set without manage_namespaces
        in_a = ns_api.NamespacesStub(ch, metadata=md("team-a"))
        shareable = ns_api.UpdateNamespaceRequest(
            namespace=ns_api.Namespace(name="team-a", labels={"containerd.io/namespace.shareable": "true"}),
            update_mask=FieldMask(paths=["labels.containerd.io/namespace.shareable"]),
        )
        assert await status_of(in_a.update(shareable)) is G.PERMISSION_DENIED
        b_share = ns_api.UpdateNamespaceRequest(namespace=ns_api.Namespace(name="team-b"))
        assert await status_of(in_a.update(b_share)) is G.PERMISSION_DENIED
        create = ns_api.CreateNamespaceRequest(namespace=ns_api.Namespace(name="team-a-new"))
        assert await status_of(in_a.create(create)) is G.PERMISSION_DENIED
        delete = ns_api.DeleteNamespaceRequest(name="team-a-ci")
        assert await status_of(in_a.delete(delete)) is G.PERMISSION_DENIED
    assert world.store.calls == []
    assert world.publisher.events == []
    assert world.denied("containerd.services.namespaces.v1.Namespaces", "Update") == 2
    assert world.denied("containerd.services.namespaces.v1.Namespaces", "Get") == 1
    assert world.handled("containerd.services.namespaces.v1.Namespaces", "Get", "PermissionDenied") == 1
    assert world.handled("containerd.services.namespaces.v1.Namespaces", "Get", "OK") == 1


async def test_manage_namespaces_within_the_patterns_only(connect: Any, world: World) -> None:
    async with connect(ADMIN_A) as ch:
        in_a = ns_api.NamespacesStub(ch, metadata=md("team-a"))
        await in_a.create(ns_api.CreateNamespaceRequest(namespace=ns_api.Namespace(name="team-a-new")))
        await in_a.update(
            ns_api.UpdateNamespaceRequest(
                namespace=ns_api.Namespace(name="team-a", labels={"x": "y"}),
                update_mask=FieldMask(paths=["labels.x"]),
            )
        )
        await in_a.delete(ns_api.DeleteNamespaceRequest(name="team-a-new"))
        for req in (
            in_a.create(ns_api.CreateNamespaceRequest(namespace=ns_api.Namespace(name="team-b2"))),
            in_a.update(ns_api.UpdateNamespaceRequest(namespace=ns_api.Namespace(name="team-b"))),
            in_a.delete(ns_api.DeleteNamespaceRequest(name="team-b")),
        ):
            assert await status_of(req) is G.PERMISSION_DENIED
        # Create/Update publish their event in the header's namespace: it must be permitted too
        in_default = ns_api.NamespacesStub(ch, metadata=md("default"))
        create = ns_api.CreateNamespaceRequest(namespace=ns_api.Namespace(name="team-a-other"))
        assert await status_of(in_default.create(create)) is G.PERMISSION_DENIED
        # without a header the call goes through as without authorization
        await ns_api.NamespacesStub(ch).create(create)
    assert [c[:2] for c in world.store.calls] == [
        ("create", "team-a-new"),
        ("update", "team-a"),
        ("delete", "team-a-new"),
        ("create", "team-a-other"),
    ]
    assert world.store.ns["team-b"] == {"s": "1"}


async def test_a_client_matching_no_principal_is_denied_everything(
    connect: Any, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ctrd")
    async with connect(NOBODY) as ch:
        stub = ns_api.NamespacesStub(ch)
        assert await status_of(stub.list(ns_api.ListNamespacesRequest())) is G.PERMISSION_DENIED
        with pytest.raises(GRPCError) as ei:
            await stub.get(ns_api.GetNamespaceRequest(name="default"))
        assert ei.value.message == "no authorization principal matches this client: permission denied"
        ev = ev_api.EventsStub(ch)
        assert await status_of(ev.publish(ev_api.PublishRequest(topic="/x"))) is G.PERMISSION_DENIED
    lines = [r for r in caplog.records if r.name == "ctrd.authz"]
    assert len(lines) == 3  # one line per denied call, no traceback
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in lines)
    assert lines[0].getMessage() == (
        "authorization: denied /containerd.services.namespaces.v1.Namespaces/List to "
        "unix uid=4242 gid=4242 pid=1 (no principal): no authorization principal matches this client"
    )


async def test_root_is_unrestricted(connect: Any, world: World) -> None:
    async with connect(ROOT) as ch:
        stub = ns_api.NamespacesStub(ch, metadata=md("default"))
        listed = await stub.list(ns_api.ListNamespacesRequest())
        assert [n.name for n in listed.namespaces] == ["default", "team-a", "team-a-ci", "team-b"]
        await stub.update(ns_api.UpdateNamespaceRequest(namespace=ns_api.Namespace(name="team-b")))
    assert world.denied("containerd.services.namespaces.v1.Namespaces", "Update") == 0


async def test_events_subscribe_publish_and_forward(connect: Any, world: World) -> None:
    ts = _dt.datetime(2024, 1, 2, tzinfo=_dt.UTC)
    async with connect(TEAM_A) as ch, Sub(ch, world.exchange) as sub:
        for ns in ("team-b", "team-a", "default", "team-a-ci", "team-b"):
            await world.exchange.publish(ns, "/test/e", ContentDelete(digest=ns))
        assert [(await sub.next()).namespace for _ in range(2)] == ["team-a", "team-a-ci"]
        in_a = ev_api.EventsStub(ch, metadata=md("team-a"))
        await in_a.publish(ev_api.PublishRequest(topic="/mine"))
        assert (await sub.next()).topic == "/mine"
        in_b = ev_api.EventsStub(ch, metadata=md("team-b"))
        assert await status_of(in_b.publish(ev_api.PublishRequest(topic="/x"))) is G.PERMISSION_DENIED
        payload = pack_event(ContentDelete())
        env = ev_api.Envelope(timestamp=ts, namespace="team-b", topic="/fwd", event=payload)
        # Forward's header is not its namespace: the envelope's is
        assert await status_of(in_a.forward(ev_api.ForwardRequest(envelope=env))) is G.PERMISSION_DENIED
        env.namespace = "team-a"
        await in_b.forward(ev_api.ForwardRequest(envelope=env))
        assert (await sub.next()).topic == "/fwd"
        await asyncio.sleep(0.05)
        assert sub.empty()
    # the invisible events were never queued for the subscriber, so never dropped for it either
    assert world.exchange.dropped == 0
    assert world.denied("containerd.services.events.v1.Events", "Publish") == 1
    assert world.denied("containerd.services.events.v1.Events", "Forward") == 1
