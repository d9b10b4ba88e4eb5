"""The content store roles (containerd's Provider, InfoProvider, Manager, IngestManager, Ingester).

:class:`~ctrd.content.Store` is their composition; every implementation plays
each role, and the helpers need only the role they use.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ctrd.client import RemoteContentStore
from ctrd.content import (
    InfoProvider,
    Ingester,
    IngestManager,
    Manager,
    Provider,
    ReaderAt,
    Store,
    Writer,
    read_blob,
    sha256_of,
    write_blob,
)
from ctrd.content.local import LocalStore
from ctrd.metadata import NamespacedContentStore
from ctrd.proxy.content import ProxyContentStore

ROLES = (Provider, InfoProvider, Manager, IngestManager, Ingester)


@pytest.mark.parametrize("role", ROLES)
def test_store_composes_every_role(role: type) -> None:
    assert issubclass(Store, role)


def test_manager_is_an_info_provider() -> None:
    assert issubclass(Manager, InfoProvider)


@pytest.mark.parametrize("cls", [LocalStore, NamespacedContentStore, RemoteContentStore, ProxyContentStore])
def test_implementations_play_every_role(cls: type) -> None:
    assert issubclass(cls, Store)
    for role in ROLES:
        assert issubclass(cls, role)


def test_roles_are_distinct() -> None:
    """A role's object is not taken for the full store, nor for another role."""

    class ReadOnly:
        async def reader_at(self, dgst: str) -> ReaderAt:
            raise NotImplementedError

    assert isinstance(ReadOnly(), Provider)
    assert not isinstance(ReadOnly(), Store)
    assert not isinstance(ReadOnly(), Ingester)
    assert not isinstance(ReadOnly(), InfoProvider)


class _OnlyIngester:
    """Plays the Ingester role only, over a real store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def writer(self, ref: str, total: int = 0, expected: str = "") -> Writer:
        return await self._store.writer(ref, total, expected)


class _OnlyProvider:
    """Plays the Provider role only, over a real store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def reader_at(self, dgst: str) -> ReaderAt:
        return await self._store.reader_at(dgst)


async def test_helpers_need_only_their_role(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "content")
    data = b"roles" * 100
    d = sha256_of(data)
    ingester, provider = _OnlyIngester(store), _OnlyProvider(store)
    assert not isinstance(ingester, Store)
    assert not isinstance(provider, Store)
    await write_blob(ingester, "r", data, expected=d)
    assert await read_blob(provider, d) == data
