"""The audit of one stream: decoded observations plus arrival times in, timings and a verdict out.

Pure: the caller supplies every timestamp (monotonic seconds), so a recorded stream replayed
with the same times always gives the same result.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from . import buckets
from .dialects import CONTENT, KEEPALIVE, Dialect
from .inflate import Inflater, wants_inflater
from .sse import DEFAULT_MAX_FRAME_BYTES, SSEDecoder

# A body that starts like a JSON object is held this far to see whether it is an error
# sent instead of a stream (it is forwarded unchanged all the same).
PEEK_BYTES = 16 << 10


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
    NOT_STREAMED = "not_streamed"  # a stream was asked for; an ordinary answer came instead
    WRONG_CONTENT_TYPE = "wrong_content_type"  # an event stream not labelled text/event-stream
    BURSTY = "bursty"  # content released in clumps separated by long silences
    # The compressed body expanded absurdly (see inflate.py); it was forwarded unchanged but
    # no longer audited.
    COMPRESSION_BOMB = "compression_bomb"


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
    # Usage was expected: asked for (stream_options.include_usage), or always part of this
    # stream shape (Responses, Anthropic Messages).
    usage_requested: bool = False
    last_keepalive: float | None = None  # seconds from the request to the last keep-alive


class StreamAudit:
    """Feed every body chunk with its arrival time, then call finish() once."""

    __slots__ = (
        "_content_frames",
        "_decoder",
        "_dialect",
        "_event_stream",
        "_first_byte",
        "_first_content",
        "_frames",
        "_gap_counts",
        "_gap_sum",
        "_include_usage",
        "_inflate",
        "_keepalives",
        "_last_content",
        "_last_frame",
        "_last_keepalive",
        "_max_gap",
        "_peek",
        "_started",
        "_take",
        "_thresholds",
        "bytes",
    )

    def __init__(
        self,
        dialect: Dialect,
        started_at: float,
        *,
        include_usage: bool = False,
        content_encoding: str = "",
        thresholds: Thresholds = Thresholds(),
        event_stream: bool = True,
    ) -> None:
        """`event_stream=False`: the body is not labelled as one; only its start is looked
        at, to tell an error document sent in place of the stream."""
        self._dialect = dialect
        self._started = started_at
        self._include_usage = include_usage
        self._thresholds = thresholds
        self._decoder = SSEDecoder(thresholds.max_frame_bytes)
        self._inflate = (Inflater(content_encoding, thresholds.max_frame_bytes)
                         if wants_inflater(content_encoding) else None)
        self._peek: bytearray | None = bytearray()  # the body's start, while it may be JSON
        self._take: Any = self._decode if event_stream else self._look_only
        self._event_stream = event_stream
        self.bytes = 0
        self._frames = 0
        self._content_frames = 0
        self._keepalives = 0
        self._last_keepalive: float | None = None
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
        take = self._take
        if take is None:
            return
        if self._inflate is None:
            take(chunk, t)
        else:  # decoded piece by piece: a small chunk may expand a lot
            for piece in self._inflate.feed(chunk):
                take(piece, t)

    def _decode(self, data: bytes, t: float) -> None:
        decoder = self._decoder
        comments = decoder.comments
        events = decoder.feed(data)
        if self._peek is not None:
            self._look(data, bool(events))
        keepalives = decoder.comments - comments
        if not events and not keepalives:
            return
        frames = content = 0
        observe = self._dialect.observe
        for event in events:
            bits = observe(event)
            if bits & KEEPALIVE:
                keepalives += 1
            else:
                frames += 1
                if bits & CONTENT:
                    content += 1
        if keepalives:
            self._keepalives += keepalives
            self._last_keepalive = t
        if frames:
            self._note_frames(frames, t)
        if content:
            if self._first_content is None:
                self._first_content = t
            self._last_content = t
            self._content_frames += content

    def _look_only(self, data: bytes, t: float) -> None:
        self._look(data, False)
        if self._peek is None:
            self._take = None  # not an error document: nothing more to learn from this body

    def _look(self, data: bytes, framed: bool) -> None:
        """Hold the body's start while it may be a JSON error document instead of a stream."""
        peek = self._peek
        assert peek is not None
        if framed or len(peek) + len(data) > PEEK_BYTES:
            self._peek = None
            return
        peek += data
        start = peek.lstrip()[:1]
        if start and start != b"{":
            self._peek = None

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

    @property
    def error_document(self) -> bool:
        """The body so far is one JSON error document, not an event stream."""
        return self._frames == 0 and self._peek is not None and is_error_document(self._peek)

    def finish(self, t: float, end: End) -> StreamResult:
        unterminated = self._decoder.close()
        summary = self._dialect.summary()
        error_body = self.error_document
        if error_body:
            unterminated = False  # a JSON document, not a frame left open
        # Frames we could not decode (br, a broken gzip), would not decode (a decompression
        # bomb) or had not decoded yet when the body ended leave only the transport to judge.
        inflate = self._inflate
        bomb = inflate is not None and inflate.bomb
        unreadable = inflate is not None and (inflate.failed or bomb or inflate.behind)
        # An ordinary answer to a stream request: whole when the body ended cleanly.
        not_streamed = not (self._event_stream or error_body or end is End.UPSTREAM_STATUS)
        outcome = _OUTCOME_BY_END.get(end)
        if outcome is None:
            if summary.failed or error_body:
                outcome = Outcome.UPSTREAM_ERROR
            elif summary.terminal or ((unreadable or not_streamed) and end is End.UPSTREAM_EOF):
                outcome = Outcome.COMPLETE
            else:
                outcome = Outcome.TRUNCATED
        dialect = type(self._dialect)
        anomalies: list[str] = []
        if not_streamed:
            anomalies.append(Anomaly.NOT_STREAMED)
        # Completeness is judged on streams the upstream ended, and only on event streams.
        judged = (outcome in (Outcome.COMPLETE, Outcome.TRUNCATED) and not unreadable
                  and not not_streamed)
        if judged:
            if dialect.expects_done and not summary.done:
                anomalies.append(Anomaly.MISSING_DONE)
            if dialect.expects_finish_reason and summary.missing_finish_reason:
                anomalies.append(Anomaly.MISSING_FINISH_REASON)
            if self._wants_usage() and summary.usage is None:
                anomalies.append(Anomaly.MISSING_USAGE)
        ttft = None if self._first_content is None else self._first_content - self._started
        if self._is_buffered(ttft):
            anomalies.append(Anomaly.BUFFERED)
        if bomb:
            anomalies.append(Anomaly.COMPRESSION_BOMB)
        if (summary.malformed_frames or self._decoder.oversized
                or (inflate is not None and inflate.failed)):
            anomalies.append(Anomaly.MALFORMED_FRAME)
        if judged and summary.invalid_tool_arguments:
            anomalies.append(Anomaly.INVALID_TOOL_ARGUMENTS)
        if summary.error_events or error_body:
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
            usage_requested=self._wants_usage(),
            last_keepalive=(None if self._last_keepalive is None
                            else self._last_keepalive - self._started),
        )

    def _wants_usage(self) -> bool:
        dialect = type(self._dialect)
        return dialect.expects_usage and (self._include_usage or dialect.usage_always)

    def _is_buffered(self, ttft: float | None) -> bool:
        th = self._thresholds
        n = self._content_frames
        if ttft is None or n < th.buffered_min_frames or ttft < th.buffered_min_ttft:
            return False
        assert self._first_content is not None
        to_last = self._last_content - self._started
        spacing = (self._last_content - self._first_content) / (n - 1)
        return ttft >= th.buffered_wait_ratio * to_last and spacing < th.buffered_max_spacing


def is_error_document(body: bytes | bytearray) -> bool:
    """Whether a whole body is a JSON error (OpenAI, Anthropic and vLLM shapes)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(doc, dict):
        return False
    return bool(doc.get("error")) or doc.get("type") == "error" or doc.get("object") == "error"
