"""Decisions of the dialects and the audit that the recorded conformance streams do not pin down."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sse_audit_proxy.core.audit import End, Outcome, StreamAudit, StreamResult, Thresholds
from sse_audit_proxy.core.dialects import ROUTES, dialect_for_route, route_for_path


def sse(*events: Any, event_lines: bool = False) -> bytes:
    out = []
    for e in events:
        if isinstance(e, bytes):
            out.append(e)
            continue
        head = f"event: {e['type']}\n" if event_lines and isinstance(e, dict) else ""
        data = e if isinstance(e, str) else json.dumps(e)
        out.append(f"{head}data: {data}\n\n".encode())
    return b"".join(out)


def audit(
    route: str, chunks: list[tuple[float, bytes]], *, end: End = End.UPSTREAM_EOF, **kwargs: Any
) -> StreamResult:
    a = StreamAudit(dialect_for_route(route)(), 0.0, **kwargs)
    t = 0.0
    for t, chunk in chunks:
        a.feed(chunk, t)
    return a.finish(t + 0.01, end)


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/v1/chat/completions", "chat_completions"),
        ("/openai/deployments/gpt-4o/chat/completions", "chat_completions"),
        ("/v1/completions", "completions"),
        ("/v1/responses", "responses"),
        ("/openai/v1/responses/", "responses"),
        ("/v1/responses/resp_123", "responses"),  # retrieved with stream=true, resumed
        ("/v1/responses/resp_123/input_items", "other"),
        ("/v1/messages", "messages"),
        ("/anthropic/v1/messages", "messages"),
        ("/v1/threads/thread_1/messages", "other"),
        ("/v1/embeddings", "other"),
    ],
)
def test_route_family_comes_from_the_path(path: str, route: str) -> None:
    assert route_for_path(path) == route
    assert route in ROUTES


# Responses ----------------------------------------------------------------------------


def delta(seq: int, text: str) -> dict[str, Any]:
    return {
        "type": "response.output_text.delta",
        "sequence_number": seq,
        "item_id": "m",
        "output_index": 0,
        "content_index": 0,
        "delta": text,
    }


def opening(item: str = "message") -> tuple[dict[str, Any], ...]:
    """`response.created`, then an output item added (a message gets its text part too), as
    sequence numbers 0, 1 (and 2): what the SDKs' stream helpers need before a delta."""
    added: dict[str, Any] = {"type": item, "id": "m" if item == "message" else "fc"}
    if item == "message":
        added["content"] = []
    events: tuple[dict[str, Any], ...] = (
        {"type": "response.created", "sequence_number": 0, "response": {"status": "in_progress"}},
        {"type": "response.output_item.added", "sequence_number": 1, "output_index": 0, "item": added},
    )
    if item == "message":
        part = {"type": "output_text", "text": "", "annotations": []}
        events += (
            {
                "type": "response.content_part.added",
                "sequence_number": 2,
                "item_id": "m",
                "output_index": 0,
                "content_index": 0,
                "part": part,
            },
        )
    return events


# The items opening() adds, whole: Python's helper refuses to complete a response whose
# items neither came done nor are in its output.
OUTPUT = [
    {"type": "message", "id": "m", "content": [{"type": "output_text", "text": "a"}]},
    {"type": "function_call", "id": "fc", "arguments": "{}"},
]


def completed(seq: int, status: str = "completed", **response: Any) -> dict[str, Any]:
    usage = {"input_tokens": 3, "output_tokens": 3, "total_tokens": 6}
    return {
        "type": "response.completed",
        "sequence_number": seq,
        "response": {"status": status, "usage": usage, "output": OUTPUT, **response},
    }


def test_responses_stream_resumed_mid_way_has_no_sequence_gap() -> None:
    # GET /v1/responses/{id}?stream=true&starting_after=41 starts at 42: only steps count.
    r = audit("responses", [(0.1, sse(delta(42, "a"), delta(43, "b"), completed(44)))])
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, [])


def test_responses_sequence_number_going_backwards_is_reported() -> None:
    r = audit(
        "responses", [(0.1, sse(*opening(), delta(3, "a"), delta(4, "b"), delta(4, "b"), completed(5)))]
    )
    assert r.anomalies == ["sequence_gap"]


