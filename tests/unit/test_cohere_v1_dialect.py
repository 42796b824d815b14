"""Cohere's v1 chat stream (`/v1/chat`): JSON lines that end with `stream-end`. The recorded
streams are in conformance/ (cohere_v1_chat*)."""

from __future__ import annotations

import orjson

from sse_audit_proxy.core.audit import End, Outcome, StreamAudit, StreamResult
from sse_audit_proxy.core.dialects import dialect_for_route, route_for_path


def line(**doc: object) -> bytes:
    return orjson.dumps(doc) + b"\n"


def run(lines: list[bytes], *, json_lines: bool = True, path: str = "/v1/chat") -> StreamResult:
    audit = StreamAudit(
        dialect_for_route(route_for_path(path))(), 0.0, json_lines=json_lines, event_stream=not json_lines
    )
    for i, data in enumerate(lines):
        audit.feed(data, 0.1 * (i + 1))
    return audit.finish(1.0, End.UPSTREAM_EOF)


START = line(is_finished=False, event_type="stream-start", generation_id="g")
TEXT = line(is_finished=False, event_type="text-generation", text="Hi")


def test_tool_calls_are_counted_and_a_stream_end_without_meta_has_no_usage() -> None:
    calls = line(
        is_finished=False,
        event_type="tool-calls-generation",
        tool_calls=[{"name": "get_weather", "parameters": {"location": "Paris"}}],
    )
    chunk = line(
        is_finished=False, event_type="tool-calls-chunk", tool_call_delta={"index": 0, "parameters": "{"}
    )
    r = run([START, chunk, calls, line(is_finished=True, event_type="stream-end", finish_reason="COMPLETE")])
    assert (r.outcome, r.tool_calls, r.content_frames, r.usage) == (Outcome.COMPLETE, 1, 2, None)


def test_failed_finishes_are_upstream_errors() -> None:
    for reason in ("ERROR", "ERROR_TOXIC", "ERROR_LIMIT"):
        r = run([START, TEXT, line(is_finished=True, event_type="stream-end", finish_reason=reason)])
        assert r.outcome is Outcome.UPSTREAM_ERROR, reason
    r = run([START, TEXT, line(is_finished=True, event_type="stream-end", finish_reason="MAX_TOKENS")])
    assert (r.outcome, r.finish_reasons) == (Outcome.COMPLETE, ["MAX_TOKENS"])


def test_other_streams_on_the_path_are_read_as_on_a_route_with_no_dialect() -> None:
    """`/v1/chat` is not Cohere's alone (LM Studio's `/api/v1/chat`): a stream whose first line
    is not Cohere's ends where its body ends."""
    assert route_for_path("/api/v1/chat") == "cohere_v1_chat"
    r = run([line(type="chat.start"), line(type="message.delta", content="x")])
    assert (r.outcome, r.finish_reasons) == (Outcome.COMPLETE, [])
    sse = [b'data: {"type": "chat.start"}\n\n', b'data: {"type": "message.delta"}\n\n']
    assert run(sse, json_lines=False).outcome is Outcome.COMPLETE


def test_a_tool_plans_text_is_content() -> None:
    """Its first token starts TTFT: a user waiting on the plan is not waiting on nothing."""
    plan = line(is_finished=False, event_type="tool-calls-chunk", text="I will look it up.")
    r = run([START, plan, line(is_finished=True, event_type="stream-end", finish_reason="COMPLETE")])
    assert (r.content_frames, r.ttft) == (1, 0.2)


def test_lines_the_sdk_hands_on_untyped_are_malformed() -> None:
    """The cohere SDK hands a line without an `event_type` on as a plain dict (its caller's
    `.event_type` raises: AttributeError), and a `text` that is not text as it is (the
    caller's join fails); both were `complete` with no anomaly (an outside review)."""
    end = line(is_finished=True, event_type="stream-end", finish_reason="COMPLETE")
    assert run([START, TEXT, end]).anomalies == []
    for bad in (line(message="internal"), line(is_finished=False, event_type="text-generation", text=5)):
        r = run([START, TEXT, bad, end])
        assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, ["malformed_frame"])
    # An error object is an error, not a malformed line.
    assert run([START, TEXT, line(error="boom"), end]).anomalies == ["error_event"]
