"""Registration of the event exchange plugin."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from ctrd.plugin import InitContext, Registration, types

if TYPE_CHECKING:
    from ctrd.events.exchange import Exchange

__all__ = ["ExchangeConfig", "exchange"]


class ExchangeConfig(BaseModel):
    """``[plugins."io.containerd.event.v1.exchange"]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subscriber_queue_size: int = Field(
        default=1024,
        ge=1,
        description="events a subscriber may have pending; a subscriber that falls further behind "
        "is disconnected (logged with the number of events it missed)",
    )


async def _init(ic: InitContext[ExchangeConfig]) -> Exchange:
    from ctrd.events.exchange import Exchange

    cfg = ic.config
    return Exchange(queue_size=cfg.subscriber_queue_size)


exchange = Registration(type=types.EVENT, id="exchange", config=ExchangeConfig, init=_init)