def test_responses_event_type_falls_back_to_the_event_line() -> None:
    body = (
        sse(*opening())
        + b"event: response.output_text.delta\n"
        + b'data: {"output_index": 0, "content_index": 0, "delta": "hi"}\n\n'
        + sse(completed(3))
    )
    r = audit("responses", [(0.1, body)])
    assert (r.content_frames, r.outcome, r.anomalies) == (1, Outcome.COMPLETE, [])


def test_responses_stream_may_begin_with_an_error_or_items_already_in_the_response() -> None:
    # A first `error` event: the request failed at once, no order to check.
    failed = audit("responses", [(0.1, sse({"type": "error", "code": "server_error", "message": "x"}))])
    assert "malformed_frame" not in failed.anomalies
    # Items in `response.created`'s output are what the SDKs' helpers start from.
    message = {"type": "message", "content": [{"type": "output_text", "text": ""}]}
    created = {"type": "response.created", "sequence_number": 0, "response": {"output": [message]}}
    r = audit("responses", [(0.1, sse(created, delta(1, "a"), completed(2, output=[message])))])
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, [])
    # ... but not a part of it that the message does not have.
    r = audit(
        "responses",
        [(0.1, sse(created, {**delta(1, "a"), "content_index": 1}, completed(2, output=[message])))],
    )
    assert r.anomalies == ["malformed_frame"]


def test_responses_order_is_not_judged_after_an_added_event_too_large_to_read() -> None:
    # What the unread frame added is unknown: the deltas after it are not called malformed.
    big = {**opening()[1], "item": {"type": "message", "content": [], "pad": "x" * 4096}}
    frames = sse(opening()[0], big, {**delta(2, "a"), "output_index": 0}, completed(3))
    r = audit("responses", [(0.1, frames)], thresholds=Thresholds(max_frame_bytes=1024))
    assert r.anomalies == ["oversized_frame"]


def test_responses_event_without_any_type_is_malformed() -> None:
    r = audit("responses", [(0.1, sse({"delta": "hi"}, completed(1)))])
    assert r.anomalies == ["malformed_frame"]


def test_responses_done_event_takes_the_status_of_its_response() -> None:
    done = {
        "type": "response.done",
        "response": {
            "status": "incomplete",
            "incomplete_details": {"reason": "content_filter"},
            "usage": {"input_tokens": 1, "output_tokens": 1},
        },
    }
    r = audit("responses", [(0.1, sse(*opening(), delta(3, "x"), done))])
    # An end all the same; but the SDKs' stream helpers raise for want of `response.completed`.
    assert (r.outcome, r.finish_reasons, r.anomalies) == (
        Outcome.COMPLETE,
        ["content_filter"],
        ["malformed_frame"],
    )


def test_responses_done_sentinel_alone_does_not_end_the_stream() -> None:
    r = audit("responses", [(0.1, sse(*opening(), delta(3, "x"), "[DONE]"))])
    assert (r.outcome, r.done, r.anomalies) == (Outcome.TRUNCATED, True, ["missing_usage"])


def test_responses_arguments_done_that_disagrees_with_the_deltas_is_invalid() -> None:
    args = {"type": "response.function_call_arguments.delta", "item_id": "fc", "output_index": 0}
    r = audit(
        "responses",
        [
            (
                0.1,
                sse(
                    *opening("function_call"),
                    {**args, "sequence_number": 2, "delta": '{"a":'},
                    {**args, "sequence_number": 3, "delta": "1}"},
                    {
                        "type": "response.function_call_arguments.done",
                        "sequence_number": 4,
                        "item_id": "fc",
                        "output_index": 0,
                        "arguments": '{"a":2}',
                    },
                    completed(5),
                ),
            )
        ],
    )
    assert (r.tool_calls, r.anomalies) == (1, ["invalid_tool_arguments"])


