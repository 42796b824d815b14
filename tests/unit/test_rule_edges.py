"""Edges of the verdict rules, the dialects and the decoders that an outside mutation review
(144 hand-made mutants of the pure core) found no test to hold, and three bugs it found: an
Anthropic `error` event undone by a later finish (the SDKs raise at it), an Ollama error line
undone by later lines (its clients raise at it), and a Responses `error` event left out of the
sequence numbering (a false `sequence_gap`). Each test fails with its mutant or on the old code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from sse_audit_proxy.core.audit import End, Outcome, StreamAudit, StreamResult
from sse_audit_proxy.core.dialects import dialect_for_route
from sse_audit_proxy.core.json_lines import JsonLinesDecoder
from sse_audit_proxy.core.request_info import asks_for_stream
from sse_audit_proxy.core.sse import SSEDecoder

DONE = b"data: [DONE]\n\n"


def frame(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def event(name: str, obj: Any) -> bytes:
    return f"event: {name}\n".encode() + frame(obj)


def line(obj: Any) -> bytes:
    return orjson.dumps(obj) + b"\n"


def choice_chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
    return frame({"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": choices, **extra})


def chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, index: int = 0, **extra: Any
) -> bytes:
    return choice_chunk([{"index": index, "delta": delta or {}, "finish_reason": finish}], **extra)


def run(
    frames: Sequence[bytes],
    *,
    route: str = "chat_completions",
    end: End = End.UPSTREAM_EOF,
    include_usage: bool = False,
    json_lines: bool = False,
) -> StreamResult:
    audit = StreamAudit(
        dialect_for_route(route)(),
        0.0,
        include_usage=include_usage,
        event_stream=not json_lines,
        json_lines=json_lines,
    )
    times = [0.3 + 0.03 * i for i in range(len(frames))]
    for data, t in zip(frames, times, strict=True):
        audit.feed(data, t)
    return audit.finish(times[-1] + 0.001, end)


def _call(index: int, call_id: str, args: str) -> dict:
    return {"index": 0, "id": call_id, "type": "function", "function": {"name": "f", "arguments": args}}


def test_client_leaving_while_a_second_choice_still_streams_its_call_is_not_invalid_tool_arguments() -> None:
    # n=2: choice 0 finished its (whole) call, choice 1 is still mid-arguments when the client
    # leaves. Not every choice finished, so the arguments the client got are not known whole:
    # left_after_finish must not hold (invalid_tool_arguments is one of the guard's
    # "left on" anomalies: the client's own leaving would count against the upstream).
    frames = [
        chunk({"role": "assistant", "tool_calls": [_call(0, "call_a", '{"a": 1}')]}, index=0),
        chunk({"role": "assistant", "tool_calls": [_call(0, "call_b", '{"b": ')]}, index=1),
        chunk({}, "tool_calls", index=0),
    ]
    r = run(frames, end=End.CLIENT_GONE)
    assert r.outcome is Outcome.CLIENT_DISCONNECT
    assert r.anomalies == []


def _healthy(usage: dict | None = None) -> list[bytes]:
    frames = [chunk({"role": "assistant", "content": ""})]
    frames += [chunk({"content": f"tok{i} "}) for i in range(5)]
    frames.append(chunk({}, "stop"))
    if usage is not None:
        frames.append(choice_chunk([], usage=usage))
    return [*frames, DONE]


def test_zero_completion_tokens_on_a_cut_stream_is_not_usage_inconsistent() -> None:
    # Continuous usage (usage on early chunks, the last wins): a stream cut before its end may
    # carry an early count of 0 completion tokens. Only a finished stream's account is final.
    frames = [
        chunk(
            {"role": "assistant", "content": ""},
            usage={"prompt_tokens": 10, "completion_tokens": 0, "total_tokens": 10},
        )
    ]
    frames += [chunk({"content": f"tok{i} "}) for i in range(5)]
    r = run(frames)
    assert r.outcome is Outcome.TRUNCATED
    assert "usage_inconsistent" not in r.anomalies
    assert r.anomalies == ["missing_done", "missing_finish_reason"]


def test_zero_completion_tokens_beside_reasoning_tokens_is_not_usage_inconsistent() -> None:
    # Gemini's OpenAI layer counts reasoning outside completion_tokens: 0 completion tokens for
    # a stream of (reasoning) content is its convention, not a contradiction.
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 0,
        "total_tokens": 60,
        "completion_tokens_details": {"reasoning_tokens": 50},
    }
    r = run(_healthy(usage), include_usage=True)
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, [])


def test_an_error_event_after_done_is_not_read_on_chat() -> None:
    # The openai SDKs stop reading at [DONE]; an `event: error` after it reaches no caller.
    frames = [*_healthy(), b'event: error\ndata: {"error": {"message": "late"}}\n\n']
    r = run(frames)
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, [])


def _anthropic(*middle: bytes, delta_usage: dict | None = None) -> list[bytes]:
    return [
        event(
            "message_start",
            {"type": "message_start", "message": {"usage": {"input_tokens": 25, "output_tokens": 1}}},
        ),
        *middle,
        event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": delta_usage or {"output_tokens": 15},
            },
        ),
        event("message_stop", {"type": "message_stop"}),
    ]


def _text_block() -> list[bytes]:
    return [
        event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        event(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        ),
    ]


def test_anthropic_text_delta_on_a_tool_use_block_is_malformed() -> None:
    # The SDK's accumulator applies a text_delta only to a text block: on a tool_use block the
    # text is lost, so the frame is not of the expected shape.
    start = event(
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}},
        },
    )
    bad = event(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}},
    )
    r = run(_anthropic(start, bad), route="messages")
    assert r.outcome is Outcome.COMPLETE
    assert r.anomalies == ["malformed_frame"]


def test_anthropic_null_usage_field_in_message_delta_keeps_the_start_count() -> None:
    # message_delta may send keys as null (cumulative, "the last one wins, key by key"): a null is
    # no new value, so the input tokens of message_start stand.
    r = run(
        _anthropic(*_text_block(), delta_usage={"input_tokens": None, "output_tokens": 15}), route="messages"
    )
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, [])
    assert (r.prompt_tokens, r.completion_tokens) == (25, 15)
    assert r.usage == {"input_tokens": 25, "output_tokens": 15}


def test_responses_error_event_then_completed_is_complete_with_error_event() -> None:
    # The response finished normally after the error event (the openai SDK does not raise on a
    # Responses `error` event: its data has no `error` key): its end decides the outcome.
    frames = [
        event("response.created", {"type": "response.created", "response": {"status": "in_progress"}}),
        event(
            "response.output_item.added",
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {"type": "message", "content": [{"type": "output_text"}]},
            },
        ),
        event(
            "response.output_text.delta",
            {"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "delta": "Hi"},
        ),
        event("error", {"type": "error", "code": "server_error", "message": "retrying"}),
        event(
            "response.completed",
            {
                "type": "response.completed",
                "sequence_number": 3,
                "response": {
                    "status": "completed",
                    "output": [{"type": "message", "content": [{"type": "output_text"}]}],
                    "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7},
                },
            },
        ),
    ]
    r = run(frames, route="responses")
    assert (r.outcome, r.anomalies, r.finish_reasons) == (Outcome.COMPLETE, ["error_event"], ["completed"])


def _completion(text: str, finish: str | None = None) -> bytes:
    return frame(
        {
            "object": "text_completion",
            "model": "m",
            "choices": [{"index": 0, "text": text, "finish_reason": finish}],
        }
    )


def test_completions_finish_reason_abort_is_an_upstream_failure() -> None:
    # vLLM's "abort" (the engine dropped the request) is a failure on /v1/completions too.
    r = run([_completion("Hel"), _completion("", "abort"), DONE], route="completions")
    assert (r.outcome, r.anomalies) == (Outcome.UPSTREAM_ERROR, ["error_event"])


def _gemini(candidates: list[dict], usage: bool = False) -> bytes:
    doc: dict = {"candidates": candidates}
    if usage:
        doc["usageMetadata"] = {"promptTokenCount": 4, "candidatesTokenCount": 2, "totalTokenCount": 6}
    return frame(doc)


def test_gemini_chunk_after_a_candidates_finish_does_not_reopen_it() -> None:
    frames = [
        _gemini([{"index": 0, "content": {"role": "model", "parts": [{"text": "Hi"}]}}]),
        _gemini(
            [{"index": 0, "content": {"role": "model", "parts": [{"text": "!"}]}, "finishReason": "STOP"}]
        ),
        # a trailing chunk for the same candidate, with no finishReason (usage only)
        _gemini([{"index": 0, "content": {"role": "model", "parts": [{"text": ""}]}}], usage=True),
    ]
    r = run(frames, route="gemini")
    assert (r.outcome, r.anomalies, r.finish_reasons) == (Outcome.COMPLETE, [], ["STOP"])


def _cohere(name: str, doc: dict) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps({"type": name, **doc}) + b"\n\n"


def test_cohere_v2_message_end_with_an_error_and_no_failed_reason_is_a_failure() -> None:
    # message-end's `delta.error` says generation failed, whatever (or whether) finish_reason says.
    frames = [
        _cohere("message-start", {"id": "m1", "delta": {"message": {"role": "assistant"}}}),
        _cohere("content-delta", {"index": 0, "delta": {"message": {"content": {"text": "Hel"}}}}),
        _cohere(
            "message-end",
            {
                "delta": {
                    "error": "internal error",
                    "usage": {"tokens": {"input_tokens": 5, "output_tokens": 1}},
                }
            },
        ),
    ]
    r = run(frames, route="cohere_chat")
    assert (r.outcome, r.anomalies) == (Outcome.UPSTREAM_ERROR, ["error_event"])


def test_cohere_v1_a_finished_line_of_another_event_type_ends_the_stream() -> None:
    # `"is_finished": true` is the v1 stream's end whatever its event_type says.
    frames = [
        b'{"is_finished": false, "event_type": "stream-start", "generation_id": "g"}\n',
        b'{"is_finished": false, "event_type": "text-generation", "text": "Hi"}\n',
        b'{"is_finished": true, "event_type": "stream-finished", "finish_reason": "COMPLETE"}\n',
    ]
    r = run(frames, route="cohere_v1_chat", json_lines=True)
    assert (r.outcome, r.anomalies, r.finish_reasons) == (Outcome.COMPLETE, [], ["COMPLETE"])


def test_ollama_done_line_without_lf_on_a_broken_connection_is_not_read() -> None:
    # Only a clean end makes a last line without its LF a line: a reset mid-body leaves the
    # client's line reader raising, not handing on the done line.
    frames = [
        b'{"model": "m", "message": {"role": "assistant", "content": "Hi"}, "done": false}\n',
        b'{"model": "m", "done": true, "done_reason": "stop"}',
    ]
    r = run(frames, route="ollama", json_lines=True, end=End.UPSTREAM_BROKEN)
    assert r.outcome is Outcome.TRUNCATED
    r = run(frames, route="ollama", json_lines=True, end=End.UPSTREAM_EOF)
    assert r.outcome is Outcome.COMPLETE


def test_a_json_line_of_exactly_the_limit_is_read() -> None:
    # The limit is inclusive, as the tail check (`<= self._max`) counts it: a line of exactly
    # max_line_bytes is read, not skipped as oversized.
    limit = 32
    doc = b'{"a":"' + b"x" * (limit - 8) + b'"}'
    assert len(doc) == limit
    d = JsonLinesDecoder(limit)
    events = d.feed(doc + b"\n")
    assert [(e.data, e.unread) for e in events] == [(doc, 0)]
    assert d.oversized == 0
    # and in pieces (the tail path)
    d = JsonLinesDecoder(limit)
    assert d.feed(doc[:10]) == [] and d.feed(doc[10:]) == []
    events = d.feed(b"\n")
    assert [(e.data, e.unread) for e in events] == [(doc, 0)] and d.oversized == 0


def test_sse_fast_path_caps_a_frame_at_the_same_byte_as_the_line_path() -> None:
    limit = 64
    # A `data:` line of exactly `limit` bytes: with its LF it is over the cap (sse.py counts every
    # line plus one for its terminator), however the frame arrives.
    body = b'data: {"a":"' + b"x" * (limit - 14) + b'"}'
    assert len(body) == limit
    whole = SSEDecoder(limit)
    assert whole.feed(b"data: {}\n\n")[0].data == b"{}" and whole.idle  # the fast path is armed
    fast = whole.feed(body + b"\n\n")
    slow = SSEDecoder(limit)
    slow.feed(b"data: {}\n\n")
    slow_events = slow.feed(body[:3]) + slow.feed(body[3:] + b"\n\n")
    assert (
        [(e.data, e.unread > 0) for e in fast]
        == [(e.data, e.unread > 0) for e in slow_events]
        == [(b"", True)]
    )


def test_a_stream_is_asked_for_only_by_a_json_true() -> None:
    assert asks_for_stream({"stream": True})
    assert not asks_for_stream({"stream": "false"})


def test_anthropic_error_event_is_not_undone_by_a_later_message_delta() -> None:
    # anthropic-sdk-python (_streaming.py) raises at `event: error`; the caller never sees the
    # message_delta/message_stop after it. Chat already treats this case so (test_chat_in_band_failures).
    frames = [
        event(
            "message_start",
            {"type": "message_start", "message": {"usage": {"input_tokens": 5, "output_tokens": 1}}},
        ),
        event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        event(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        ),
        event("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        event(
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}},
        ),
        event("message_stop", {"type": "message_stop"}),
    ]
    r = run(frames, route="messages")
    assert (r.outcome, r.anomalies) == (Outcome.UPSTREAM_ERROR, ["error_event"])


def test_ollama_error_line_is_not_undone_by_later_lines() -> None:
    # ollama-python and ollama-js raise at the first line with an `error` key.
    frames = [
        line({"model": "m", "message": {"role": "assistant", "content": "Hi"}, "done": False}),
        line({"error": "model runner has unexpectedly stopped"}),
        line(
            {
                "model": "m",
                "message": {"role": "assistant", "content": ""},
                "done": True,
                "done_reason": "stop",
                "prompt_eval_count": 3,
                "eval_count": 2,
            }
        ),
    ]
    r = run(frames, route="ollama", json_lines=True)
    assert (r.outcome, r.anomalies) == (Outcome.UPSTREAM_ERROR, ["error_event"])


def test_responses_error_event_keeps_the_sequence_numbering() -> None:
    # `event: error` frames carry a sequence_number like every Responses event; skipping it
    # (TypedEvents.observe returns before Responses._on reads it) makes a spurious sequence_gap.
    frames = [
        event(
            "response.created",
            {"type": "response.created", "sequence_number": 0, "response": {"status": "in_progress"}},
        ),
        event(
            "response.output_text.delta",
            {"type": "response.output_text.delta", "sequence_number": 1, "delta": "Hi"},
        ),
        event("error", {"type": "error", "sequence_number": 2, "code": "server_error", "message": "x"}),
        event(
            "response.completed",
            {
                "type": "response.completed",
                "sequence_number": 3,
                "response": {
                    "status": "completed",
                    "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7},
                },
            },
        ),
    ]
    r = run(frames, route="responses")
    assert "sequence_gap" not in r.anomalies
