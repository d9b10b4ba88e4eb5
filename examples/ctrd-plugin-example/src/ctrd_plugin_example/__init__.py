"""An example third-party ctrd plugin package.

Two plugins, registered through the ``ctrd.plugins`` entry-point group (see
``pyproject.toml``):

* ``io.containerd.grpc.v1.example`` (:data:`ctrd_plugin_example.service.example`) --
  a gRPC service with its own proto (``ctrd_example.v1.Example``: ``Hello``,
  ``Quota``) and a config model (:class:`~ctrd_plugin_example.service.ExampleConfig`);
* ``ctrd.example.quota.v1.content`` (:data:`ctrd_plugin_example.quota.quota`) --
  requires the metadata store and enforces a per-namespace byte quota on
  commit (:class:`~ctrd_plugin_example.quota.QuotaConfig`).

Nothing is imported or started at import time beyond the registrations: the
heavy imports happen in the init functions.
"""

from __future__ import annotations

__version__ = "0.1.0"
