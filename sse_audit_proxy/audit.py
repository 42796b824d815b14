"""The audit of one stream: decoded observations plus arrival times in, timings and a verdict out.

Pure: the caller supplies every timestamp (monotonic seconds), so a recorded stream replayed
with the same times always gives the same result.
"""

from __future__ import annotations

import zlib
from bisect import bisect_left
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from . import buckets
from .dialects import CONTENT, Dialect
from .sse import DEFAULT_MAX_FRAME_BYTES, Event, SSEDecoder


class Outcome(StrEnum):
    COMPLETE = "complete"
    TRUNCATED = "truncated"
    UPSTREAM_ERROR = "upstream_error"
    CLIENT_DISCONNECT = "client_disconnect"
    TIMEOUT = "timeout"


class Anomaly(StrEnum):
    MISSING_DONE = "missing_done"
    MISSING_FINISH_REASON = "missing_finish_reason"
    MISSING_USAGE = "missing_usage"
    BUFFERED = "buffered"
    MALFORMED_FRAME = "malformed_frame"
    INVALID_TOOL_ARGUMENTS = "invalid_tool_arguments"
    ERROR_EVENT = "error_event"


class End(StrEnum):
    """Why the proxy stopped relaying; the audit turns it into an outcome."""

    UPSTREAM_EOF = "upstream_eof"
    UPSTREAM_BROKEN = "upstream_broken"
    UPSTREAM_STATUS = "upstream_status"  # answered >= 400, or could not be reached
    CONNECT_TIMEOUT = "connect_timeout"  # the upstream never accepted the connection
    IDLE_TIMEOUT = "idle_timeout"
    TOTAL_TIMEOUT = "total_timeout"
    CLIENT_GONE = "client_gone"
    SLOW_CLIENT = "slow_client"  # the client left more than max_unsent_bytes unread
    ABORTED = "aborted"  # by the proxy: still running when the shutdown drain ran out


_OUTCOME_BY_END = {
    End.UPSTREAM_STATUS: Outcome.UPSTREAM_ERROR,
    End.CONNECT_TIMEOUT: Outcome.TIMEOUT,
    End.IDLE_TIMEOUT: Outcome.TIMEOUT,
    End.TOTAL_TIMEOUT: Outcome.TIMEOUT,
    End.CLIENT_GONE: Outcome.CLIENT_DISCONNECT,
    End.SLOW_CLIENT: Outcome.CLIENT_DISCONNECT,
    End.ABORTED: Outcome.CLIENT_DISCONNECT,
}


@dataclass(slots=True, frozen=True)
class Thresholds:
    """When a stream counts as buffered (all must hold). Defaults are the documented ones."""

    buffered_min_frames: int = 5
    buffered_wait_ratio: float = 0.8  # share of the time to the last content frame spent waiting
    buffered_max_spacing: float = 0.002  # mean seconds between content frames
    buffered_min_ttft: float = 0.05  # below this a burst is a fast upstream, not a withheld one
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES


@dataclass(slots=True)
class StreamResult:
    outcome: Outcome
    end: End
    anomalies: list[str]
    ttfb: float | None
    ttft: float | None
    max_gap: float | None
    duration: float
    frames: int
    content_frames: int
    keepalives: int
    bytes: int
    done: bool
    finish_reasons: list[str]
    usage: dict[str, Any] | None
    prompt_tokens: int | None
    completion_tokens: int | None
    tool_calls: int
    unterminated_frame: bool
    gap_counts: list[int] = field(default_factory=list)  # per buckets.GAP bound, +Inf last
    gap_sum: float = 0.0
    usage_requested: bool = False  # the request asked for usage (stream_options.include_usage)


