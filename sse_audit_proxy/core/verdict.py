"""The verdict of one stream: every rule that decides its outcome and its anomalies, in order.

Pure: the audit gathers a stream's facts (what the dialect saw, when, and why relaying ended)
and `judge()` reads them against the rules below. The verdict tables of the docs are generated
from these rules (`markdown_tables()`), so the documentation is this file read aloud.

Outcome rules are tried in order and the first that holds decides. Every anomaly rule that
holds adds its anomaly, in table order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from sse_audit_proxy.core.dialects import DIALECTS, DialectSummary
from sse_audit_proxy.core.sse import DEFAULT_MAX_FRAME_BYTES


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
    # The compressed body expanded absurdly (see inflate.py): forwarded unchanged, not audited.
    COMPRESSION_BOMB = "compression_bomb"
    USAGE_INCONSISTENT = "usage_inconsistent"  # usage figures that contradict each other or the stream
    OVERSIZED_FRAME = "oversized_frame"  # a frame over --max-frame-bytes: relayed, not read
    HELD_OPEN = "held_open"  # the body stayed open a second or more after the end marker
    GZIP_MEMBERS = "gzip_members"  # a gzip body of several members: Python SDKs read the first


class End(StrEnum):
    """Why the proxy stopped relaying; the rules turn it into an outcome."""

    UPSTREAM_EOF = "upstream_eof"
    UPSTREAM_BROKEN = "upstream_broken"
    UPSTREAM_STATUS = "upstream_status"  # answered >= 400, unframeable, or could not be reached
    CONNECT_TIMEOUT = "connect_timeout"  # the upstream never accepted the connection
    IDLE_TIMEOUT = "idle_timeout"
    TOTAL_TIMEOUT = "total_timeout"
    CLIENT_GONE = "client_gone"
    SLOW_CLIENT = "slow_client"  # the client left more than max_unsent_bytes unread
    ABORTED = "aborted"  # by the proxy: still running when the shutdown drain ran out


_TIMEOUTS = frozenset({End.CONNECT_TIMEOUT, End.IDLE_TIMEOUT, End.TOTAL_TIMEOUT})
_CLIENT_ENDS = frozenset({End.CLIENT_GONE, End.SLOW_CLIENT, End.ABORTED})
# Ends after which the client holds everything that was written to it: a client that closes
# once it has read the end marker (the openai Python SDK does) left a finished stream. A slow client
# is cut with bytes still unread, so what it got is unknown.
_LEFT_WITH_ALL_SENT = frozenset({End.CLIENT_GONE, End.ABORTED})


MAX_THRESHOLD_INT = 1 << 40  # serve's largest size (options.MAX_SIZE)


@dataclass(slots=True, frozen=True)
class Thresholds:
    """The timing rules' tunables (flags of `serve`). Defaults are the documented ones."""

    # buffered: all must hold
    buffered_min_frames: int = 5
    buffered_wait_ratio: float = 0.8  # share of the time to the last content frame spent waiting
    buffered_max_spacing: float = 0.002  # mean seconds between content frames
    buffered_min_ttft: float = 0.05  # below this a burst is a fast upstream, not a withheld one
    # ... and the content frames were released, not paced: at least `buffered_gap_share` of the
    # gaps between successive content frames are shorter than `buffered_max_gap`, or they are on
    # average. Measured through the proxy (docs/operate/verdicts.md): releases (one write, nginx
    # gzipping, uvicorn writing pre-computed chunks) had gaps of a few microseconds; LiteLLM's
    # /v1/responses bridge, a Python replay of a withheld answer, means of 0.1 to 0.32 ms (a
    # 0.2 ms line missed it in two runs of three); decoders at 700 to 1,250 tokens/s 0.8 ms and
    # more. Faster decoders' short answers cannot be told from a release (the documented limit).
    buffered_max_gap: float = 0.0005
    buffered_gap_share: float = 0.75
    # bursty: a "burst" is a clump of content frames, each read within `bursty_max_spacing` of
    # the one before, at least `bursty_min_clump` frames, after `bursty_min_silence` without any
    bursty_min_bursts: int = 3
    bursty_min_clump: int = 10
    bursty_min_silence: float = 0.2
    bursty_max_spacing: float = 0.002
    bursty_min_share: float = 0.5  # of all content frames, in bursts
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES

    def changed(self) -> dict[str, float]:
        """The tunables set to other than their defaults (what a replay of evidence needs)."""
        default = Thresholds()
        return {
            name: value
            for name in self.__dataclass_fields__
            if (value := getattr(self, name)) != getattr(default, name)
        }

    @classmethod
    def from_changed(cls, changed: object) -> Thresholds:
        """changed()'s inverse; ValueError for what it could not have written."""
        if not isinstance(changed, dict):
            raise ValueError("thresholds is not an object")
        default = cls()
        for name, value in changed.items():
            if name not in cls.__dataclass_fields__:
                raise ValueError(f"thresholds.{name} is not a threshold")
            # What serve's flags take: whole numbers from 1 (a size up to 1024g), ratios and
            # seconds above 0, finite (NaN and infinities made cases serve could not judge by).
            if type(getattr(default, name)) is int:
                good = type(value) is int and 1 <= value <= MAX_THRESHOLD_INT
            else:
                good = type(value) in (int, float) and 0 < value < float("inf")
            if not good:
                raise ValueError(f"thresholds.{name} is not a value serve takes: {value!r}")
        return cls(**changed)


