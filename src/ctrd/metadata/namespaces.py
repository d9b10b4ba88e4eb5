"""Namespaces and their labels in the metadata database."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from ctrd import errdefs, identifiers
from ctrd import labels as _labels
from ctrd.content import IngestManager, utcnow
from ctrd.metadata.db import DB, to_us

__all__ = ["SqliteNamespaceStore"]


def _validate_labels(labels: Mapping[str, str]) -> None:
    try:
        _labels.validate_all(labels)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"namespace.Labels: {exc.context}") from exc


class SqliteNamespaceStore:
    """Implements :class:`ctrd.metadata.NamespaceStore`."""

    def __init__(self, db: DB, backend: IngestManager | None = None) -> None:
        self._db = db
        self._backend = backend

    async def create(self, name: str, labels: Mapping[str, str]) -> None:
        identifiers.validate(name)
        _validate_labels(labels)
        async with self._db.update() as tx:
            n = await tx.run(
                "INSERT OR IGNORE INTO namespaces(name, created_at) VALUES (?, ?)", (name, to_us(utcnow()))
            )
            if n == 0:
                raise errdefs.AlreadyExists(f'namespace "{name}"')
            await tx.many(
                "INSERT INTO namespace_labels(namespace, key, value) VALUES (?, ?, ?)",
                [(name, k, v) for k, v in sorted(labels.items()) if v],
            )

    async def labels(self, name: str) -> dict[str, str]:
        rows = await self._db.view_all(
            "SELECT key, value FROM namespace_labels WHERE namespace = ? ORDER BY key", (name,)
        )
        return {str(k): str(v) for k, v in rows}

    async def update_labels(self, name: str, labels: Mapping[str, str], *, replace: bool) -> dict[str, str]:
        identifiers.validate(name)
        _validate_labels(labels)
        async with self._db.update() as tx:
            await tx.ensure_namespace(name, to_us(utcnow()))
            if replace:
                await tx.run("DELETE FROM namespace_labels WHERE namespace = ?", (name,))
            for k, v in sorted(labels.items()):
                if v:
                    await tx.run(
                        "INSERT INTO namespace_labels(namespace, key, value) VALUES (?, ?, ?) "
                        "ON CONFLICT(namespace, key) DO UPDATE SET value = excluded.value",
                        (name, k, v),
                    )
                else:
                    await tx.run("DELETE FROM namespace_labels WHERE namespace = ? AND key = ?", (name, k))
            rows = await tx.all(
                "SELECT key, value FROM namespace_labels WHERE namespace = ? ORDER BY key", (name,)
            )
        return {str(k): str(v) for k, v in rows}

    async def list(self) -> list[str]:
        rows = await self._db.view_all("SELECT name FROM namespaces ORDER BY name")
        return [str(r[0]) for r in rows]

    async def delete(self, name: str) -> None:
        identifiers.validate(name)
        brefs: list[str] = []
        async with self._db.update() as tx:
            if await tx.one("SELECT 1 FROM namespaces WHERE name = ?", (name,)) is None:
                raise errdefs.NotFound(f'namespace "{name}"')
            held = [  # containerd's order and words
                table
                for table in ("images", "blobs")
                if await tx.one(f"SELECT 1 FROM {table} WHERE namespace = ? LIMIT 1", (name,)) is not None
            ]
            if held:
                raise errdefs.FailedPrecondition(
                    f'namespace "{name}" must be empty, but it still has {", ".join(held)}'
                )
            rows = await tx.all(
                "SELECT backend_ref FROM ingests WHERE namespace = ? AND expected = ''", (name,)
            )
            brefs = [str(r[0]) for r in rows]
            await tx.run("DELETE FROM ingests WHERE namespace = ?", (name,))
            await tx.run("DELETE FROM lease_resources WHERE namespace = ?", (name,))
            await tx.run("DELETE FROM leases WHERE namespace = ?", (name,))
            await tx.run("DELETE FROM namespace_labels WHERE namespace = ?", (name,))
            await tx.run("DELETE FROM namespaces WHERE name = ?", (name,))
        if self._backend is not None:
            for bref in brefs:
                with contextlib.suppress(errdefs.Error):
                    await self._backend.abort(bref)