@pytest.mark.parametrize(
    ("deltas", "done", "invalid"),
    [
        (['{"city": ', '"Paris"}'], '{"city":"Paris"}', False),  # written again, compactly
        (['{"a": 1, ', '"b": [1, 2]}'], '{"b":[1,2],"a":1}', False),  # keys in another order
        (['{"city": ', '"Paris"}'], '{"city":"Rome"}', True),  # another value
        (['{"city": ', '"Par'], '{"city":"Paris"}', True),  # deltas that do not assemble
    ],
)
def test_responses_arguments_done_is_compared_with_the_deltas_by_value(
    deltas: list[str], done: str, invalid: bool
) -> None:
    # A gateway that serialises the final call again (LiteLLM's chat-to-Responses bridge
    # builds `.done` from the parsed call) repeats the same arguments in other bytes.
    args = {"type": "response.function_call_arguments.delta", "item_id": "fc", "output_index": 0}
    frames = [{**args, "sequence_number": i, "delta": d} for i, d in enumerate(deltas)]
    end = {"type": "response.function_call_arguments.done", "item_id": "fc", "output_index": 0}
    frames.append({**end, "sequence_number": len(deltas), "arguments": done})
    r = audit("responses", [(0.1, sse(*frames, completed(len(deltas) + 1)))])
    assert (r.tool_calls, "invalid_tool_arguments" in r.anomalies) == (1, invalid)


def test_responses_arguments_sent_only_whole_in_the_done_event_are_validated() -> None:
    item = {"id": "fc", "type": "function_call", "arguments": '{"a": 1}', "name": "f"}
    r = audit(
        "responses",
        [
            (
                0.1,
                sse(
                    *opening("function_call"),  # (an item done must have been added)
                    {
                        "type": "response.output_item.done",
                        "sequence_number": 2,
                        "output_index": 0,
                        "item": item,
                    },
                    completed(3),
                ),
            )
        ],
    )
    assert (r.tool_calls, r.anomalies) == (1, [])


def test_responses_wrongly_typed_delta_is_malformed_not_content() -> None:
    bad = {**delta(0, "x"), "delta": {"text": "x"}}
    r = audit("responses", [(0.1, sse(bad, completed(1)))])
    assert (r.content_frames, r.anomalies) == (0, ["malformed_frame"])


def test_responses_keepalive_events_are_keepalives_not_frames_in_gaps_or_ttft() -> None:
    """OpenAI's Responses API sends `{"type": "keepalive", "sequence_number": N}` while a long
    reasoning writes nothing (the openai-node SDK learned to skip them); one per read, as they
    come, so the fast path reads them too. A stall behind them is still one long gap."""
    chunks = [(0.1, sse(*opening()))]
    chunks += [(0.3 * i, sse({"type": "keepalive", "sequence_number": 2 + i})) for i in range(1, 6)]
    chunks += [(2.0 + 0.01 * i, sse(delta(7 + i, "hi"))) for i in range(1, 9)]
    chunks += [(2.2, sse(completed(16)))]
    r = audit("responses", chunks)
    assert (r.frames, r.keepalives, r.content_frames) == (12, 5, 8)
    assert r.ttft == pytest.approx(2.01)
    assert r.max_gap == pytest.approx(1.91)
    assert r.last_keepalive == pytest.approx(1.5)
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, [])  # the sequence runs on through them


# Anthropic ----------------------------------------------------------------------------


def test_anthropic_ping_is_a_keepalive_not_a_frame_in_gaps_or_ttft() -> None:
    start = {"type": "message_start", "message": {"usage": {"input_tokens": 5, "output_tokens": 1}}}
    text = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}}
    end = [
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}},
        {"type": "message_stop"},
    ]
    block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    r = audit(
        "messages",
        [
            (0.1, sse(start, block, event_lines=True)),
            (5.0, sse({"type": "ping"}, event_lines=True)),
            (9.0, sse({"type": "ping"}, event_lines=True)),
            (10.0, sse(text, *end, event_lines=True)),
        ],
    )
    assert (r.frames, r.keepalives, r.content_frames) == (5, 2, 1)
    assert r.ttft == pytest.approx(10.0)
    assert r.max_gap == pytest.approx(9.9)  # pings do not hide the stall
    assert r.last_keepalive == pytest.approx(9.0)
    assert (r.outcome, r.anomalies, r.usage) == (
        Outcome.COMPLETE,
        [],
        {"input_tokens": 5, "output_tokens": 3},
    )


