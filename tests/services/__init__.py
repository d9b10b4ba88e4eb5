"""Tests of the gRPC servicers over in-memory channels."""
