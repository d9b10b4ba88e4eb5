"""The hand-written ``WriteContentResponse`` encoder agrees with betterproto2 byte for byte."""

from __future__ import annotations

import datetime as _dt

import pytest

from ctrd.api.containerd.services.content import v1 as api
from ctrd.wire import codecs

_UTC = _dt.UTC
_T1 = _dt.datetime(2026, 11, 28, 5, 0, 0, 123456, tzinfo=_UTC)
_T2 = _dt.datetime(2026, 11, 28, 5, 0, 1, tzinfo=_UTC)


@pytest.mark.parametrize(
    "msg",
    [
        api.WriteContentResponse(),
        api.WriteContentResponse(action=api.WriteAction.STAT, digest="sha256:" + "e" * 64),
        api.WriteContentResponse(
            action=api.WriteAction.STAT,
            started_at=_T1,
            updated_at=_T2,
            offset=0,
            total=4096,
            digest="sha256:" + "a" * 64,
        ),
        api.WriteContentResponse(action=api.WriteAction.WRITE, offset=1 << 40, digest="sha256:" + "b" * 64),
        api.WriteContentResponse(
            action=api.WriteAction.COMMIT, started_at=_T1, updated_at=_T1, offset=4096, total=4096
        ),
        api.WriteContentResponse(action=api.WriteAction.STAT, total=-1, offset=-5),
        api.WriteContentResponse(action=api.WriteAction(7)),
        api.WriteContentResponse(
            started_at=_dt.datetime(1970, 1, 1, tzinfo=_UTC),  # all-zero timestamp: an empty message
            updated_at=_dt.datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=_UTC),
        ),
        api.WriteContentResponse(
            started_at=_dt.datetime(2026, 1, 1, 12, tzinfo=_dt.timezone(_dt.timedelta(hours=2))),
            updated_at=_dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=_UTC),
            digest="ü",
        ),
    ],
)
def test_write_response(msg: api.WriteContentResponse) -> None:
    assert codecs.encode_write_response(msg).SerializeToString() == bytes(msg)


def test_write_response_follows_the_reused_message() -> None:
    msg = api.WriteContentResponse(action=api.WriteAction.STAT, started_at=_T1, updated_at=_T2, total=3)
    first = codecs.encode_write_response(msg).SerializeToString()
    msg.action = api.WriteAction.COMMIT
    msg.offset = 3
    msg.digest = "sha256:" + "c" * 64
    assert first == bytes(
        api.WriteContentResponse(action=api.WriteAction.STAT, started_at=_T1, updated_at=_T2, total=3)
    )
    assert codecs.encode_write_response(msg).SerializeToString() == bytes(msg)
