"""Text-generation-inference's native stream (`/generate_stream`): one frame a token, the last
with `generated_text`. The recorded streams are in conformance/ (tgi_stream*)."""

from __future__ import annotations

import orjson

from sse_audit_proxy.core.audit import End, Outcome, StreamAudit, StreamResult
from sse_audit_proxy.core.dialects import dialect_for_route, route_for_path
from sse_audit_proxy.core.request_info import RequestInfo, with_target


def frame(**doc: object) -> bytes:
    return b"data:" + orjson.dumps(doc) + b"\n\n"


def token(
    i: int, text: str, *, special: bool = False, last: str | None = None, details: object = None
) -> bytes:
    return frame(
        index=i,
        token={"id": i, "text": text, "logprob": -0.5, "special": special},
        generated_text=last,
        details=details,
    )


def run(frames: list[bytes], path: str = "/generate_stream") -> StreamResult:
    audit = StreamAudit(dialect_for_route(route_for_path(path))(), 0.0)
    for i, data in enumerate(frames):
        audit.feed(data, 0.1 * (i + 1))
    return audit.finish(1.0, End.UPSTREAM_EOF)


LAST = token(3, "</s>", special=True, last="Hi you", details={"finish_reason": "length"})


def test_the_path_asks_for_the_stream_and_names_no_model() -> None:
    assert route_for_path("/generate_stream") == route_for_path("/tgi/generate_stream/") == "tgi"
    said = dialect_for_route("tgi").target_info("/generate_stream?x=1")
    info = with_target(RequestInfo.from_body(b'{"inputs": "hi", "parameters": {}}'), said)
    assert info.stream and info.model == "unknown"


def test_a_special_token_is_not_content_and_the_last_frame_ends_the_stream() -> None:
    r = run([token(1, "Hi"), token(2, " you"), LAST])
    assert (r.outcome, r.content_frames, r.frames, r.finish_reasons) == (Outcome.COMPLETE, 2, 3, ["length"])
    assert run([token(1, "Hi"), token(2, " you")]).outcome is Outcome.TRUNCATED


def test_an_error_is_a_failure_that_a_later_last_frame_does_not_clear() -> None:
    """Both clients raise at the error frame: what follows never reaches their callers."""
    error = frame(error="Request failed during generation: overloaded", error_type="overloaded")
    r = run([token(1, "Hi"), error, LAST])
    assert r.outcome is Outcome.UPSTREAM_ERROR and r.finish_reasons == []


def test_a_done_sentinel_ends_it_as_huggingface_hub_reads_it() -> None:
    r = run([token(1, "Hi"), LAST, b"data: [DONE]\n\n"])
    assert (r.outcome, r.done, r.anomalies) == (Outcome.COMPLETE, False, [])
    assert run([token(1, "Hi"), b"data: [DONE]\n\n"]).outcome is Outcome.COMPLETE


def test_tritons_stream_on_its_generate_stream_is_read_as_on_a_route_with_no_dialect() -> None:
    """Triton's `/v2/models/{model}/generate_stream` streams `text_output` frames with no end
    marker: a clean end of its body is its end."""
    triton = [frame(model_name="m", model_version="1", text_output="Hi") for _ in range(3)]
    r = run(triton, path="/v2/models/m/generate_stream")
    assert (r.outcome, r.content_frames, r.read_as_other) == (Outcome.COMPLETE, 3, True)


def test_hostile_values_where_the_counts_and_reason_are_are_not_read() -> None:
    odd = token(
        2, "x", last="x", details={"finish_reason": ["a"], "input_length": "7", "generated_tokens": -1}
    )
    r = run([token(1, "Hi"), odd])
    assert (r.outcome, r.finish_reasons, r.usage, r.prompt_tokens) == (Outcome.COMPLETE, [], None, None)
    r = run([token(1, "Hi"), token(2, "x", last="x", details=[1])])
    assert r.outcome is Outcome.COMPLETE


def test_an_empty_error_is_still_an_error() -> None:
    """huggingface_hub raises when a frame's `error` is not None, whatever it says."""
    r = run([token(1, "Hi"), frame(error="", error_type="generation")])
    assert r.outcome is Outcome.UPSTREAM_ERROR


def test_a_validation_error_is_the_clients_and_the_guard_does_not_judge_it() -> None:
    """TGI refuses what it cannot take (an input too long, `best_of` on a stream) inside a
    stream it answered 200; huggingface_hub raises ValidationError. A client sticky to the
    canary could trip it with such requests: the guard judges them as it judges a 4xx (an
    outside review)."""
    from sse_audit_proxy.core.guard import judge
    from sse_audit_proxy.core.record import AuditRecord

    refused = run([frame(error="Input validation error: `inputs` too long", error_type="validation")])
    failed = run([token(1, "Hi"), frame(error="CUDA out of memory", error_type="generation")])
    for result, judged in ((refused, None), (failed, True)):
        assert result.outcome is Outcome.UPSTREAM_ERROR
        rec = AuditRecord("t", "tgi", "POST", "unknown", 200, 0.0, 1.0, 100, result)
        assert judge(rec) is judged
