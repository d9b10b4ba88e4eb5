"""NamespacesService over an in-memory fake NamespaceStore, through real stubs and ctrd's interceptor."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.const import Status as G
from grpclib.exceptions import GRPCError

from ctrd import errdefs, namespaces
from ctrd.api.containerd.events import NamespaceCreate, NamespaceDelete, NamespaceUpdate
from ctrd.api.containerd.services.namespaces import v1 as api
from ctrd.api.google.protobuf import FieldMask
from ctrd.metadata import NamespaceStore
from ctrd.services.namespaces import NamespacesService

from .conftest import Serve

MD = {namespaces.GRPC_HEADER: "default"}


class FakeNamespaces:
    """In-memory NamespaceStore with the metadata store's error texts."""

    def __init__(self) -> None:
        self.ns: dict[str, dict[str, str]] = {}
        self.nonempty: set[str] = set()
        self.calls: list[tuple[Any, ...]] = []

    async def create(self, name: str, labels: Mapping[str, str]) -> None:
        self.calls.append(("create", name, dict(labels)))
        if name in self.ns:
            raise errdefs.AlreadyExists(f'namespace "{name}"')
        self.ns[name] = {k: v for k, v in labels.items() if v}

    async def labels(self, name: str) -> dict[str, str]:
        return dict(self.ns.get(name, {}))

    async def update_labels(self, name: str, labels: Mapping[str, str], *, replace: bool) -> dict[str, str]:
        self.calls.append(("update", name, dict(labels), replace))
        cur = self.ns.setdefault(name, {})
        if replace:
            cur.clear()
        for k, v in labels.items():
            if v:
                cur[k] = v
            else:
                cur.pop(k, None)
        return dict(cur)

    async def list(self) -> list[str]:
        return sorted(self.ns)

    async def delete(self, name: str) -> None:
        self.calls.append(("delete", name))
        if name not in self.ns:
            raise errdefs.NotFound(f'namespace "{name}"')
        if name in self.nonempty:
            raise errdefs.FailedPrecondition(f'namespace "{name}" must be empty, but it still has blobs')
        del self.ns[name]


class FakePublisher:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []

    async def publish(self, namespace: str, topic: str, event: Any) -> None:
        self.events.append((namespace, topic, event))


@pytest.fixture
def store() -> FakeNamespaces:
    return FakeNamespaces()


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
async def channel(serve: Serve, store: FakeNamespaces, publisher: FakePublisher) -> AsyncIterator[Channel]:
    async with serve(NamespacesService(store, publisher)) as ch:
        yield ch


@pytest.fixture
def stub(channel: Channel) -> api.NamespacesStub:
    return api.NamespacesStub(channel, metadata=MD)


@pytest.fixture
def bare(channel: Channel) -> api.NamespacesStub:
    """A stub that sends no namespace header."""
    return api.NamespacesStub(channel)


async def _error(aw: Any) -> GRPCError:
    with pytest.raises(GRPCError) as ei:
        await aw
    return ei.value


def _create(name: str, labels: dict[str, str] | None = None) -> api.CreateNamespaceRequest:
    return api.CreateNamespaceRequest(namespace=api.Namespace(name=name, labels=labels or {}))


def _update(name: str, labels: dict[str, str], paths: list[str] | None) -> api.UpdateNamespaceRequest:
    mask = None if paths is None else FieldMask(paths=paths)
    return api.UpdateNamespaceRequest(namespace=api.Namespace(name=name, labels=labels), update_mask=mask)


def test_fake_satisfies_protocol() -> None:
    assert isinstance(FakeNamespaces(), NamespaceStore)


# -- Get / List ----------------------------------------------------------------------------


async def test_get_unknown_is_ok_and_empty(bare: api.NamespacesStub) -> None:
    resp = await bare.get(api.GetNamespaceRequest(name="nosuch"))
    assert resp.namespace is not None
    assert resp.namespace.name == "nosuch"
    assert resp.namespace.labels == {}


