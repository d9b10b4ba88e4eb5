"""Imports a dependency that is not installed."""

from __future__ import annotations

import ctrd_example_dependency_that_is_not_installed  # noqa: F401
