"""Which HTTP/2 paths run: ctrd's (the default) or h2's and grpclib's own (``CTRD_H2=stock``).

ctrd's fast paths (:mod:`ctrd.wire._h2`: large frames, hand-framed replies and
frames, memoized hpack blocks; views of received messages; the hyperframe
``repr`` patch) read private attributes of h2, hpack, hyperframe and grpclib,
which are pinned to exact versions for that reason. ``CTRD_H2=stock`` runs the
daemon and the SDK on the libraries' public paths only, so a new release can be
tried by flipping one switch; CI runs the daemon and ``ctr`` interop tests once
that way. Everything else (limits, budgets, authorization) is the same in both.
"""

from __future__ import annotations

import os
from typing import Final

__all__ = ["ENV", "fast", "prepare"]

ENV: Final = "CTRD_H2"
"""The environment variable: ``stock`` for the libraries' own paths, anything else for ctrd's."""

_prepared = False


def fast() -> bool:
    """Whether ctrd's HTTP/2 paths run (read at each call: a server or channel decides when created)."""
    return os.environ.get(ENV, "") != "stock"


def prepare() -> bool:
    """Apply what ctrd's paths need process-wide, once; called when a server or channel is made.

    h2 builds ``repr(frame)`` for every frame it receives, to log it even with
    its no-op logger, and hyperframe's ``repr`` hex-encodes a DATA frame's whole
    payload: 13-23 % of the loop's CPU during an ingest. With ctrd's paths the
    ``repr`` of a frame is its class name. Returns whether ctrd's paths run.
    """
    global _prepared
    if not fast():
        return False
    if not _prepared:
        import hyperframe.frame as _hf

        def _short_repr(self: object) -> str:
            return type(self).__name__

        _hf.Frame.__repr__ = _short_repr  # type: ignore[method-assign]
        _prepared = True
    return True
