"""Debian's ``ctr`` 1.6.20 against ctrd: ``ctr leases create/ls/rm`` and ``ctr events``.

These tests FAIL (never skip) when ``/usr/bin/ctr`` is missing (see ``conftest.py``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from _daemon import CTR, Launcher

pytestmark = pytest.mark.interop

Ctr = Callable[..., Any]

GC_EXPIRE = "containerd.io/gc.expire"
#: Go's time.Time.String() in UTC, then namespace, topic and the event as JSON
EVENT_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{1,9})?) \+0000 UTC (\S+) (\S+) ?(.*)$")


def utc_env() -> dict[str, str]:
    env = dict(os.environ)
    env["TZ"] = "UTC"  # ctr prints times in local time
    return env


def ctr_utc(sock: str, *args: str, namespace: str = "default") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CTR, "--address", sock, "--namespace", namespace, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        stdin=subprocess.DEVNULL,
        env=utc_env(),
    )


def ok(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode == 0, f"ctr failed ({p.returncode}): {p.stderr}"
    return p.stdout


def tabwriter(rows: Sequence[Sequence[str]]) -> str:
    """Go's ``text/tabwriter`` as ``ctr leases ls`` uses it: minwidth 1, padding 1, spaces,
    every cell tab-terminated (so every line has trailing padding)."""
    widths = [max(len(r[i]) for r in rows) + 1 for i in range(len(rows[0]))]
    return "".join("".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + "\n" for r in rows)


def rfc3339(s: str) -> _dt.datetime:
    return _dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.UTC)


def test_ctr_leases(daemon: Launcher, ctr: Ctr) -> None:
    d = daemon()
    sock = d.socket
    t0 = _dt.datetime.now(_dt.UTC).replace(microsecond=0)

    generated = ok(ctr_utc(sock, "leases", "create")).strip()
    assert re.fullmatch(r"\d{1,9}-[A-Za-z0-9_-]{4}", generated), generated
    assert ok(ctr_utc(sock, "leases", "create", "--id", "L", "-x", "1h", "foo=bar")) == "L\n"
    assert ok(ctr_utc(sock, "leases", "create", "--id", "forever", "-x", "0")) == "forever\n"
    dup = ctr_utc(sock, "leases", "create", "--id", "L")
    assert dup.returncode == 1
    assert dup.stderr.strip() == 'ctr: lease "L": already exists'
    t1 = _dt.datetime.now(_dt.UTC)

    out = ok(ctr_utc(sock, "leases", "ls"))
    lines = out.splitlines()
    ids = sorted([generated, "L", "forever"])  # bolt key order (byte order)
    assert len(lines) == 4
    c1, c2 = lines[0].index("CREATED AT"), lines[0].index("LABELS")
    rows = [[line[:c1].rstrip(), line[c1:c2].rstrip(), line[c2:].rstrip()] for line in lines]
    assert rows[0] == ["ID", "CREATED AT", "LABELS"]
    assert [r[0] for r in rows[1:]] == ids
    cells = {r[0]: r for r in rows[1:]}
    for _lid, created, _labels in cells.values():
        assert t0 - _dt.timedelta(seconds=1) <= rfc3339(created) <= t1
    # -x: ctr computes containerd.io/gc.expire = now + duration, client side
    gen_labels = dict(kv.split("=", 1) for kv in cells[generated][2].split(","))
    assert set(gen_labels) == {GC_EXPIRE}
    expire = rfc3339(gen_labels[GC_EXPIRE]) - rfc3339(cells[generated][1])
    assert abs(expire - _dt.timedelta(hours=24)) <= _dt.timedelta(seconds=2)
    l_labels = cells["L"][2].split(",")
    assert l_labels[0].startswith(GC_EXPIRE + "=")
    assert l_labels[1:] == ["foo=bar"]
    assert cells["forever"][2] == "-"
    # the exact table: space padded, trailing padding on every line
    assert out == tabwriter(rows)

    assert ok(ctr_utc(sock, "leases", "ls", "-q")).splitlines() == ids
    filtered = ok(ctr_utc(sock, "leases", "ls", "id==L"))
    assert filtered == tabwriter([rows[0], cells["L"]])
    assert ok(ctr_utc(sock, "leases", "ls", "-q", "labels.foo==bar", "id==forever")).splitlines() == [
        "L",
        "forever",
    ]
    # leases are per namespace
    assert ok(ctr_utc(sock, "leases", "ls", "-q", namespace="other")) == ""
    assert ok(ctr_utc(sock, "leases", "ls", namespace="other")) == "ID CREATED AT LABELS \n"

    assert ok(ctr_utc(sock, "leases", "rm", "L")) == "L\n"
    assert ok(ctr_utc(sock, "leases", "rm", "--sync", "forever")) == "forever\n"
    assert ok(ctr_utc(sock, "leases", "ls", "-q")).splitlines() == [generated]
    missing = ctr_utc(sock, "leases", "rm", "nosuch")
    assert missing.returncode == 1
    assert missing.stderr.strip() == 'ctr: lease "nosuch": not found'
    assert ok(ctr_utc(sock, "leases", "rm", generated)) == generated + "\n"
    assert ok(ctr_utc(sock, "leases", "ls")) == "ID CREATED AT LABELS \n"


class EventsProc:
    """``ctr events [filters]`` in the background; stdout lines collected by a thread."""

    def __init__(self, sock: str, *filters: str) -> None:
        self.proc = subprocess.Popen(
            [CTR, "--address", sock, "events", *filters],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=utc_env(),
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines.put), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr.append), daemon=True),
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _pump(stream: Any, sink: Callable[[str], None]) -> None:
        for line in stream:
            sink(line.rstrip("\n"))

    def next(self, timeout: float = 10.0) -> tuple[str, str, str, str]:
        """(timestamp, namespace, topic, json) of the next line."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"no event line within {timeout}s (ctr alive: {self.proc.poll() is None}; "
                f"stderr: {self.stderr})"
            ) from None
        m = EVENT_LINE.match(line)
        assert m, f"unexpected ctr events line: {line!r}"
        return m.group(1), m.group(2), m.group(3), m.group(4)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for t in self._threads:
            t.join(5)