class StreamAudit:
    """Feed every body chunk with its arrival time, then call finish() once."""

    __slots__ = (
        "_content_frames", "_decoder", "_dialect", "_first_byte", "_first_content",
        "_frames", "_gap_counts", "_gap_sum", "_include_usage", "_inflate", "_keepalives",
        "_last_content", "_last_frame", "_max_gap", "_started", "_thresholds", "bytes",
    )

    def __init__(
        self,
        dialect: Dialect,
        started_at: float,
        *,
        include_usage: bool = False,
        content_encoding: str = "",
        thresholds: Thresholds = Thresholds(),
    ) -> None:
        self._dialect = dialect
        self._started = started_at
        self._include_usage = include_usage
        self._thresholds = thresholds
        self._decoder = SSEDecoder(thresholds.max_frame_bytes)
        self._inflate = _inflater(content_encoding)
        self.bytes = 0
        self._frames = 0
        self._content_frames = 0
        self._keepalives = 0
        self._first_byte: float | None = None
        self._first_content: float | None = None
        self._last_content = 0.0
        self._last_frame: float | None = None
        self._max_gap: float | None = None
        self._gap_counts = [0] * (len(buckets.GAP) + 1)
        self._gap_sum = 0.0

    def feed(self, chunk: bytes, t: float) -> None:
        if self._first_byte is None:
            self._first_byte = t
        self.bytes += len(chunk)
        decoder = self._decoder
        comments = decoder.comments
        events = decoder.feed(chunk) if self._inflate is None else self._inflate_and_decode(chunk)
        if decoder.comments != comments:
            self._keepalives += decoder.comments - comments
        if not events:
            return
        self._note_frames(len(events), t)
        observe = self._dialect.observe
        content = 0
        for event in events:
            if observe(event) & CONTENT:
                content += 1
        if content:
            if self._first_content is None:
                self._first_content = t
            self._last_content = t
            self._content_frames += content

    def _note_frames(self, n: int, t: float) -> None:
        # Frames decoded from one read share its arrival time: one real gap, then n-1 zeros.
        if self._last_frame is not None:
            gap = t - self._last_frame
            self._gap_counts[bisect_left(buckets.GAP, gap)] += 1
            self._gap_sum += gap
            if self._max_gap is None or gap > self._max_gap:
                self._max_gap = gap
            if n > 1:
                self._gap_counts[0] += n - 1
        elif n > 1:
            self._gap_counts[0] += n - 1
            self._max_gap = 0.0
        self._last_frame = t
        self._frames += n

    def _inflate_and_decode(self, chunk: bytes) -> list[Event]:
        """Decode a compressed body on the audit side only, a bounded piece at a time."""
        events: list[Event] = []
        limit = self._thresholds.max_frame_bytes
        try:
            while chunk:
                events.extend(self._decoder.feed(self._inflate.decompress(chunk, limit)))
                chunk = self._inflate.unconsumed_tail
        except zlib.error:
            self._inflate = _Undecodable()
            self._decoder.oversized += 1  # counted as malformed: the frames cannot be read
        return events

    def finish(self, t: float, end: End) -> StreamResult:
        unterminated = self._decoder.close()
        summary = self._dialect.summary()
        outcome = _OUTCOME_BY_END.get(end)
        if outcome is None:
            outcome = Outcome.COMPLETE if summary.terminal else Outcome.TRUNCATED
        dialect = type(self._dialect)
        anomalies: list[str] = []
        upstream_ended = outcome in (Outcome.COMPLETE, Outcome.TRUNCATED)
        if upstream_ended:
            if dialect.expects_done and not summary.done:
                anomalies.append(Anomaly.MISSING_DONE)
            if dialect.expects_finish_reason and summary.missing_finish_reason:
                anomalies.append(Anomaly.MISSING_FINISH_REASON)
            if self._include_usage and dialect.expects_usage and summary.usage is None:
                anomalies.append(Anomaly.MISSING_USAGE)
        ttft = None if self._first_content is None else self._first_content - self._started
        if self._is_buffered(ttft):
            anomalies.append(Anomaly.BUFFERED)
        if summary.malformed_frames or self._decoder.oversized:
            anomalies.append(Anomaly.MALFORMED_FRAME)
        if upstream_ended and summary.invalid_tool_arguments:
            anomalies.append(Anomaly.INVALID_TOOL_ARGUMENTS)
        if summary.error_events:
            anomalies.append(Anomaly.ERROR_EVENT)
        anomalies.extend(summary.anomalies)
        return StreamResult(
            outcome=outcome,
            end=end,
            anomalies=anomalies,
            ttfb=None if self._first_byte is None else self._first_byte - self._started,
            ttft=ttft,
            max_gap=self._max_gap,
            duration=t - self._started,
            frames=self._frames,
            content_frames=self._content_frames,
            keepalives=self._keepalives,
            bytes=self.bytes,
            done=summary.done,
            finish_reasons=summary.finish_reasons,
            usage=summary.usage,
            prompt_tokens=summary.prompt_tokens,
            completion_tokens=summary.completion_tokens,
            tool_calls=summary.tool_calls,
            unterminated_frame=unterminated,
            gap_counts=self._gap_counts,
            gap_sum=self._gap_sum,
            usage_requested=self._include_usage,
        )

    def _is_buffered(self, ttft: float | None) -> bool:
        th = self._thresholds
        n = self._content_frames
        if ttft is None or n < th.buffered_min_frames or ttft < th.buffered_min_ttft:
            return False
        assert self._first_content is not None
        to_last = self._last_content - self._started
        spacing = (self._last_content - self._first_content) / (n - 1)
        return ttft >= th.buffered_wait_ratio * to_last and spacing < th.buffered_max_spacing


class _Undecodable:
    """Stands in for a broken decompressor: the rest of the body is not audited."""

    unconsumed_tail = b""

    def decompress(self, data: bytes, max_length: int = 0) -> bytes:
        return b""


def _inflater(content_encoding: str) -> Any:
    encoding = content_encoding.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    return None
