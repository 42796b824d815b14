"""The audit of one stream: decoded observations plus arrival times in, timings and a verdict out.

Pure: the caller supplies every timestamp (monotonic seconds), so a recorded stream replayed
with the same times always gives the same result.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from sse_audit_proxy.core import buckets
from sse_audit_proxy.core.dialects import CONTENT, FINISH, KEEPALIVE, SHAPE, Dialect
from sse_audit_proxy.core.inflate import Inflater, wants_inflater
from sse_audit_proxy.core.json_lines import JsonLinesDecoder
from sse_audit_proxy.core.skeleton import skeleton
from sse_audit_proxy.core.sse import Event, SSEDecoder, one_data_frame
from sse_audit_proxy.core.timeline import Timeline
from sse_audit_proxy.core.verdict import Anomaly, End, Facts, Outcome, Thresholds, Timing, judge

__all__ = [
    "PEEK_BYTES",
    "Anomaly",
    "End",
    "Outcome",
    "StreamAudit",
    "StreamResult",
    "Thresholds",
    "is_error_document",
    "is_json_lines",
    "looks_like_event_stream",
]

# A body not labelled as an event stream is held this far to see what it is: a JSON error
# sent instead of a stream, or an event stream under another Content-Type (it is forwarded
# unchanged all the same).
PEEK_BYTES = 16 << 10
# How an event stream begins: a field name and its colon (or a comment's colon), after
# optional blank lines and a byte-order mark.
_SSE_STARTS = (b"data:", b"event:", b"id:", b"retry:", b":")
_SSE_FIELDS_BARE = (b"data", b"event", b"id", b"retry")
# Streaming JSON-lines types: one JSON document per line or record, written as it is made
# (Ollama's native `/api/chat` and `/api/generate`, Elasticsearch, Spring's `stream+json`,
# RFC 7464 `json-seq`). A stream, not an ordinary body, though not an event stream: each line is
# read as a frame (timed, an error line an in-band failure; core/json_lines.py), and with no end
# marker its completeness is the connection's.
JSON_LINES_TYPES = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonl",
        "application/jsonlines",
        "application/x-jsonlines",
        "application/json-seq",
        "application/stream+json",
    }
)
DEFAULT_THRESHOLDS = Thresholds()
HEAD_SKELETONS = 2  # frames whose skeleton is always kept; after them, one per new kind
# What a stream's skeletons may hold in all (an upstream can vary its frames' kinds and
# shapes; a real stream has 5 to 10 skeletons of a few hundred bytes).
MAX_SKELETON_CHARS = 8 << 10
SHAPE_RESERVE = 3 << 10  # of it, left to first frames of a kind by SHAPE frames of a seen one
_KEEPALIVE_BYTE = bytes((KEEPALIVE,))
# Frame kinds (observe() bits, one byte a frame) mapped to 1 when they carry a finish reason,
# or content: searched in C, once a finish has been seen.
_FINISHES = bytes(1 if b & FINISH else 0 for b in range(256))
_CONTENTS = bytes(1 if b & CONTENT and not b & KEEPALIVE else 0 for b in range(256))
# The kinds a seen-kinds mask (bit k: a frame of kind k) has when a finish was seen.
_FINISH_KINDS = sum(1 << b for b in range(128) if b & FINISH)
_GAP = buckets.GAP
# One-frame reads held before they are accounted together: bounded, a few hundred bytes.
HELD_READS = 32
# Feeds' worth of compressed input still waiting when the body ended that finish() itself
# decodes, in one go: 1 MiB of frames (about 15 ms of Chat tokens; 0.2 s of the costliest
# frames a hostile upstream can send). The proxy decodes the rest first, a feed a loop turn
# (catch_up), so that other streams go on meanwhile.
FINISH_FEEDS = 4


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
    usage_judged: bool = False  # usage was expected and its absence would be `missing_usage`
    last_keepalive: float | None = None  # seconds from the request to the last keep-alive
    timeline: Timeline | None = None
    # Frame skeletons (see skeleton.py): the first HEAD_SKELETONS frames, and the first frame of
    # each kind (bit set) seen, each "NUMBER,KIND_BITS,SKELETON_JSON" (one string: compact).
    skeletons: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # outcome's (if not complete), anomalies'
    client_held: float = 0.0  # seconds the upstream was not read, waiting for the client
    # Seconds from the last frame (keep-alives aside) to the end of relaying, the time the
    # upstream's bytes waited on the client left out: a stall the client gave up on shows here.
    quiet_at_end: float | None = None
    last_frame_content: bool = False  # the last frame (keep-alives aside) carried content, no finish
    read_as_other: bool = False  # DialectSummary.read_as_other
    refused: bool = False  # DialectSummary.refused
    thresholds: Thresholds = DEFAULT_THRESHOLDS  # those it was judged by (for its evidence)


class StreamAudit:
    """Feed every body chunk with its arrival time, then call finish() once."""

    __slots__ = (
        "_arrived",
        "_burst_frames",
        "_bursts",
        "_client_held",
        "_close_gaps",
        "_clump",
        "_clump_after",
        "_content_after_finish",
        "_content_frames",
        "_content_shift",
        "_decoder",
        "_dialect",
        "_ends_in_content",
        "_event_stream",
        "_finish_seen",
        "_first_byte",
        "_first_content",
        "_first_frame",
        "_frame_shift",
        "_gap_counts",
        "_gaps_credited",
        "_held_kinds",
        "_held_times",
        "_include_usage",
        "_inflate",
        "_json_lines",
        "_keepalives",
        "_last_content",
        "_last_frame",
        "_last_keepalive",
        "_limit",
        "_max_gap",
        "_peek",
        "_plain",
        "_read_at",
        "_seen_kinds",
        "_skeletons",
        "_sniffed",
        "_started",
        "_take",
        "_thresholds",
        "_timeline",
        "_ttft_credit",
        "_unread_unknown",
        "bytes",
    )

    def __init__(
        self,
        dialect: Dialect,
        started_at: float,
        *,
        include_usage: bool = False,
        content_encoding: str = "",
        thresholds: Thresholds = DEFAULT_THRESHOLDS,
        event_stream: bool = True,
        json_lines: bool = False,
        arrived_at: float | None = None,
    ) -> None:
        """`started_at` starts the upstream's clock (TTFB, TTFT, the timeline, the timing
        rules): when the request was all sent to it. `arrived_at`, when the request reached
        the proxy (default: `started_at`), starts `duration`.

        `event_stream=False`: the body is not labelled as one. Its start is looked at to
        tell an error document sent in place of the stream, or an event stream sent under
        another Content-Type (audited as a stream from then on). `json_lines`: it is labelled
        a streaming JSON-lines type (see is_json_lines), so it is a stream all the same, each
        line read as a frame (an error line is an in-band failure)."""
        self._dialect = dialect
        self._json_lines = json_lines
        self._started = started_at
        self._arrived = started_at if arrived_at is None else arrived_at
        self._include_usage = include_usage
        self._thresholds = thresholds
        # A JSON-lines stream is read as an event stream whose every frame is a `data:` line.
        self._decoder: SSEDecoder | JsonLinesDecoder = (
            JsonLinesDecoder(thresholds.max_frame_bytes)
            if json_lines
            else SSEDecoder(thresholds.max_frame_bytes)
        )
        self._limit = thresholds.max_frame_bytes
        self._plain = False  # feed()'s fast path may be taken (set once the start is seen)
        self._read_at = started_at  # the last compressed read's arrival
        self._inflate = (
            Inflater(content_encoding, thresholds.max_frame_bytes)
            if wants_inflater(content_encoding)
            else None
        )
        self._peek: bytearray | None = bytearray()  # the body's start, while it may be JSON
        self._take: Any = self._decode if event_stream else self._sniff
        self._event_stream = event_stream
        self._sniffed = False
        self.bytes = 0
        self._content_frames = 0
        self._keepalives = 0
        self._last_keepalive: float | None = None
        self._first_byte: float | None = None
        self._first_content: float | None = None
        self._last_content = 0.0
        self._last_frame: float | None = None
        self._max_gap: float | None = None
        self._gap_counts = [0] * (len(buckets.GAP) + 1)
        self._first_frame = 0.0  # when the first frame (not a keep-alive) arrived
        self._clump = 0  # content frames in the current clump (see Thresholds: bursty)
        self._clump_after = 0.0  # the silence before it
        self._bursts = 0
        self._burst_frames = 0
        self._close_gaps = 0  # content gaps under buffered_max_gap: read together (buffered)
        # The last frame so far (keep-alives aside) carried content, and no finish reason (one
        # that ends the answer: not so when content came after an earlier finish).
        self._ends_in_content = False
        self._finish_seen = False  # a frame with a finish reason has been accounted
        # Content came after a finish reason: the upstream sends them early (Open WebUI's on
        # reasoning chunks, a finish on every chunk), so a finish says nothing of the end.
        self._content_after_finish = False
        # Time the relay held the upstream for the client (see client_held): moved onto the
        # last frame's and last content frame's times until the next one's gap is measured.
        self._client_held = 0.0
        self._frame_shift = self._content_shift = self._gaps_credited = self._ttft_credit = 0.0
        self._timeline = Timeline()
        # One-frame reads not yet accounted (see _settle): kind bits, arrival times. A list,
        # not an array("d"): an array parses each float it is given as an argument (~0.6k
        # instructions a frame, callgrind).
        self._held_kinds = bytearray()
        self._held_times: list[float] = []
        self._skeletons: list[str] = []
        self._seen_kinds = 0
        self._unread_unknown = False  # the last unread frame's name did not say what it was

    def client_held(self, seconds: float, *, upstream_waited: float | None = None) -> None:
        """The relay did not read the upstream for `seconds`, waiting for a client that was
        behind; the timing rules skip a stream held long enough to shape its arrivals. For the
        last `upstream_waited` seconds of it (default: all) the upstream's bytes waited to be
        read: it was not silent then, so the gap that spans the hold, and the time to first
        token if none had come yet, leave that time out (they show the upstream's pace). The
        rest of the hold was the upstream's own silence, and stays in."""
        self._settle()
        self._client_held += seconds
        credit = seconds if upstream_waited is None else min(upstream_waited, seconds)
        if credit <= 0.0:
            return
        if self._first_content is None:
            self._ttft_credit += credit
        if self._last_frame is not None:
            self._last_frame += credit
            self._frame_shift += credit
        if self._first_content is not None:
            self._last_content += credit
            self._content_shift += credit

    def feed(self, chunk: bytes, t: float) -> None:
        self.bytes += len(chunk)
        # Most reads of a stream are one frame of a single `data:` line, with nothing pending
        # before it: what the decoder, the loop in _decode and the event object would do for
        # it, in place (profiled: this is the proxy's hot path, run once per relayed frame).
        data = one_data_frame(chunk, self._limit) if self._plain else None
        if data is not None:
            bits = self._dialect.observe_data(data)
            if not (self._seen_kinds >> bits) & 1:  # (never true of SHAPE, which it takes off)
                bits = self._keep_kind(bits, Event("", data), self._timeline_frames() + 1)
            held = self._held_kinds  # _hold, in place: a call here is a tenth of this path
            held.append(bits)
            self._held_times.append(t)
            if len(held) >= HELD_READS:
                self._settle()
            return
        self._decode_read(chunk, t)

    def _decode_read(self, chunk: bytes, t: float) -> None:
        self._settle()  # the reads held before this one come first
        if self._first_byte is None:
            self._first_byte = t
        take = self._take
        if take is None:
            return
        if self._inflate is None:
            take(chunk, t)
        else:  # decoded piece by piece: a small chunk may expand a lot
            self._read_at = t
            self._take_decoded(self._inflate.feed(chunk), t)

    @property
    def tail_waiting(self) -> bool:
        """Compressed input waits after the body's last read (a whole answer in one read
        decodes to more than a feed's bound): for catch_up()."""
        inflate = self._inflate
        return inflate is not None and self._take is not None and inflate.behind

    def catch_up(self) -> bool:
        """A feed's worth of the tail (tail_waiting) decoded now, timed as the last read; True
        while more waits. For the caller to spread over loop turns before finish()."""
        if self.tail_waiting:
            assert self._inflate is not None
            self._take_decoded(self._inflate.drain(), self._read_at)
        return self.tail_waiting

    def give_up_tail(self) -> None:
        """More of the tail waits than the caller decodes: the body expanded beyond what the
        audit reads (`compression_bomb`)."""
        if self._inflate is not None:
            self._inflate.give_up()

    def decoded_late(self, seconds: float) -> None:
        """The caller spent `seconds` decoding the tail (catch_up) after the body's end: not
        the upstream's silence after its last frame (`quiet_at_end`, `held_open`)."""
        self._settle()
        if self._last_frame is not None:
            self._last_frame += seconds
            self._frame_shift += seconds

    def _take_decoded(self, pieces: Iterator[bytes], t: float) -> None:
        """Decoded pieces to `_take`, which is set, until a sniff settles on one that there is
        nothing to learn (it may on any piece)."""
        take = self._take
        for piece in pieces:
            take(piece, t)
            take = self._take
            if take is None:
                break

    def _decode(self, data: bytes, t: float) -> None:
        self._decode_frames(data, t)
        # feed()'s fast path may take the next read: nothing is pending in the decoder, the
        # body's start has been looked at, it is not compressed and the first frames (whose
        # skeletons are always kept) are past. It leaves all of this as it was.
        self._plain = (
            self._decoder.idle
            and not self._decoder.last_unread  # the next frame tells whether it stays so
            and self._peek is None
            and self._inflate is None
            and self._timeline_frames() >= HEAD_SKELETONS
        )

    def _decode_frames(self, data: bytes, t: float) -> None:
        decoder = self._decoder
        comments = decoder.comments
        events = decoder.feed(data)
        if self._peek is not None:
            self._look(data, bool(events))
        comments = decoder.comments - comments
        if len(events) == 1 and not comments:
            event = events[0]
            bits = self._unread(event) if event.unread else self._dialect.observe(event)
            # An unread frame's skeleton (its name and size, a few dozen bytes) is always kept:
            # rebuilt as a small filler, a replay read it (a third pass).
            if not (self._seen_kinds >> bits) & 1 or self._timeline_frames() < HEAD_SKELETONS or event.unread:
                bits = self._keep_kind(bits, event, self._timeline_frames() + 1)
            self._hold(bits, t)
            return
        if not events and not comments:
            return
        observe = self._dialect.observe
        timeline = self._timeline
        kinds = bytearray()
        head = HEAD_SKELETONS - timeline.frames
        for event in events:
            bits = self._unread(event) if event.unread else observe(event)
            if not (self._seen_kinds >> bits) & 1 or len(kinds) < head or event.unread:  # rare: keep it
                bits = self._keep_kind(bits, event, timeline.frames + len(kinds) + 1)
            kinds.append(bits)
        if comments:  # SSE comments: keep-alives that are not events
            kinds += _KEEPALIVE_BYTE * comments
        timeline.add(t - self._started, kinds)
        self._account(kinds, [t] * len(kinds))  # the read's frames share its arrival time

    def _unread(self, event: Event) -> int:
        """A frame too large to read: what its name tells the dialect, if anything (its data's
        leading type, where the route's SDK reads that and it had no `event:` line)."""
        dialect = self._dialect
        name = event.event
        if not name and event.data and dialect.trusts_type(typed := event.data.decode("ascii")):
            name = typed
        bits = dialect.observe_unread(name)
        self._unread_unknown = bits is None
        return bits or 0

    def _keep_kind(self, bits: int, event: Event, number: int) -> int:
        """Frame `number` is of a kind not seen before, among the stream's first, or one whose
        shape the verdict reads (SHAPE): its skeleton is kept, if it fits. Its bits without
        SHAPE, which is no kind."""
        kind = bits & ~SHAPE
        seen = (self._seen_kinds >> kind) & 1
        self._seen_kinds |= 1 << kind
        # A SHAPE frame of a kind already kept leaves room for kinds still to come (the end's).
        room = MAX_SKELETON_CHARS - (SHAPE_RESERVE if seen else 0) - sum(map(len, self._skeletons))
        if room > 0:  # before the skeleton is made: a full budget costs no parse a frame
            entry = f"{number},{kind},{skeleton(event)}"
            if len(entry) <= room:
                self._skeletons.append(entry)
        return kind

    def _timeline_frames(self) -> int:
        """Frames and keep-alives so far, the held ones included."""
        return self._timeline.frames + len(self._held_kinds)

    def _hold(self, bits: int, t: float) -> None:
        """A read of one frame (most reads): held, and accounted with the next ones in _settle."""
        kinds = self._held_kinds
        kinds.append(bits)
        self._held_times.append(t)
        if len(kinds) >= HELD_READS:
            self._settle()

    def _settle(self) -> None:
        """Account the one-frame reads held so far, each a read of its own in the timeline."""
        kinds, times = self._held_kinds, self._held_times
        if not kinds:
            return
        started = self._started
        self._timeline.add_ones([t - started for t in times], kinds)
        self._account(kinds, times)
        del kinds[:]
        del times[:]

    def _content_follows_finish(self, kinds: bytes | bytearray) -> bool:
        """Content in `kinds` after a finish reason, this batch's or an earlier one's."""
        if self._finish_seen:
            return kinds.translate(_CONTENTS).find(1) >= 0
        first = kinds.translate(_FINISHES).find(1)
        if first < 0:
            return False
        self._finish_seen = True
        return kinds.translate(_CONTENTS).find(1, first + 1) >= 0

    def _account(self, kinds: bytes | bytearray, times: list[float]) -> None:
        """The frames' (and keep-alives') gaps, longest gap and content clumps, in arrival
        order: the one place these are counted, in one loop over locals (a few calls and
        attribute writes per frame were a fifth of the audit's time per frame, profiled).
        Frames read together share a time: their gaps are 0, and they clump (spacing > 0)."""
        started = self._started
        th = self._thresholds
        spacing, min_clump, min_silence = th.bursty_max_spacing, th.bursty_min_clump, th.bursty_min_silence
        close, close_gaps = th.buffered_max_gap, self._close_gaps
        gap_counts = self._gap_counts
        last, max_gap = self._last_frame, self._max_gap
        first_content, last_content = self._first_content, self._last_content
        clump, clump_after = self._clump, self._clump_after
        bursts, burst_frames = self._bursts, self._burst_frames
        keepalives = content = 0
        for bits, t in zip(kinds, times, strict=True):
            if bits & KEEPALIVE:
                keepalives += 1
                self._last_keepalive = t
                continue
            if last is None:
                self._first_frame = t
            else:
                gap = t - last
                gap_counts[bisect_left(_GAP, gap)] += 1
                if max_gap is None or gap > max_gap:
                    max_gap = gap
            last = t
            if bits & CONTENT:
                content += 1
                if first_content is None:
                    first_content = t
                    clump_after = t - started
                    clump = 1
                    last_content = t
                    continue
                step = t - last_content
                if step < close:
                    close_gaps += 1
                if step < spacing:
                    clump += 1
                else:  # the clump before closes (finish() closes the last one), a new one opens
                    if clump >= min_clump and clump_after >= min_silence:
                        bursts += 1
                        burst_frames += clump
                    clump_after = step
                    clump = 1
                last_content = t
        self._last_frame, self._max_gap = last, max_gap
        self._first_content, self._last_content = first_content, last_content
        self._clump, self._clump_after = clump, clump_after
        self._bursts, self._burst_frames = bursts, burst_frames
        self._close_gaps = close_gaps
        self._keepalives += keepalives
        self._content_frames += content
        if keepalives < len(kinds):
            if self._seen_kinds & _FINISH_KINDS and not self._content_after_finish:
                self._content_after_finish = self._content_follows_finish(kinds)
            for bits in reversed(kinds):  # once a batch: its last frame, keep-alives aside
                if not bits & KEEPALIVE:
                    # (a finish in the same frame ends the answer, what follows no stall,
                    # unless finish reasons come before the end)
                    if self._content_after_finish:
                        self._ends_in_content = bool(bits & CONTENT)
                    else:
                        self._ends_in_content = bits & (CONTENT | FINISH) == CONTENT
                    break
            if self._frame_shift:  # a frame's gap took the hold out
                self._gaps_credited += self._frame_shift
                self._frame_shift = 0.0
        if content:
            self._content_shift = 0.0

    def _close_clump(self) -> None:
        th = self._thresholds
        if self._clump >= th.bursty_min_clump and self._clump_after >= th.bursty_min_silence:
            self._bursts += 1
            self._burst_frames += self._clump
        self._clump = 0

    def _sniff(self, data: bytes, t: float) -> None:
        """Not labelled an event stream: hold the start until it shows what it is. What it is
        is told by its first bytes, whatever the size of the read that brought them (a
        mislabelled stream replayed whole arrives in one read of any size)."""
        peek = self._peek
        assert peek is not None
        peek += data
        kind = looks_like_event_stream(peek)
        if not kind:
            if kind is False and self._json_lines:  # its lines, from the start
                self._decoder = JsonLinesDecoder(self._limit)
                self._take = self._decode_frames
                held = bytes(peek)
                self._peek = None
                self._decode_frames(held, t)
            elif len(peek) > PEEK_BYTES or (kind is False and (lead := peek.lstrip()[:1]) and lead != b"{"):
                # Neither an error document nor a stream: nothing to learn.
                self._peek = self._take = None
            return
        # An event stream after all: decode what was held, and all that follows. Labelled JSON
        # lines, it is read as the event stream it is (`data:` lines read as lines of JSON were
        # each malformed, and `[DONE]` never seen: an outside review).
        self._sniffed = True
        if self._json_lines:
            self._json_lines = False
            self._decoder = SSEDecoder(self._limit)
        self._take = self._decode
        held = bytes(peek)
        self._peek = None
        self._decode(held, t)

    def _look(self, data: bytes, framed: bool) -> None:
        """Hold the body's start while it may be a JSON error document instead of a stream."""
        peek = self._peek
        assert peek is not None
        if framed or len(peek) + len(data) > PEEK_BYTES:
            self._peek = None
            return
        peek += data
        start = peek.lstrip()[:1]
        if start and start != b"{" and self._event_stream:
            self._peek = None

    @property
    def _frames(self) -> int:
        """Frames that are not keep-alives, the held reads accounted (the timeline holds every
        frame and keep-alive)."""
        return self._timeline.frames - self._keepalives

    @property
    def error_document(self) -> bool:
        """The body so far is one JSON error document, not an event stream."""
        self._settle()  # held reads are frames too
        return self._frames == 0 and self._peek is not None and is_error_document(self._peek)

    def finish(self, t: float, end: End) -> StreamResult:
        self._settle()
        inflate = self._inflate
        if inflate is not None and self._take is not None:
            # First bytes held to tell what the body is (a short body): decided on as they are.
            self._take_decoded(inflate.end(), t)
            # A tail the caller did not catch up on: FINISH_FEEDS' worth read here; what waits
            # past that leaves the body unreadable, judged on the connection.
            for _ in range(FINISH_FEEDS):
                if not self.catch_up():
                    break
            self._settle()
        decoder = self._decoder
        if end is End.UPSTREAM_EOF and isinstance(decoder, JsonLinesDecoder) and decoder.pending:
            # A clean end makes a last line without its LF a line all the same (Ollama writes
            # an error after its lines so, with no LF; JSON-lines readers take it).
            self._decode_frames(b"\n", t)
            self._settle()
        cut_line = isinstance(decoder, JsonLinesDecoder) and decoder.cut_line
        unterminated = decoder.close()
        # The last frame was too large to read, and its name did not say what it was: the end
        # marker may have been in it.
        last_unread = decoder.last_unread and self._unread_unknown and not unterminated
        summary = self._dialect.summary()
        error_body = self.error_document
        if error_body:
            unterminated = False  # a JSON document, not a frame left open
        self._close_clump()
        dialect = type(self._dialect)
        inflate = self._inflate
        first_content = self._first_content
        ttft = None if first_content is None else first_content - self._ttft_credit - self._started
        last_frame = None if self._last_frame is None else self._last_frame - self._frame_shift
        quiet_at_end = None if self._last_frame is None else max(0.0, t - self._last_frame)
        facts = Facts(
            end=end,
            summary=summary,
            expects_done=dialect.expects_done if summary.expects_done is None else summary.expects_done,
            expects_finish_reason=dialect.expects_finish_reason,
            has_end_marker=(
                dialect.has_end_marker if summary.has_end_marker is None else summary.has_end_marker
            ),
            json_lines_end=self._json_lines and summary.has_end_marker is True,
            cut_line=cut_line,
            ends_in_content=self._ends_in_content,
            unterminated_frame=unterminated,
            content_after_finish=self._content_after_finish,
            paced_by_tokens=dialect.paced_by_tokens,
            buffered_min_frames=dialect.buffered_min_frames,
            end_marker=dialect.end_marker,
            usage_expected=self._wants_usage(),
            labelled_event_stream=self._event_stream,
            sniffed_event_stream=self._sniffed,
            json_lines=self._json_lines,
            json_lines_read=dialect.reads_json_lines,
            error_document=error_body,
            # Frames we could not decode (br, a broken gzip), would not decode (a decompression
            # bomb) or had not decoded yet when the body ended leave only the transport to judge.
            unreadable=(inflate is not None and (inflate.failed or inflate.bomb or inflate.behind))
            # The last frame was too large to read (an image in a Responses stream's
            # `response.completed`), unnamed: the end marker may have been in it.
            or last_unread,
            undecodable=inflate is not None and inflate.failed,
            empty_events=decoder.empty_events if dialect.empty_event_raises else 0,
            raising_lines=(
                decoder.comments + decoder.other_lines
                if dialect.data_lines_only and not summary.read_as_other
                else 0
            ),
            leading_bom=(
                (line := decoder.bom_line) is not None
                and dialect.loses_to_bom(line)
                and not summary.read_as_other
            ),
            compression_bomb=inflate is not None and inflate.bomb,
            gzip_members=0 if inflate is None else inflate.gzip_members,
            not_compressed=inflate is not None and inflate.not_compressed,
            oversized_frame=bool(decoder.oversized),
            timing=Timing(
                ttft=ttft,
                to_last_content=self._last_content - self._content_shift - self._started,
                content_frames=self._content_frames,
                bursts=self._bursts,
                burst_frames=self._burst_frames,
                close_gaps=self._close_gaps,
                frames=self._frames,
                duration=t - self._arrived,
                last_frame=(None if last_frame is None else last_frame - self._arrived),
                sent=self._started - self._arrived,
                quiet_at_end=quiet_at_end,
                client_held=self._client_held,
                max_gap=self._max_gap,
                bytes=self.bytes,
            ),
            thresholds=self._thresholds,
        )
        verdict = judge(facts)
        return StreamResult(
            thresholds=self._thresholds,
            outcome=verdict.outcome,
            end=end,
            anomalies=verdict.anomalies,
            ttfb=None if self._first_byte is None else self._first_byte - self._started,
            ttft=ttft,
            max_gap=self._max_gap,
            duration=t - self._arrived,
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
            # The gaps between successive frames add up to the time from the first to the last,
            # less the holds they left out.
            gap_sum=0.0 if last_frame is None else last_frame - self._first_frame - self._gaps_credited,
            client_held=self._client_held,
            usage_requested=facts.usage_expected,
            usage_judged=facts.usage_expected and facts.judged,
            last_keepalive=(None if self._last_keepalive is None else self._last_keepalive - self._started),
            timeline=self._timeline,
            skeletons=self._skeletons,
            reasons=verdict.reasons,
            quiet_at_end=quiet_at_end,
            last_frame_content=self._ends_in_content,
            read_as_other=summary.read_as_other,
            refused=summary.refused,
        )

    def _wants_usage(self) -> bool:
        dialect = type(self._dialect)
        return dialect.expects_usage and (self._include_usage or dialect.usage_always)


def looks_like_event_stream(start: bytes | bytearray) -> bool | None:
    """Whether a body beginning with `start` is an event stream: True, False, or None while
    `start` is too short to tell. An event stream begins with an SSE field line or a comment,
    after an optional byte-order mark and blank lines."""
    head = bytes(start[:64])
    if b"\xef\xbb\xbf".startswith(head):
        return None  # nothing yet, or a byte-order mark's first bytes
    head = head.removeprefix(b"\xef\xbb\xbf").lstrip(b"\r\n")
    if not head:
        return None
    for prefix in _SSE_STARTS:
        if head.startswith(prefix):
            return True
        if prefix.startswith(head):
            return None
    for name in _SSE_FIELDS_BARE:  # a field with no value: the name, then the line's end
        if head.startswith(name) and head[len(name) : len(name) + 1] in (b"\r", b"\n"):
            return True
    return False


def is_json_lines(content_type: str | bytes) -> bool:
    """Whether a Content-Type value names a streaming JSON-lines type (JSON_LINES_TYPES)."""
    if isinstance(content_type, bytes):
        content_type = content_type.decode("latin-1")
    return content_type.partition(";")[0].strip().lower() in JSON_LINES_TYPES


def is_error_document(body: bytes | bytearray) -> bool:
    """Whether a whole body is a JSON error (OpenAI, Anthropic and vLLM shapes)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(doc, dict):
        return False
    return bool(doc.get("error")) or doc.get("type") == "error" or doc.get("object") == "error"
