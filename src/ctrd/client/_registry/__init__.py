"""The SDK's registry client: OCI distribution on aiohttp, behind ``client.images``.

Only the pull and push entry points (:func:`pull_image`, :func:`push_image`) load aiohttp;
the rest (references, platforms, hosts configuration, credentials) is plain Python and is
what :mod:`ctrd.client` exports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ctrd.client._registry._hosts import (
    Capability,
    Credentials,
    CredentialsCallback,
    RegistryHost,
    RegistryOptions,
    docker_config_credentials,
    resolve_hosts,
)
from ctrd.client._registry._manifests import MAX_MANIFEST_SIZE
from ctrd.client._registry._platforms import (
    ALL,
    Matcher,
    PlatformLike,
    exactly,
    host_platform,
    only,
    parse_platform,
)
from ctrd.client._registry._reference import Reference, parse_reference

if TYPE_CHECKING:
    from ctrd.client._registry._pull import pull_image
    from ctrd.client._registry._push import push_image

__all__ = [
    "ALL",
    "MAX_MANIFEST_SIZE",
    "Capability",
    "Credentials",
    "CredentialsCallback",
    "Matcher",
    "PlatformLike",
    "Reference",
    "RegistryHost",
    "RegistryOptions",
    "docker_config_credentials",
    "exactly",
    "host_platform",
    "only",
    "parse_platform",
    "parse_reference",
    "pull_image",
    "push_image",
    "resolve_hosts",
]


def __getattr__(name: str) -> Any:
    # the HTTP side (aiohttp) is imported on first use
    if name == "pull_image":
        from ctrd.client._registry._pull import pull_image

        return pull_image
    if name == "push_image":
        from ctrd.client._registry._push import push_image

        return push_image
    raise AttributeError(name)
