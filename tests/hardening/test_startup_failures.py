"""Start-up failures after the unix socket would have been bound: a clean, prompt exit.

A ``[grpc] tcp_tls_key`` that does not exist used to fail only after the unix
socket was listening, outside the clean-up: the process stayed alive (the
database threads kept it), kept its socket file and answered no signal.
"""

from __future__ import annotations

import re
import socket

import pytest
from _daemon import DaemonProc, Launcher, toml_str

pytestmark = pytest.mark.hardening

_EXIT_BOUND = 20.0  # seconds: a failed start-up exits well within this


def _failed_start(daemon: Launcher, grpc: str) -> DaemonProc:
    d = daemon(f"[grpc]\n{grpc}\n", plugins=True, wait=False)
    rc = d.proc.wait(_EXIT_BOUND)  # a hang fails here (TimeoutExpired)
    assert rc == 1, d.log()
    log = d.log()
    assert "Traceback" not in log
    assert not (d.tmp / "ctrd.sock").exists(), "the socket file was left behind"
    return d


def test_missing_tls_key_fails_cleanly(daemon: Launcher) -> None:
    tmp = daemon.tmpdir()
    cert = tmp / "server.crt"
    cert.write_text("not used: the key is missing\n")
    key = tmp / "missing.key"
    d = _failed_start(
        daemon,
        f'tcp_address = "127.0.0.1:0"\ntcp_tls_cert = {toml_str(cert)}\ntcp_tls_key = {toml_str(key)}',
    )
    errors = [line for line in d.log().splitlines() if "level=error" in line]
    assert len(errors) == 1, d.log()
    assert f"[grpc] tcp_tls_key {key}: No such file or directory" in errors[0]
    # refused before any plugin opened anything
    assert d.records() == []


def test_tcp_address_in_use_fails_cleanly(daemon: Launcher) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        d = _failed_start(daemon, f'tcp_address = "127.0.0.1:{port}"')
    finally:
        busy.close()
    errors = [line for line in d.log().splitlines() if "level=error" in line]
    assert len(errors) == 1, d.log()
    assert f"failed to listen on 127.0.0.1:{port}" in errors[0]
    # every plugin that was initialised was closed again, in reverse order
    records = d.records()
    inits = [r.removeprefix("init ") for r in records if r.startswith("init ")]
    closes = [r.removeprefix("close ") for r in records if r.startswith("close ")]
    assert inits, records
    assert closes == inits[::-1], records
    assert not re.search(r"serving\.\.\. address=.*ctrd\.sock", d.log())