@dataclass(slots=True, frozen=True)
class Timing:
    """When content arrived, in seconds from the request (None: no content frame)."""

    ttft: float | None
    to_last_content: float
    content_frames: int
    bursts: int  # clumps that count as bursts (see Thresholds)
    burst_frames: int  # content frames inside them
    close_gaps: int = 0  # gaps between successive content frames under `buffered_max_gap`
    # For the reasons only (the rules above do not read them):
    frames: int = 0  # data frames (keep-alives aside)
    # These three count from the request's arrival, not from when it was all sent (the clock
    # of ttft and to_last_content above):
    duration: float = 0.0  # to the end of relaying
    last_frame: float | None = None  # to the last frame
    sent: float = 0.0  # to the request's last byte written to the upstream
    max_gap: float | None = None  # the longest silence between two frames
    bytes: int = 0  # body bytes relayed
    # Seconds the relay did not read the upstream while the client was behind
    # (--max-unsent-bytes): later frames arrived at the client's pace (see held_long).
    client_held: float = 0.0
    # From the last frame to the end of relaying, less the holds after it in which the
    # upstream's bytes waited on the client (not the holds before: the upstream's silence).
    quiet_at_end: float | None = None


@dataclass(slots=True, frozen=True)
class Facts:
    """Everything a verdict may depend on, gathered when the stream ended."""

    end: End
    summary: DialectSummary  # what the dialect saw
    expects_done: bool  # the dialect's shape ends with `[DONE]`
    expects_finish_reason: bool
    has_end_marker: bool  # False on routes with no dialect: the body's clean end is the end
    usage_expected: bool  # asked for, or always part of this shape
    labelled_event_stream: bool  # Content-Type: text/event-stream
    sniffed_event_stream: bool  # not labelled so, but the body began with SSE field lines
    error_document: bool  # the body was one JSON error document
    # Compressed and not all decoded (see undecodable, compression_bomb), or the last frame was
    # too large to read: the end marker may be among the frames not read.
    unreadable: bool
    oversized_frame: bool  # a frame larger than --max-frame-bytes
    timing: Timing
    thresholds: Thresholds
    undecodable: bool = False  # could not be decoded (br, a broken gzip)
    not_compressed: bool = False  # labelled compressed, and not: a client decoding by it fails
    # Frames without data that the route's SDK reads as events with empty data, and raises on
    # (Dialect.empty_event_raises, SSEDecoder.empty_events).
    empty_events: int = 0
    # Lines other than `data: ...` (blank lines between JSON lines) the route's SDK fails on
    # (Dialect.data_lines_only).
    raising_lines: int = 0
    # A byte order mark began the body, and the route's SDK loses the first line's frame or
    # fails for it (Dialect.loses_to_bom).
    leading_bom: bool = False
    compression_bomb: bool = False  # would not be: it expanded absurdly (see inflate.py)
    gzip_members: int = 0  # gzip members the body was made of (0: not gzip)
    # Labelled a streaming JSON-lines type (application/x-ndjson, ...): a stream whose lines are
    # read as frames (timed; an error line is an in-band failure), with no end marker: its
    # completeness is the connection's.
    json_lines: bool = False
    # ... on a route whose clients read such a body as a stream (Dialect.reads_json_lines): on
    # the others it is no stream to them (`not_streamed`).
    json_lines_read: bool = True
    # ... whose lines do carry an end marker: Ollama's `"done": true` line (Ollama's dialect,
    # when the lines are its own). Its absence then makes the stream `truncated`.
    json_lines_end: bool = False
    # ... whose body stopped inside a line (half a JSON object, which a reader fails on or
    # drops): cut, however cleanly the connection ended.
    cut_line: bool = False
    ends_in_content: bool = False  # the last frame (keep-alives aside): content, no finish
    unterminated_frame: bool = False  # the body ended inside a frame (no blank line after it)
    content_after_finish: bool = False  # content came after a finish reason (any choice's)
    # False: a release after a wait, and clumps after silences, are the shape's nature (speech,
    # made a sentence at a time): neither `buffered` nor `bursty` is judged.
    paced_by_tokens: bool = True
    buffered_min_frames: int | None = None  # the shape's own (images), else the threshold's
    end_marker: str = "end event"  # what a truncated stream's reason says it lacked

    @property
    def event_stream(self) -> bool:
        return self.labelled_event_stream or self.sniffed_event_stream

    @property
    def error_instead_of_stream(self) -> bool:
        """A JSON error document with a success status, where a stream was asked for (with an
        error status the status itself says so)."""
        return self.error_document and self.end is not End.UPSTREAM_STATUS

    @property
    def upstream_finished(self) -> bool:
        """The upstream's last word reached the client: the end marker, or an in-band failure."""
        return self.summary.terminal or self.summary.failed

    @property
    def ended_by_upstream(self) -> bool:
        """The upstream ended the stream (cleanly or not), rather than a timeout or the client.

        A client that leaves after the upstream's last word reached it does not make the
        stream its own: servers often write the end of the HTTP body (the chunked terminator)
        well after `[DONE]`, and clients often close as soon as they read `[DONE]`."""
        if self.end in (End.UPSTREAM_EOF, End.UPSTREAM_BROKEN):
            return True
        return self.end in _LEFT_WITH_ALL_SENT and self.upstream_finished

    @property
    def left_after_finish(self) -> bool:
        """The client left (before the end marker) once every choice or message had reported
        its finish, and no content came after the last one: a tool call's arguments are whole
        by then, their last fragment sent before the finish (LiteLLM's Anthropic client closes
        at `message_delta`, before `message_stop`, and hands the arguments on). Some upstreams
        send a finish reason early (Open WebUI's on reasoning chunks, a finish after each tool
        call): content after it means the client left mid-answer, which says nothing."""
        return self.end in _LEFT_WITH_ALL_SENT and self.all_finished

    @property
    def all_finished(self) -> bool:
        """Every choice or message reported its finish, and no content came after the last."""
        s = self.summary
        return (
            self.event_stream
            and not self.unreadable
            and not self.ends_in_content
            and bool(s.finish_reasons)
            and not s.missing_finish_reason
        )

    @property
    def judged(self) -> bool:
        """Completeness is judged on event streams the upstream ended, whose frames we read."""
        return (
            self.ended_by_upstream
            and self.event_stream
            and not self.unreadable
            and not self.summary.failed
            and not self.error_instead_of_stream
        )


