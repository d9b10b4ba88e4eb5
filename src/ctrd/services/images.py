"""``containerd.services.images.v1.Images`` over an :class:`~ctrd.images.ImageStore`.

A port of containerd 1.6's ``services/images/local.go``: convert
(:mod:`ctrd.wire.convert`), delegate to the store (which reads the caller's namespace
itself: a call without a ``containerd-namespace`` header is FAILED_PRECONDITION
``namespace is required``) and publish. Behaviour kept from containerd:

* ``Create`` and ``Update`` of an image without a name are INVALID_ARGUMENT
  ``Image.Name required`` before anything else; the store's rules follow
  (:mod:`ctrd.metadata.images`: ALREADY_EXISTS, NOT_FOUND, the update mask's paths,
  validation);
* ``List`` answers every matching record in one message, by name;
* events, in the caller's namespace, after the change: ``/images/create``
  (``ImageCreate``: name and labels), ``/images/update`` (``ImageUpdate``: name and
  the labels after the update), ``/images/delete`` (``ImageDelete``: name). Their type
  URLs are containerd 1.6's (``containerd.services.images.v1.ImageCreate``...);
* ``Delete`` with ``sync`` answers once a garbage collection started after the
  deletion has finished (the store given is then a
  :class:`~ctrd.metadata.CollectingImageStore`).

Deviation: with ``sync``, ``/images/delete`` is published after the collection
(containerd publishes it first); a collection that fails fails the call, the image
being deleted all the same, and nothing is published.

With ``[authorization]`` every call acts in its header's namespace, which the gRPC
edge checks (:mod:`ctrd.server.authz`).
"""

from __future__ import annotations

import logging
from typing import Final

from ctrd import errdefs, limits, namespaces
from ctrd.api.containerd.services.images import v1 as api
from ctrd.api.google import protobuf as pb
from ctrd.events import Publisher
from ctrd.images import ImageStore
from ctrd.wire.convert import image_from_proto, image_to_proto

__all__ = ["TOPIC_CREATE", "TOPIC_DELETE", "TOPIC_UPDATE", "ImagesService"]

log = logging.getLogger("ctrd.services.images")

TOPIC_CREATE: Final = "/images/create"
TOPIC_UPDATE: Final = "/images/update"
TOPIC_DELETE: Final = "/images/delete"


class ImagesService(api.ImagesBase):
    """The Images gRPC service.

    :param store: the image store (the metadata plugin's, wrapped by the images-service
        plugin so that a synchronous delete waits for a collection).
    :param publisher: where image events go; ``None`` publishes nothing.
    """

    def __init__(self, store: ImageStore, publisher: Publisher | None = None) -> None:
        self._store = store
        self._publisher = publisher

    async def _publish(self, topic: str, event: object) -> None:
        if self._publisher is not None:
            await self._publisher.publish(namespaces.required(), topic, event)

    async def get(self, message: api.GetImageRequest) -> api.GetImageResponse:
        """The record named ``name``; NOT_FOUND ``image "<name>"``."""
        image = await self._store.get(message.name)
        return api.GetImageResponse(image=image_to_proto(image))

    async def list(self, message: api.ListImagesRequest) -> api.ListImagesResponse:
        """The records matching any of the filters (all without one), by name."""
        found = [image_to_proto(image) async for image in self._store.list(*message.filters)]
        return api.ListImagesResponse(images=found)

    async def create(self, message: api.CreateImageRequest) -> api.CreateImageResponse:
        """Record a new image and publish ``/images/create``."""
        image = image_from_proto(message.image)
        if not image.name:
            raise errdefs.InvalidArgument("Image.Name required")
        log.debug("create image name=%s target=%s", limits.echo(image.name), limits.echo(image.target.digest))
        created = await self._store.create(image)
        await self._publish(TOPIC_CREATE, api.ImageCreate(name=created.name, labels=dict(created.labels)))
        return api.CreateImageResponse(image=image_to_proto(created))

    async def update(self, message: api.UpdateImageRequest) -> api.UpdateImageResponse:
        """Change a record (by the mask's paths, or wholly without one); publish ``/images/update``."""
        image = image_from_proto(message.image)
        if not image.name:
            raise errdefs.InvalidArgument("Image.Name required")
        mask = message.update_mask
        paths = list(mask.paths) if mask is not None else []
        updated = await self._store.update(image, paths)
        await self._publish(TOPIC_UPDATE, api.ImageUpdate(name=updated.name, labels=dict(updated.labels)))
        return api.UpdateImageResponse(image=image_to_proto(updated))

    async def delete(self, message: api.DeleteImageRequest) -> pb.Empty:
        """Forget a record (``sync``: after the collection it triggers) and publish ``/images/delete``."""
        log.debug("delete image name=%s", limits.echo(message.name))
        await self._store.delete(message.name, sync=message.sync)
        await self._publish(TOPIC_DELETE, api.ImageDelete(name=message.name))
        return pb.Empty()
