"""The errdefs <-> gRPC status table, both ways, and its use at the server edge."""

from __future__ import annotations

import builtins
import subprocess
import sys

import pytest
from _daemon import Launcher, run_sync
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from ctrd import errdefs
from ctrd.api.google.protobuf import Empty
from ctrd.wire import status as errgrpc

EXPECTED = {
    errdefs.InvalidArgument: (Status.INVALID_ARGUMENT, "invalid argument"),
    errdefs.NotFound: (Status.NOT_FOUND, "not found"),
    errdefs.AlreadyExists: (Status.ALREADY_EXISTS, "already exists"),
    errdefs.FailedPrecondition: (Status.FAILED_PRECONDITION, "failed precondition"),
    errdefs.Unavailable: (Status.UNAVAILABLE, "unavailable"),
    errdefs.Unimplemented: (Status.UNIMPLEMENTED, "not implemented"),
    errdefs.OutOfRange: (Status.OUT_OF_RANGE, "out of range"),
    errdefs.DataLoss: (Status.DATA_LOSS, "data loss"),
    errdefs.PermissionDenied: (Status.PERMISSION_DENIED, "permission denied"),
    errdefs.ResourceExhausted: (Status.RESOURCE_EXHAUSTED, "resource exhausted"),
    errdefs.Aborted: (Status.ABORTED, "aborted"),
    errdefs.Internal: (Status.INTERNAL, "internal"),
    errdefs.DeadlineExceeded: (Status.DEADLINE_EXCEEDED, "deadline exceeded"),
    errdefs.Canceled: (Status.CANCELLED, "canceled"),
    errdefs.Unknown: (Status.UNKNOWN, "unknown"),
}

CLASSES = list(EXPECTED)


def test_table_is_complete_and_one_to_one() -> None:
    assert set(errdefs.ALL_ERRORS) == set(EXPECTED)
    assert {cls: code for cls, code in errgrpc.TABLE} == {c: v[0] for c, v in EXPECTED.items()}
    codes = [code for _, code in errgrpc.TABLE]
    assert len(codes) == len(set(codes))
    # every Error subclass defined in errdefs is in the closed set
    subclasses = {
        v for v in vars(errdefs).values() if isinstance(v, type) and issubclass(v, errdefs.Error)
    } - {errdefs.Error}
    assert subclasses == set(errdefs.ALL_ERRORS)


def test_no_class_shadows_a_builtin() -> None:
    for cls in errdefs.ALL_ERRORS:
        assert not hasattr(builtins, cls.__name__), cls.__name__


