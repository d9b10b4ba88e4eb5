"""The one table between :mod:`ctrd.errdefs` and gRPC status codes.

:func:`status_for` keeps containerd's message form (``<context>: <class>``);
:func:`error_from` strips the class suffix again so round trips do not double it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Final

from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from ctrd import errdefs

__all__ = ["CODE_NAMES", "TABLE", "error_from", "status_for", "translate_to_grpc", "translate_to_native"]

#: errdefs class <-> gRPC status, both directions.
TABLE: Final[tuple[tuple[type[errdefs.Error], Status], ...]] = (
    (errdefs.InvalidArgument, Status.INVALID_ARGUMENT),
    (errdefs.NotFound, Status.NOT_FOUND),
    (errdefs.AlreadyExists, Status.ALREADY_EXISTS),
    (errdefs.FailedPrecondition, Status.FAILED_PRECONDITION),
    (errdefs.Unavailable, Status.UNAVAILABLE),
    (errdefs.Unimplemented, Status.UNIMPLEMENTED),
    (errdefs.OutOfRange, Status.OUT_OF_RANGE),
    (errdefs.DataLoss, Status.DATA_LOSS),
    (errdefs.PermissionDenied, Status.PERMISSION_DENIED),
    (errdefs.ResourceExhausted, Status.RESOURCE_EXHAUSTED),
    (errdefs.Aborted, Status.ABORTED),
    (errdefs.Internal, Status.INTERNAL),
    (errdefs.DeadlineExceeded, Status.DEADLINE_EXCEEDED),
    (errdefs.Canceled, Status.CANCELLED),
    (errdefs.Unknown, Status.UNKNOWN),
)

_TO: Final = {cls: code for cls, code in TABLE}
_FROM: Final = {code: cls for cls, code in TABLE}

#: grpc-go's names of the codes (as Prometheus labels and logs show them)
CODE_NAMES: Final[dict[Status, str]] = {
    Status.OK: "OK",
    Status.CANCELLED: "Canceled",
    Status.UNKNOWN: "Unknown",
    Status.INVALID_ARGUMENT: "InvalidArgument",
    Status.DEADLINE_EXCEEDED: "DeadlineExceeded",
    Status.NOT_FOUND: "NotFound",
    Status.ALREADY_EXISTS: "AlreadyExists",
    Status.PERMISSION_DENIED: "PermissionDenied",
    Status.RESOURCE_EXHAUSTED: "ResourceExhausted",
    Status.FAILED_PRECONDITION: "FailedPrecondition",
    Status.ABORTED: "Aborted",
    Status.OUT_OF_RANGE: "OutOfRange",
    Status.UNIMPLEMENTED: "Unimplemented",
    Status.INTERNAL: "Internal",
    Status.UNAVAILABLE: "Unavailable",
    Status.DATA_LOSS: "DataLoss",
    Status.UNAUTHENTICATED: "Unauthenticated",
}


def status_for(err: errdefs.Error) -> GRPCError:
    """The gRPC error for *err* (most specific class wins)."""
    for cls in type(err).__mro__:
        code = _TO.get(cls)
        if code is not None:
            return GRPCError(code, str(err))
    return GRPCError(Status.UNKNOWN, str(err))


def error_from(err: GRPCError) -> errdefs.Error:
    """The ctrd error for a gRPC error; the class suffix is stripped from the message."""
    cls = _FROM.get(err.status, errdefs.Unknown)
    msg = err.message or ""
    # as containerd's rebaseMessage: strip only this class's own suffix, once
    if msg == cls.suffix:
        msg = ""
    elif msg.endswith(": " + cls.suffix):
        msg = msg[: -len(cls.suffix) - 2]
    return cls(msg)


@contextlib.contextmanager
def translate_to_grpc() -> Iterator[None]:
    """Re-raise :class:`errdefs.Error` as :class:`GRPCError` (server edge)."""
    try:
        yield
    except errdefs.Error as exc:
        raise status_for(exc) from exc


@contextlib.contextmanager
def translate_to_native() -> Iterator[None]:
    """Re-raise transport errors as :class:`errdefs.Error` (client edge)."""
    try:
        yield
    except GRPCError as exc:
        raise error_from(exc) from exc
    except TimeoutError as exc:
        raise errdefs.DeadlineExceeded("deadline exceeded") from exc
    except StreamTerminatedError as exc:
        raise errdefs.Unavailable(f"stream terminated: {exc}") from exc
    except (ConnectionError, OSError) as exc:
        raise errdefs.Unavailable(f"connection error: {exc}") from exc
