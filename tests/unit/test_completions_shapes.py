"""Shapes other than OpenAI's that real servers stream on a Completions path.

llama.cpp's server answers `/completions` (no `/v1`: what the openai SDK calls with a base URL
without it) in its native shape, with no `choices` and no `[DONE]`: its last frame says
`"stop": true` (tools/server/server-context.cpp). Every healthy one was `truncated` with
`missing_done` and `missing_finish_reason`, and no content was counted. Mistral's FIM
completions (`/v1/fim/completions`) stream `choices[].delta.content`, not `text`: the stream
was `complete`, but with no content frame and no TTFT.
"""

from __future__ import annotations

import json

import pytest

from sse_audit_proxy.core.audit import End, Outcome, StreamAudit, StreamResult
from sse_audit_proxy.core.dialects import route_for_path
from sse_audit_proxy.core.dialects.completions import Completions


def frame(doc: object) -> bytes:
    return json.dumps(doc).encode()


def llama(content: str, *, stop: bool = False, **extra: object) -> bytes:
    return frame({"index": 0, "content": content, "tokens": [], "stop": stop, "id_slot": 0, **extra})


LLAMA_END = {"stop_type": "limit", "tokens_predicted": 3, "tokens_evaluated": 4, "timings": {"n": 3}}


def run(frames: list[bytes], end: End = End.UPSTREAM_EOF, *, include_usage: bool = False) -> StreamResult:
    audit = StreamAudit(Completions(), 0.0, include_usage=include_usage)
    for i, data in enumerate(frames):
        audit.feed(b"data: " + data + b"\n\n", 0.05 + 0.02 * i)
    return audit.finish(1.0, end)


def test_a_llama_cpp_native_stream_on_completions_is_complete_with_its_stop_type() -> None:
    # llama.cpp serves it on `/completion` too, at its root (an outside review: a cut stream there
    # was `complete` as `other`); but not under a prefix: DashScope's `/api/v1/apps/{id}/completion`
    # and the AI SDK's `/api/completion` stream other shapes, judged `truncated` as Completions.
    assert route_for_path("/completions") == route_for_path("/completion?x=1") == "completions"
    assert route_for_path("/completion/") == "completions"
    assert route_for_path("/api/v1/apps/a1/completion") == route_for_path("/api/completion") == "other"
    r = run([llama(" Hel"), llama("lo"), llama("!"), llama("", stop=True, **LLAMA_END)], include_usage=True)
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, [])
    assert r.finish_reasons == ["length"]  # `limit`, as llama.cpp's OpenAI routes say it
    assert (r.prompt_tokens, r.completion_tokens) == (4, 3)
    assert r.content_frames == 3 and r.ttft == pytest.approx(0.05)
    assert not r.done  # no `[DONE]` came, and none was missed


@pytest.mark.parametrize(("stop_type", "reason"), [("eos", "stop"), ("word", "stop"), ("limit", "length")])
def test_llama_cpp_stop_types_read_as_finish_reasons(stop_type: str, reason: str) -> None:
    r = run([llama("a"), llama("", stop=True, stop_type=stop_type)])
    assert r.outcome is Outcome.COMPLETE and r.finish_reasons == [reason]


def test_a_llama_cpp_native_stream_cut_before_its_stop_frame_is_truncated() -> None:
    r = run([llama(" Hel"), llama("lo")])
    assert r.outcome is Outcome.TRUNCATED
    assert "missing_finish_reason" in r.anomalies and "missing_done" not in r.anomalies
    assert r.content_frames == 2


def test_a_llama_cpp_error_frame_mid_stream_is_an_upstream_error() -> None:
    r = run([llama("a"), frame({"error": {"code": 500, "message": "x", "type": "server_error"}})])
    assert r.outcome is Outcome.UPSTREAM_ERROR and "error_event" in r.anomalies


@pytest.mark.parametrize("stop_type", [["eos"], {"a": 1}, 7, None])
def test_a_llama_cpp_stop_type_of_another_type_is_a_stop(stop_type: object) -> None:
    r = run([llama("a"), llama("", stop=True, stop_type=stop_type)])
    assert r.outcome is Outcome.COMPLETE and r.finish_reasons == ["stop"]


def test_openai_completions_without_done_are_still_missing_it() -> None:
    text = [{"index": 0, "text": "Hi", "finish_reason": None}]
    end = [{"index": 0, "text": "", "finish_reason": "stop"}]
    r = run([frame({"choices": text}), frame({"choices": end})])
    assert r.outcome is Outcome.TRUNCATED and "missing_done" in r.anomalies
    assert r.content_frames == 1


def test_mistral_fim_deltas_are_content() -> None:
    def chunk(content: str, reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": {"content": content}, "finish_reason": reason}
        return frame({"object": "chat.completion.chunk", "choices": [choice]})

    assert route_for_path("/v1/fim/completions") == "completions"
    r = run([chunk(" x"), chunk(" y"), chunk("", "stop"), b"[DONE]"])
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, [])
    assert r.content_frames == 2 and r.ttft == pytest.approx(0.05)


def test_a_native_looking_frame_inside_an_openai_stream_does_not_excuse_its_cut() -> None:
    """A stream that began OpenAI-shaped stays so: one `{"content": "", "stop": true}` frame
    (a hostile or confused upstream) made a cut stream `complete` (second review)."""
    text = [{"index": 0, "text": "Hi", "finish_reason": None}]
    r = run([frame({"choices": text}), llama("", stop=True, stop_type="eos"), frame({"choices": text})])
    assert r.outcome is Outcome.TRUNCATED
    assert {"missing_done", "missing_finish_reason"} <= set(r.anomalies)


def test_mistral_agents_stream_on_the_chat_route() -> None:
    """`POST /v1/agents/completions` streams Chat chunks; it was the legacy `completions` route
    (outside review: the mistralai SDK's `agents.stream`)."""
    assert route_for_path("/v1/agents/completions") == "chat_completions"
    assert route_for_path("/v1/chat/completions") == "chat_completions"
    assert route_for_path("/v1/completions") == "completions"
