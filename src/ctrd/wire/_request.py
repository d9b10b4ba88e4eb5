"""One call of the gRPC server before its handler runs: grpclib's checks of its headers, and the
bookkeeping of calls in flight (the drain) and of their deadlines."""

from __future__ import annotations

import asyncio
from typing import Any, Final, NamedTuple

from grpclib.const import Status
from grpclib.encoding.base import GRPC_CONTENT_TYPE
from grpclib.metadata import Deadline, decode_metadata
from grpclib.utils import Wrapper

from ctrd.wire._stream import CallStream

__all__ = ["Request", "TaskWrapper", "Tracker", "accepted", "cancel_code"]

_METHOD_NOT_FOUND: Final = "Method not found"


async def _abort_with_content_type(
    h2_stream: Any, h2_status: int, grpc_status: Status | None = None, grpc_message: str | None = None
) -> None:
    # grpc-go needs content-type on a Trailers-Only reply, else it reports
    # "missing content-type field" instead of the status we send.
    headers = [(":status", str(h2_status)), ("content-type", "application/grpc")]
    if grpc_status is not None:
        headers.append(("grpc-status", str(grpc_status.value)))
    if grpc_message is not None:
        headers.append(("grpc-message", grpc_message))
    await h2_stream.send_headers(headers, end_stream=True)
    if h2_stream.closable:
        h2_stream.reset_nowait()


class Tracker:
    """Counts in-flight calls; refuses new ones while draining."""

    def __init__(self) -> None:
        self.inflight: set[asyncio.Task[Any]] = set()
        self.draining = False
        self.idle = asyncio.Event()
        self.idle.set()
        #: set to stop waiting for in-flight calls (:meth:`GrpcListener.cut_drain`)
        self.cut = asyncio.Event()

    def add(self, task: asyncio.Task[Any]) -> None:
        """Track *task* (grpclib's per-request task) until it is done.

        Done means the whole request, trailers included, not just the handler: a
        reply still waiting for the transport must not be cut off by the close.
        """
        if task not in self.inflight:
            self.inflight.add(task)
            self.idle.clear()
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.inflight.discard(task)
        if not self.inflight:
            self.idle.set()


class TaskWrapper(Wrapper):
    """grpclib's :class:`~grpclib.utils.Wrapper` for a call whose task is known.

    grpclib's looks the current task up when entered and again when left (in
    Python, on 3.11); the call's task is known from the start here.
    """

    def __init__(self, task: asyncio.Task[Any]) -> None:
        super().__init__()
        self._task = task

    def __enter__(self) -> None:
        if self._error is not None:
            raise self._error
        self._tasks.add(self._task)

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        self._tasks.discard(self._task)
        if self._error is not None:
            self.cancel_failed = exc_type is not asyncio.CancelledError
            raise self._error


class Request(NamedTuple):
    """A call that passed grpclib's checks of its headers."""

    method_name: str
    method: Any  # grpclib's const.Handler
    deadline: Deadline | None
    metadata: Any
    user_agent: str | None


async def accepted(handler: Any, h2_stream: Any, headers: Any) -> Request | None:
    """grpclib's checks of a request's headers, with its answers; ``None`` when answered."""
    headers_map = dict(headers)
    if headers_map[":method"] != "POST":
        await _abort_with_content_type(h2_stream, 405)
        return None
    content_type = headers_map.get("content-type")
    if content_type is None:
        await _abort_with_content_type(h2_stream, 415, Status.UNKNOWN, "Missing content-type header")
        return None
    base_type, _, sub_type = content_type.partition("+")
    if base_type != GRPC_CONTENT_TYPE or (sub_type or "proto") != handler.codec.__content_subtype__:
        await _abort_with_content_type(h2_stream, 415, Status.UNKNOWN, "Unacceptable content-type header")
        return None
    if headers_map.get("te") != "trailers":
        await _abort_with_content_type(
            h2_stream, 400, Status.UNKNOWN, 'Required "te: trailers" header is missing'
        )
        return None
    method_name = headers_map[":path"]
    method = handler.mapping.get(method_name)
    if method is None:
        await _abort_with_content_type(h2_stream, 200, Status.UNIMPLEMENTED, _METHOD_NOT_FOUND)
        return None
    deadline = None
    if "grpc-timeout" in headers_map:
        try:
            deadline = Deadline.from_headers(headers)
        except ValueError:
            await _abort_with_content_type(h2_stream, 200, Status.UNKNOWN, "Invalid grpc-timeout header")
            return None
    return Request(method_name, method, deadline, decode_metadata(headers), headers_map.get("user-agent"))


def cancel_code(stream: CallStream) -> str:
    """Why a call's handler was cancelled: its deadline, else the client (reset or connection lost).

    OK if the call had already ended with OK trailers: a handler's last reply can
    leave with them (``send_last``) while it still tidies up (closing a committed
    writer); a client that has its answer may close the connection then, which
    cancels the tidying, not the call the client saw succeed.
    """
    if stream._send_trailing_metadata_done:
        return "OK"
    wrapper = getattr(stream._stream, "wrapper", None)
    if isinstance(getattr(wrapper, "_error", None), TimeoutError):
        return "DeadlineExceeded"
    return "Canceled"
