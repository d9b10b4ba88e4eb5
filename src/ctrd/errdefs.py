"""The closed set of ctrd errors.

Every error raised by domain code is one of the classes below. Each carries a
context message; ``str(err)`` renders containerd's form ``"<context>: <class>"``,
e.g. ``content digest sha256:...: not found``. The mapping to and from gRPC
status codes lives in :mod:`ctrd.wire.status` (the only place that knows gRPC).

This module imports nothing outside the standard library.

::

    Error
    ├── InvalidArgument      invalid argument
    ├── NotFound             not found
    ├── AlreadyExists        already exists
    ├── FailedPrecondition   failed precondition
    ├── Unavailable          unavailable
    ├── Unimplemented        not implemented
    ├── OutOfRange           out of range
    ├── DataLoss             data loss
    ├── PermissionDenied     permission denied
    ├── ResourceExhausted    resource exhausted
    ├── Aborted              aborted
    ├── Internal             internal
    ├── DeadlineExceeded     deadline exceeded
    ├── Canceled             canceled
    └── Unknown              unknown
"""

from __future__ import annotations

from typing import ClassVar, Final

__all__ = [
    "ALL_ERRORS",
    "Aborted",
    "AlreadyExists",
    "Canceled",
    "DataLoss",
    "DeadlineExceeded",
    "Error",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "Unavailable",
    "Unimplemented",
    "Unknown",
]


class Error(Exception):
    """Base of every ctrd error.

    ``context`` is the message without the class suffix; ``str()`` appends the
    suffix unless the context already ends with it (as containerd's ``FromGRPC``
    avoids doubling it).
    """

    suffix: ClassVar[str] = "unknown"

    def __init__(self, context: str = "") -> None:
        self.context = context
        super().__init__(context)

    def __str__(self) -> str:
        if not self.context:
            return self.suffix
        if self.context == self.suffix or self.context.endswith(": " + self.suffix):
            return self.context
        return f"{self.context}: {self.suffix}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.context!r})"


class InvalidArgument(Error):
    """The request is malformed (bad digest, name, filter, label...)."""

    suffix = "invalid argument"


class NotFound(Error):
    """The object does not exist (in the caller's namespace)."""

    suffix = "not found"


class AlreadyExists(Error):
    """The object exists already."""

    suffix = "already exists"


class FailedPrecondition(Error):
    """The system is not in the state the call needs (size/digest mismatch, no namespace)."""

    suffix = "failed precondition"


class Unavailable(Error):
    """Temporarily unavailable (e.g. an ingest ref is locked by another writer)."""

    suffix = "unavailable"


class Unimplemented(Error):
    """The operation is not implemented."""

    suffix = "not implemented"


class OutOfRange(Error):
    """An offset lies outside the valid range."""

    suffix = "out of range"


class DataLoss(Error):
    """Data was lost or corrupted (e.g. a short write)."""

    suffix = "data loss"


class PermissionDenied(Error):
    """The caller may not do this."""

    suffix = "permission denied"


class ResourceExhausted(Error):
    """A limit was hit (e.g. message size)."""

    suffix = "resource exhausted"


class Aborted(Error):
    """The operation was aborted."""

    suffix = "aborted"


class Internal(Error):
    """An internal invariant broke."""

    suffix = "internal"


class DeadlineExceeded(Error):
    """The deadline passed before the operation finished."""

    suffix = "deadline exceeded"


class Canceled(Error):
    """The operation was canceled by the caller."""

    suffix = "canceled"


class Unknown(Error):
    """Anything that fits no other class."""

    suffix = "unknown"


ALL_ERRORS: Final[tuple[type[Error], ...]] = (
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    Unavailable,
    Unimplemented,
    OutOfRange,
    DataLoss,
    PermissionDenied,
    ResourceExhausted,
    Aborted,
    Internal,
    DeadlineExceeded,
    Canceled,
    Unknown,
)
