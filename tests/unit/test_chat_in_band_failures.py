"""In-band failures of Chat Completions and Completions streams beyond the `{"error": ...}` frame.

OpenRouter reports a failure mid-generation as one chunk with a top-level `error` object and
`choices[0].finish_reason: "error"` (its docs, "Streaming Error Formats"), sometimes followed
by `[DONE]`. The dialect took any finish reason for a finish that undoes an earlier error, so
such a stream was `complete` + `error_event` (with `[DONE]`) or `truncated` + `missing_done`.
Older vLLM sends `{"object": "error", "message": ..., "code": 500}` mid-stream, then `[DONE]`:
it was not read as an error at all (`complete` + `missing_finish_reason`). Both are now the
upstream's failure: `upstream_error` + `error_event`.
"""

from __future__ import annotations

import orjson
import pytest

from sse_audit_proxy.core.audit import End, StreamAudit
from sse_audit_proxy.core.dialects import ERROR, FINISH
from sse_audit_proxy.core.dialects.anthropic import AnthropicMessages
from sse_audit_proxy.core.dialects.chat import ChatCompletions
from sse_audit_proxy.core.dialects.completions import Completions
from sse_audit_proxy.core.dialects.generic import Generic
from sse_audit_proxy.core.dialects.responses import Responses
from sse_audit_proxy.core.sse import Event


def frame(doc: dict[str, object]) -> bytes:
    return orjson.dumps(doc)


def chunk(content: str, finish: str | None = None, **extra: object) -> bytes:
    choice = {"index": 0, "delta": {"role": "assistant", "content": content}, "finish_reason": finish}
    return frame({"id": "gen-1", "object": "chat.completion.chunk", "choices": [choice], **extra})


OPENROUTER_ERROR = chunk("", "error", error={"code": "server_error", "message": "Provider disconnected"})
VLLM_ERROR = frame(
    {"object": "error", "message": "CUDA out of memory", "type": "InternalServerError", "code": 500}
)
DONE = b"[DONE]"


def verdict(frames: list[bytes]) -> tuple[str, list[str]]:
    body = b"".join(b"data: " + f + b"\n\n" for f in frames)
    audit = StreamAudit(ChatCompletions(), 0.0)
    audit.feed(body, 0.01)
    result = audit.finish(0.02, End.UPSTREAM_EOF)
    return result.outcome, result.anomalies


@pytest.mark.parametrize("done", [False, True])
def test_openrouter_mid_stream_error_is_an_upstream_error(done: bool) -> None:
    frames = [chunk("Hel"), chunk("lo"), OPENROUTER_ERROR] + ([DONE] if done else [])
    assert verdict(frames) == ("upstream_error", ["error_event"])


@pytest.mark.parametrize("reading", ["typed", "plain"])
def test_a_finish_reason_of_error_is_one_error_frame_with_or_without_an_error_object(reading: str) -> None:
    alone = chunk("", "error")
    for failing in (OPENROUTER_ERROR, alone):
        dialect = ChatCompletions()
        observe = dialect.observe_data if reading == "typed" else dialect._observe_doc
        observe(chunk("Hel"))
        bits = observe(failing)
        assert bits & (ERROR | FINISH) == ERROR | FINISH
        observe(DONE)
        s = dialect.summary()
        assert (s.failed, s.error_events, s.finish_reasons, s.done) == (True, 1, ["error"], True)


def test_a_finish_reason_of_error_alone_is_an_upstream_error() -> None:
    assert verdict([chunk("Hel"), chunk("", "error"), DONE]) == ("upstream_error", ["error_event"])


def test_a_stream_that_finishes_after_an_error_frame_is_still_a_failure() -> None:
    # The openai SDKs (Python and Node) raise at the first frame with a non-empty `error`:
    # what follows it never reaches their callers, so a finish after it recovers nothing.
    frames = [chunk("Hel"), frame({"error": {"message": "retrying"}}), chunk("lo", "stop"), DONE]
    assert verdict(frames) == ("upstream_error", ["error_event"])
    # In the same chunk as the finish too.
    both = frame({"error": {"message": "x"}, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    assert verdict([chunk("Hel"), both, DONE]) == ("upstream_error", ["error_event"])


def test_an_error_finish_is_not_undone_by_a_later_frame_without_a_finish() -> None:
    assert verdict([chunk("Hel"), OPENROUTER_ERROR, chunk(""), DONE]) == ("upstream_error", ["error_event"])


@pytest.mark.parametrize("done", [False, True])
def test_older_vllm_object_error_frame_is_an_upstream_error(done: bool) -> None:
    frames = [chunk(""), chunk("Hel"), VLLM_ERROR] + ([DONE] if done else [])
    assert verdict(frames) == ("upstream_error", ["error_event"])


def test_an_object_error_frame_reads_alike_both_ways() -> None:
    typed, plain = ChatCompletions(), ChatCompletions()
    assert typed.observe_data(VLLM_ERROR) == plain._observe_doc(VLLM_ERROR) == ERROR
    assert typed.summary() == plain.summary()
    assert typed.summary().failed and typed.summary().error_events == 1


def test_ordinary_objects_and_empty_choices_are_no_error() -> None:
    # Azure's first chunk (empty choices, no usage) and the usage chunk are not errors.
    azure = frame({"object": "", "choices": [], "prompt_filter_results": []})
    usage = frame({"object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 1}})
    for f in (azure, usage):
        dialect = ChatCompletions()
        assert not dialect.observe_data(f) & ERROR
        assert dialect.summary().error_events == 0


def test_legacy_completions_finish_reason_of_error_is_a_failure() -> None:
    dialect = Completions()
    text = {"object": "text_completion", "choices": [{"index": 0, "text": "Once", "finish_reason": None}]}
    dialect.observe_data(frame(text))
    failed = {"object": "text_completion", "choices": [{"index": 0, "text": "", "finish_reason": "error"}]}
    assert dialect.observe_data(frame(failed)) & ERROR
    dialect.observe_data(DONE)
    s = dialect.summary()
    assert (s.failed, s.error_events, s.finish_reasons) == (True, 1, ["error"])


def test_an_object_error_frame_is_an_error_on_routes_without_choices() -> None:
    # Read as `{"error": ...}` is: by the generic dialect, and by the typed ones when the frame
    # names no event type (a `type` names one, and the event is read as that type).
    untyped = frame({"object": "error", "message": "CUDA out of memory", "code": 500})
    for dialect, data in ((Generic(), VLLM_ERROR), (Responses(), untyped)):
        assert dialect.observe(Event("", data)) & ERROR, type(dialect).__name__
        s = dialect.summary()
        assert (s.failed, s.error_events) == (True, 1), type(dialect).__name__
    # The Anthropic SDKs skip a frame without its `event:` line: its callers never saw the
    # error, and got the answer whole (a review)
    anthropic = AnthropicMessages()
    assert not anthropic.observe(Event("", untyped)) & ERROR
    assert (anthropic.summary().failed, anthropic.summary().malformed_frames) == (False, 1)
