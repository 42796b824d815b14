"""The last N audit records, kept so an operator can go from a trace ID to its verdict.

A sink like the metrics and the log: it holds finished records in a bounded deque and renders
them with `logs.record_fields` only when someone asks, so the stream path pays one append.
Lookups scan a copy of the deque (in another thread: see server/lookup.py): they are rare,
and a scan has no index to keep in step.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sse_audit_proxy.core.record import AuditRecord
from sse_audit_proxy.sinks.logs import record_fields

DEFAULT_CAPACITY = 1000
MAX_RECENT = 100_000  # records of a few KiB each: a few hundred MB at most (10**19 was a traceback)


@dataclass(slots=True, frozen=True)
class Query:
    """Filters for `/streams/recent`; None matches anything."""

    limit: int = 100
    outcome: str | None = None
    anomaly: str | None = None
    route: str | None = None
    model: str | None = None
    upstream: str | None = None
    status: int | None = None  # what the client got
    error: str | None = None  # the proxy's own reason (`upstream_unreachable`, ...)

    def matches(self, rec: AuditRecord) -> bool:
        if self.upstream is not None and rec.upstream != self.upstream:
            return False
        if self.status is not None and rec.status != self.status:
            return False
        if self.error is not None and rec.error != self.error:
            return False
        if self.route is not None and rec.route != self.route:
            return False
        if self.model is not None and rec.model != self.model:
            return False
        if self.outcome is not None and rec.outcome != self.outcome:
            return False
        return self.anomaly is None or (rec.stream is not None and self.anomaly in rec.stream.anomalies)

    def params(self) -> dict[str, str]:
        """The query string that asks for this query (the filters that are set)."""
        return {name: str(value) for name in PARAMS if (value := getattr(self, name)) is not None}


def http_status(text: str) -> int | None:
    """A `status` filter's value as a status (100 to 599), or None when it is not one."""
    return int(text) if text.isascii() and text.isdigit() and 100 <= int(text) <= 599 else None


# What `/streams/recent` takes; a parameter it does not know is refused, not ignored (an
# on-call's `?status=502` had answered every record).
PARAMS = ("limit", "outcome", "anomaly", "route", "model", "upstream", "status", "error")


class RecentStreams:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._records: deque[AuditRecord] = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self._records)

    # Sink hooks -----------------------------------------------------------------------

    def stream_started(self, rec: AuditRecord) -> None:
        pass

    def stream_ended(self, rec: AuditRecord) -> None:
        pass

    def record(self, rec: AuditRecord) -> None:
        self._records.append(rec)

    # Lookups: newest first ------------------------------------------------------------

    def snapshot(self) -> list[AuditRecord]:
        """The held records, oldest first: what a lookup reads in another thread while the
        loop goes on appending (a deque changed during iteration raises)."""
        return list(self._records)

    def recent(self, query: Query) -> list[dict[str, Any]]:
        return recent(self.snapshot(), query)

    def held(self, trace_id: str) -> list[AuditRecord]:
        return held(self.snapshot(), trace_id)

    def find(self, trace_id: str) -> list[dict[str, Any]]:
        return find(held(self.snapshot(), trace_id))


def recent(records: Sequence[AuditRecord], query: Query) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for rec in reversed(records):
        if len(found) >= query.limit:
            break
        if query.matches(rec):
            found.append(record_fields(rec))
    return found


def held(records: Sequence[AuditRecord], trace_id: str) -> list[AuditRecord]:
    """Every record with this trace ID, newest first: a client may reuse one across retries."""
    return [rec for rec in reversed(records) if rec.trace_id == trace_id]


def find(records: Iterable[AuditRecord]) -> list[dict[str, Any]]:
    """These records' fields, each with its stream's timeline (see timeline.py)."""
    found = []
    for rec in records:
        fields = record_fields(rec)
        s = rec.stream
        if s is not None and s.timeline is not None:
            fields["timeline"] = s.timeline.to_json()
        found.append(fields)
    return found
