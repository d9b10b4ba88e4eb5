"""A scripted ctrd client for the authorization tests, runnable as another uid.

``python _authz_client.py <socket> '<ops as JSON>'`` prints one JSON list: the outcome of
each op, in order. An op is ``[name, namespace, *args]``; its outcome is ``["OK", result]``
or ``[<errdefs class name>, message]``. The tests run it in-process too (:func:`run_ops`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from typing import Any

from ctrd import errdefs
from ctrd.client import Client

Op = list[Any]


async def _op(client: Client, op: Op) -> Any:
    name, ns, *args = op
    c = client.with_namespace(ns)
    if name == "version":
        return (await c.version()).version
    if name == "content.list":
        return sorted([i.digest async for i in c.content.list()])
    if name == "content.info":
        return (await c.content.info(args[0])).size
    if name == "content.read":
        return (await c.content.read_all(args[0])).decode()
    if name == "content.ingest":
        data = args[0].encode()
        kept = {"containerd.io/gc.root": "test"}  # not collected between the test's steps
        return (await c.content.ingest(f"ref-{ns}", data, expected=digest(args[0]), labels=kept)).digest
    if name == "content.commit_without_bytes":  # admission by digest alone
        data = args[0].encode()
        async with c.content.writer(f"steal-{ns}", total=len(data), expected=digest(args[0])) as w:
            await w.commit(len(data), digest(args[0]))
        return "committed"
    if name == "leases.list":
        return len(await c.leases.list())
    if name == "leases.create":
        return bool((await c.leases.create()).id)
    if name == "ns.list":
        return [n.name for n in await c.namespaces.list()]
    if name == "ns.create":
        return (await c.namespaces.create(args[0])).name
    if name == "ns.label":
        return (await c.namespaces.update(args[0], {args[1]: args[2]})).labels
    if name == "events.collect":  # the first args[0] events of a subscription
        got = []
        async for env in c.events.subscribe():
            got.append([env.namespace, env.topic])
            if len(got) == args[0]:
                break
        return got
    raise ValueError(f"unknown op {name}")


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


async def run_ops(socket: str, ops: list[Op]) -> list[list[Any]]:
    """Each op's outcome: ``["OK", result]`` or ``[error class, message]``."""
    out: list[list[Any]] = []
    async with Client(socket, timeout=30) as client:
        for op in ops:
            try:
                out.append(["OK", await _op(client, op)])
            except errdefs.Error as exc:
                out.append([type(exc).__name__, str(exc)])
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run_ops(sys.argv[1], json.loads(sys.argv[2])))))
