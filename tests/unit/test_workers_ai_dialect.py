"""Cloudflare Workers AI's own route (`/ai/run/@cf/...`): `data: {"response": ...}` frames, then
`[DONE]`. The recorded streams are in conformance/ (workers_ai_stream*)."""

from __future__ import annotations

import orjson

from sse_audit_proxy.core.audit import End, Outcome, StreamAudit, StreamResult
from sse_audit_proxy.core.dialects import dialect_for_route, route_for_path
from sse_audit_proxy.core.request_info import RequestInfo, with_target

RUN = "/client/v4/accounts/0123abcd/ai/run/@cf/meta/llama-4-scout-17b-16e-instruct"


def frame(**doc: object) -> bytes:
    return b"data: " + orjson.dumps(doc) + b"\n\n"


def run(frames: list[bytes]) -> StreamResult:
    audit = StreamAudit(dialect_for_route(route_for_path(RUN))(), 0.0)
    for i, data in enumerate(frames):
        audit.feed(data, 0.1 * (i + 1))
    return audit.finish(1.0, End.UPSTREAM_EOF)


def test_the_routes_and_the_model_in_the_url() -> None:
    gateway = "/v1/0123abcd/my-gateway/workers-ai/@cf/meta/llama-3.1-8b-instruct"
    assert route_for_path(RUN) == route_for_path(gateway) == route_for_path(gateway + "?x=1") == "workers_ai"
    # Workers AI's OpenAI-compatible routes are Chat's, as they stream Chat chunks.
    assert route_for_path("/client/v4/accounts/0123abcd/ai/v1/chat/completions") == "chat_completions"
    said = dialect_for_route("workers_ai").target_info(gateway.replace("@", "%40"))
    info = with_target(RequestInfo.from_body(b'{"messages": [], "stream": true}'), said)
    assert (info.model, info.stream) == ("@cf/meta/llama-3.1-8b-instruct", True)


def test_a_number_as_the_response_and_tool_calls_are_content() -> None:
    """Llama 4 streams some responses as numbers; the AI SDK provider shows them as text."""
    calls = frame(response="", tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}}])
    r = run([frame(response=42), calls, b"data: [DONE]\n\n"])
    assert (r.outcome, r.content_frames, r.tool_calls, r.anomalies) == (Outcome.COMPLETE, 2, 1, [])


def test_frames_without_a_done_are_truncated_and_an_error_frame_is_a_failure() -> None:
    assert run([frame(response="Hi"), frame(response=" there")]).outcome is Outcome.TRUNCATED
    r = run([frame(response="Hi"), frame(error={"message": "Inference failed"})])
    assert r.outcome is Outcome.UPSTREAM_ERROR


def test_hostile_values_are_not_read() -> None:
    odd = [
        frame(response=["x"], usage=[1], finish_reason=3, choices={"a": 1}),
        frame(choices=[1, {"delta": 2}]),
    ]
    r = run([*odd, b"data: [DONE]\n\n"])
    assert (r.outcome, r.content_frames, r.usage, r.finish_reasons) == (Outcome.COMPLETE, 0, None, [])