def _bad_tool_calls(f: Facts) -> int:
    """Tool calls judged to have invalid arguments: every call once the stream reached its end
    marker or every finish (the client may have left after them), else those already broken
    (ToolArgs.broken); none after an in-band failure (the upstream said itself that the answer
    broke). A body cut mid-arguments (`{"city":`) is a cut, not a model's bad arguments, as
    when the client leaves there (an outside review: the metric mixed the two)."""
    s = f.summary
    if s.failed or f.error_instead_of_stream or not f.event_stream or f.unreadable:
        return 0
    if (f.judged and (s.terminal or f.all_finished)) or f.left_after_finish:
        return s.invalid_tool_arguments
    return s.broken_tool_arguments


def is_buffered(t: Timing, th: Thresholds, min_frames: int | None = None) -> bool:
    """`min_frames`: the stream's shape's own fewest content frames (images), else the
    threshold's."""
    least = th.buffered_min_frames if min_frames is None else min_frames
    if t.ttft is None or t.content_frames < max(least, 2) or t.ttft < th.buffered_min_ttft:
        return False
    spacing = (t.to_last_content - t.ttft) / (t.content_frames - 1)
    return (
        t.ttft >= th.buffered_wait_ratio * t.to_last_content
        and spacing < th.buffered_max_spacing
        # Released, not paced (a fast decoder's short answer meets the rules above): most gaps
        # are close (robust to a pause within a release), or they are on average (robust to
        # a release read a few frames at a time, whose gaps between reads are longer).
        and (t.close_gaps >= th.buffered_gap_share * (t.content_frames - 1) or spacing < th.buffered_max_gap)
    )


def held_long(t: Timing, th: Thresholds) -> bool:
    """The client held the stream long enough to shape what the timing rules read: a wait
    before the first token, a silence before a clump. Shorter holds (a large frame to a
    fast client) leave the rules their say; gaps leave every hold out."""
    return t.client_held >= min(th.buffered_min_ttft, th.bursty_min_silence)


def is_bursty(t: Timing, th: Thresholds) -> bool:
    return (
        t.bursts >= th.bursty_min_bursts
        and t.content_frames > 0
        and t.burst_frames >= th.bursty_min_share * t.content_frames
        and not is_buffered(t, th)
    )


@dataclass(slots=True, frozen=True)
class Rule:
    verdict: str  # an Outcome or an Anomaly (dialect extras: their own names)
    when: str  # the rule in words, for the docs (docs/operate/verdicts.md)
    holds: Callable[[Facts], bool]
    # One sentence from the stream's own figures, saying why this rule held (after "name: ").
    reason: Callable[[Facts], str] = lambda f: "see the rule"


def dur(seconds: float | None) -> str:
    """Seconds for a person: `2.41 s`, `120 ms`, `0.3 ms`."""
    if seconds is None:
        return "-"
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    ms = seconds * 1000.0
    return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _content(f: Facts) -> str:
    return _n(f.timing.content_frames, "content frame")


def _missing_end(f: Facts) -> str:
    s = f.summary
    parts = []
    if f.expects_done and not s.done:
        parts.append("no [DONE]")
    elif not f.expects_done and not s.terminal:
        parts.append(f"no {f.end_marker}")
    if f.expects_finish_reason and s.missing_finish_reason:
        parts.append("no finish_reason" if not s.finish_reasons else "a choice without a finish_reason")
    if f.usage_expected and s.usage is None:
        parts.append("no usage")
    return " and ".join(parts) or "no end marker"


def _truncated(f: Facts) -> str:
    if f.json_lines and not f.event_stream and not f.json_lines_end:  # the connection's word
        if f.end is End.UPSTREAM_EOF and f.cut_line:
            return (
                f"the JSON-lines body ended inside a line (half a JSON object) after {f.timing.bytes} bytes"
            )
        return f"the JSON-lines body broke after {f.timing.bytes} bytes (its lines carry no end marker)"
    if not (f.event_stream or f.json_lines):  # an ordinary answer: no end marker was looked for
        return f"the body broke after {f.timing.bytes} bytes (an ordinary answer, not a stream)"
    how = (
        "the upstream closed the connection cleanly"
        if f.end is End.UPSTREAM_EOF
        else "the connection broke (reset or bad chunking)"
        if f.end is End.UPSTREAM_BROKEN
        else f"relaying ended with {f.end.value}"
    )
    ended = f"body ended after {_content(f)} ({f.timing.frames} frames) with {_missing_end(f)}"
    return f"{ended}; {how}{_whole(f)}"


