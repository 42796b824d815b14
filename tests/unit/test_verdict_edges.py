"""Edges an outside mutation review of the pure core found no test to hold (2026-12-05, a second
pass): verdict.py's documented inclusive thresholds (docs/operate/verdicts.md: "at least 80 %",
"at least 75 %", ...). Pure: Timing/Thresholds in, the rule out.
"""

from __future__ import annotations

from sse_audit_proxy.core.verdict import Thresholds, Timing, is_buffered, is_bursty

TH = Thresholds()


def test_buffered_wait_ratio_is_inclusive() -> None:
    # ttft exactly 80 % of the time to the last content frame (0.8 * 0.625 == 0.5 exactly);
    # 201 frames over 0.125 s: spacing 0.625 ms (< 2 ms), all gaps close by count.
    t = Timing(ttft=0.5, to_last_content=0.625, content_frames=201, bursts=0, burst_frames=0, close_gaps=200)
    assert is_buffered(t, TH)


def test_buffered_gap_share_is_inclusive() -> None:
    # 5 frames, 4 gaps, exactly 3 (75 %) close; mean spacing 1 ms (>= 0.5 ms: only the share rule holds).
    t = Timing(ttft=1.0, to_last_content=1.004, content_frames=5, bursts=0, burst_frames=0, close_gaps=3)
    assert is_buffered(t, TH)
    t2 = Timing(ttft=1.0, to_last_content=1.004, content_frames=5, bursts=0, burst_frames=0, close_gaps=2)
    assert not is_buffered(t2, TH)


# --- stream helpers (self-contained) -------------------------------------------------------
from collections.abc import Sequence  # noqa: E402
from typing import Any  # noqa: E402

import orjson  # noqa: E402

from sse_audit_proxy.core.audit import End, Outcome, StreamAudit, StreamResult  # noqa: E402
from sse_audit_proxy.core.dialects import dialect_for_route  # noqa: E402


def _frame(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _chunk(delta: dict | None = None, finish: str | None = None, **extra: Any) -> bytes:
    return _frame(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "model": "m",
            "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}],
            **extra,
        }
    )


def _run(
    frames: Sequence[bytes],
    *,
    route: str = "chat_completions",
    include_usage: bool = False,
    end: End = End.UPSTREAM_EOF,
) -> StreamResult:
    audit = StreamAudit(dialect_for_route(route)(), 0.0, include_usage=include_usage)
    times = [0.3 + 0.03 * i for i in range(len(frames))]
    for data, t in zip(frames, times, strict=True):
        audit.feed(data, t)
    return audit.finish(times[-1] + 0.001, end)


def test_a_total_that_adds_the_fourth_distinct_extra_count_is_consistent() -> None:
    # Four conventions' extra counts (reasoning 7, cached 11, cache_read 13, cache_creation 40):
    # total = prompt + completion + cache_creation. The rule allows up to four extras.
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 55,
        "completion_tokens_details": {"reasoning_tokens": 7},
        "prompt_tokens_details": {"cached_tokens": 11},
        "cache_read_input_tokens": 13,
        "cache_creation_input_tokens": 40,
    }
    frames = [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"content": "hi"}),
        _chunk({}, "stop"),
        _chunk(None, None, usage=usage),
        b"data: [DONE]\n\n",
    ]
    # (usage chunk has an empty choices list in OpenAI; a choice with an empty delta is fine too)
    r = _run(frames, include_usage=True)
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, [])


def test_bursty_share_is_inclusive() -> None:
    # Exactly half of the content frames in three bursts (docs: "at least 50 %").
    t = Timing(ttft=0.3, to_last_content=2.0, content_frames=60, bursts=3, burst_frames=30)
    assert is_bursty(t, TH)
    assert not is_bursty(
        Timing(ttft=0.3, to_last_content=2.0, content_frames=60, bursts=3, burst_frames=29), TH
    )


def _event(name: str, obj: Any) -> bytes:
    return f"event: {name}\n".encode() + _frame(obj)


# A Responses stream's first two events: created, then a piece of text.
_RESPONSE_STARTED = (
    _event(
        "response.created",
        {"type": "response.created", "sequence_number": 0, "response": {"status": "in_progress"}},
    ),
    _event(
        "response.output_item.added",
        {
            "type": "response.output_item.added",
            "sequence_number": 1,
            "output_index": 0,
            "item": {"type": "message", "content": []},
        },
    ),
    _event(
        "response.content_part.added",
        {
            "type": "response.content_part.added",
            "sequence_number": 2,
            "output_index": 0,
            "part": {"type": "output_text"},
        },
    ),
    _event(
        "response.output_text.delta",
        {
            "type": "response.output_text.delta",
            "sequence_number": 3,
            "output_index": 0,
            "content_index": 0,
            "delta": "Hi",
        },
    ),
)


def test_responses_total_counting_reasoning_outside_output_is_consistent() -> None:
    # A Responses usage whose total adds output_tokens_details.reasoning_tokens to input +
    # output (a gateway counting reasoning apart, as Gemini's OpenAI layer does on chat).
    usage = {
        "input_tokens": 10,
        "output_tokens": 5,
        "total_tokens": 65,
        "output_tokens_details": {"reasoning_tokens": 50},
    }
    frames = [
        *_RESPONSE_STARTED,
        _event(
            "response.completed",
            {
                "type": "response.completed",
                "sequence_number": 4,
                "response": {
                    "status": "completed",
                    "usage": usage,
                    "output": [{"type": "message", "content": []}],
                },
            },
        ),
    ]
    r = _run(frames, route="responses")
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, [])


