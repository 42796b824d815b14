"""Histogram bucket boundaries (seconds), shared by the audit and the metrics.

Time to first token/byte follows vLLM and the OpenTelemetry GenAI semantic conventions
(`gen_ai.server.time_to_first_token`: 1 ms .. 10 s) extended to minutes for reasoning
models and slow gateways. Gaps reach down to 0.5 ms because a buffered replay shows up
as sub-millisecond gaps, and up to minutes because a stall is what operators hunt for.
"""

from __future__ import annotations

# Between 0.1 s and 5 s, where most streams' first tokens are, a bucket is at most 1.5 times
# the one below it (mostly 1.25 to 1.33): `histogram_quantile` puts a quantile inside its
# bucket by straight-line interpolation, and with 0.25, 0.5, 0.75, 1, 2.5, 5 a 0.30 s p95 read
# as 0.49 s, a canary 2.3 times slower as 1.5 times, below the 2 of the TTFT alert and of
# the Argo and Flagger analyses (an outside review with a real Prometheus).
LATENCY = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.15,
    0.2,
    0.25,
    0.3,
    0.4,
    0.5,
    0.6,
    0.75,
    1.0,
    1.25,
    1.5,
    2.0,
    2.5,
    3.0,
    4.0,
    5.0,
    7.5,
    10.0,
    15.0,
    20.0,
    40.0,
    80.0,
    160.0,
    320.0,
)
GAP = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    40.0,
    80.0,
)
DURATION = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
    163.84,
    327.68,
    655.36,
)