def _whole(f: Facts) -> str:
    """What the operator needs first of a clean close with only `[DONE]` missing: the answer
    was whole, as the openai SDKs take it (they stop at the body's end); the upstream sends no
    sentinel, as transformers serve never does (an outside review: every one of its streams
    read as a cut)."""
    s = f.summary
    if f.end is not End.UPSTREAM_EOF or not f.expects_done or s.done:
        return ""
    if not s.finish_reasons or s.missing_finish_reason or (f.usage_expected and s.usage is None):
        return ""
    if f.content_after_finish or f.unterminated_frame:  # text after a finish; a frame left open
        return ""
    return WHOLE_BUT_NO_DONE


# What a truncated stream's reason adds when the missing `[DONE]` is all that is wrong with it
# (judge() takes it off when another anomaly holds: a tool call's arguments cut short before a
# `tool_calls` finish and a clean close was called whole, a second review).
WHOLE_BUT_NO_DONE = (
    " after a finish_reason for every choice it sent, the last frame whole: an upstream that "
    "sends no [DONE] (the body was not cut mid-answer)"
)


def _timed_out(f: Facts) -> str:
    t = f.timing
    if f.end is End.CONNECT_TIMEOUT:
        return f"the upstream did not accept the connection within {dur(t.duration)}"
    quiet = t.duration - (t.last_frame if t.last_frame is not None else t.sent)
    what = (
        "no upstream byte for the idle timeout"
        if f.end is End.IDLE_TIMEOUT
        else "the stream was still running at the total timeout"
    )
    return (
        f"{what}: {dur(quiet)} of silence after {_n(t.frames, 'frame')} "
        f"({_content(f)}); aborted at {dur(t.duration)}"
    )


def _client_left(f: Facts) -> str:
    who = {
        End.SLOW_CLIENT: "the client was cut for taking nothing for --send-timeout with more "
        "than --max-unsent-bytes unread",
        End.ABORTED: "the stream was still open when the shutdown drain ran out",
    }.get(f.end, "the client went away")
    quiet = f.timing.quiet_at_end
    # A client's read timeout ends a hang this way: the silence it gave up on says so.
    silent = f", {dur(quiet)} after the upstream's last frame" if quiet is not None and quiet >= 1.0 else ""
    return (
        f"{who} at {dur(f.timing.duration)}, after {_content(f)}{silent}, "
        "before the upstream's end marker reached it"
    )


def _failed(f: Facts) -> str:
    if f.error_instead_of_stream:
        return "the upstream sent a JSON error document with a success status instead of a stream"
    return (
        f"the upstream reported failure in-band ({_n(f.summary.error_events, 'error frame')}) "
        f"after {_content(f)}, and no choice finished after it"
    )


def _buffered(f: Facts) -> str:
    t = f.timing
    ttft = t.ttft or 0.0
    share = 100.0 * ttft / t.to_last_content if t.to_last_content > 0 else 100.0
    spacing = (t.to_last_content - ttft) / max(t.content_frames - 1, 1)
    return (
        f"first token after {dur(ttft)}, {share:.0f} % of the time to the last content frame; "
        f"{t.content_frames} content frames arrived {dur(spacing)} apart on average, "
        f"{t.close_gaps} of the {max(t.content_frames - 1, 0)} gaps between them under "
        f"{dur(f.thresholds.buffered_max_gap)}"
    )


def _bursty(f: Facts) -> str:
    t, th = f.timing, f.thresholds
    share = 100.0 * t.burst_frames / t.content_frames if t.content_frames else 0.0
    return (
        f"{t.burst_frames} of {t.content_frames} content frames ({share:.0f} %) came in "
        f"{t.bursts} bursts, each after at least {dur(th.bursty_min_silence)} without content; "
        f"the longest silence between frames was {dur(t.max_gap)}"
    )


def _malformed(f: Facts) -> str:
    parts = []
    if f.summary.malformed_frames:
        parts.append(
            f"{_n(f.summary.malformed_frames, 'frame')} (or parts of frames) not of the expected shape"
        )
    if f.empty_events:
        parts.append(
            f"{_n(f.empty_events, 'frame')} with no `data:` line (an `event:` or `retry:` line "
            "alone, or a blank line after an `id:`) that the openai SDK reads as an event with "
            "empty data, and fails on"
        )
    if f.raising_lines:
        parts.append(
            f"{_n(f.raising_lines, 'line')} other than `data: ...` (a comment line or keep-alive, an "
            "`event:`, `id:` or `retry:` line, `data:` without its space; a blank line between JSON "
            "lines) that the route's SDK reads as JSON, and fails on (google-genai on Gemini's route, "
            "ollama's client on Ollama's)"
        )
    if f.leading_bom:
        parts.append(
            "a byte order mark before the first line, which the route's Python SDK reads as part of "
            "the line's field name: it loses that line's frame or fails"
        )
    if f.undecodable:
        parts.append("the compressed body could not be decoded")
    if f.not_compressed:
        parts.append("the body is labelled compressed and is not: a client decoding by the label fails on it")
    return "; ".join(parts)


