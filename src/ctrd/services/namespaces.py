"""``containerd.services.namespaces.v1.Namespaces`` over a :class:`~ctrd.metadata.NamespaceStore`.

A port of containerd's ``services/namespaces/local.go``. None of the RPCs needs
the ``containerd-namespace`` header. Behaviour kept from containerd:

* ``Get`` does no existence check (an unknown name answers OK, empty labels);
* ``List`` ignores its filter;
* ``Update`` accepts only ``labels.<key>`` mask paths, replaces all labels when
  there is no mask, and answers with an *unset* namespace.

Events: ``/namespaces/create`` and ``/namespaces/update`` are published in the
caller's namespace (or, when the caller sent none, in the namespace concerned);
``/namespaces/delete`` in the deleted namespace. Deviation: an oversize label on
``Update`` is InvalidArgument (containerd answers Unknown).

With ``[authorization]`` (:mod:`ctrd.authz`): ``List`` answers only the namespaces
the caller may act in, ``Get`` of another is PERMISSION_DENIED, and
``Create``/``Update``/``Delete`` need a principal with ``manage_namespaces`` naming
the namespace (checked before the request is validated).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from ctrd import authz, errdefs, golang, identifiers, labels, namespaces
from ctrd.api.containerd.events import NamespaceCreate, NamespaceDelete, NamespaceUpdate
from ctrd.api.containerd.services.namespaces import v1 as api
from ctrd.api.google import protobuf as pb
from ctrd.events import Publisher
from ctrd.metadata._types import NamespaceStore

__all__ = ["TOPIC_CREATE", "TOPIC_DELETE", "TOPIC_UPDATE", "NamespacesService"]

TOPIC_CREATE: Final = "/namespaces/create"
TOPIC_UPDATE: Final = "/namespaces/update"
TOPIC_DELETE: Final = "/namespaces/delete"

_LABEL_PREFIX: Final = "labels."


def _validate_labels(items: Mapping[str, str]) -> None:
    """Validate label sizes with containerd's ``namespace.Labels: `` prefix."""
    try:
        labels.validate_all(items)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"namespace.Labels: {exc.context}") from exc


class NamespacesService(api.NamespacesBase):
    """The Namespaces gRPC service.

    :param store: namespaces and their labels (the metadata store).
    :param publisher: where namespace events go; ``None`` publishes nothing.
    """

    def __init__(self, store: NamespaceStore, publisher: Publisher | None = None) -> None:
        self._store = store
        self._publisher = publisher

    async def _publish(self, namespace: str, topic: str, event: object) -> None:
        if self._publisher is not None:
            await self._publisher.publish(namespace, topic, event)

    async def get(self, message: api.GetNamespaceRequest) -> api.GetNamespaceResponse:
        """Name and labels; an unknown name answers with empty labels."""
        name = message.name
        authz.require(name)
        found = await self._store.labels(name)
        return api.GetNamespaceResponse(namespace=api.Namespace(name=name, labels=found))

    async def list(self, message: api.ListNamespacesRequest) -> api.ListNamespacesResponse:
        """Every namespace (the caller may see) with its labels, sorted by name (the filter is ignored)."""
        visible = authz.visibility()
        out = [
            api.Namespace(name=name, labels=await self._store.labels(name))
            for name in await self._store.list()
            if visible is None or visible(name)
        ]
        return api.ListNamespacesResponse(namespaces=out)

    async def create(self, message: api.CreateNamespaceRequest) -> api.CreateNamespaceResponse:
        """Create a namespace; AlreadyExists ``namespace "<n>"`` when it exists."""
        ns = message.namespace if message.namespace is not None else api.Namespace()
        name: str = ns.name
        authz.require_manage(name)
        new_labels = dict(ns.labels)
        identifiers.validate(name)
        _validate_labels(new_labels)
        await self._store.create(name, new_labels)
        await self._publish(
            namespaces.current() or name, TOPIC_CREATE, NamespaceCreate(name=name, labels=new_labels)
        )
        return api.CreateNamespaceResponse(namespace=api.Namespace(name=name, labels=dict(new_labels)))

    async def update(self, message: api.UpdateNamespaceRequest) -> api.UpdateNamespaceResponse:
        """Set/delete labels by ``labels.<key>`` mask paths, or replace all without a mask.

        An empty value deletes a label. The response's namespace is left unset.
        """
        ns = message.namespace if message.namespace is not None else api.Namespace()
        name: str = ns.name
        authz.require_manage(name)
        paths: list[str] = list(message.update_mask.paths) if message.update_mask is not None else []
        if paths:
            changes: dict[str, str] = {}
            for path in paths:
                if not path.startswith(_LABEL_PREFIX) or len(path) == len(_LABEL_PREFIX):
                    raise errdefs.InvalidArgument(f"cannot update {golang.quote(path)} field")
                key = path[len(_LABEL_PREFIX) :]
                changes[key] = ns.labels.get(key, "")
            replace = False
        else:
            changes = dict(ns.labels)
            replace = True
        identifiers.validate(name)
        _validate_labels(changes)
        result = await self._store.update_labels(name, changes, replace=replace)
        await self._publish(
            namespaces.current() or name, TOPIC_UPDATE, NamespaceUpdate(name=name, labels=dict(result))
        )
        return api.UpdateNamespaceResponse()

    async def delete(self, message: api.DeleteNamespaceRequest) -> pb.Empty:
        """Delete an empty namespace; the event goes out in the deleted namespace."""
        name: str = message.name
        authz.require_manage(name)
        await self._store.delete(name)
        await self._publish(name, TOPIC_DELETE, NamespaceDelete(name=name))
        return pb.Empty()
