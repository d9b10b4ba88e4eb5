"""gRPC servicers: validate, convert, delegate. No storage logic lives here."""

from __future__ import annotations

__all__: list[str] = []