# usage_inconsistent: the conventions providers follow (docs/operate/verdicts.md). A total
# may count reasoning tokens outside `completion_tokens` (Gemini's OpenAI layer), and cached
# prompt tokens inside or outside `prompt_tokens` (Anthropic through LiteLLM, Bedrock).
_EXTRA_TOKENS = (
    ("completion_tokens_details", "reasoning_tokens"),
    ("output_tokens_details", "reasoning_tokens"),
    ("prompt_tokens_details", "cached_tokens"),
    ("input_tokens_details", "cached_tokens"),
    (None, "cache_read_input_tokens"),
    (None, "cache_creation_input_tokens"),
)


def _extra_tokens(usage: dict[str, object]) -> list[int]:
    found = []
    for parent, key in _EXTRA_TOKENS:
        where = usage.get(parent) if parent else usage
        value = where.get(key) if isinstance(where, dict) else None
        if type(value) is int and value > 0 and value not in found:
            found.append(value)
    return found


def _sums(base: int, extras: list[int]) -> set[int]:
    """base ± any of the extras (each once): every total some convention allows."""
    totals = {base}
    for extra in extras:
        totals |= {t + extra for t in totals} | {t - extra for t in totals}
    return totals


def _reasoning(usage: dict[str, object]) -> int:
    for parent in ("completion_tokens_details", "output_tokens_details"):
        where = usage.get(parent)
        value = where.get("reasoning_tokens") if isinstance(where, dict) else None
        if type(value) is int and value > 0:
            return value
    return 0


def usage_inconsistency(f: Facts) -> str | None:
    """Why the stream's usage contradicts itself or the stream; None when it does not."""
    s = f.summary
    usage = s.usage
    if not usage:
        return None
    p, c = s.prompt_tokens, s.completion_tokens
    if not p and not c:  # zeros (or none): a placeholder (mock servers, gateways that do not
        return None  # count), not an account that could contradict the stream
    total = usage.get("total_tokens")
    if (
        type(total) is int
        and p is not None
        and c is not None
        and total not in _sums(p + c, _extra_tokens(usage)[:4])
    ):
        return f"total_tokens {total} is not prompt {p} + completion {c} (= {p + c})"
    # Output streamed, yet the account says none was produced. (Fewer tokens than content
    # frames is no evidence: hops re-chunk text below a token, LiteLLM's mock into 3-character
    # frames.) Only on streams that ended normally: a cut stream's usage may not be its last.
    if (
        c == 0
        and f.judged
        and s.terminal
        and not s.failed
        and not _reasoning(usage)
        and f.timing.content_frames
    ):
        return (
            f"0 completion tokens reported (and {p} prompt tokens) for "
            f"{f.timing.content_frames} content frames that carried output"
        )
    return None


OUTCOME_RULES: tuple[Rule, ...] = (
    Rule(
        Outcome.UPSTREAM_ERROR,
        "the upstream answered ≥ 400, gave a response head the proxy cannot frame, or could not be "
        "reached (the client gets an OpenAI-shaped 502/504)",
        lambda f: f.end is End.UPSTREAM_STATUS,
        lambda f: (
            "the upstream answered an error status, a response the proxy cannot frame, or could not "
            "be reached (see "
            f"`status` and `error`); {f.timing.bytes} body bytes relayed"
        ),
    ),
    Rule(
        Outcome.TIMEOUT,
        "no upstream byte for `--idle-timeout`, no connection within "
        "`--connect-timeout`, or the stream still running at `--total-timeout`; the stream is "
        "aborted",
        lambda f: f.end in _TIMEOUTS,
        _timed_out,
    ),
    Rule(
        Outcome.CLIENT_DISCONNECT,
        "the client went away (or was cut for taking nothing for `--send-timeout` with more "
        "than `--max-unsent-bytes` unread, or was still open when the shutdown drain ran out) before "
        "the upstream's end marker or in-band failure reached it; the upstream request is "
        "closed at once",
        lambda f: f.end in _CLIENT_ENDS and not f.ended_by_upstream,
        _client_left,
    ),
    Rule(
        Outcome.UPSTREAM_ERROR,
        "the upstream reported failure in-band before `[DONE]` (the SDKs read nothing after "
        'it): an `{"error": …}` frame (or `{"object": "error"}`, or Groq\'s `x_groq.error`), '
        'a choice\'s `finish_reason` `"error"` (OpenRouter), `"abort"` (vLLM), '
        '`"insufficient_system_resource"` (DeepSeek) or an error\'s type ending in `_error` '
        '(`"overloaded_error"`: Portkey from Anthropic), or an '
        "event named `error` (whatever its data; an `error:` line too, older llama.cpp's), "
        "whatever follows it (a choice finishing, `[DONE]`: the SDKs raise at the error); "
        "Responses `response.failed`, Anthropic `error`; or a JSON error document with status "
        "200 instead of the stream that was asked for",
        lambda f: f.summary.failed or f.error_instead_of_stream,
        _failed,
    ),
    Rule(
        Outcome.COMPLETE,
        "the dialect's end marker reached the client (Chat Completions: "
        "`data: [DONE]`; see Supported stream shapes), even if the client closed before the "
        "upstream's body ended; or the body ended cleanly and there was no marker to wait for: "
        "an ordinary (not event-stream) answer, a JSON-lines stream (it has no end marker; "
        'but Ollama\'s has its `"done": true` line; and one that stopped inside a line, half a '
        "JSON object, is cut), "
        "a compressed stream that could not be decoded "
        "(or would not be: `compression_bomb`), a stream whose last frame was too large to read "
        "(`oversized_frame`), a stream on a route with no dialect",
        lambda f: (
            f.summary.terminal
            or (
                f.end is End.UPSTREAM_EOF
                and (
                    f.unreadable
                    or (not f.cut_line and (not (f.event_stream or f.json_lines_end) or not f.has_end_marker))
                )
            )
        ),
    ),
    Rule(
        Outcome.TRUNCATED,
        "otherwise: the upstream's body ended, or broke (reset, bad chunking), before the end marker",
        lambda f: True,
        _truncated,
    ),
)

