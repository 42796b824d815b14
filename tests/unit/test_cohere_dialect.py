"""Cohere's native chat stream (`/v2/chat`): typed events that end with `message-end`.

Cohere's SDK hands on what it got of a stream cut before `message-end` with no error (an
outside review: `'Hello, world'`, finish `None`); with no dialect the proxy said `complete`,
and the canary guard counted the cut good."""

from __future__ import annotations

import orjson
import pytest

from sse_audit_proxy.core.audit import End, Outcome, StreamAudit, StreamResult
from sse_audit_proxy.core.dialects import dialect_for_route, route_for_path


def event(name: str, doc: dict[str, object]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps({"type": name, **doc}) + b"\n\n"


def message(**fields: object) -> dict[str, object]:
    return {"delta": {"message": fields}}


START = event("message-start", {"id": "m1", **message(role="assistant", content=[], tool_calls=[])})
TEXT = [event("content-start", {"index": 0, **message(content={"type": "text", "text": ""})})] + [
    event("content-delta", {"index": 0, **message(content={"text": t})}) for t in ("Hel", "lo", "!")
]
USAGE = {
    "billed_units": {"input_tokens": 5, "output_tokens": 3},
    "tokens": {"input_tokens": 70, "output_tokens": 3},
}


def end(reason: str = "COMPLETE", **extra: object) -> bytes:
    return event("message-end", {"delta": {"finish_reason": reason, "usage": USAGE, **extra}})


def tool_call(arguments: list[str]) -> list[bytes]:
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    frames = [
        event("tool-plan-delta", message(tool_plan="I will look it up.")),
        event("tool-call-start", {"index": 0, **message(tool_calls=call)}),
    ]
    frames += [
        event("tool-call-delta", {"index": 0, **message(tool_calls={"function": {"arguments": a}})})
        for a in arguments
    ]
    return [*frames, event("tool-call-end", {"index": 0})]


def run(frames: list[bytes], end_reason: End = End.UPSTREAM_EOF) -> StreamResult:
    audit = StreamAudit(dialect_for_route(route_for_path("/v2/chat"))(), 0.0)
    for i, frame in enumerate(frames):
        audit.feed(frame, 0.2 + 0.02 * i)
    return audit.finish(0.2 + 0.02 * len(frames) + 0.001, end_reason)


def test_a_whole_stream_is_complete_with_its_finish_and_usage() -> None:
    assert route_for_path("/v2/chat") == "cohere_chat"
    r = run([START, *TEXT, event("content-end", {"index": 0}), end()])
    assert (r.outcome, r.anomalies, r.finish_reasons) == (Outcome.COMPLETE, [], ["COMPLETE"])
    assert (r.prompt_tokens, r.completion_tokens, r.content_frames) == (70, 3, 3)


def test_a_stream_cut_before_message_end_is_truncated() -> None:
    r = run([START, *TEXT])
    assert (r.outcome, r.anomalies) == (Outcome.TRUNCATED, [])
    assert "no end event" in r.reasons[0]


@pytest.mark.parametrize(
    ("arguments", "anomalies"),
    [(['{"city": ', '"Paris"}'], []), (['{"city": ', '"Par'], ["invalid_tool_arguments"])],
)
def test_tool_call_arguments_are_assembled_per_index(arguments: list[str], anomalies: list[str]) -> None:
    r = run([START, *tool_call(arguments), end("TOOL_CALL")])
    assert (r.outcome, r.anomalies, r.tool_calls) == (Outcome.COMPLETE, anomalies, 1)


def test_arguments_cut_by_max_tokens_are_not_judged() -> None:
    r = run([START, *tool_call(['{"city": ', '"Par']), end("MAX_TOKENS")])
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, [])


def test_an_error_at_the_end_is_an_upstream_error() -> None:
    r = run([START, *TEXT, end("ERROR", error="internal error")])
    assert (r.outcome, r.anomalies) == (Outcome.UPSTREAM_ERROR, ["error_event"])


def test_another_products_stream_on_the_path_is_read_as_on_a_route_with_no_dialect() -> None:
    """`/v2/chat` is not Cohere's alone: a stream that does not begin with `message-start` has
    no end marker to miss."""
    frames = [b'data: {"text":"a"}\n\n', b'data: {"text":"b"}\n\n']
    r = run(frames)
    assert (r.outcome, r.anomalies, r.content_frames) == (Outcome.COMPLETE, [], 2)


@pytest.mark.parametrize(
    "first", [event("debug", {"debug": "x"}), b"event: ping\ndata:\n\n"], ids=["debug", "empty-data"]
)
def test_a_debug_or_empty_event_before_message_start_decides_nothing(first: bytes) -> None:
    """The SDK's v2 stream types include `debug`, which may come first: a cut stream was read
    as on a route with no dialect and was `complete` (third pass, with the real SDK)."""
    r = run([first, START, *TEXT])
    assert (r.outcome, r.anomalies) == (Outcome.TRUNCATED, [])
    assert run([first, START, *TEXT, end()]).outcome is Outcome.COMPLETE


def test_a_timeout_finish_is_a_failure_and_billed_units_count_when_tokens_are_empty() -> None:
    r = run([START, *TEXT, end("TIMEOUT")])
    assert (r.outcome, r.anomalies) == (Outcome.UPSTREAM_ERROR, ["error_event"])
    billed = event("message-end", {"delta": {"finish_reason": "COMPLETE", "usage": {**USAGE, "tokens": {}}}})
    r = run([START, *TEXT, billed])
    assert (r.prompt_tokens, r.completion_tokens) == (5, 3)


def test_an_error_event_first_is_a_failure_even_with_no_data() -> None:
    r = run([b"event: error\ndata:\n\n"])
    assert (r.outcome, r.anomalies) == (Outcome.UPSTREAM_ERROR, ["error_event"])


def test_a_finish_reason_of_another_type_is_malformed_data_not_a_crash() -> None:
    hostile = event("message-end", {"delta": {"finish_reason": ["COMPLETE"], "usage": USAGE}})
    r = run([START, *TEXT, hostile])
    assert r.outcome is Outcome.COMPLETE and r.finish_reasons == []
