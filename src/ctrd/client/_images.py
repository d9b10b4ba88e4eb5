"""``client.images``: the image records of a namespace, and pulling and pushing them.

The records are the daemon's Images service (containerd's ``containerd.services.images.v1``);
:meth:`ImagesClient.pull`, :meth:`ImagesClient.fetch` and :meth:`ImagesClient.push` talk
to registries (:mod:`ctrd.client._registry`, on aiohttp, imported on first use so that
importing the SDK does not load an HTTP client).
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from ctrd import errdefs
from ctrd.api.containerd.services.images import v1 as images_api
from ctrd.api.google import protobuf as pb
from ctrd.api.google.protobuf import FieldMask
from ctrd.images import Descriptor, Image
from ctrd.remote import Scope
from ctrd.wire.convert import image_from_proto, image_to_proto

if TYPE_CHECKING:
    from ctrd.client._archive import ArchiveSource, ExportTarget
    from ctrd.client._client import Client
    from ctrd.client._inspect import ImageCheck
    from ctrd.client._registry import PlatformLike, RegistryOptions
    from ctrd.client._types import Platform, ProgressCallback

__all__ = ["ImagesClient"]

_IMAGES = "/containerd.services.images.v1.Images/"


class ImagesClient:
    """Images of one namespace: ``client.images``. Errors are :mod:`ctrd.errdefs` errors.

    An image is a name pointing at a manifest or an index in the content store
    (:class:`ctrd.images.Image`). :meth:`pull` and :meth:`fetch` bring one from a registry,
    :meth:`push` sends one to a registry.
    """

    def __init__(self, scope: Scope, client: Client) -> None:
        self._scope = scope
        self._client = client

    # -- records -----------------------------------------------------------------------------

    async def get(self, name: str) -> Image:
        """The image named *name*.

        :raises errdefs.NotFound: no such image in the namespace.
        """
        resp = await self._scope.unary(
            _IMAGES + "Get", images_api.GetImageRequest(name=name), images_api.GetImageResponse
        )
        return image_from_proto(resp.image)

    async def list(self, *filters: str) -> builtins.list[Image]:
        """Images matching any of *filters* (``name==…``, ``target.mediatype==…``,
        ``labels."k"==v``; none: all).

        :raises errdefs.InvalidArgument: a malformed filter.
        """
        resp = await self._scope.unary(
            _IMAGES + "List",
            images_api.ListImagesRequest(filters=list(filters)),
            images_api.ListImagesResponse,
        )
        return [image_from_proto(m) for m in resp.images]

    async def create(self, image: Image) -> Image:
        """Record *image*; returns it as stored (with its times).

        :raises errdefs.AlreadyExists: the name is taken.
        :raises errdefs.InvalidArgument: an empty name, a malformed target or label.
        """
        resp = await self._scope.unary(
            _IMAGES + "Create",
            images_api.CreateImageRequest(image=image_to_proto(image)),
            images_api.CreateImageResponse,
        )
        return image_from_proto(resp.image)

    async def update(self, image: Image, fieldpaths: Sequence[str] = ()) -> Image:
        """Change the image named ``image.name``: the fields in *fieldpaths* (``labels``,
        ``labels.<key>``, ``annotations``, ``annotations.<key>``, ``target``), or, with none,
        its target and labels.

        :raises errdefs.NotFound: no such image.
        """
        req = images_api.UpdateImageRequest(image=image_to_proto(image))
        if fieldpaths:
            req.update_mask = FieldMask(paths=list(fieldpaths))
        resp = await self._scope.unary(_IMAGES + "Update", req, images_api.UpdateImageResponse)
        return image_from_proto(resp.image)

    async def delete(self, name: str, *, sync: bool = False) -> None:
        """Forget the image (its content goes with the next collection unless something
        else holds it); with *sync*, return once that collection is done.

        :raises errdefs.NotFound: no such image.
        """
        await self._scope.unary(
            _IMAGES + "Delete", images_api.DeleteImageRequest(name=name, sync=sync), pb.Empty
        )

    async def tag(self, source: str, target: str, *, force: bool = False) -> Image:
        """Record *target* as another name of the image *source* (its target and labels),
        as ``ctr images tag``.

        :raises errdefs.NotFound: no image *source*.
        :raises errdefs.AlreadyExists: *target* exists and *force* is false (with *force*
            it is pointed at *source*'s target).
        """
        src = await self.get(source)
        image = Image(name=target, target=src.target, labels=dict(src.labels))
        try:
            return await self.create(image)
        except errdefs.AlreadyExists:
            if not force:
                raise
            return await self.update(image)

    async def put(self, image: Image) -> Image:
        """Create *image*, or update the record of that name (target and labels), as
        containerd's client records a pulled image."""
        while True:
            try:
                return await self.create(image)
            except errdefs.AlreadyExists:
                try:
                    return await self.update(image)
                except errdefs.NotFound:
                    continue  # deleted in between: create it again

    # -- content -----------------------------------------------------------------------------

    async def _target(self, image: Image | str) -> Descriptor:
        return (await self.get(image) if isinstance(image, str) else image).target

    async def size(self, image: Image | str, platform: PlatformLike | None = None) -> int:
        """The bytes of the image's content for *platform* (default: this machine's, and
        what it runs): its target, and from each index the one best matching manifest
        with its config and layers (``ctr images ls``' SIZE).

        :raises errdefs.NotFound: no such image, a manifest or index is missing, or an
            index has no manifest for the platform.
        """
        from ctrd.client._inspect import image_size
        from ctrd.client._registry._platforms import host_platform, only

        matcher = only(platform if platform is not None else host_platform())
        size, err = await image_size(self._client.content, await self._target(image), matcher)
        if err is not None:
            raise err
        return size

    async def platforms(self, image: Image | str) -> builtins.list[Platform]:
        """The platforms the image has (``ctr images ls``' PLATFORMS): those its index gives
        its manifests, or its config's ``os``/``architecture``; in walk order, repeats kept.

        :raises errdefs.NotFound: no such image, or a manifest, index or config is missing.
        """
        from ctrd.client._inspect import image_platforms

        return await image_platforms(self._client.content, await self._target(image))

    async def check(self, image: Image | str, platform: PlatformLike | None = None) -> ImageCheck:
        """Whether the content of the image's manifest for *platform* (default: this
        machine's) is present: its config and layers (``ctr images check``; ``status`` is
        its STATUS column, ``complete (N/N)``). A missing index or manifest makes it
        ``unavailable``, not an error.

        :raises errdefs.NotFound: no such image.
        """
        from ctrd.client._inspect import check_image
        from ctrd.client._registry._platforms import host_platform, only

        matcher = only(platform if platform is not None else host_platform())
        return await check_image(self._client.content, await self._target(image), matcher)

    # -- registries --------------------------------------------------------------------------

    async def pull(
        self,
        ref: str,
        *,
        platforms: Iterable[PlatformLike] | None = None,
        all_platforms: bool = False,
        unpack: bool = False,
        labels: Mapping[str, str] | None = None,
        registry: RegistryOptions | None = None,
        progress: ProgressCallback | None = None,
    ) -> Image:
        """Download the image *ref* (``alpine``, ``ghcr.io/o/app:1``, ``host:5000/x@sha256:…``)
        into the content store and record it under its normalised name
        (``docker.io/library/alpine:latest``).

        From an index, only the manifest best matching the host's platform is taken
        (containerd's ``platforms.Only``: ``linux/amd64`` also takes ``linux/386``);
        *platforms* names others (every one of them is taken), *all_platforms* takes all.
        Blobs already in the namespace are not downloaded; under the daemon's ``shared``
        policy, neither are blobs another namespace holds. Everything is held by one lease
        (the caller's ``client.lease()`` when there is one, else one of its own) until the
        image record points at it.

        :param unpack: unpack the layers into a snapshotter (not implemented yet).
        :param labels: labels of the image record.
        :param registry: how registries are reached (hosts, credentials, TLS, concurrency).
        :param progress: called with a :class:`~ctrd.client.BlobProgress` for every step of
            every manifest and blob (waiting, downloading with its offset, exists, shared,
            done).
        :raises errdefs.Unimplemented: *unpack*.
        :raises errdefs.NotFound: no such image, or no manifest for the platform.
        :raises errdefs.PermissionDenied: the registry refused the credentials, or needs some.
        :raises errdefs.DataLoss: the registry sent bytes other than those the digest names.
        :raises errdefs.InvalidArgument: a malformed reference, platform or manifest.
        :raises errdefs.ResourceExhausted: a manifest over 4 * 1048 * 1048 bytes.
        :raises errdefs.Unavailable: the registry could not be reached, or kept failing.
        :raises errdefs.DeadlineExceeded: the registry stopped answering.
        """
        from ctrd.client._registry import pull_image

        return await pull_image(
            self._client,
            ref,
            platforms=platforms,
            all_platforms=all_platforms,
            limit_default=True,
            unpack=unpack,
            labels=labels,
            options=registry,
            progress=progress,
        )

    async def fetch(
        self,
        ref: str,
        *,
        platforms: Iterable[PlatformLike] | None = None,
        labels: Mapping[str, str] | None = None,
        registry: RegistryOptions | None = None,
        progress: ProgressCallback | None = None,
    ) -> Image:
        """:meth:`pull` without unpacking, for every platform unless *platforms* are given
        (as ``ctr content fetch`` and containerd's ``Client.Fetch``)."""
        from ctrd.client._registry import pull_image

        return await pull_image(
            self._client,
            ref,
            platforms=platforms,
            all_platforms=platforms is None,
            limit_default=False,
            unpack=False,
            labels=labels,
            options=registry,
            progress=progress,
        )

    async def push(
        self,
        ref: str,
        source: str | None = None,
        *,
        registry: RegistryOptions | None = None,
        progress: ProgressCallback | None = None,
    ) -> Descriptor:
        """Upload the image *source* (default: the image named as *ref*, normalised) to
        *ref*; returns the descriptor pushed.

        Blobs the repository has already are skipped (a ``HEAD`` first); a blob whose
        ``containerd.io/distribution.source.<host>`` label names another repository of the
        same registry is mounted from there instead of uploaded. Manifests go after their
        blobs, the tag last. *progress* gets a :class:`~ctrd.client.BlobProgress` per step
        (waiting, uploading, exists, mounted, done).

        :raises errdefs.NotFound: no image *source*, or content it references is missing
            (an index pulled for one platform: pull it with ``all_platforms=True``).
        :raises errdefs.PermissionDenied: the registry refused the credentials, or needs some.
        """
        from ctrd.client._registry import push_image

        return await push_image(self._client, ref, source, options=registry, progress=progress)

    # -- archives ----------------------------------------------------------------------------

    async def export(
        self,
        target: ExportTarget,
        *names: str,
        platforms: Iterable[PlatformLike] | None = None,
        all_platforms: bool = False,
    ) -> int:
        """Write the images *names* to *target* as ``ctr images export`` does: an OCI image
        layout tar (``oci-layout``, ``index.json`` naming each image with the
        ``io.containerd.image.name`` and ``org.opencontainers.image.ref.name`` annotations,
        ``blobs/<alg>/<hex>``) with Docker's ``manifest.json`` beside it. Returns the
        archive's size in bytes.

        From an index, the manifests of this machine's platform (exactly: ``linux/amd64``
        does not take ``linux/386``), or of *platforms*, are exported, with their blobs;
        *all_platforms* exports every manifest (all must be present). ``manifest.json``
        lists, per image, the best of the matching manifests. Blobs are streamed from the
        content store (their digests verified), never held in memory.

        :param target: a file path (written to a temporary file in the same directory,
            renamed once complete) or a binary file object.
        :raises errdefs.NotFound: no such image; a blob to export is not in the content
            store; no manifest of an index matches the platform.
        :raises errdefs.InvalidArgument: no name; a target that is not a manifest or an
            index; a name that is not a reference (``manifest.json`` needs one).
        :raises errdefs.DataLoss: the content store gave other bytes than a digest names.
        """
        from ctrd.client._archive import export_images

        return await export_images(
            self._client, target, names, platforms=platforms, all_platforms=all_platforms
        )

    async def import_(
        self,
        source: ArchiveSource,
        *,
        platforms: Iterable[PlatformLike] | None = None,
        all_platforms: bool = False,
        base_name: str | None = None,
    ) -> builtins.list[Image]:
        """Read an image archive into the namespace and record its images, as
        ``ctr images import --no-unpack`` does (nothing is unpacked); returns them.

        *source* is an OCI image layout tar (``ctr images export``'s, :meth:`export`'s,
        skopeo's, BuildKit's, ``docker save``'s since Docker 25) or an older ``docker save``
        tar (``manifest.json``, ``<id>/layer.tar``, ``<id>.json``; a Docker schema 2
        manifest is built for each image, as containerd's importer builds it), plain or
        gzip'd: a path, a binary file object or an async iterable of chunks, read once as a
        stream (nothing is extracted; entries named with ``..`` or absolutely are refused).
        Every blob is ingested and verified (``blobs/<alg>/<hex>`` against its name); blobs
        the namespace has are not sent again.

        Images are named by their ``io.containerd.image.name`` annotation, else by their
        ``org.opencontainers.image.ref.name``: a full reference as it is, a bare tag as
        ``import-<date>:<tag>``; with *base_name*, as ``<base_name>:<tag>``, and full
        references not under *base_name* are skipped (``ctr images import --base-name``).
        Docker archives name images by their ``RepoTags`` (``busybox:1`` is
        ``docker.io/library/busybox:1``). An existing image of that name is pointed at the
        new target (its labels kept).

        From an index, the manifests of this machine's platform (and what it runs:
        ``linux/amd64`` takes ``linux/386``), of *platforms*, or all with *all_platforms*
        are checked and labelled; all that those reach must be in the archive or the
        namespace. Everything is held by a lease (the caller's, else one of its own) until
        the records exist.

        :raises errdefs.InvalidArgument: not a tar archive, or neither format; malformed
            JSON; an entry or link leaving the archive; a file ``manifest.json`` names that
            is missing.
        :raises errdefs.DataLoss: a ``blobs/`` entry whose content is not its digest.
        :raises errdefs.NotFound: content an image needs is in neither the archive nor the
            namespace (an archive exported for one platform, imported for all).
        :raises errdefs.ResourceExhausted: more than 100,000 entries; a JSON document or a
            manifest over 4 * 1048 * 1048 bytes; an extended tar header over 1 MiB.
        """
        from ctrd.client._archive import import_images

        return await import_images(
            self._client, source, platforms=platforms, all_platforms=all_platforms, base_name=base_name
        )