def test_anthropic_stream_without_usage_is_missing_usage_even_if_not_asked() -> None:
    r = audit(
        "messages",
        [
            (
                0.1,
                sse(
                    {"type": "message_start", "message": {"id": "m"}},
                    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}},
                    {"type": "message_stop"},
                ),
            )
        ],
    )
    # The official SDK reads `usage.output_tokens` from every message_delta: it fails on this one.
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, ["missing_usage", "malformed_frame"])


def _anthropic(*events: dict[str, Any]) -> StreamResult:
    return audit("messages", [(0.1, sse(*events, event_lines=True))])


_START = {"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 1, "output_tokens": 1}}}
_END = (
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}},
    {"type": "message_stop"},
)


def _block(index: int, kind: str = "text") -> tuple[dict[str, Any], ...]:
    field, delta = ("thinking", "thinking_delta") if kind == "thinking" else ("text", "text_delta")
    return (
        {"type": "content_block_start", "index": index, "content_block": {"type": kind, field: ""}},
        {"type": "content_block_delta", "index": index, "delta": {"type": delta, field: "hi"}},
        {"type": "content_block_stop", "index": index},
    )


def test_anthropic_blocks_in_order_from_0_after_message_start_are_well_formed() -> None:
    r = _anthropic(_START, *_block(0, "thinking"), *_block(1), *_END)
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, [])


def test_anthropic_blocks_numbered_from_1_are_malformed() -> None:
    """A gateway that dropped the thinking block at 0: the SDKs index the blocks they started by
    position, and the Python stream helper raised IndexError at the first delta (an outside
    review read each stream with the SDKs' helpers)."""
    r = _anthropic(_START, *_block(1, "thinking"), *_block(2), *_END)
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, ["malformed_frame"])


def test_anthropic_events_before_message_start_are_malformed() -> None:
    """The stream helpers raise at any event folded into the message before message_start."""
    r = _anthropic(*_block(0), *_END)
    assert "malformed_frame" in r.anomalies
    pinged = _anthropic({"type": "ping"}, _START, *_block(0), *_END)  # a ping first is fine
    assert (pinged.outcome, pinged.anomalies) == (Outcome.COMPLETE, [])


# Chat deviations ------------------------------------------------------------------------


def chunk(**delta: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}


def test_comment_keepalives_do_not_count_for_ttft_or_gaps() -> None:
    r = audit(
        "chat_completions",
        [
            (0.5, b": OPENROUTER PROCESSING\n\n"),
            (2.0, b": OPENROUTER PROCESSING\n\n"),
            (3.0, sse(chunk(content="a"))),
            (3.5, b": ping\n\n"),
            (4.0, sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}, "[DONE]")),
        ],
    )
    assert r.ttfb == pytest.approx(0.5)
    assert r.ttft == pytest.approx(3.0)
    assert (r.frames, r.keepalives) == (3, 3)
    assert r.max_gap == pytest.approx(1.0)
    assert r.last_keepalive == pytest.approx(3.5)


def test_error_null_on_ordinary_chunks_is_no_error_event() -> None:
    r = audit(
        "chat_completions",
        [
            (
                0.1,
                sse(
                    {**chunk(content="a"), "error": None},
                    {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "error": None},
                    "[DONE]",
                ),
            )
        ],
    )
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, [])


