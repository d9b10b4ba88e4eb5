"""``python -m ctrd`` runs the daemon command."""

from __future__ import annotations

from ctrd.server.cli import main

raise SystemExit(main())
