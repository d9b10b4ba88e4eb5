"""SQLite schema of the metadata store, and its migrations.

One database, ``<root>/io.containerd.metadata.v1.sqlite/meta.db``, WAL mode.
Everything is scoped by namespace; the blob files themselves live once in the
content plugin's backend store, whatever the number of namespaces holding them.

::

    schema_version(version)                      one row; == len(MIGRATIONS)
    sequences(name PK, value)                    counters ("ingest" for backend refs)
    namespaces(name PK, created_at)
    namespace_labels(namespace, key, value)      PK (namespace, key)
    blobs(namespace, digest, size,               PK (namespace, digest); a blob visible
          created_at, updated_at, labels JSON)   in that namespace. index on digest
    ingests(namespace, ref, backend_ref,         PK (namespace, ref); backend_ref is
          expected, expected_size,               "<ns>/<seq>/<ref>" in the backend store;
          created_at, expires_at)                expected != "" marks a shared writer
                                                 (no backend ingest); expires_at NULL when leased
    leases(namespace, id, created_at, labels)    PK (namespace, id)
    lease_resources(namespace, lease, type, id)  PK all four; type "content" | "ingests" |
                                                 "snapshots/<snapshotter>"
    images(namespace, name, media_type, digest,  PK (namespace, name) (version 2); the
           size, annotations JSON, labels JSON,  target descriptor's fields, its
           created_at, updated_at)               annotations; the image's labels

Timestamps are integer microseconds since the Unix epoch (UTC). Labels with an
empty value are never stored. The schema and ``MIGRATIONS`` change together:
each entry upgrades from version ``i`` to ``i + 1``.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MIGRATIONS", "SCHEMA_VERSION"]

_V1: Final = """
CREATE TABLE IF NOT EXISTS sequences (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE namespaces (
    name       TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE namespace_labels (
    namespace TEXT NOT NULL REFERENCES namespaces(name) ON DELETE CASCADE,
    key       TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
CREATE TABLE blobs (
    namespace  TEXT NOT NULL REFERENCES namespaces(name),
    digest     TEXT NOT NULL,
    size       INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    labels     TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (namespace, digest)
) WITHOUT ROWID;
CREATE INDEX blobs_by_digest ON blobs(digest);
CREATE TABLE ingests (
    namespace     TEXT NOT NULL REFERENCES namespaces(name),
    ref           TEXT NOT NULL,
    backend_ref   TEXT NOT NULL UNIQUE,
    expected      TEXT NOT NULL DEFAULT '',
    expected_size INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    PRIMARY KEY (namespace, ref)
) WITHOUT ROWID;
CREATE INDEX ingests_by_expected ON ingests(expected) WHERE expected != '';
CREATE TABLE leases (
    namespace  TEXT NOT NULL REFERENCES namespaces(name),
    id         TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    labels     TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (namespace, id)
) WITHOUT ROWID;
CREATE TABLE lease_resources (
    namespace TEXT NOT NULL,
    lease     TEXT NOT NULL,
    type      TEXT NOT NULL,
    id        TEXT NOT NULL,
    PRIMARY KEY (namespace, lease, type, id),
    FOREIGN KEY (namespace, lease) REFERENCES leases(namespace, id) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX lease_resources_by_id ON lease_resources(namespace, type, id);
"""

_V2: Final = """
CREATE TABLE images (
    namespace   TEXT NOT NULL REFERENCES namespaces(name),
    name        TEXT NOT NULL,
    media_type  TEXT NOT NULL,
    digest      TEXT NOT NULL,
    size        INTEGER NOT NULL,
    annotations TEXT NOT NULL DEFAULT '{}',
    labels      TEXT NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (namespace, name)
);
"""

#: Each entry upgrades the schema by one version; never edit a released entry.
MIGRATIONS: Final[tuple[str, ...]] = (_V1, _V2)
SCHEMA_VERSION: Final = len(MIGRATIONS)