def test_tool_call_first_sent_without_index_then_with_it_is_one_call() -> None:
    first = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}
    later = {"index": 0, "id": "call_1", "function": {"arguments": "{}"}}
    r = audit(
        "chat_completions",
        [
            (
                0.1,
                sse(
                    chunk(tool_calls=[later]),
                    chunk(tool_calls=[first]),
                    {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
                    "[DONE]",
                ),
            )
        ],
    )
    # one call, and the piece without `index` is lost to the SDKs' callers; the id came twice
    assert (r.tool_calls, r.anomalies) == (1, ["malformed_frame", "repeated_tool_call_fields"])


@pytest.mark.parametrize(
    ("later", "repeated"),
    [
        ({"index": 0, "function": {"arguments": "{}"}}, False),  # OpenAI's
        ({"index": 0, "id": "", "function": {"name": "", "arguments": "{}"}}, False),  # joins to the same
        ({"index": 0, "type": "function", "function": {"arguments": "{}"}}, False),  # `type` is replaced
        ({"index": 0, "id": "call_1", "function": {"arguments": "{}"}}, True),  # LiteLLM, Fireworks
        ({"index": 0, "function": {"name": "f", "arguments": "{}"}}, True),  # MiniMax on NVIDIA NIM
        ({"index": 0, "id": "call_2", "function": {"arguments": "{}"}}, True),  # another id: joined too
    ],
)
def test_a_tool_calls_id_or_name_sent_again_is_reported(later: dict[str, Any], repeated: bool) -> None:
    first = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}
    second_call = {
        "index": 1,
        "id": "call_9",
        "type": "function",
        "function": {"name": "f", "arguments": "{}"},
    }
    finish = {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}
    body = sse(
        chunk(tool_calls=[first]),
        chunk(tool_calls=[later]),
        chunk(tool_calls=[second_call]),
        finish,
        "[DONE]",
    )
    r = audit("chat_completions", [(0.1, body)])
    assert (r.outcome, r.tool_calls) == (Outcome.COMPLETE, 2)
    assert r.anomalies == (["repeated_tool_call_fields"] if repeated else [])


# Encodings ------------------------------------------------------------------------------

BASIC = sse(chunk(content="a"), {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}, "[DONE]")


def test_encoding_the_audit_cannot_read_is_malformed_and_judged_on_transport_only() -> None:
    r = audit(
        "chat_completions",
        [(0.1, b"\x8b\x02\x80compressed-with-brotli\x03")],
        content_encoding="br",
        include_usage=True,
    )
    assert (r.outcome, r.anomalies, r.frames) == (Outcome.COMPLETE, ["malformed_frame"], 0)
    cut = audit("chat_completions", [(0.1, b"\x8b\x02\x80")], content_encoding="br", end=End.UPSTREAM_BROKEN)
    assert cut.outcome is Outcome.TRUNCATED


def test_gzip_that_breaks_mid_stream_keeps_what_was_read_and_reports_malformed() -> None:
    import zlib

    z = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    good = z.compress(BASIC[:60]) + z.flush(zlib.Z_SYNC_FLUSH)
    r = audit("chat_completions", [(0.1, good), (0.2, b"\xff" * 40)], content_encoding="gzip")
    assert r.outcome is Outcome.COMPLETE
    assert r.anomalies == ["malformed_frame"]
    assert r.bytes == len(good) + 40


@pytest.mark.parametrize("label", ["gzip, identity", "identity, gzip", " GZIP ,", "x-gzip"])
def test_a_coding_list_that_comes_to_gzip_is_decoded(label: str) -> None:
    import zlib

    z = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    r = audit("chat_completions", [(0.1, z.compress(BASIC) + z.flush())], content_encoding=label)
    assert (r.outcome, r.anomalies, r.frames) == (Outcome.COMPLETE, [], 3)


def test_identity_encoding_is_read_as_is() -> None:
    r = audit("chat_completions", [(0.1, BASIC)], content_encoding="identity")
    assert (r.outcome, r.anomalies, r.frames) == (Outcome.COMPLETE, [], 3)


@pytest.mark.parametrize(
    "body",
    [
        sse(
            *(chunk(content=f"word {i}") for i in range(12)),
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            "[DONE]",
        ),
        b"\x10" * 300,  # neither an event stream nor JSON
    ],
    ids=["event-stream", "neither"],
)
def test_an_unlabelled_compressed_body_is_sniffed_alike_when_one_read_inflates_to_many_pieces(
    body: bytes,
) -> None:
    # Pieces are at most max_frame_bytes: the sniff settles what the body is on the first
    # piece of the read, and the rest of that read must go where it then decided.
    import zlib

    from sse_audit_proxy.core.audit import Thresholds

    small = Thresholds(max_frame_bytes=128)
    compressed = zlib.compress(body)
    assert len(body) > 2 * small.max_frame_bytes  # one read, three pieces or more
    got = audit(
        "chat_completions",
        [(0.1, compressed)],
        content_encoding="deflate",
        event_stream=False,
        thresholds=small,
    )
    plain = audit("chat_completions", [(0.1, body)], event_stream=False, thresholds=small)
    assert (got.outcome, got.anomalies, got.frames, got.content_frames) == (
        plain.outcome,
        plain.anomalies,
        plain.frames,
        plain.content_frames,
    )


