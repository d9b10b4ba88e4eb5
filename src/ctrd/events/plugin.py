"""Registration of the event exchange plugin."""

from __future__ import annotations

from ctrd.plugin import InitContext, Registration, types

__all__ = ["exchange"]


async def _init(ic: InitContext) -> object:
    from ctrd.events.exchange import Exchange

    return Exchange()


exchange = Registration(type=types.EVENT, id="exchange", init=_init)
