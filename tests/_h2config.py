"""grpclib's h2 configuration, for tests that drive h2 connections directly."""

from __future__ import annotations

from h2.config import H2Configuration

__all__ = ["grpclib_h2_config"]


def grpclib_h2_config(*, client_side: bool) -> H2Configuration:
    """The h2 configuration grpclib's server (``grpclib.server.Server``) uses, for either side."""
    return H2Configuration(
        client_side=client_side,
        header_encoding="ascii",
        validate_inbound_headers=False,
        validate_outbound_headers=False,
        normalize_inbound_headers=False,
        normalize_outbound_headers=False,
    )
