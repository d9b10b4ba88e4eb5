"""Registration of the local content store plugin."""

from __future__ import annotations

from ctrd.plugin import InitContext, Registration, types

__all__ = ["local"]


async def _init(ic: InitContext) -> object:
    from ctrd.content.local import LocalStore

    root = ic.root
    ic.exports["root"] = str(root)
    return LocalStore(root)


local = Registration(type=types.CONTENT, id="content", init=_init)
