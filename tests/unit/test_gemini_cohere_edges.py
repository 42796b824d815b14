"""Edges an outside mutation review of the pure core found no test to hold (2026-12-05, a second
pass): gemini.py, cohere.py, cohere_v1.py (self-contained helpers).
"""

from __future__ import annotations

from typing import Any

import orjson

from sse_audit_proxy.core.audit import End, Outcome, StreamAudit, StreamResult, is_error_document
from sse_audit_proxy.core.dialects import dialect_for_route


def frame(obj: Any, name: str | None = None) -> bytes:
    head = f"event: {name}\n".encode() if name else b""
    return head + b"data: " + orjson.dumps(obj) + b"\n\n"


def line(obj: Any) -> bytes:
    return orjson.dumps(obj) + b"\n"


def run(frames: list[bytes], route: str, *, lines: bool = False) -> StreamResult:
    a = StreamAudit(dialect_for_route(route)(), 0.0, event_stream=not lines, json_lines=lines)
    for i, f in enumerate(frames):
        a.feed(f, 0.1 * (i + 1))
    return a.finish(0.1 * len(frames) + 0.01, End.UPSTREAM_EOF)


# Gemini ---------------------------------------------------------------------------------
def g(parts: list[dict], finish: str | None = None, **extra: Any) -> bytes:
    cand: dict[str, Any] = {"index": 0, "content": {"role": "model", "parts": parts}}
    if finish:
        cand["finishReason"] = finish
    return frame({"candidates": [cand], **extra})


USAGE = {"usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2}}


def test_gemini_an_event_named_error_is_a_failure_whatever_its_data() -> None:
    r = run([g([{"text": "Hi"}]), frame({"message": "overloaded"}, "error")], "gemini")
    assert r.outcome is Outcome.UPSTREAM_ERROR


def test_gemini_candidates_that_are_not_a_list_are_malformed() -> None:
    r = run([frame({"candidates": {"index": 0}}), g([{"text": "Hi"}], "STOP", **USAGE)], "gemini")
    assert "malformed_frame" in r.anomalies


def test_gemini_a_function_call_without_a_name_is_not_counted_a_tool_call() -> None:
    r = run(
        [g([{"functionCall": {"name": "f", "args": {}}}, {"functionCall": {"args": {}}}], "STOP", **USAGE)],
        "gemini",
    )
    assert r.tool_calls == 1


# Cohere v2 ------------------------------------------------------------------------------
def c2(kind: str, **doc: Any) -> bytes:
    return frame({"type": kind, **doc}, kind)


START = c2("message-start", id="x", delta={"message": {"role": "assistant"}})


def c2_end(usage: dict | None = None) -> bytes:
    delta: dict[str, Any] = {"finish_reason": "COMPLETE"}
    if usage is not None:
        delta["usage"] = usage
    return c2("message-end", delta=delta)


def test_cohere_v2_thinking_is_content() -> None:
    frames = [
        START,
        c2("content-delta", index=0, delta={"message": {"content": {"thinking": "Let me see"}}}),
        c2("content-delta", index=1, delta={"message": {"content": {"text": "Hi"}}}),
        c2_end(),
    ]
    r = run(frames, "cohere_chat")
    assert r.content_frames == 2
    assert r.ttft is not None and abs(r.ttft - 0.2) < 1e-9


def test_cohere_v2_counts_come_from_billed_units_when_tokens_has_none() -> None:
    frames = [
        START,
        c2("content-delta", index=0, delta={"message": {"content": {"text": "Hi"}}}),
        c2_end({"tokens": {"cached_tokens": 2}, "billed_units": {"input_tokens": 3, "output_tokens": 5}}),
    ]
    r = run(frames, "cohere_chat")
    assert (r.prompt_tokens, r.completion_tokens) == (3, 5)


# Cohere v1 ------------------------------------------------------------------------------
def v1(kind: str, finished: bool = False, **doc: Any) -> bytes:
    return line({"is_finished": finished, "event_type": kind, **doc})


V1START = v1("stream-start", generation_id="g")


def test_cohere_v1_a_first_line_whose_is_finished_is_not_a_bool_is_not_cohere() -> None:
    r = run([line({"is_finished": "no", "event_type": "x"}), line({"a": 1})], "cohere_v1_chat", lines=True)
    assert r.read_as_other is True


def test_cohere_v1_counts_every_tool_call_of_a_generation() -> None:
    calls = [{"name": "a", "parameters": {}}, {"name": "b", "parameters": {"x": 1}}]
    r = run(
        [
            V1START,
            v1("tool-calls-generation", tool_calls=calls),
            v1("stream-end", True, finish_reason="COMPLETE"),
        ],
        "cohere_v1_chat",
        lines=True,
    )
    assert r.tool_calls == 2


def test_cohere_v1_stream_end_without_a_reason_is_complete() -> None:
    r = run([V1START, v1("text-generation", text="Hi"), v1("stream-end", True)], "cohere_v1_chat", lines=True)
    assert r.outcome is Outcome.COMPLETE and r.finish_reasons == ["COMPLETE"]


def test_cohere_v1_an_empty_tool_calls_generation_is_not_content() -> None:
    r = run(
        [
            V1START,
            v1("tool-calls-generation", tool_calls=[]),
            v1("text-generation", text="Hi"),
            v1("stream-end", True, finish_reason="COMPLETE"),
        ],
        "cohere_v1_chat",
        lines=True,
    )
    assert r.content_frames == 1
    assert r.ttft is not None and abs(r.ttft - 0.3) < 1e-9


def test_a_whole_body_of_type_error_is_an_error_document() -> None:
    assert is_error_document(b'{"type": "error", "message": "overloaded"}')


def test_cohere_v2_path_with_another_stream_is_read_as_other() -> None:
    # LM Studio or a gateway on `/v2/chat` streaming OpenAI-shaped chunks: not Cohere's.
    r = run(
        [frame({"choices": [{"index": 0, "delta": {"content": "Hi"}}]}), b"data: [DONE]\n\n"], "cohere_chat"
    )
    assert r.read_as_other is True