def test_a_json_error_larger_than_the_peek_is_not_taken_for_an_error_document() -> None:
    from sse_audit_proxy.core.audit import PEEK_BYTES

    big = json.dumps({"error": {"message": "x" * PEEK_BYTES}}).encode()
    a = StreamAudit(dialect_for_route("chat_completions")(), 0.0, event_stream=False)
    a.feed(big[:100], 0.1)
    assert not a.error_document  # incomplete JSON so far
    a.feed(big[100:], 0.2)
    assert not a.error_document


def test_a_mislabelled_stream_larger_than_the_peek_in_one_read_is_read_as_in_many() -> None:
    # A gateway that buffers and labels the replay `text/plain` sends it in one read of any
    # size: the first bytes say what it is, not whether the read fit the peek.
    from sse_audit_proxy.core.audit import PEEK_BYTES

    body = sse(
        *(chunk(content=f"word {i} " * 8) for i in range(300)),
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        "[DONE]",
    )
    assert len(body) > 2 * PEEK_BYTES
    whole = audit("chat_completions", [(0.1, body)], event_stream=False)
    pieces = [(0.1 + i / 1000, body[i : i + 1000]) for i in range(0, len(body), 1000)]
    read_apart = audit("chat_completions", pieces, event_stream=False)
    assert (whole.frames, whole.done, whole.finish_reasons) == (302, True, ["stop"])  # [DONE] too
    assert "wrong_content_type" in whole.anomalies and "not_streamed" not in whole.anomalies
    assert (whole.frames, whole.done, whole.finish_reasons) == (
        read_apart.frames,
        read_apart.done,
        read_apart.finish_reasons,
    )


@pytest.mark.parametrize(
    ("body", "frames"),
    [
        (b"\xef\xbb\xbf" + BASIC, 3),  # a byte-order mark, cut after its first byte or two
        (b'  {"error": {"message": "overloaded", "type": "server_error"}}', 0),  # spaces first
    ],
    ids=["bom", "spaces-then-error"],
)
def test_an_unlabelled_body_is_told_alike_wherever_its_first_read_ends(body: bytes, frames: int) -> None:
    whole = audit("chat_completions", [(0.1, body)], event_stream=False)
    assert whole.frames == frames and "not_streamed" not in whole.anomalies
    for cut in range(1, 4):
        apart = audit("chat_completions", [(0.1, body[:cut]), (0.2, body[cut:])], event_stream=False)
        assert (apart.outcome, apart.anomalies, apart.frames) == (
            whole.outcome,
            whole.anomalies,
            whole.frames,
        )


def test_a_json_error_larger_than_the_peek_in_one_read_is_no_error_document() -> None:
    from sse_audit_proxy.core.audit import PEEK_BYTES

    big = json.dumps({"error": {"message": "x" * PEEK_BYTES}}).encode()
    a = StreamAudit(dialect_for_route("chat_completions")(), 0.0, event_stream=False)
    a.feed(big, 0.1)
    assert not a.error_document


@pytest.mark.parametrize(
    ("route", "include_usage", "expected"),
    [
        ("responses", False, True),  # always part of the shape
        ("messages", False, True),
        ("chat_completions", False, False),
        ("chat_completions", True, True),
        ("completions", True, True),
        ("other", True, False),  # usage is not read on unknown routes
    ],
)
def test_usage_is_expected_when_asked_for_or_always_sent_by_the_shape(
    route: str, include_usage: bool, expected: bool
) -> None:
    r = audit(route, [(0.1, b": ping\n\n")], include_usage=include_usage)
    assert r.usage_requested is expected
    assert ("missing_usage" in r.anomalies) is expected
