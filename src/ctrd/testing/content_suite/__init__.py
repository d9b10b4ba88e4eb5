"""containerd's content store conformance suite (``content/testsuite``), for any store.

Subclass a suite in a ``Test*`` class of your tests and override its hooks; pytest
collects the cases (coroutines: pytest-asyncio runs them, in its ``strict`` or
``auto`` mode)::

    import pytest_asyncio
    from ctrd.testing.content_suite import ContentStoreSuite

    class TestMyStore(ContentStoreSuite):
        @pytest_asyncio.fixture
        async def store(self):
            return MyStore()            # a fresh, empty store for each case

:class:`ContentStoreSuite` (containerd's ``ContentSuite`` plus cases that hold for
every store) has these hooks:

* ``store`` — an **async pytest fixture** (a method of the class) returning a fresh
  :class:`ctrd.content.Store` per case; clean up in it (``yield`` style is fine).
* ``namespace(k)`` — a method returning a context manager that makes namespace
  ``n<k>`` current (:func:`ctrd.namespaces.with_namespace`). Default:
  :func:`contextlib.nullcontext`. Every case runs inside ``self.namespace(1)``.
* ``supports_labels`` — class attribute, default ``True``. With ``False`` (a store
  that keeps no labels, like containerd's local one) commits ignore labels,
  ``info`` must report none, and ``update`` must raise
  :class:`~ctrd.errdefs.FailedPrecondition`.

:class:`CrossNSSharedSuite`, :class:`CrossNSIsolatedSuite` and
:class:`SharedNSIsolatedSuite` (containerd's ``ContentCrossNSSharedSuite``,
``ContentCrossNSIsolatedSuite``, ``ContentSharedNSIsolatedSuite``) are for
namespaced stores: the same ``store`` fixture, and ``namespace(k)`` **must** be
overridden (k = 1, 2). :class:`SharedNSIsolatedSuite` also needs ``async
make_shareable(k)``, which labels namespace ``n<k>``
``containerd.io/namespace.shareable=true``; it is called outside any
``namespace()`` context, before anything is written.

Writers are opened through :func:`ctrd.content.open_writer` (which retries
:class:`~ctrd.errdefs.Unavailable`), except where a case expects Unavailable.
Time windows allow :data:`SLACK` for clock and filesystem granularity. The
``check_*`` helpers are containerd's and may serve your own cases.

:class:`ctrd.testing.MemoryStore` passes :class:`ContentStoreSuite` (namespaced
or not) and :class:`CrossNSIsolatedSuite` (namespaced).
"""

from __future__ import annotations

from ctrd.testing.content_suite._checks import (
    BAD_DIGESTS,
    LABELS,
    SLACK,
    BytesReaderAt,
    assert_time_in,
    check_committed,
    check_content,
    check_info,
    check_newly_created,
    check_ref_not_available,
    check_status,
    create_content,
)
from ctrd.testing.content_suite._containerd import ContainerdCases
from ctrd.testing.content_suite._namespaced import (
    CrossNSIsolatedSuite,
    CrossNSSharedSuite,
    SharedNSIsolatedSuite,
)
from ctrd.testing.content_suite._store import StoreCases

__all__ = [
    "BAD_DIGESTS",
    "LABELS",
    "SLACK",
    "BytesReaderAt",
    "ContentStoreSuite",
    "CrossNSIsolatedSuite",
    "CrossNSSharedSuite",
    "SharedNSIsolatedSuite",
    "assert_time_in",
    "check_committed",
    "check_content",
    "check_info",
    "check_newly_created",
    "check_ref_not_available",
    "check_status",
    "create_content",
]


class ContentStoreSuite(ContainerdCases, StoreCases):
    """containerd's ``ContentSuite`` and the cases that hold for every store (see the module)."""