def test_a_deprecated_function_call_delta_is_content() -> None:
    # The legacy `functions` API streams `delta.function_call` (name, then argument pieces):
    # that is the answer the client sees, so it sets TTFT and counts as content frames.
    frames = [
        _chunk({"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": ""}}),
        _chunk({"function_call": {"arguments": '{"a":'}}),
        _chunk({"function_call": {"arguments": " 1}"}}),
        _chunk({}, "function_call"),
        b"data: [DONE]\n\n",
    ]
    r = _run(frames)
    assert r.outcome is Outcome.COMPLETE
    assert r.content_frames == 3
    assert r.ttft is not None and abs(r.ttft - 0.3) < 1e-9


def test_a_response_failed_event_too_large_to_read_is_still_a_failure() -> None:
    # `response.failed` carries the whole response object (its output so far): past
    # max_frame_bytes it is not read, and its name alone must say the response failed.
    big = "x" * 5000
    frames = [
        *_RESPONSE_STARTED,
        _event(
            "response.failed",
            {
                "type": "response.failed",
                "sequence_number": 4,
                "response": {"status": "failed", "output": [{"text": big}]},
            },
        ),
    ]
    audit = StreamAudit(dialect_for_route("responses")(), 0.0, thresholds=Thresholds(max_frame_bytes=1024))
    for i, data in enumerate(frames):
        audit.feed(data, 0.3 + 0.03 * i)
    r = audit.finish(0.5, End.UPSTREAM_EOF)
    assert r.outcome is Outcome.UPSTREAM_ERROR


def test_a_responses_delta_event_with_an_empty_delta_is_not_content() -> None:
    # An empty `delta` (""), as some gateways send to open a part, is no token: the first
    # token's time is the first non-empty delta's.
    frames = [
        _event(
            "response.created",
            {"type": "response.created", "sequence_number": 0, "response": {"status": "in_progress"}},
        ),
        _event(
            "response.output_text.delta",
            {"type": "response.output_text.delta", "sequence_number": 1, "delta": ""},
        ),
        _event(
            "response.output_text.delta",
            {"type": "response.output_text.delta", "sequence_number": 2, "delta": "Hi"},
        ),
        _event(
            "response.completed",
            {
                "type": "response.completed",
                "sequence_number": 3,
                "response": {
                    "status": "completed",
                    "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2},
                },
            },
        ),
    ]
    r = _run(frames, route="responses")
    assert r.outcome is Outcome.COMPLETE and r.content_frames == 1
    assert r.ttft is not None and abs(r.ttft - 0.36) < 1e-9


def test_gemini_body_held_open_after_an_error_frame_is_held_open() -> None:
    # The error frame is the stream's last word (both SDKs raise at it): a body left open 4.7 s
    # after it is held_open, as on the typed-event routes.
    c = _frame({"candidates": [{"content": {"parts": [{"text": "Hi"}]}, "index": 0}]})
    e = _frame({"error": {"code": 500, "message": "internal", "status": "INTERNAL"}})
    audit = StreamAudit(dialect_for_route("gemini")(), 0.0)
    audit.feed(c, 0.2)
    audit.feed(e, 0.3)
    r = audit.finish(5.0, End.UPSTREAM_EOF)
    assert r.outcome is Outcome.UPSTREAM_ERROR
    assert "held_open" in r.anomalies


def test_anthropic_parameterless_tool_call_with_no_input_deltas_is_valid() -> None:
    # A tool with no parameters: `content_block_start.input` is {} and no input_json_delta
    # follows; the Anthropic SDKs hand on input {} (the start's), a valid object.
    frames = [
        _event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "m",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": "c",
                    "stop_reason": None,
                    "usage": {"input_tokens": 5, "output_tokens": 1},
                },
            },
        ),
        _event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "tool_use", "id": "t1", "name": "now", "input": {}},
            },
        ),
        _event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _event(
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}},
        ),
        _event("message_stop", {"type": "message_stop"}),
    ]
    r = _run(frames, route="messages")
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, [])
    # Beside a call whose arguments are broken, the reason does not call the parameterless one
    # "empty" (its {} came with its start).
    broken = [
        *frames[:3],
        _event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "tool_use", "id": "t2", "name": "f", "input": {}},
            },
        ),
        _event(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": '{"a": '},
            },
        ),
        _event("content_block_stop", {"type": "content_block_stop", "index": 1}),
        *frames[3:],
    ]
    r = _run(broken, route="messages")
    assert r.anomalies == ["invalid_tool_arguments"]
    reason = next(x for x in r.reasons if x.startswith("invalid_tool_arguments"))
    assert reason.startswith("invalid_tool_arguments: 1 of 2 tool calls") and "empty" not in reason


def test_a_gap_of_exactly_buffered_max_gap_is_not_close() -> None:
    # docs: gaps "shorter than --buffered-max-gap". Gaps of exactly 2**-10 s with that as the
    # max gap: none is close and the mean spacing is not under it, so not `buffered`.
    th = Thresholds(buffered_max_gap=2.0**-10)
    audit = StreamAudit(dialect_for_route("chat_completions")(), 0.0, thresholds=th)
    audit.feed(_chunk({"role": "assistant", "content": ""}), 0.5)
    times = [1.0 + k * 2.0**-10 for k in range(10)]
    for i, t in enumerate(times):
        audit.feed(_chunk({"content": f"t{i}"}), t)
    audit.feed(_chunk({}, "stop"), 1.5)
    audit.feed(b"data: [DONE]\n\n", 1.5)
    r = audit.finish(1.6, End.UPSTREAM_EOF)
    assert r.anomalies == []
