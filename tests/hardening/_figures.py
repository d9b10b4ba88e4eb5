"""Figures the hostile-client suite measured, printed after the run (see conftest.py)."""

from __future__ import annotations

import threading

__all__ = ["FIGURES", "Figures"]


class Figures:
    """``(group, name) -> value``; a figure recorded again keeps the worst (largest) value,
    counts (names starting with ``cases`` or ending ``tried``) add up."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def add(self, group: str, name: str, value: float) -> None:
        """Record *value*."""
        key = (group, name)
        with self._lock:
            old = self._values.get(key)
            if old is None:
                self._values[key] = value
            elif name.startswith("cases") or name.endswith("tried"):
                self._values[key] = old + value
            else:
                self._values[key] = max(old, value)

    def render(self) -> list[str]:
        """One line per figure, grouped."""
        out: list[str] = []
        group = None
        for (g, name), value in sorted(self._values.items()):
            if g != group:
                out.append(f"{g}:")
                group = g
            shown = f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"
            out.append(f"  {name}: {shown}")
        return out


FIGURES = Figures()
