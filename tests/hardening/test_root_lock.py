"""One daemon per root: a second ``ctrd`` on the same root exits at once, naming the holder.

Before, a second daemon with another socket started on the same root; each
collector ignored the other's commits in flight and deleted acknowledged blobs.
"""

from __future__ import annotations

import signal

import pytest
from _daemon import Launcher, run_sync, version_of

from ctrd import __version__

pytestmark = pytest.mark.hardening

_EXIT_BOUND = 20.0  # seconds: the refused daemon exits well within this, it never waits for the lock


def test_second_daemon_on_the_same_root_is_refused(daemon: Launcher) -> None:
    first = daemon()
    tmp = first.tmp
    lock = tmp / "root" / "ctrd.lock"
    assert lock.read_text().strip() == str(first.pid)
    second = daemon(tmp=tmp, socket=str(tmp / "second.sock"), wait=False)
    rc = second.proc.wait(_EXIT_BOUND)
    assert rc == 1
    log = second.log()
    assert f"is in use by ctrd pid {first.pid}" in log
    assert "Traceback" not in log
    assert not (tmp / "second.sock").exists()
    # the first daemon is untouched and still holds the root
    assert run_sync(lambda: version_of(first.socket)) == __version__
    assert lock.read_text().strip() == str(first.pid)


def test_root_is_free_again_after_the_holder_exits(daemon: Launcher) -> None:
    first = daemon()
    tmp = first.tmp
    assert first.stop() == 0
    second = daemon(tmp=tmp)  # a clean stop released the lock
    assert (tmp / "root" / "ctrd.lock").read_text().strip() == str(second.pid)
    second.stop(signal.SIGKILL)  # the kernel releases the lock of a killed daemon
    third = daemon(tmp=tmp)
    assert (tmp / "root" / "ctrd.lock").read_text().strip() == str(third.pid)
