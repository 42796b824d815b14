"""The routes beyond text (speech, transcriptions, images) and Assistants runs: recognised by
their paths, judged on their own end events (the wire shapes are conformance cases)."""

from __future__ import annotations

import json

import pytest

from sse_audit_proxy.core.audit import End, Outcome, StreamAudit, StreamResult
from sse_audit_proxy.core.dialects import dialect_for_route, route_for_path


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/v1/audio/speech", "audio_speech"),
        ("/openai/v1/audio/transcriptions", "audio_transcriptions"),
        ("/v1/audio/translations", "audio_transcriptions"),
        ("/v1/images/generations", "images"),
        ("/v1/images/edits", "images"),
        ("/v1/threads/runs", "assistants_runs"),
        ("/v1/threads/thread_abc/runs", "assistants_runs"),
        ("/v1/threads/thread_abc/runs/run_1/submit_tool_outputs", "assistants_runs"),
        ("/v1/evals/eval_1/runs", "other"),  # JSON, not a run stream
    ],
)
def test_paths_name_their_routes(path: str, route: str) -> None:
    assert route_for_path(path) == route


def _feed(route: str, reads: list[tuple[float, bytes]], end: End = End.UPSTREAM_EOF) -> StreamResult:
    audit = StreamAudit(dialect_for_route(route)(), 0.0)
    for t, data in reads:
        audit.feed(data, t)
    return audit.finish(reads[-1][0] + 0.001, end)


def _sentences(frame: bytes, last: bytes) -> list[tuple[float, bytes]]:
    """Four sentences, each 12 frames written at once, 0.4 s apart: a TTS server's pace."""
    reads = [(0.4 * (s + 1) + 0.0001 * i, frame) for s in range(4) for i in range(12)]
    return [*reads, (reads[-1][0] + 0.001, last)]


def test_speech_made_a_sentence_at_a_time_is_not_bursty() -> None:
    delta = b'data: {"type":"speech.audio.delta","audio":"AAAA"}\n\n'
    r = _feed("audio_speech", _sentences(delta, b'data: {"type":"speech.audio.done"}\n\n'))
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, [])
    # The same pace of text is bursty: the rule is off for speech only.
    chunk = b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n'
    finish = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    assert "bursty" in _feed("chat_completions", _sentences(chunk, finish)).anomalies


def _run(status: str, **fields: object) -> bytes:
    return f"data: {json.dumps({'object': 'thread.run', 'status': status, **fields})}\n\n".encode()


def test_an_assistants_run_whose_gateway_dropped_the_event_lines_is_read_from_its_objects() -> None:
    delta = b'data: {"object":"thread.message.delta","delta":{"content":[{"index":0,"type":"text"}]}}\n\n'
    reads = [(0.1, _run("queued")), (0.2, delta), (0.3, _run("completed", usage={"total_tokens": 3}))]
    ok = _feed("assistants_runs", [*reads, (0.4, b"data: [DONE]\n\n")])
    assert (ok.outcome, ok.anomalies, ok.finish_reasons, ok.content_frames) == (
        Outcome.COMPLETE,
        [],
        ["completed"],
        1,
    )
    failed = _feed("assistants_runs", [*reads[:2], (0.3, _run("failed")), (0.4, b"data: [DONE]\n\n")])
    assert (failed.outcome, failed.anomalies) == (Outcome.UPSTREAM_ERROR, ["error_event"])
    expired = _feed("assistants_runs", [*reads[:2], (0.3, b"event: thread.run.expired\ndata: {}\n\n")])
    assert expired.outcome is Outcome.UPSTREAM_ERROR and expired.finish_reasons == ["expired"]


def test_a_run_cut_after_its_last_status_misses_only_done() -> None:
    reads = [
        (0.1, b"event: thread.run.completed\ndata: " + json.dumps({"status": "completed"}).encode() + b"\n\n")
    ]
    r = _feed("assistants_runs", reads)
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, ["missing_done"])
    broken = _feed(
        "assistants_runs", [(0.1, b"event: thread.message.delta\ndata: {}\n\n")], End.UPSTREAM_BROKEN
    )
    assert broken.outcome is Outcome.TRUNCATED


def test_chat_audio_output_is_content() -> None:
    """gpt-4o-audio's chunks carry `delta.audio` (openai-python ChoiceDeltaAudio): its data and
    transcript are the answer. They were not content: no TTFT, no timing rules."""

    def chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
        doc = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(doc)}\n\n".encode()

    reads = [
        (0.1, chunk({"role": "assistant", "audio": {"id": "audio_1"}})),
        (0.3, chunk({"audio": {"transcript": "Hel"}})),
        (0.35, chunk({"audio": {"data": "UklGRg=="}})),
        (0.4, chunk({}, "stop") + b"data: [DONE]\n\n"),
    ]
    r = _feed("chat_completions", reads)
    assert (r.outcome, r.content_frames) == (Outcome.COMPLETE, 2)
    assert r.ttft == pytest.approx(0.3)


