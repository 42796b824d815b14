"""Numbers as every report of the project shows them: milliseconds and nearest-rank percentiles."""

from __future__ import annotations

from collections.abc import Sequence


def ms(seconds: float | None, digits: int = 3) -> float | None:
    """Seconds as milliseconds, rounded; None stays None (a time that never came)."""
    return None if seconds is None else round(seconds * 1000.0, digits)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of unsorted values; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]
