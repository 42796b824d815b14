"""Example budgets of the property tests: small in CI, scaled up for a fuzz run.

`SSE_AUDIT_FUZZ_SCALE=N` multiplies every budget (docs/development.md's fuzz command uses 500).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

SCALE = max(1, int(os.environ.get("SSE_AUDIT_FUZZ_SCALE", "1")))


def budget(examples: int) -> settings:
    return settings(
        max_examples=examples * SCALE,
        deadline=None,  # a shared 2-core CI machine has noisy timings
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
