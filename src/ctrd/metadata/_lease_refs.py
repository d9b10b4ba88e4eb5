"""What the context lease references: recorded inside the content store's write transactions.

A call made with a ``containerd-lease`` header (:func:`ctrd.namespaces.current_lease`)
attaches what it creates (a blob, an ingest) to that lease, in the same transaction,
so the garbage collector sees the reference as soon as the object exists. The
leases themselves are managed by :mod:`ctrd.metadata.leases`.
"""

from __future__ import annotations

from ctrd import errdefs, identifiers
from ctrd.metadata.db import Tx

__all__ = ["add_resource", "check_lease", "remove_resource"]


async def check_lease(tx: Tx, ns: str, lease: str | None) -> None:
    """:raises errdefs.NotFound: the context names a lease that does not exist."""
    if lease is None:
        return
    row = await tx.one("SELECT 1 FROM leases WHERE namespace = ? AND id = ?", (ns, lease))
    if row is None:
        raise errdefs.NotFound(f"lease {identifiers.go_quote(lease)} does not exist")


async def add_resource(tx: Tx, ns: str, lease: str | None, type_: str, id_: str) -> bool:
    """Attach a resource to the context lease (no-op without one); whether it was attached now."""
    if lease is None:
        return False
    await check_lease(tx, ns, lease)
    n = await tx.run(
        "INSERT OR IGNORE INTO lease_resources(namespace, lease, type, id) VALUES (?, ?, ?, ?)",
        (ns, lease, type_, id_),
    )
    return n > 0


async def remove_resource(tx: Tx, ns: str, lease: str | None, type_: str, id_: str) -> None:
    """Detach a resource from the context lease (no-op without one)."""
    if lease is None:
        return
    await tx.run(
        "DELETE FROM lease_resources WHERE namespace = ? AND lease = ? AND type = ? AND id = ?",
        (ns, lease, type_, id_),
    )
