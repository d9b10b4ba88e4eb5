"""The current namespace, carried in a :class:`contextvars.ContextVar`.

The gRPC edge (or the SDK) sets it once per request; domain code calls
:func:`required` to obtain a validated name. Over the wire the namespace travels
in the ``containerd-namespace`` request header, as in containerd.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from typing import Final

from ctrd import errdefs

__all__ = [
    "DEFAULT",
    "ENV_VAR",
    "GRPC_HEADER",
    "LEASE_HEADER",
    "current",
    "current_lease",
    "default_from_env",
    "required",
    "with_lease",
    "with_namespace",
]

GRPC_HEADER: Final = "containerd-namespace"
LEASE_HEADER: Final = "containerd-lease"
ENV_VAR: Final = "CONTAINERD_NAMESPACE"
DEFAULT: Final = "default"

_NAMESPACE: contextvars.ContextVar[str | None] = contextvars.ContextVar("ctrd_namespace", default=None)
_LEASE: contextvars.ContextVar[str | None] = contextvars.ContextVar("ctrd_lease", default=None)


def current() -> str | None:
    """Return the namespace of the current context, or ``None``."""
    return _NAMESPACE.get()


#: names that passed validation (a pure check of the string), so a request in a known
#: namespace skips it; bounded by :data:`_VALID_MAX`
_valid: set[str] = set()
_VALID_MAX: Final = 1024


def required() -> str:
    """Return the current namespace, validated.

    :raises errdefs.FailedPrecondition: ``namespace is required`` when none is set.
    :raises errdefs.InvalidArgument: ``namespace validation: ...`` when it is malformed.
    """
    ns = _NAMESPACE.get()
    if ns in _valid:
        return ns
    if not ns:
        raise errdefs.FailedPrecondition("namespace is required")
    from ctrd import identifiers  # local import keeps this module import-light

    try:
        identifiers.validate(ns)
    except errdefs.InvalidArgument as exc:
        raise errdefs.InvalidArgument(f"namespace validation: {exc.context}") from exc
    if len(_valid) >= _VALID_MAX:
        _valid.clear()
    _valid.add(ns)
    return ns


@contextlib.contextmanager
def with_namespace(namespace: str | None) -> Iterator[None]:
    """Run the body with *namespace* as the current namespace."""
    token = _NAMESPACE.set(namespace)
    try:
        yield
    finally:
        _NAMESPACE.reset(token)


def current_lease() -> str | None:
    """Return the lease id attached to the current context, or ``None``."""
    return _LEASE.get()


@contextlib.contextmanager
def with_lease(lease: str | None) -> Iterator[None]:
    """Run the body with *lease* attached (what it writes is held by the lease)."""
    token = _LEASE.set(lease)
    try:
        yield
    finally:
        _LEASE.reset(token)


def set_for_request(namespace: str | None, lease: str | None) -> None:
    """Set namespace and lease for the rest of the current task (gRPC edge only)."""
    _NAMESPACE.set(namespace)
    _LEASE.set(lease)


def default_from_env() -> str:
    """The client-side default: ``$CONTAINERD_NAMESPACE`` or ``default``."""
    return os.environ.get(ENV_VAR) or DEFAULT
