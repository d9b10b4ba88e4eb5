"""Go duration strings: now in :mod:`ctrd.golang`, re-exported for the modules importing them from here."""

from __future__ import annotations

from ctrd.golang import DurationError, format_duration, parse_duration, seconds

__all__ = ["DurationError", "format_duration", "parse_duration", "seconds"]
