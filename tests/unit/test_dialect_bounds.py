"""A hostile upstream that never stops opening new choices, output items, content blocks or
tool calls makes the audit hold no more for it: past MAX_KEYS of each, what comes under a new
one is counted as malformed (the verdict says so), and memory stays flat."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import orjson
import pytest

from sse_audit_proxy.core.audit import Anomaly, End, StreamAudit, StreamResult
from sse_audit_proxy.core.dialects import Dialect
from sse_audit_proxy.core.dialects.anthropic import AnthropicMessages
from sse_audit_proxy.core.dialects.base import MAX_KEYS
from sse_audit_proxy.core.dialects.chat import ChatCompletions
from sse_audit_proxy.core.dialects.completions import Completions
from sse_audit_proxy.core.dialects.gemini import Gemini
from sse_audit_proxy.core.dialects.responses import Responses

WARM = 256  # frames (each with a new key) before memory is looked at: the bound is reached
FRAMES = 1024  # then as many more new keys


def _chat_choice(i: int) -> bytes:
    return b'data: {"choices":[{"index":%d,"delta":{"content":"x"}}]}\n\n' % i


def _chat_choice_plain(i: int) -> bytes:  # an extra field of another shape: the plain reading
    return b'data: {"choices":[{"index":%d,"delta":{"content":"x"}}],"x_groq":1}\n\n' % i


def _completions_choice(i: int) -> bytes:
    return b'data: {"choices":[{"index":%d,"text":"x"}]}\n\n' % i


def _chat_tool_id(i: int) -> bytes:  # (no `index`: malformed each, before the bound too)
    call = b'{"id":"call_%d","function":{"name":"f","arguments":"{}"}}' % i
    return b'data: {"choices":[{"index":0,"delta":{"tool_calls":[%b]}}]}\n\n' % call


def _chat_tool_index(i: int) -> bytes:
    call = b'{"index":%d,"id":"call_%d","function":{"name":"f","arguments":"{}"}}' % (i, i)
    return b'data: {"choices":[{"index":0,"delta":{"tool_calls":[%b]}}]}\n\n' % call


def _responses_item(i: int) -> bytes:
    item = b'{"type":"function_call","id":"fc_%d","arguments":""}' % i
    # (the response is created first: the SDKs' stream helpers raise at anything before it)
    start = b'data: {"type":"response.created","response":{}}\n\n' if i == 0 else b""
    return start + b'data: {"type":"response.output_item.added","output_index":%d,"item":%b}\n\n' % (i, item)


def _responses_item_id(i: int) -> bytes:
    # Arguments by item id alone, no output_index, in a stream resumed after event 0 (whose
    # order is not checked: the SDKs' stream helpers raise at a delta without output_index).
    kind = b'"type":"response.function_call_arguments.delta"'
    return b'data: {%b,"sequence_number":%d,"item_id":"fc_%d","delta":"{"}\n\n' % (kind, i + 1, i)


def _anthropic_block(i: int) -> bytes:
    block = b'{"type":"tool_use","id":"t%d","name":"f","input":{}}' % i
    # (the message starts first: the SDKs' stream helpers raise at a block before it)
    start = (
        b'event: message_start\ndata: {"type":"message_start","message":{"usage":{}}}\n\n' if i == 0 else b""
    )
    return start + (
        b'event: content_block_start\ndata: {"type":"content_block_start","index":%d,"content_block":%b}\n\n'
        % (
            i,
            block,
        )
    )


HOSTILE: list[tuple[type[Dialect], Callable[[int], bytes]]] = [
    (ChatCompletions, _chat_choice),
    (ChatCompletions, _chat_choice_plain),
    (Completions, _completions_choice),
    (ChatCompletions, _chat_tool_id),
    (ChatCompletions, _chat_tool_index),
    (Responses, _responses_item),
    (Responses, _responses_item_id),
    (AnthropicMessages, _anthropic_block),
]


def _feed(dialect: type[Dialect], frame: Callable[[int], bytes], frames: range) -> tuple[StreamAudit, int]:
    """The audit, and what it held more after `frames` than after the first WARM."""
    audit = StreamAudit(dialect(), 0.0)
    t = 0.0
    for i in range(WARM):
        t += 0.001
        audit.feed(frame(i), t)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in frames:
            t += 0.001
            audit.feed(frame(i), t)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return audit, grown


@pytest.mark.parametrize(("dialect", "frame"), HOSTILE, ids=lambda v: getattr(v, "__name__", ""))
def test_new_keys_without_end_hold_no_more_memory(
    dialect: type[Dialect], frame: Callable[[int], bytes]
) -> None:
    assert MAX_KEYS <= WARM
    audit, grown = _feed(dialect, frame, range(WARM, WARM + FRAMES))
    # Before the bound these streams held 70 to 420 bytes a frame: about 70 KB to 430 KB here.
    # What is left is the timeline's bounded groups and held reads.
    assert grown < 8 << 10, f"{grown} bytes held for {FRAMES} frames"
    result = audit.finish(10.0, End.UPSTREAM_EOF)
    assert Anomaly.MALFORMED_FRAME.value in result.anomalies


@pytest.mark.parametrize(
    ("dialect", "frame"),
    [h for h in HOSTILE if h[1] is not _chat_tool_id],  # calls without `index` are malformed
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_up_to_the_bound_nothing_is_malformed(dialect: type[Dialect], frame: Callable[[int], bytes]) -> None:
    assert MAX_KEYS == WARM  # so the WARM keys fed are exactly as many as are held
    audit, _ = _feed(dialect, frame, range(0))
    result = audit.finish(10.0, End.UPSTREAM_EOF)
    assert Anomaly.MALFORMED_FRAME.value not in result.anomalies, result.reasons


def test_a_chat_stream_with_many_choices_and_calls_is_judged_as_before() -> None:
    """128 choices (OpenAI's most), each with its own tool call: every one counted, none malformed."""
    frames = [
        b'data: {"choices":[{"index":%d,"delta":{"tool_calls":[{"index":0,"id":"c%d",'
        b'"function":{"name":"f","arguments":"{}"}}]}}]}\n\n' % (i, i)
        for i in range(128)
    ]
    frames += [
        b'data: {"choices":[{"index":%d,"delta":{},"finish_reason":"tool_calls"}]}\n\n' % i
        for i in range(128)
    ]
    audit = StreamAudit(ChatCompletions(), 0.0)
    for n, data in enumerate([*frames, b"data: [DONE]\n\n"]):
        audit.feed(data, 0.01 * (n + 1))
    result: StreamResult = audit.finish(5.0, End.UPSTREAM_EOF)
    assert result.tool_calls == 128
    assert result.finish_reasons == ["tool_calls"] * 128
    assert Anomaly.MALFORMED_FRAME.value not in result.anomalies


LONG_ID = "x" * (64 << 10)


def _chat_long_id(i: int) -> bytes:  # no index: calls told apart by id alone
    call = b'{"id":"%d%b","function":{"name":"f","arguments":"{}"}}' % (i, LONG_ID.encode())
    return b'data: {"choices":[{"index":0,"delta":{"tool_calls":[%b]}}]}\n\n' % call


def _responses_long_id(i: int) -> bytes:
    return b'data: {"type":"response.function_call_arguments.delta","item_id":"%d%b","delta":"{"}\n\n' % (
        i,
        LONG_ID.encode(),
    )


def _held(audit: StreamAudit, frames: list[bytes]) -> int:
    """What the audit holds more after `frames` than before them."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i, data in enumerate(frames):
            audit.feed(data, 0.001 * (i + 1))
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    ("dialect", "frame"),
    [(ChatCompletions, _chat_long_id), (Responses, _responses_long_id)],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_long_ids_are_not_held(dialect: type[Dialect], frame: Callable[[int], bytes]) -> None:
    """256 calls whose ids are 64 KiB each: the ids were held as keys (16 MiB here; with ids
    near --max-frame-bytes, 256 MiB a stream)."""
    audit = StreamAudit(dialect(), 0.0)
    frames = [frame(i) for i in range(MAX_KEYS)]
    grown = _held(audit, frames)
    assert grown < 1 << 20, f"{grown >> 10} KiB held"
    assert audit.finish(10.0, End.UPSTREAM_EOF).tool_calls == MAX_KEYS


def test_calls_with_long_ids_are_still_told_apart() -> None:
    first, second = "a" + LONG_ID, "b" + LONG_ID

    def piece(call_id: str, arguments: str) -> bytes:
        call = {"id": call_id, "function": {"name": "f", "arguments": arguments}}
        chunk = {"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    audit = StreamAudit(ChatCompletions(), 0.0)
    for i, data in enumerate(
        [piece(first, '{"a":'), piece(second, '{"b":'), piece(first, "1}"), piece(second, "2}")]
    ):
        audit.feed(data, 0.01 * (i + 1))
    result = audit.finish(1.0, End.UPSTREAM_EOF)
    assert result.tool_calls == 2
    # Merged, the pieces would be {"a":{"b":1}2} (the stream has no end: only that is judged here).
    assert "invalid_tool_arguments" not in result.anomalies, result.reasons


def test_long_block_types_are_not_held() -> None:
    """256 Anthropic blocks whose type is 64 KiB each: held as the blocks' kinds (16 MiB here)."""
    audit = StreamAudit(AnthropicMessages(), 0.0)
    audit.feed(b'event: message_start\ndata: {"type":"message_start","message":{"usage":{}}}\n\n', 0.0)
    frames = [
        b'event: content_block_start\ndata: {"type":"content_block_start","index":%d,'
        b'"content_block":{"type":"%d%b"}}\n\n' % (i, i, LONG_ID.encode())
        for i in range(MAX_KEYS)
    ]
    grown = _held(audit, frames)
    assert grown < 1 << 20, f"{grown >> 10} KiB held"
    result = audit.finish(10.0, End.UPSTREAM_EOF)
    assert Anomaly.MALFORMED_FRAME.value not in result.anomalies, result.reasons


def test_anthropic_usage_with_new_keys_in_every_event_stays_bounded() -> None:
    """message_delta usage is merged into the stream's: new keys without end made it grow with
    the stream (about 120 bytes an event)."""
    audit = StreamAudit(AnthropicMessages(), 0.0)
    audit.feed(
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"m",'
        b'"usage":{"input_tokens":1}}}\n\n',
        0.0,
    )
    frames = [
        # Keys past 64 characters: orjson keeps shorter ones in its (global, bounded) key cache.
        b'event: message_delta\ndata: {"type":"message_delta","delta":{},"usage":{"%065d":%d}}\n\n' % (i, i)
        for i in range(FRAMES)
    ]
    audit.feed(frames[0], 0.0)  # the merged object exists
    grown = _held(audit, frames)
    assert grown < 8 << 10, f"{grown} bytes held for {len(frames)} events"
    usage = audit.finish(100.0, End.UPSTREAM_EOF).usage
    assert usage is not None and usage["input_tokens"] == 1


def _usage_frames(route: str, usage: bytes) -> list[bytes]:
    if route == "anthropic":
        start = b'{"type":"message_start","message":{"id":"m","usage":{"input_tokens":1}}}'
        delta = b'{"type":"message_delta","delta":{},"usage":%b}' % usage
        return [b"event: message_start\ndata: %b\n\n" % start, b"event: message_delta\ndata: %b\n\n" % delta]
    if route == "gemini":
        return [b'data: {"candidates":[{"content":{"parts":[{"text":"x"}]}}],"usageMetadata":%b}\n\n' % usage]
    if route == "groq":  # x_groq.usage: held beside `usage`
        return [b'data: {"choices":[],"x_groq":{"usage":%b}}\n\n' % usage]
    if route == "plain":  # a field of another shape: Chat's plain reading
        return [b'data: {"choices":[],"finish_reason":1,"usage":%b}\n\n' % usage]
    return [b'data: {"choices":[],"usage":%b}\n\n' % usage]


@pytest.mark.parametrize("route", ["chat", "plain", "groq", "gemini", "anthropic"])
def test_a_usage_object_of_nested_arrays_is_not_held(route: str) -> None:
    """A usage object is held until the summary reads its numbers; one of 100,000 nested arrays
    (a 500 KB frame, within --max-frame-bytes) was held whole: 24 MB an open stream for a frame
    near 1 MiB (an outside review)."""
    dialect = {"gemini": Gemini, "anthropic": AnthropicMessages}.get(route, ChatCompletions)
    usage = b'{"prompt_tokens":3,"completion_tokens":2,"x":[%b]}' % b",".join([b"[{}]"] * 100_000)
    audit = StreamAudit(dialect(), 0.0)
    frames = _usage_frames(route, usage)
    grown = _held(audit, frames)
    assert grown < 64 << 10, f"{grown >> 10} KiB held"
    result = audit.finish(1.0, End.UPSTREAM_EOF)
    if route in ("chat", "plain"):
        assert result.usage == {"prompt_tokens": 3, "completion_tokens": 2}