def test_errdefs_imports_nothing_from_grpc() -> None:
    code = (
        "import sys, ctrd.errdefs\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'grpclib', 'h2', 'google'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_to_grpc_and_back(cls: type[errdefs.Error]) -> None:
    code, suffix = EXPECTED[cls]
    err = cls("content digest sha256:abc")
    assert str(err) == f"content digest sha256:abc: {suffix}"
    g = errgrpc.status_for(err)
    assert g.status is code
    assert g.message == f"content digest sha256:abc: {suffix}"
    back = errgrpc.error_from(g)
    assert type(back) is cls
    assert back.context == "content digest sha256:abc"
    assert str(back) == g.message
    # and again: a second trip does not double the suffix
    again = errgrpc.status_for(back)
    assert (again.status, again.message) == (code, g.message)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_suffix_is_not_doubled(cls: type[errdefs.Error]) -> None:
    code, suffix = EXPECTED[cls]
    err = cls(f"thing x: {suffix}")
    assert str(err) == f"thing x: {suffix}"
    assert errgrpc.status_for(err).message == f"thing x: {suffix}"
    # a message from a peer that already carries the suffix
    back = errgrpc.error_from(GRPCError(code, f"thing x: {suffix}"))
    assert type(back) is cls
    assert str(back) == f"thing x: {suffix}"
    assert back.context == "thing x"


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_bare_class(cls: type[errdefs.Error]) -> None:
    code, suffix = EXPECTED[cls]
    assert str(cls()) == suffix
    assert str(cls(suffix)) == suffix
    g = errgrpc.status_for(cls())
    assert (g.status, g.message) == (code, suffix)
    back = errgrpc.error_from(g)
    assert type(back) is cls
    assert back.context == ""
    assert str(back) == suffix
    # a peer that sends no message at all
    empty = errgrpc.error_from(GRPCError(code))
    assert type(empty) is cls
    assert str(empty) == suffix


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_message_without_suffix_gets_it(cls: type[errdefs.Error]) -> None:
    # containerd's ctr prints "blob missing: not found" for NOT_FOUND "blob missing"
    code, suffix = EXPECTED[cls]
    back = errgrpc.error_from(GRPCError(code, "blob missing"))
    assert type(back) is cls
    assert str(back) == f"blob missing: {suffix}"


def test_only_own_suffix_is_stripped() -> None:
    back = errgrpc.error_from(GRPCError(Status.NOT_FOUND, "lookup: unknown"))
    assert back.context == "lookup: unknown"
    assert str(back) == "lookup: unknown: not found"
    back = errgrpc.error_from(GRPCError(Status.NOT_FOUND, "x: unknown: not found"))
    assert back.context == "x: unknown"
    assert str(back) == "x: unknown: not found"


def test_subclass_maps_to_its_base_code() -> None:
    class BlobMissing(errdefs.NotFound):
        pass

    g = errgrpc.status_for(BlobMissing("blob sha256:1"))
    assert (g.status, g.message) == (Status.NOT_FOUND, "blob sha256:1: not found")


def test_base_error_and_unmapped_codes_are_unknown() -> None:
    g = errgrpc.status_for(errdefs.Error("odd"))
    assert (g.status, g.message) == (Status.UNKNOWN, "odd: unknown")
    back = errgrpc.error_from(GRPCError(Status.UNAUTHENTICATED, "who are you"))
    assert type(back) is errdefs.Unknown
    assert str(back) == "who are you: unknown"


def test_code_names_cover_every_status() -> None:
    assert set(errgrpc.CODE_NAMES) == set(Status)
    assert errgrpc.CODE_NAMES[Status.CANCELLED] == "Canceled"
    assert errgrpc.CODE_NAMES[Status.NOT_FOUND] == "NotFound"


def test_translate_to_grpc() -> None:
    with pytest.raises(GRPCError) as ei, errgrpc.translate_to_grpc():
        raise errdefs.AlreadyExists("namespace x")
    assert (ei.value.status, ei.value.message) == (Status.ALREADY_EXISTS, "namespace x: already exists")
    with pytest.raises(ValueError, match="not ours"), errgrpc.translate_to_grpc():
        raise ValueError("not ours")


def test_translate_to_native() -> None:
    with pytest.raises(errdefs.NotFound) as ei, errgrpc.translate_to_native():
        raise GRPCError(Status.NOT_FOUND, "lease l1: not found")
    assert str(ei.value) == "lease l1: not found"
    with pytest.raises(errdefs.DeadlineExceeded), errgrpc.translate_to_native():
        raise TimeoutError()
    with pytest.raises(errdefs.Unavailable, match="stream terminated"), errgrpc.translate_to_native():
        raise StreamTerminatedError("reset")
    with pytest.raises(errdefs.Unavailable, match="connection error"), errgrpc.translate_to_native():
        raise ConnectionRefusedError(111, "Connection refused")


# -- at the server edge (real daemon, test plugin /ctrd.test.Slow/Raise) -------------------


async def _raise(sock: str, error_class: str, context: str) -> GRPCError:
    ch = Channel(path=sock)
    try:
        async with ch.request(
            "/ctrd.test.Slow/Raise",
            Cardinality.UNARY_UNARY,
            Empty,
            Empty,
            metadata={"error-class": error_class, "error-context": context},
        ) as stream:
            await stream.send_message(Empty(), end=True)
            try:
                await stream.recv_message()
            except GRPCError as exc:
                return exc
        raise AssertionError("call succeeded")
    finally:
        ch.close()


def test_server_translates_raised_errors(daemon: Launcher) -> None:
    d = daemon(plugins=True)
    for cls in CLASSES:
        code, suffix = EXPECTED[cls]
        err = run_sync(lambda cls=cls: _raise(d.socket, cls.__name__, "object 42"))
        assert (err.status, err.message) == (code, f"object 42: {suffix}"), cls
    # a plain Python exception is UNKNOWN with its message, never a traceback
    err = run_sync(lambda: _raise(d.socket, "RuntimeError", "exploded"))
    assert err.status is Status.UNKNOWN
    assert err.message == "RuntimeError: exploded"
    assert "Traceback" not in (err.message or "")
