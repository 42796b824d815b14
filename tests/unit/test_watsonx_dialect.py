"""IBM watsonx.ai's chat stream (`/ml/v1/text/chat_stream`): Chat chunks without `[DONE]`, each
choice's finish reason its end. The recorded streams are in conformance/ (watsonx_chat_stream*)."""

from __future__ import annotations

import orjson

from sse_audit_proxy.core.audit import End, Outcome, StreamAudit, StreamResult
from sse_audit_proxy.core.dialects import dialect_for_route, route_for_path
from sse_audit_proxy.core.request_info import RequestInfo, with_target

PATH = "/ml/v1/deployments/my-deployment/text/chat_stream?version=2025-02-11"


def chunk(i: int, delta: dict[str, object], finish: str | None = None) -> bytes:
    doc = {"model_id": "ibm/granite", "choices": [{"index": i, "delta": delta, "finish_reason": finish}]}
    return b"id: 1\nevent: message\ndata: " + orjson.dumps(doc) + b"\n\n"


def run(frames: list[bytes]) -> StreamResult:
    audit = StreamAudit(dialect_for_route(route_for_path(PATH))(), 0.0)
    for i, data in enumerate(frames):
        audit.feed(data, 0.1 * (i + 1))
    return audit.finish(1.0, End.UPSTREAM_EOF)


def test_the_path_asks_for_the_stream() -> None:
    assert route_for_path(PATH) == route_for_path("/ml/v1/text/chat_stream") == "watsonx_chat"
    info = RequestInfo.from_body(b'{"model_id": "ibm/granite", "messages": []}')
    said = dialect_for_route("watsonx_chat").target_info(PATH)
    assert with_target(info, said).stream


def test_every_choice_must_finish_and_a_done_is_not_asked_for() -> None:
    two = [chunk(0, {"content": "a"}), chunk(1, {"content": "b"}), chunk(0, {}, "stop")]
    assert run(two).outcome is Outcome.TRUNCATED
    r = run([*two, chunk(1, {}, "length")])
    assert (r.outcome, r.anomalies, r.finish_reasons) == (Outcome.COMPLETE, [], ["stop", "length"])


def test_an_error_event_is_a_failure_that_a_later_finish_does_not_clear() -> None:
    error = b'event: error\ndata: {"errors": [{"code": "x", "message": "y"}], "status_code": 500}\n\n'
    r = run([chunk(0, {"content": "a"}), error, chunk(0, {}, "stop")])
    assert r.outcome is Outcome.UPSTREAM_ERROR