@pytest.fixture
def events_procs() -> Iterator[list[EventsProc]]:
    procs: list[EventsProc] = []
    try:
        yield procs
    finally:
        for p in procs:  # before the daemon stops (its drain would wait for the open streams)
            p.stop()


def wait_subscribed(sock: str, ev: EventsProc, ctr: Ctr, timeout: float = 20.0) -> None:
    """Label a probe namespace until the subscriber reports it (ctr prints nothing on connect)."""
    deadline = time.monotonic() + timeout
    i = 0
    while True:
        i += 1
        ok(ctr(sock, "namespaces", "label", "probe", f"probe={i}"))
        try:
            _, ns, topic, body = ev.next(timeout=0.5)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            continue
        assert (ns, topic) == ("default", "/namespaces/update"), (ns, topic, body)
        break
    # swallow the remaining probe events
    while True:
        try:
            line = ev.lines.get(timeout=0.3)
        except queue.Empty:
            return
        assert "/namespaces/update" in line, line
        assert "probe" in line, line


#: ``ctr content ingest`` cannot lease or label what it writes, so a collection could remove the
#: test blob before ``ctr content rm`` (containerd behaves the same): no collector in that test.
NO_GC = 'disabled_plugins = ["io.containerd.gc.v1.scheduler"]'


def test_ctr_events(daemon: Launcher, ctr: Ctr, events_procs: list[EventsProc], tmp_path: Path) -> None:
    d = daemon(NO_GC)
    sock = d.socket
    ev = EventsProc(sock)
    events_procs.append(ev)
    wait_subscribed(sock, ev, ctr)
    bad = ctr(sock, "events", "topic~=/a/b/")
    assert bad.returncode == 1
    assert "code = InvalidArgument desc = failed parsing subscription filters: filters: parse error" in (
        bad.stderr
    )
    only_deletes = EventsProc(sock, 'topic=="/content/delete"', 'topic~="^/namespaces/del"')  # OR-ed
    events_procs.append(only_deletes)
    # a filtered subscriber: wait until it is registered (a delete of a probe namespace)
    deadline = time.monotonic() + 20
    while True:
        ok(ctr(sock, "namespaces", "create", "probe-del"))
        ctr(sock, "namespaces", "rm", "probe-del")
        try:
            assert only_deletes.next(timeout=0.5)[2] == "/namespaces/delete"
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
    while True:  # drain the unfiltered subscriber's probe lines
        try:
            line = ev.lines.get(timeout=0.5)
        except queue.Empty:
            break
        assert "probe-del" in line, line
    while True:
        try:
            only_deletes.lines.get(timeout=0.3)
        except queue.Empty:
            break

    data = os.urandom(4096)
    dgst = "sha256:" + hashlib.sha256(data).hexdigest()
    blob = tmp_path / "blob"
    blob.write_bytes(data)
    before = _dt.datetime.now(_dt.UTC)
    ok(ctr(sock, "namespaces", "create", "evns"))
    ok(ctr(sock, "namespaces", "label", "evns", "k=v"))
    with blob.open("rb") as f:
        ingest = subprocess.run(
            [CTR, "--address", sock, "--namespace", "evns", "content", "ingest", "r1"],
            stdin=f,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert ingest.returncode == 0, ingest.stderr
    assert ok(ctr(sock, "content", "rm", dgst, namespace="evns")).split() == [dgst]
    assert ok(ctr(sock, "namespaces", "rm", "evns")).split() == ["evns"]

    got = [ev.next() for _ in range(4)]
    assert [(ns, topic, body) for _, ns, topic, body in got] == [
        ("default", "/namespaces/create", '{"name":"evns"}'),
        ("default", "/namespaces/update", '{"name":"evns","labels":{"k":"v"}}'),
        # /content/create (containerd 2.x's ContentCreate) is sent too: ctr 1.6 cannot decode it,
        # logs a warning and goes on
        ("evns", "/content/delete", '{"digest":"' + dgst + '"}'),
        ("evns", "/namespaces/delete", '{"name":"evns"}'),  # in the deleted namespace
    ]
    stamps = [_dt.datetime.fromisoformat(ts[:26]).replace(tzinfo=_dt.UTC) for ts, *_ in got]
    assert stamps == sorted(stamps)
    assert before - _dt.timedelta(seconds=1) <= stamps[0] <= _dt.datetime.now(_dt.UTC)
    undecodable = [s for s in ev.stderr if "cannot unmarshal an event from Any" in s]
    assert any("containerd.events.ContentCreate" in s for s in undecodable), ev.stderr
    assert ev.proc.poll() is None, "ctr events died"

    got_filtered = [only_deletes.next() for _ in range(2)]
    assert [(ns, topic) for _, ns, topic, _ in got_filtered] == [
        ("evns", "/content/delete"),
        ("evns", "/namespaces/delete"),
    ]
    time.sleep(0.3)
    assert ev.lines.empty()
    assert only_deletes.lines.empty()
    assert only_deletes.proc.poll() is None
