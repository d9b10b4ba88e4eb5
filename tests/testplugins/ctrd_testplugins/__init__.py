"""Test-only ctrd plugins, registered through the ``ctrd.plugins`` entry-point group.

Never installed into the venv: the tests put ``tests/testplugins`` (which holds
this package and its ``ctrd_testplugins-0.0.0.dist-info``) on ``PYTHONPATH`` of
the daemon they start, so discovery finds these entry points exactly as it finds
a third-party package's.

``CTRD_TEST_RECORD`` names a file to which the recorder plugins (and the
``slow`` gRPC plugin) append one line per event: ``init <uri>``,
``close <uri>``, ``sleep-start``, ``sleep-end``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from grpclib.const import Cardinality, Handler
from pydantic import BaseModel, ConfigDict, Field

from ctrd import errdefs
from ctrd.api.google.protobuf import Empty
from ctrd.plugin import InitContext, Registration, SkipPlugin

RECORD_ENV = "CTRD_TEST_RECORD"

SKIP_TYPE = "io.ctrd.test.skip.v1"
FAIL_TYPE = "io.ctrd.test.fail.v1"
IMPORT_TYPE = "io.ctrd.test.import.v1"
DEPENDANT_TYPE = "io.ctrd.test.dependant.v1"
CONFIG_TYPE = "io.ctrd.test.config.v1"
FIRST_TYPE = "io.ctrd.test.z.v1"  # sorts after SECOND_TYPE, but must init before it
SECOND_TYPE = "io.ctrd.test.a.v1"
GRPC_TYPE = "io.containerd.grpc.v1"

SLOW_SERVICE = "/ctrd.test.Slow"


def record(line: str) -> None:
    """Append *line* to the record file, if the tests asked for one."""
    path = os.environ.get(RECORD_ENV)
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


# -- skip / fail ------------------------------------------------------------------------


async def _skip(ic: InitContext) -> Any:
    raise SkipPlugin("not on this host")


async def _broken(ic: InitContext) -> Any:
    raise RuntimeError("broken on purpose")


async def _needs(ic: InitContext) -> Any:
    # only reached if the required type had a working provider
    return object()


skipper = Registration(type=SKIP_TYPE, id="skipper", init=_skip)
broken = Registration(type=FAIL_TYPE, id="broken", init=_broken)
needs_broken = Registration(type=DEPENDANT_TYPE, id="needs-broken", requires=(FAIL_TYPE,), init=_needs)
needs_nomodule = Registration(type=DEPENDANT_TYPE, id="needs-nomodule", requires=(IMPORT_TYPE,), init=_needs)


# -- configured ---------------------------------------------------------------------------


class ConfiguredConfig(BaseModel):
    """``[plugins."io.ctrd.test.config.v1.configured"]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    greeting: str = Field(default="hello", description="exported as greeting")
    level: int = Field(default=1, ge=0, le=9, description="0..9, exported as level")


async def _configured(ic: InitContext) -> Any:
    cfg = ic.config
    assert isinstance(cfg, ConfiguredConfig)
    ic.exports["greeting"] = cfg.greeting
    ic.exports["level"] = str(cfg.level)
    ic.capabilities.append("configurable")
    return cfg


configured = Registration(type=CONFIG_TYPE, id="configured", config=ConfiguredConfig, init=_configured)


# -- recorders ----------------------------------------------------------------------------


class Recorder:
    """Records its init and close."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        record(f"init {uri}")

    async def aclose(self) -> None:
        record(f"close {self.uri}")


async def _recorder(ic: InitContext) -> Any:
    return Recorder(ic.registration.uri)


first = Registration(type=FIRST_TYPE, id="first", init=_recorder)
second = Registration(type=SECOND_TYPE, id="second", requires=(FIRST_TYPE,), init=_recorder)


# -- slow gRPC service --------------------------------------------------------------------


class SlowService:
    """A hand-written grpclib servable under ``/ctrd.test.Slow/*`` (no generated code).

    ``Sleep``: sleeps ``sleep-seconds`` (request metadata) and replies Empty.
    ``Raise``: raises ``errdefs.<error-class>(<error-context>)``, or a plain
    ``RuntimeError`` when ``error-class`` is ``RuntimeError``.
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        record(f"init {uri}")

    def __mapping__(self) -> dict[str, Handler]:
        return {
            f"{SLOW_SERVICE}/Sleep": Handler(self._sleep, Cardinality.UNARY_UNARY, Empty, Empty),
            f"{SLOW_SERVICE}/Raise": Handler(self._raise, Cardinality.UNARY_UNARY, Empty, Empty),
        }

    async def _sleep(self, stream: Any) -> None:
        await stream.recv_message()
        secs = float(stream.metadata.get("sleep-seconds", "0"))
        record("sleep-start")
        await asyncio.sleep(secs)
        record("sleep-end")
        await stream.send_message(Empty())

    async def _raise(self, stream: Any) -> None:
        await stream.recv_message()
        name = stream.metadata.get("error-class", "")
        context = stream.metadata.get("error-context", "")
        if name == "RuntimeError":
            raise RuntimeError(context)
        cls = getattr(errdefs, name)
        raise cls(context)

    async def aclose(self) -> None:
        record(f"close {self.uri}")


async def _slow(ic: InitContext) -> Any:
    return SlowService(ic.registration.uri)


slow = Registration(type=GRPC_TYPE, id="slow", requires=(SECOND_TYPE,), init=_slow)
