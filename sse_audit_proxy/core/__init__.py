"""The pure engine: bytes and arrival times in, audit records and verdicts out.

No sockets, no clocks, no globals: the SSE decoder (`sse`), the inflater, the dialects
(events to observations), the audit (observations and times to timings) and the verdict
rules (`verdict`, the one place that decides an outcome or an anomaly).
"""
