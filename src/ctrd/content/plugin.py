"""Registration of the local content store plugin."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from ctrd.plugin import InitContext, Registration, types

if TYPE_CHECKING:
    from ctrd.content.local import LocalStore

__all__ = ["LocalContentConfig", "local"]


class LocalContentConfig(BaseModel):
    """``[plugins."io.containerd.content.v1.content"]`` (containerd's plugin takes no options)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    direct_write: bool = Field(
        default=True,
        description="write the page-aligned part of ingest chunks of 256 KiB and more with O_DIRECT, "
        "around the page cache (hashing while the disk writes); a blob is then not cached after its "
        "ingest. Ordinary writes where the filesystem refuses O_DIRECT",
    )


async def _init(ic: InitContext[LocalContentConfig]) -> LocalStore:
    from ctrd.content.local import LocalStore

    cfg = ic.config
    root = ic.root
    ic.exports["root"] = str(root)
    return LocalStore(root, direct_write=cfg.direct_write)


local = Registration(type=types.CONTENT, id="content", config=LocalContentConfig, init=_init)
