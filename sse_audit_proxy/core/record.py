"""The audit record of one proxied request: what every sink receives."""

from __future__ import annotations

import builtins
from dataclasses import dataclass

from sse_audit_proxy.core.audit import StreamResult
from sse_audit_proxy.core.request_info import RequestInfo


@dataclass(slots=True)
class AuditRecord:
    trace_id: str
    route: str
    method: str
    model: str
    status: int
    started_at: float  # wall clock, seconds since the epoch
    duration: float
    bytes: int
    stream: StreamResult | None  # None for a request that was not audited as a stream
    error: str | None = None  # the proxy's own reason when it answered instead of the upstream
    # Seconds from the request's last byte written to the upstream to the first body byte,
    # of any response (the upstream's clock: see request_sent).
    ttfb: float | None = None
    # Seconds from the request's arrival to its last byte written to the upstream (the client's
    # upload and the connection to the upstream); None when it was never all sent to one.
    request_sent: float | None = None
    upstream: str = "baseline"  # the side that served it (canary.Side.name): the `upstream` label
    # The client's W3C `traceparent` (trace ID, the calling span's ID), when it sent a valid one.
    traceparent: tuple[str, str] | None = None
    # Which attempt of the client's own retries this is (0 the first), when its SDK says so.
    client_retry: int | None = None
    # The upstream closed a pooled connection without answering and the proxy sent the
    # request again on a new one (idempotent methods only): the upstream may have seen it twice.
    replayed: bool = False
    # For evidence: what was asked (its shape, never its text) and the response head as
    # relayed to the client (the bytes written; redacted when rendered).
    request: RequestInfo | None = None
    response_head: builtins.bytes | None = None  # (`bytes` is a field here)

    @property
    def outcome(self) -> str | None:
        return None if self.stream is None else self.stream.outcome.value