# How long a body may stay open after its end marker: uvicorn servers end theirs a write
# after `[DONE]`, within milliseconds; clients that read to the body's end wait it out.
HELD_OPEN_AFTER = 1.0


def open_after_end(f: Facts) -> float | None:
    """Seconds the body stayed open after the end marker's frame (time the client held the
    upstream up after it aside), or None: no end marker, or no frame after the request."""
    if not f.summary.terminal:
        return None
    return f.timing.quiet_at_end


ANOMALY_RULES: tuple[Rule, ...] = (
    Rule(
        Anomaly.NOT_STREAMED,
        'the request asked for a stream (`"stream": true`; a form field `stream` of `true` '
        'for transcriptions and image edits; `"stream_format": "sse"` for speech) and the '
        "upstream answered 2xx with an ordinary body that is not an event stream: the client "
        "gets no stream at all; no completeness anomaly is judged. A body labelled a "
        "streaming JSON-lines type (`application/x-ndjson`, `application/jsonl`, "
        "`application/json-seq`, `application/stream+json` and their spellings) is a stream, "
        "not this, where its clients read it so (Ollama's and Cohere v1's native APIs, a route "
        "with no dialect); on the routes whose SDKs read event streams only (Chat, Responses, "
        "Messages and the rest: the openai SDK yields no chunk of one) it is this",
        lambda f: (
            not (
                f.event_stream
                or (f.json_lines and f.json_lines_read)
                or f.error_instead_of_stream
                or f.end is End.UPSTREAM_STATUS
            )
        ),
        lambda f: (
            f"a stream was asked for; the upstream answered {f.timing.bytes} bytes of "
            + ("JSON lines, which this route's SDKs do not read" if f.json_lines else "an ordinary body")
            + ", not an event stream"
        ),
    ),
    Rule(
        Anomaly.WRONG_CONTENT_TYPE,
        "an event stream (its body began with SSE field lines: "
        "`data:`, `event:`, `id:`, `retry:` or a comment) whose `Content-Type` is not "
        "`text/event-stream`: browsers' `EventSource` and many buffering hops treat it as an "
        "ordinary body. It is audited as a stream all the same",
        lambda f: f.sniffed_event_stream,
        lambda f: (
            f"the body is an event stream ({_n(f.timing.frames, 'frame')}) whose "
            "Content-Type is not text/event-stream"
        ),
    ),
    Rule(
        Anomaly.MISSING_DONE,
        "judged¹: the stream ended without `data: [DONE]` (Chat Completions and Completions, "
        "but not llama.cpp's native frames on `/completions`, which have none)",
        lambda f: f.judged and f.expects_done and not f.summary.done,
        lambda f: f"{_n(f.timing.frames, 'frame')} ({_content(f)}) and no data: [DONE] before the body ended",
    ),
    Rule(
        Anomaly.MISSING_FINISH_REASON,
        "judged¹: no choice reported a `finish_reason`, or some choice that streamed never did "
        "(`n > 1`); not judged when a frame was too large to read (`oversized_frame`): it may "
        "have carried it",
        lambda f: (
            f.judged and f.expects_finish_reason and f.summary.missing_finish_reason and not f.oversized_frame
        ),
        lambda f: (
            (f"finish reasons {f.summary.finish_reasons} came, but a choice that streamed never reported one")
            if f.summary.finish_reasons
            else f"none of {_n(f.timing.frames, 'frame')} carried a finish_reason"
        ),
    ),
    Rule(
        Anomaly.MISSING_USAGE,
        "judged¹: usage was expected and none arrived: the request asked "
        "for `stream_options.include_usage`, or the shape always carries usage (`responses`, "
        "`messages`); not judged when a frame was too large to read (`oversized_frame`)",
        lambda f: f.judged and f.usage_expected and f.summary.usage is None and not f.oversized_frame,
        lambda f: f"usage was expected and none of {_n(f.timing.frames, 'frame')} carried it",
    ),
    Rule(
        Anomaly.BUFFERED,
        "the completion was withheld and released at once (see How `buffered` is decided); "
        "judged on streams the upstream ended: cut early, a stream shows only its first "
        "release (a client that stops after a few tokens left behind a first read of several); "
        "not judged when the upstream was held for a client that fell behind (`client_held_ms`) "
        "as long as the shorter of `--buffered-min-ttft` and `--bursty-min-silence`; nor on "
        "speech (`audio_speech`): a one-sentence answer is made, then written at once, as a "
        "buffering gateway would (its TTFT still shows a wait for the whole). On `images` two "
        "partial images are enough (a stream has at most three)",
        lambda f: (
            f.paced_by_tokens
            and f.ended_by_upstream
            and not held_long(f.timing, f.thresholds)
            and is_buffered(f.timing, f.thresholds, f.buffered_min_frames)
        ),
        _buffered,
    ),
    Rule(
        Anomaly.BURSTY,
        "content arrived in clumps separated by long silences, and the stream is "
        "not `buffered` (see How `bursty` is decided); not judged when the upstream was held "
        "for a client that fell behind (`client_held_ms`) as long as the shorter of "
        "`--buffered-min-ttft` and `--bursty-min-silence`: its reads, not the upstream, made the clumps; "
        "nor on speech (`audio_speech`), made and written a sentence at a time",
        lambda f: (
            f.paced_by_tokens and not held_long(f.timing, f.thresholds) and is_bursty(f.timing, f.thresholds)
        ),
        _bursty,
    ),
    Rule(
        Anomaly.MALFORMED_FRAME,
        "a frame that is not JSON, not the expected shape (for example an Anthropic delta of the wrong "
        "structure, an Anthropic frame without its `event:` line, which the official SDKs skip, or one "
        "without a `type`, which they read it by); a frame with no `data:` line that the openai SDK reads"
        " as an event with empty data and fails on (an `event:` or `retry:` line alone, or a blank line "
        "after an `id:`; not on Anthropic routes); a byte order mark before a first line the route's "
        "Python SDK then loses (openai, anthropic, google-genai, huggingface_hub, cohere, ollama read the "
        "mark as part of the line's field name): a `data:` line, or an `event:` line where the SDK reads "
        "events by their names (Anthropic's but a `ping`, Assistants'), any line on Gemini's and "
        "Ollama's; browsers and the npm SDKs take it off; not on "
        "Workers AI's, watsonx's or speech routes, nor where no dialect reads the route; "
        "on Gemini's route, any line but `data: ...` (a comment"
        " or keep-alive, an `event:`, `id:` or `retry:` line, `data:` without its space), which "
        "google-genai fails on; on Ollama's, a blank line between its JSON lines, which ollama's "
        "Python client fails on; a Responses event out of the order the openai SDKs' stream helpers need, "
        "which they raise on (a first event other than `response.created`, an event for an output item or "
        "part never added, an item added out of place); a Chat tool-call delta without an integer `index` "
        "(Gemini's OpenAI-compatible API: the AI SDK rejects the chunk, the openai SDKs' helpers lose the"
        " call); a choice, output item, content block or tool call past the 256 of each a stream's audit "
        "tracks; or a compressed stream that could not be decoded, or a body labelled compressed (`gzip`,"
        " `deflate`, `br`, `zstd`) that is not, which a client decoding by the label (the openai and "
        "anthropic SDKs, browsers) fails on at its first bytes (the audit reads it as it is)",
        lambda f: (
            bool(f.summary.malformed_frames or f.empty_events or f.raising_lines)
            or f.leading_bom
            or f.undecodable
            or f.not_compressed
        ),
        _malformed,
    ),
    Rule(
        Anomaly.OVERSIZED_FRAME,
        "a frame larger than `--max-frame-bytes` (a generated image in a Responses stream is "
        "several MiB): relayed unchanged, but not read. Where its `event:` line names it (or, "
        "on the OpenAI routes whose SDKs read an event's type from its data, a frame without "
        'one begins `{"type": ...` with a type that is not a normal end), the '
        "name says what it was (a partial image is content, timed for TTFT and gaps; a "
        "`.completed` event is the end, its usage unknown); otherwise what it said is unknown, "
        "and when it was the stream's last frame its end marker may have been in it, so "
        "completeness is judged on the transport, as for a body that could not be decoded",
        lambda f: f.oversized_frame,
        lambda f: (
            f"a frame larger than {f.thresholds.max_frame_bytes} bytes was not read"
            + ("; it was the last frame, so the end was judged on the connection" if f.unreadable else "")
        ),
    ),
    Rule(
        Anomaly.COMPRESSION_BOMB,
        "the `gzip`/`deflate`/`br`/`zstd` body expanded absurdly (more than 200x "
        "its compressed size once 256 KiB came out, more than 256 MiB in all, more than 1 "
        "MiB of compressed input waiting, or more than 16 MiB still to decode when the body "
        "ended; see Security model): it reached the client "
        "unchanged, but the audit stopped decoding it, so the outcome comes from the transport "
        "as for an unreadable body and no completeness anomaly is judged",
        lambda f: f.compression_bomb,
        lambda f: (
            f"the compressed body expanded beyond the audit's bounds after "
            f"{f.timing.bytes} compressed bytes; relayed unchanged, no longer decoded"
        ),
    ),
    Rule(
        Anomaly.INVALID_TOOL_ARGUMENTS,
        "judged¹ once the stream reached its end marker or every choice's finish reason (then "
        "also when the client left before the end marker): a tool call's argument fragments, "
        "concatenated, are not a JSON object, or are not text (Chat: an object where OpenAI "
        "sends its JSON text), or are not the value a `.done` event then repeats as the whole "
        "arguments (Responses); a call that a finish reason cutting output short (`length`, "
        "`max_tokens`, `max_output_tokens`, `model_context_window_exceeded`, `content_filter`, "
        "Anthropic's `refusal`) ended is not judged; and, however the stream ended (a body cut "
        "mid-arguments too), a call whose arguments so far no JSON object can go on from "
        '(`{"city": Paris`: the anthropic Python SDK parses them as they grow, raises there and '
        "leaves), or that a `.done` event "
        "contradicted; never after an in-band failure",
        lambda f: bool(_bad_tool_calls(f)),
        lambda f: (
            f"{_bad_tool_calls(f)} of {_n(f.summary.tool_calls, 'tool call')}"
            " had arguments that, concatenated, are not a JSON object (or not text, or not the"
            " value the call's .done event repeated)"
            + (
                f" ({f.summary.empty_tool_arguments} empty: a call without parameters, which OpenAI"
                " sends as {}; the openai SDK gives the empty text on, and json.loads fails on it)"
                if f.summary.empty_tool_arguments
                else ""
            )
        ),
    ),
    Rule(
        Anomaly.ERROR_EVENT,
        'the stream carried an `{"error": …}` frame (or `{"object": "error"}`; on Chat and '
        "Completions also a choice finishing with a failure as its `finish_reason`, as above) or an "
        "error event (an event named `error`, or an `error:` line; on every route), or was a "
        "JSON error document sent with a success status",
        lambda f: bool(f.summary.error_events) or f.error_instead_of_stream,
        lambda f: (
            f"{_n(f.summary.error_events, 'error frame')} or event(s) in the stream"
            if f.summary.error_events
            else "a JSON error document came with a success status"
        ),
    ),
    Rule(
        Anomaly.GZIP_MEMBERS,
        "a `gzip` body of more than one gzip member with data in it (RFC 1952 allows it; Django's "
        "`GZipMiddleware` on a streaming response writes one per chunk): httpx, and so the "
        "openai and anthropic Python SDKs, and curl decode the first member only, and their "
        "callers got its frames and then a clean end, with no error (Node's `fetch` and "
        "aiohttp read every member, as the audit does)",
        lambda f: f.gzip_members > 1,
        lambda f: (
            f"the gzip body was {f.gzip_members} members: Python SDKs (httpx) and curl read the "
            "first member's frames only"
        ),
    ),
    Rule(
        Anomaly.HELD_OPEN,
        f"the body stayed open {HELD_OPEN_AFTER:g} s or more after the stream's end marker "
        "(`[DONE]`, `message_stop`, `response.completed`; keep-alives after it do not count) "
        "before the upstream ended it, the proxy's timeout cut it or the client left: clients "
        "that read to the body's end (the openai and AI SDKs for Node, the Anthropic SDKs) "
        "wait all that time, and time out if it is long enough",
        lambda f: (open_after_end(f) or 0.0) >= HELD_OPEN_AFTER,
        lambda f: (
            f"the body stayed open {dur(open_after_end(f))} after the end marker ({f.end.value} ended it)"
        ),
    ),
    Rule(
        Anomaly.USAGE_INCONSISTENT,
        "usage that contradicts itself or the stream: "
        "`total_tokens` is not prompt + completion tokens (allowing the providers' conventions "
        "for reasoning and cached tokens, see `usage_inconsistent`), or, on a stream that "
        "ended normally and streamed output, 0 completion tokens beside a non-zero prompt count",
        lambda f: usage_inconsistency(f) is not None,
        lambda f: usage_inconsistency(f) or "",
    ),
)

