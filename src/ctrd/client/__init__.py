"""Async client SDK for ctrd and containerd (content store over gRPC)."""

from __future__ import annotations

from ctrd.client._content import RemoteContentStore, RemoteReaderAt, RemoteWriter

__all__ = ["RemoteContentStore", "RemoteReaderAt", "RemoteWriter"]