async def test_get(stub: api.NamespacesStub, store: FakeNamespaces) -> None:
    store.ns["nsa"] = {"team": "a"}
    resp = await stub.get(api.GetNamespaceRequest(name="nsa"))
    assert resp.namespace is not None
    assert (resp.namespace.name, resp.namespace.labels) == ("nsa", {"team": "a"})


async def test_list(bare: api.NamespacesStub, store: FakeNamespaces) -> None:
    assert (await bare.list(api.ListNamespacesRequest())).namespaces == []
    store.ns.update({"nsb": {}, "nsa": {"team": "a"}})
    resp = await bare.list(api.ListNamespacesRequest(filter="name==nothing"))  # the filter is ignored
    assert [(n.name, n.labels) for n in resp.namespaces] == [("nsa", {"team": "a"}), ("nsb", {})]


# -- Create --------------------------------------------------------------------------------


async def test_create(stub: api.NamespacesStub, store: FakeNamespaces, publisher: FakePublisher) -> None:
    resp = await stub.create(_create("nsa", {"team": "a"}))
    assert resp.namespace is not None
    assert (resp.namespace.name, resp.namespace.labels) == ("nsa", {"team": "a"})
    assert store.ns == {"nsa": {"team": "a"}}
    assert len(publisher.events) == 1
    ns, topic, event = publisher.events[0]
    assert (ns, topic) == ("default", "/namespaces/create")
    assert isinstance(event, NamespaceCreate)
    assert (event.name, event.labels) == ("nsa", {"team": "a"})


async def test_create_without_header_publishes_in_created_namespace(
    bare: api.NamespacesStub, store: FakeNamespaces, publisher: FakePublisher
) -> None:
    await bare.create(_create("evns"))
    assert "evns" in store.ns
    assert [(ns, topic) for ns, topic, _ in publisher.events] == [("evns", "/namespaces/create")]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "identifier must not be empty: invalid argument"),
        (
            "bad/ns",
            'identifier "bad/ns" must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$: invalid argument',
        ),
        ("a" * 77, f'identifier "{"a" * 77}" greater than maximum length (76 characters): invalid argument'),
    ],
)
async def test_create_invalid_name(
    stub: api.NamespacesStub, store: FakeNamespaces, publisher: FakePublisher, name: str, message: str
) -> None:
    err = await _error(stub.create(_create(name)))
    assert err.status is G.INVALID_ARGUMENT
    assert err.message == message
    assert store.calls == []
    assert publisher.events == []


async def test_create_missing_namespace_message(stub: api.NamespacesStub) -> None:
    err = await _error(stub.create(api.CreateNamespaceRequest()))
    assert err.status is G.INVALID_ARGUMENT
    assert err.message == "identifier must not be empty: invalid argument"


async def test_create_oversize_label(stub: api.NamespacesStub, store: FakeNamespaces) -> None:
    err = await _error(stub.create(_create("nsa", {"k": "v" * 4096})))
    assert err.status is G.INVALID_ARGUMENT
    assert err.message is not None
    assert err.message.startswith("namespace.Labels: label key and value length (4097 bytes)")
    assert store.calls == []


async def test_create_exists(
    stub: api.NamespacesStub, store: FakeNamespaces, publisher: FakePublisher
) -> None:
    store.ns["nsa"] = {}
    err = await _error(stub.create(_create("nsa")))
    assert err.status is G.ALREADY_EXISTS
    assert err.message == 'namespace "nsa": already exists'
    assert publisher.events == []


# -- Update --------------------------------------------------------------------------------


async def test_update_with_mask(
    stub: api.NamespacesStub, store: FakeNamespaces, publisher: FakePublisher
) -> None:
    store.ns["nsb"] = {"keep": "1", "drop": "2"}
    resp = await stub.update(
        _update("nsb", {"foo": "bar", "other": "ignored"}, ["labels.foo", "labels.drop"])
    )
    assert resp.namespace is None  # containerd leaves it unset
    assert bytes(resp) == b""
    assert store.ns["nsb"] == {"keep": "1", "foo": "bar"}
    assert store.calls == [("update", "nsb", {"foo": "bar", "drop": ""}, False)]
    ns, topic, event = publisher.events[0]
    assert (ns, topic) == ("default", "/namespaces/update")
    assert isinstance(event, NamespaceUpdate)
    assert (event.name, event.labels) == ("nsb", {"keep": "1", "foo": "bar"})