JUDGED_NOTE = (
    "¹ *judged*: only on event streams the upstream ended (outcome `complete` or "
    "`truncated`, also when the client closed after the end marker): after a client "
    "disconnect or a timeout the stream was cut by someone else, and after an "
    "in-band failure the upstream has already said what went wrong."
)


@dataclass(slots=True, frozen=True)
class Verdict:
    outcome: Outcome
    anomalies: list[str]
    # "name: why" for a non-complete outcome first, then one per anomaly in anomaly order.
    reasons: list[str] = field(default_factory=list)


_EXTRAS = {name: when for d in DIALECTS for name, when in d.extra_anomalies.items()}


def judge(f: Facts) -> Verdict:
    rule = next(r for r in OUTCOME_RULES if r.holds(f))
    outcome = Outcome(rule.verdict)
    reasons = [] if outcome is Outcome.COMPLETE else [f"{outcome}: {rule.reason(f)}"]
    anomalies: list[str] = []
    for r in ANOMALY_RULES:
        if r.holds(f):
            anomalies.append(str(r.verdict))
            reasons.append(f"{r.verdict}: {r.reason(f)}")
    for name in f.summary.anomalies:  # the dialect's own extras, already named
        anomalies.append(name)
        reasons.append(f"{name}: {_EXTRAS.get(name, 'reported by the dialect')}")
    if outcome is Outcome.TRUNCATED and anomalies != [Anomaly.MISSING_DONE]:
        reasons[0] = reasons[0].removesuffix(WHOLE_BUT_NO_DONE)
    return Verdict(outcome, anomalies, reasons)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_tables() -> str:
    """The outcome and anomaly tables of docs/operate/verdicts.md (`tools.doctables` writes them there)."""
    extras = {name: when for d in DIALECTS for name, when in d.extra_anomalies.items()}
    rows = [
        "**Outcome** (exactly one per stream: the first rule that holds decides):",
        "",
        "| # | outcome | when |",
        "|---|---|---|",
    ]
    rows += [f"| {i} | `{r.verdict}` | {_cell(r.when)} |" for i, r in enumerate(OUTCOME_RULES, 1)]
    rows += ["", "**Anomalies** (any number, in this order):", "", "| anomaly | when |", "|---|---|"]
    rows += [f"| `{r.verdict}` | {_cell(r.when)} |" for r in ANOMALY_RULES]
    rows += [f"| `{name}` | {_cell(when)} |" for name, when in extras.items()]
    rows += ["", JUDGED_NOTE]
    return "\n".join(rows) + "\n"