def _partial(i: int) -> bytes:
    doc = {"type": "image_edit.partial_image", "b64_json": "iVBORw0KGgo" * 500, "partial_image_index": i}
    return f"event: image_edit.partial_image\ndata: {json.dumps(doc)}\n\n".encode()


DONE_IMAGE = b'event: image_edit.completed\ndata: {"type":"image_edit.completed","b64_json":"AAAA"}\n\n'


def test_an_image_stream_held_back_and_released_at_once_is_buffered() -> None:
    """LiteLLM's pass-through holds a multipart request's answer whole: three partial images,
    made 0.7 s apart, reached the client in one read after 3.4 s. An image stream has at most
    three partial images, so the rule's five content frames were never there."""
    held = b"".join([_partial(0), _partial(1), _partial(2), DONE_IMAGE])
    r = _feed("images", [(3.4, held)])
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, ["buffered"])
    # Each partial image as it was made: not buffered.
    paced = [(0.7 * (i + 1), _partial(i)) for i in range(3)] + [(2.2, DONE_IMAGE)]
    assert _feed("images", paced).anomalies == []
    # Two text frames released at once are too few to tell on a text route.
    chunk = b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n'
    finish = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    assert _feed("chat_completions", [(3.4, chunk * 2 + finish)]).anomalies == []


def test_a_typed_transcription_cut_before_its_done_event_is_truncated_whatever_done_follows() -> None:
    """`[DONE]` ends vLLM's chunks, not OpenAI's typed events: a gateway that appends one to a
    transcription cut before `transcript.text.done` left it unfinished, not complete."""
    delta = b'data: {"type":"transcript.text.delta","delta":"one two"}\n\n'
    done = b'data: {"type":"transcript.text.done","text":"one two one two"}\n\n'
    cut = _feed("audio_transcriptions", [(0.1, delta), (0.2, delta), (0.3, b"data: [DONE]\n\n")])
    assert cut.outcome is Outcome.TRUNCATED
    whole = [(0.1, delta), (0.2, delta), (0.3, done), (0.31, b"data: [DONE]\n\n")]
    assert _feed("audio_transcriptions", whole).outcome is Outcome.COMPLETE
    chunk = b'data: {"object":"transcription.chunk","choices":[{"index":0,"delta":{"content":"one"}}]}\n\n'
    vllm = [(0.1, chunk), (0.2, chunk), (0.3, b"data: [DONE]\n\n")]
    assert _feed("audio_transcriptions", vllm).outcome is Outcome.COMPLETE


def test_vllm_transcription_chunks_without_a_finish_reason_miss_it() -> None:
    """vLLM ends a transcription's text with a finish_reason, as Chat does: a gateway that
    drops it is seen; OpenAI's typed events finish with their end event."""
    chunk = b'data: {"object":"transcription.chunk","choices":[{"index":0,"delta":{"content":"one"}}]}\n\n'
    stop = chunk.replace(b'{"content":"one"}}', b'{},"finish_reason":"stop"}')
    dropped = _feed("audio_transcriptions", [(0.1, chunk), (0.2, chunk), (0.3, b"data: [DONE]\n\n")])
    assert (dropped.outcome, dropped.anomalies) == (Outcome.COMPLETE, ["missing_finish_reason"])
    whole = [(0.1, chunk), (0.2, stop), (0.3, b"data: [DONE]\n\n")]
    assert _feed("audio_transcriptions", whole).anomalies == []
    delta = b'data: {"type":"transcript.text.delta","delta":"one"}\n\n'
    cut = _feed("audio_transcriptions", [(0.1, delta), (0.2, delta)])
    assert (cut.outcome, cut.anomalies) == (Outcome.TRUNCATED, [])


def test_a_one_sentence_speech_written_at_once_is_not_buffered() -> None:
    """A TTS server makes a sentence, then writes its audio at once: for a one-sentence input
    that is a release after a wait, which a buffering gateway gives too (TTFT shows it)."""
    delta = b'data: {"type":"speech.audio.delta","audio":"AAAA"}\n\n'
    r = _feed("audio_speech", [(1.0, delta * 20 + b'data: {"type":"speech.audio.done"}\n\n')])
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, [])
    assert r.ttft == 1.0
    chunk = b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n'
    finish = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    assert _feed("chat_completions", [(1.0, chunk * 20 + finish)]).anomalies == ["buffered"]
