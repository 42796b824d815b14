"""Text for a terminal: durations a person reads at a glance, and aligned tables."""

from __future__ import annotations

from collections.abc import Sequence


def seconds(value: float | None) -> str:
    """`850ms` under a second, `2.41s` above; `-` for a time that never came."""
    if value is None:
        return "-"
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.2f}s"


def table(rows: Sequence[Sequence[str]]) -> str:
    """Rows of cells as left-aligned columns, the first row being the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)