@pytest.mark.parametrize("paths", [None, []])
async def test_update_without_mask_replaces(
    stub: api.NamespacesStub, store: FakeNamespaces, paths: list[str] | None
) -> None:
    store.ns["nsb"] = {"old": "1"}
    await stub.update(_update("nsb", {"new": "2", "empty": ""}, paths))
    assert store.ns["nsb"] == {"new": "2"}
    assert store.calls[-1][-1] is True


async def test_update_creates_implicitly_without_header(
    bare: api.NamespacesStub, store: FakeNamespaces, publisher: FakePublisher
) -> None:
    await bare.update(_update("fresh", {"a": "b"}, ["labels.a"]))
    assert store.ns["fresh"] == {"a": "b"}
    assert [(ns, topic) for ns, topic, _ in publisher.events] == [("fresh", "/namespaces/update")]


@pytest.mark.parametrize("path", ["labels", "name", "labels.", "labelsfoo"])
async def test_update_invalid_path(
    stub: api.NamespacesStub, store: FakeNamespaces, publisher: FakePublisher, path: str
) -> None:
    err = await _error(stub.update(_update("nsb", {"foo": "bar"}, ["labels.foo", path])))
    assert err.status is G.INVALID_ARGUMENT
    assert err.message == f'cannot update "{path}" field: invalid argument'
    assert store.calls == []
    assert publisher.events == []


async def test_update_oversize_label(stub: api.NamespacesStub, store: FakeNamespaces) -> None:
    err = await _error(stub.update(_update("nsb", {"k": "v" * 5000}, ["labels.k"])))
    assert err.status is G.INVALID_ARGUMENT
    assert err.message is not None
    assert err.message.startswith("namespace.Labels: label key and value length")
    err = await _error(stub.update(_update("nsb", {"k": "v" * 5000}, None)))
    assert err.status is G.INVALID_ARGUMENT
    assert store.calls == []


async def test_update_invalid_name(stub: api.NamespacesStub, store: FakeNamespaces) -> None:
    err = await _error(stub.update(_update("", {"a": "b"}, None)))
    assert err.status is G.INVALID_ARGUMENT
    assert err.message == "identifier must not be empty: invalid argument"
    assert store.calls == []


# -- Delete --------------------------------------------------------------------------------


async def test_delete(bare: api.NamespacesStub, store: FakeNamespaces, publisher: FakePublisher) -> None:
    store.ns["evns"] = {}
    await bare.delete(api.DeleteNamespaceRequest(name="evns"))
    assert "evns" not in store.ns
    assert len(publisher.events) == 1
    ns, topic, event = publisher.events[0]
    assert (ns, topic) == ("evns", "/namespaces/delete")
    assert isinstance(event, NamespaceDelete)
    assert event.name == "evns"


async def test_delete_errors(
    stub: api.NamespacesStub, store: FakeNamespaces, publisher: FakePublisher
) -> None:
    err = await _error(stub.delete(api.DeleteNamespaceRequest(name="nosuch")))
    assert err.status is G.NOT_FOUND
    assert err.message == 'namespace "nosuch": not found'
    store.ns["full"] = {}
    store.nonempty.add("full")
    err = await _error(stub.delete(api.DeleteNamespaceRequest(name="full")))
    assert err.status is G.FAILED_PRECONDITION
    assert err.message == 'namespace "full" must be empty, but it still has blobs: failed precondition'
    assert publisher.events == []


async def test_without_publisher(serve: Serve, store: FakeNamespaces) -> None:
    async with serve(NamespacesService(store)) as ch:
        stub = api.NamespacesStub(ch)
        await stub.create(_create("a"))
        await stub.update(_update("a", {"x": "y"}, None))
        await stub.delete(api.DeleteNamespaceRequest(name="a"))
    assert store.ns == {}
