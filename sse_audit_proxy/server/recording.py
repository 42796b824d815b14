"""One request's way to its audit record: exactly one record, whatever raises on the way.

The sinks and the audit's verdict are reached only through a Recording, and every call into
them is guarded on its own: a sink that raises is logged and skipped (the others still get
their call, the client never notices), and an audit that fails leaves a record without a
verdict rather than no record. The state is explicit: `recorded` (the record went out, a
second finish does nothing) and `responded` (the response head went out: the proxy may cut
the connection, never answer again).

The guard is per stream, not per frame: nothing here runs while a body is relayed, unless
the audit fails (`audit_failed`, once: the relay then stops feeding it).
"""

from __future__ import annotations

import time
from typing import Protocol

import structlog

from sse_audit_proxy.core.audit import End, StreamAudit
from sse_audit_proxy.core.record import AuditRecord
from sse_audit_proxy.server.failures import failure

_log = structlog.get_logger("sse_audit_proxy")


class Sink(Protocol):
    """Something that hangs off the end of a stream: metrics, logs, recent-streams buffer."""

    def stream_started(self, rec: AuditRecord) -> None: ...
    def stream_ended(self, rec: AuditRecord) -> None: ...
    def record(self, rec: AuditRecord) -> None: ...


def audit_failed(trace_id: str, during: str, exc: BaseException) -> None:
    """The audit itself failed (`during` names the step): one `proxy_failed` line."""
    _log.error("proxy_failed", trace_id=trace_id, during=during, **failure(exc))


class Recording:
    """The record of one request, the sinks it goes to, and where the request has got to."""

    __slots__ = ("_sinks", "_streaming", "credentials", "rec", "recorded", "responded", "started")

    def __init__(self, rec: AuditRecord, started: float, sinks: tuple[Sink, ...]) -> None:
        self.rec = rec
        self.started = started  # monotonic seconds: the record's durations are counted from it
        # The request's own credentials (credentials_in), until its answer's head is kept: no
        # sink may show them, whatever field they turn up in.
        self.credentials: list[str] = []
        self._sinks = sinks
        self.recorded = False  # the record went to the sinks: never a second one
        self.responded = False  # the response head went out: never a second one, a cut instead
        self._streaming = False  # stream_started told, stream_ended not yet

    def stream_started(self) -> None:
        """Tell the sinks a stream opened; `finish` tells them it ended (exactly once)."""
        if self._streaming or self.recorded:
            return
        self._streaming = True
        self._tell("stream_started")

    def stream_ended(self) -> None:
        if not self._streaming:
            return
        self._streaming = False
        self._tell("stream_ended")

    def finish(self, audit: StreamAudit | None, end: End) -> None:
        """Judge the stream (if audited) and hand the record to every sink; only the first
        call does anything. A failed verdict leaves the record without one: route, status,
        trace ID, duration and bytes are there, and `error` names an end that was not clean,
        as for any request not audited as a stream."""
        if self.recorded:
            return
        self.recorded = True
        self.stream_ended()
        rec = self.rec
        now = time.monotonic()
        rec.duration = now - self.started
        if audit is not None:
            try:
                rec.stream = audit.finish(now, end)
            except Exception as exc:
                audit_failed(rec.trace_id, "finish", exc)
        if rec.stream is None and rec.error is None and end is not End.UPSTREAM_EOF:
            rec.error = end.value
        for sink in self._sinks:
            try:
                sink.record(rec)
            except Exception as exc:
                self._sink_failed(sink, "record", exc)

    def _tell(self, call: str) -> None:
        """`stream_started` or `stream_ended` to every sink."""
        rec = self.rec
        for sink in self._sinks:
            try:
                getattr(sink, call)(rec)
            except Exception as exc:
                self._sink_failed(sink, call, exc)

    def _sink_failed(self, sink: Sink, call: str, exc: Exception) -> None:
        fields = failure(exc)
        _log.error("sink_failed", sink=type(sink).__name__, call=call, trace_id=self.rec.trace_id, **fields)
