"""The verdict rules against what real servers and clients do on the wire (issue 11).

Pure: recorded frames with chosen arrival times and a chosen reason the relay ended.
"""

from __future__ import annotations

import gzip
import random
from collections.abc import Sequence
from pathlib import Path

import pytest
from chat_streams import DONE, chunk, frame, healthy, usage_chunk

from sse_audit_proxy.core import verdict
from sse_audit_proxy.core.audit import End, Outcome, StreamAudit, StreamResult, Thresholds, is_json_lines
from sse_audit_proxy.core.dialects import dialect_for_route
from sse_audit_proxy.core.dialects.chat import ChatCompletions

ERROR = frame({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}})


def run(
    frames: Sequence[bytes],
    times: Sequence[float] | None = None,
    *,
    end: End = End.UPSTREAM_EOF,
    route: str = "chat_completions",
    include_usage: bool = True,
    event_stream: bool = True,
    json_lines: bool = False,
) -> StreamResult:
    audit = StreamAudit(
        dialect_for_route(route)(),
        0.0,
        include_usage=include_usage,
        event_stream=event_stream,
        json_lines=json_lines,
    )
    times = times if times is not None else [0.3 + 0.03 * i for i in range(len(frames))]
    for data, t in zip(frames, times, strict=True):
        audit.feed(data, t)
    return audit.finish((times[-1] if times else 0.0) + 0.001, end)


def test_every_route_family_has_its_rows_on_the_stream_shapes_page() -> None:
    """The route label's values, each with what its dialect reads and which anomalies apply."""
    from sse_audit_proxy.core.dialects import ROUTES

    page = (Path(__file__).resolve().parents[2] / "docs/reference/stream-shapes.md").read_text()
    first_cells = [line.split("|")[1] for line in page.splitlines() if line.startswith("| `")]
    for route in ROUTES:
        # a row in the table of what is read, and one in the table of which anomalies apply
        assert sum(f"`{route}`" in cell for cell in first_cells) >= 2, route


def test_the_docs_verdict_tables_are_generated_from_the_rules() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs/operate/verdicts.md").read_text()
    assert verdict.markdown_tables() in page


# A client that closes once it has read the end marker -------------------------------------


@pytest.mark.parametrize("end", [End.CLIENT_GONE, End.ABORTED])
def test_client_closing_after_done_reached_it_leaves_a_complete_stream(end: End) -> None:
    r = run(healthy(), end=end)
    assert (r.outcome, r.anomalies, r.end) == (Outcome.COMPLETE, [], end)


def test_client_closing_after_done_still_gets_completeness_judged() -> None:
    r = run(healthy(usage=False, finish=None), end=End.CLIENT_GONE)
    assert r.outcome is Outcome.COMPLETE
    assert r.anomalies == ["missing_finish_reason", "missing_usage"]


def test_client_closing_before_done_is_a_disconnect_with_nothing_missing() -> None:
    r = run(healthy(done=False), end=End.CLIENT_GONE)
    assert (r.outcome, r.anomalies) == (Outcome.CLIENT_DISCONNECT, [])


def test_slow_client_cut_after_done_is_still_a_disconnect() -> None:
    # Cut for leaving bytes unread: whether [DONE] ever reached it is unknown.
    r = run(healthy(), end=End.SLOW_CLIENT)
    assert r.outcome is Outcome.CLIENT_DISCONNECT


def test_timeout_after_done_stays_a_timeout() -> None:
    # The body never ended: a client waiting for the end of the body hung.
    assert run(healthy(), end=End.IDLE_TIMEOUT).outcome is Outcome.TIMEOUT


@pytest.mark.parametrize(
    ("route", "last"),
    [
        (
            "responses",
            frame(
                {
                    "type": "response.completed",
                    "response": {"status": "completed", "usage": {"input_tokens": 1, "output_tokens": 2}},
                }
            ),
        ),
        ("messages", frame({"type": "message_stop"})),
    ],
)
def test_typed_streams_closed_by_the_client_after_their_end_event_are_complete(
    route: str, last: bytes
) -> None:
    r = run([last], end=End.CLIENT_GONE, route=route)
    assert r.outcome is Outcome.COMPLETE


def test_other_routes_have_no_marker_so_a_client_close_is_a_disconnect() -> None:
    r = run([frame({"x": 1}), frame({"x": 2})], end=End.CLIENT_GONE, route="other")
    assert r.outcome is Outcome.CLIENT_DISCONNECT
    assert run([frame({"x": 1})], route="other").outcome is Outcome.COMPLETE


# Error frames, on every route ------------------------------------------------------------


@pytest.mark.parametrize("route", ["chat_completions", "completions", "responses", "other"])
@pytest.mark.parametrize("then", [b"", DONE], ids=["body-ends", "then-done"])
def test_error_frame_as_the_last_word_is_an_upstream_error_on_every_route(route: str, then: bytes) -> None:
    frames = [ERROR, then] if then else [ERROR]
    r = run(frames, route=route)
    assert (r.outcome, r.anomalies) == (Outcome.UPSTREAM_ERROR, ["error_event"])


def test_error_frame_after_content_then_body_end_is_an_upstream_error() -> None:
    r = run([chunk({"role": "assistant"}), chunk({"content": "Hel"}), ERROR])
    assert (r.outcome, r.anomalies) == (Outcome.UPSTREAM_ERROR, ["error_event"])


def test_client_leaving_after_an_error_frame_leaves_an_upstream_error() -> None:
    # The SDK raises on the error frame and closes, often before a slow server ends the body.
    r = run([chunk({"content": "Hel"}), ERROR], end=End.CLIENT_GONE)
    assert (r.outcome, r.anomalies) == (Outcome.UPSTREAM_ERROR, ["error_event"])


def test_an_error_frame_is_a_failure_whatever_follows_it_and_however_it_was_paced() -> None:
    # The openai SDKs raise at the error frame: a finish after it never reaches their callers,
    # and a client that leaves there (End.CLIENT_GONE) leaves a failed stream.
    frames = [ERROR, chunk({"content": "Hi"}), chunk({}, finish="stop"), DONE]
    for end in (End.UPSTREAM_EOF, End.CLIENT_GONE):
        r = run(frames, include_usage=False, end=end)
        assert (r.outcome, r.anomalies) == (Outcome.UPSTREAM_ERROR, ["error_event"]), end
    r = run(frames, [0.3] * 4, include_usage=False)  # all in one read
    assert r.outcome is Outcome.UPSTREAM_ERROR


def test_error_frame_is_never_a_malformed_frame() -> None:
    for route in ("chat_completions", "completions", "responses", "other"):
        assert "malformed_frame" not in run([ERROR], route=route).anomalies, route
    # Anthropic's SDKs read a frame only by its `event:` line (an unnamed one is lost to them).
    assert "malformed_frame" not in run([b"event: error\n" + ERROR], route="messages").anomalies


def test_an_anthropic_frame_without_its_event_line_is_malformed_as_the_sdks_skip_it() -> None:
    start = {"type": "message_start", "message": {"usage": {"input_tokens": 5, "output_tokens": 1}}}
    block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    text = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}}
    stop = {"type": "content_block_stop", "index": 0}
    delta = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}}
    docs = [start, block, text, stop, delta, {"type": "message_stop"}]
    named = [f"event: {d['type']}\n".encode() + frame(d) for d in docs]
    assert run(named, route="messages").anomalies == []
    unnamed = run([frame(d) for d in docs], route="messages")
    assert (unnamed.outcome, unnamed.anomalies) == (Outcome.COMPLETE, ["malformed_frame"])
    # Five: a `message_stop` without its name costs the SDK nothing (the message is whole).
    assert "5 frames" in " ".join(unnamed.reasons)
    # Responses streams are read by the JSON `type` (the openai SDK's way): no `event:` needed.
    assert (
        "malformed_frame"
        not in run([frame({"type": "response.created", "response": {}})], route="responses").anomalies
    )


@pytest.mark.parametrize(
    ("frames", "count"),
    [
        ([b"retry: 3000\n\n"], 1),  # a lone `retry:` first: the openai SDK raises at once
        ([b"event: ping\n\n"], 1),
        ([b"id: 1\n" + chunk({"role": "assistant"}), b": keep-alive\n\n"], 1),  # a comment after an id
        ([b"id: 7\n\n\n"], 2),
        ([b": keep-alive\n\n", b"retry: soon\n\n", b"id:\n\n"], 0),  # what the SDK passes by
    ],
)
def test_a_frame_without_data_that_the_openai_sdk_reads_as_an_empty_event_is_malformed(
    frames: list[bytes], count: int
) -> None:
    body = [*frames, chunk({"content": "a"}), chunk({}, finish="stop"), DONE]
    r = run(body, include_usage=False)
    if count:
        assert "malformed_frame" in r.anomalies
        assert f"{count} frame" in " ".join(r.reasons)
    else:
        assert r.anomalies == []
    # Anthropic's SDK skips such an event: no malformed frame for it there.
    assert "malformed_frame" not in run([b"retry: 3000\n\n"], route="messages").anomalies


def test_null_error_field_on_ordinary_chunks_is_no_error() -> None:
    frames = [frame({**_chunk_obj({"content": "a"}), "error": None}), chunk({}, finish="stop"), DONE]
    r = run(frames, include_usage=False)
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, [])


def _chunk_obj(delta: dict[str, str]) -> dict[str, object]:
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
    }


# Event streams under another Content-Type ----------------------------------------------


@pytest.mark.parametrize(
    "prefix", [b"", b"\xef\xbb\xbf", b"\n", b": ping\n\n", b"event: message\n", b"id: 1\n", b"retry: 100\n"]
)
def test_event_stream_labelled_otherwise_is_audited_and_flagged(prefix: bytes) -> None:
    frames = healthy(usage=False)
    frames[0] = prefix + frames[0]
    r = run(frames, event_stream=False)
    assert r.outcome is Outcome.COMPLETE
    # A BOM is read, and flagged: the openai Python SDK loses the first frame to it.
    bom = ["malformed_frame"] if prefix.startswith(b"\xef") else []
    assert r.anomalies == ["wrong_content_type", "missing_usage", *bom]
    assert r.ttft == pytest.approx(0.33) and r.content_frames == 5 and r.done


def test_unlabelled_event_stream_read_one_byte_at_a_time_is_still_recognised() -> None:
    body = b"".join(healthy())
    r = run(
        [body[i : i + 1] for i in range(len(body))], [0.001 * i for i in range(len(body))], event_stream=False
    )
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, ["wrong_content_type"])


@pytest.mark.parametrize(
    "body",
    [
        b'{"id": "chatcmpl-1", "object": "chat.completion", "choices": []}',
        b"<html><body>502 Bad Gateway</body></html>",
        b"database: down\n",  # a field-like line that is no SSE field
        b"",
    ],
)
def test_bodies_that_are_no_event_stream_are_not_streamed_and_not_sniffed(body: bytes) -> None:
    r = run([body] if body else [], event_stream=False)
    assert r.anomalies == ["not_streamed"]
    assert r.frames == 0


def test_json_error_document_for_a_stream_request_is_still_an_upstream_error() -> None:
    r = run([b'{"error": {"message": "bad key", "code": "invalid_api_key"}}'], event_stream=False)
    assert (r.outcome, r.anomalies) == (Outcome.UPSTREAM_ERROR, ["error_event"])


# Streaming JSON lines (Ollama's native API) -------------------------------------------------

OLLAMA_LINES = [
    b'{"model":"llama3","message":{"role":"assistant","content":"Hel"},"done":false}\n',
    b'{"model":"llama3","message":{"role":"assistant","content":"lo"},"done":false}\n',
    b'{"model":"llama3","message":{"role":"assistant","content":""},"done_reason":"stop","done":true}\n',
]


@pytest.mark.parametrize(
    ("end", "outcome"),
    [
        (End.UPSTREAM_EOF, Outcome.COMPLETE),
        (End.UPSTREAM_BROKEN, Outcome.TRUNCATED),
        (End.IDLE_TIMEOUT, Outcome.TIMEOUT),
        (End.CLIENT_GONE, Outcome.CLIENT_DISCONNECT),
    ],
)
def test_a_json_lines_stream_is_not_not_streamed_and_its_outcome_is_the_connections(
    end: End, outcome: Outcome
) -> None:
    # On a route whose SDKs read event streams only, JSON lines reach them as nothing at all
    for route, anomalies in (("other", []), ("chat_completions", ["not_streamed"])):
        r = run(OLLAMA_LINES, end=end, route=route, event_stream=False, json_lines=True)
        assert (r.outcome, r.anomalies) == (outcome, anomalies), route
        assert r.frames == len(OLLAMA_LINES) and r.ttfb is not None  # each line read as a frame
        if outcome is Outcome.TRUNCATED:  # no end marker is missed: none was looked for
            assert r.reasons[0] == (
                f"truncated: the JSON-lines body broke after {r.bytes} bytes (its lines carry no end marker)"
            )


def test_json_lines_that_stop_inside_a_line_are_cut_however_cleanly_the_body_ended() -> None:
    """Half a JSON object is what an NDJSON reader fails on or drops; a clean end made it
    `complete` (an outside review: Cohere v1's `stream+json` and an NDJSON chat gateway ended
    cleanly 300 bytes in, and close-delimited bodies alike)."""
    lines = [b'{"event_type":"text-generation","text":"Hi"}\n', b'{"event_type":"text-gen']
    r = run(lines, route="other", event_stream=False, json_lines=True)
    assert (r.outcome, r.unterminated_frame, r.frames) == (Outcome.TRUNCATED, True, 1)
    assert r.reasons == [
        f"truncated: the JSON-lines body ended inside a line (half a JSON object) after {r.bytes} bytes"
    ]
    # A last line that is whole JSON without its LF is a line, as readers take it, Python's
    # NaN and JavaScript's lone surrogates too.
    for last in (b'{"event_type":"stream-end"}', b'{"score": NaN}', b'{"t": "\\ud800"}'):
        r = run([lines[0], last], route="other", event_stream=False, json_lines=True)
        assert (r.outcome, r.frames) == (Outcome.COMPLETE, 2), last


@pytest.mark.parametrize(
    ("end", "outcome"),
    [
        (End.UPSTREAM_EOF, Outcome.COMPLETE),
        (End.UPSTREAM_BROKEN, Outcome.COMPLETE),  # after the done line, as after `[DONE]`
        (End.IDLE_TIMEOUT, Outcome.TIMEOUT),  # held open after it, as an event stream
        (End.CLIENT_GONE, Outcome.COMPLETE),  # the client left after the done line
    ],
)
def test_ollamas_lines_end_with_the_done_line(end: End, outcome: Outcome) -> None:
    r = run(OLLAMA_LINES, end=end, route="ollama", event_stream=False, json_lines=True)
    assert (r.outcome, r.anomalies) == (outcome, [])
    assert r.finish_reasons == ["stop"] and r.content_frames == 2  # the done line has no text


def test_ollamas_lines_cut_cleanly_before_the_done_line_are_truncated() -> None:
    """Ollama's own clients raise on it (npm `ollama`: "Did not receive done or success response
    in stream"; LiteLLM); with no dialect it was `complete` and the guard counted it good."""
    r = run(OLLAMA_LINES[:2], route="ollama", event_stream=False, json_lines=True)
    assert (r.outcome, r.anomalies) == (Outcome.TRUNCATED, [])
    assert 'no end line (`"done": true`)' in r.reasons[0] and "closed the connection cleanly" in r.reasons[0]


def test_ollamas_done_line_gives_the_finish_and_the_usage_and_tool_calls_count() -> None:
    lines = [
        b'{"model":"m","message":{"role":"assistant","content":"","thinking":"hmm"},"done":false}\n',
        b'{"model":"m","message":{"role":"assistant","content":"","tool_calls":[{"function":'
        b'{"name":"f","arguments":{"city":"Paris"}}}]},"done":false}\n',
        b'{"model":"m","message":{"role":"assistant","content":""},"done_reason":"length","done":true,'
        b'"prompt_eval_count":26,"eval_count":290}\n',
    ]
    r = run(lines, route="ollama", event_stream=False, json_lines=True)
    assert (r.outcome, r.anomalies, r.finish_reasons) == (Outcome.COMPLETE, [], ["length"])
    assert r.usage == {"prompt_tokens": 26, "completion_tokens": 290}
    assert (r.prompt_tokens, r.completion_tokens, r.tool_calls, r.content_frames) == (26, 290, 1, 2)
    generate = [b'{"model":"m","response":"Hi","done":false}\n', b'{"model":"m","response":"","done":true}\n']
    r = run(generate, route="ollama", event_stream=False, json_lines=True)
    assert (r.outcome, r.content_frames, r.finish_reasons) == (Outcome.COMPLETE, 1, ["stop"])


def test_ollamas_done_line_too_large_to_read_leaves_the_end_to_the_connection() -> None:
    """`/api/generate` puts the token IDs of prompt and answer in its done line's `context`:
    past --max-frame-bytes (about 150,000 tokens a MiB) it is relayed unread, and a healthy
    stream was `truncated` (second pass)."""
    from sse_audit_proxy.core.verdict import Thresholds

    big = b'{"model":"m","response":"","done":true,"context":[' + b"1," * 600 + b"1]}\n"
    audit = StreamAudit(
        dialect_for_route("ollama")(),
        0.0,
        event_stream=False,
        json_lines=True,
        thresholds=Thresholds(max_frame_bytes=1024),
    )
    for i, line in enumerate([b'{"model":"m","response":"Hi","done":false}\n', big]):
        audit.feed(line, 0.1 + 0.01 * i)
    r = audit.finish(0.2, End.UPSTREAM_EOF)
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, ["oversized_frame"])


def test_ollamas_generate_tool_calls_are_counted_and_an_error_without_its_lf_is_read() -> None:
    lines = [
        b'{"model":"m","response":"","tool_calls":[{"function":{"name":"f","arguments":{}}}],"done":false}\n',
        b'{"model":"m","response":"","done":true,"done_reason":"stop"}\n',
    ]
    r = run(lines, route="ollama", event_stream=False, json_lines=True)
    assert (r.outcome, r.tool_calls, r.content_frames) == (Outcome.COMPLETE, 1, 1)
    # Ollama's relay of a cloud model writes its error with `c.JSON`: no LF after it.
    cut = [OLLAMA_LINES[0], b'{"error":"upstream unavailable"}']
    r = run(cut, route="ollama", event_stream=False, json_lines=True)
    assert (r.outcome, r.anomalies, r.frames) == (Outcome.UPSTREAM_ERROR, ["error_event"], 2)
    # A line cut mid-JSON by a clean end is no line: it stays the unterminated frame it is.
    r = run([b'{"text":"a"}\n', b'{"text":"b'], route="other", event_stream=False, json_lines=True)
    assert (r.frames, r.unterminated_frame) == (1, True)


@pytest.mark.parametrize(
    ("lines", "event_stream", "json_lines"),
    [
        # The AI SDK's UI message stream, served by many apps on `/api/chat`: not Ollama's.
        ([b'data: {"type":"start"}\n\n', b'data: {"type":"text-delta","delta":"Hi"}\n\n'], True, False),
        ([b'{"text":"a"}\n', b'{"text":"b"}\n'], False, True),  # another product's JSON lines
        ([b'{"done":"yes"}\n', b'{"text":"b"}\n'], False, True),  # `done` not a boolean
    ],
)
def test_other_streams_on_ollamas_paths_are_read_as_on_a_route_with_no_dialect(
    lines: list[bytes], event_stream: bool, json_lines: bool
) -> None:
    r = run(lines, route="ollama", event_stream=event_stream, json_lines=json_lines)
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, [])
    assert r.content_frames == len(lines)


def test_an_ollama_line_that_is_not_json_is_malformed_and_an_error_line_fails_it() -> None:
    lines = {"route": "ollama", "event_stream": False, "json_lines": True}
    r = run([OLLAMA_LINES[0], b"{oops\n", OLLAMA_LINES[2]], **lines)  # type: ignore[arg-type]
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, ["malformed_frame"])
    r = run([*OLLAMA_LINES[:2], b'{"error":"out of memory"}\n'], **lines)  # type: ignore[arg-type]
    assert (r.outcome, r.anomalies) == (Outcome.UPSTREAM_ERROR, ["error_event"])


def test_a_json_lines_body_that_is_one_error_document_is_still_an_upstream_error() -> None:
    r = run([b'{"error":"model \\"x\\" not found"}\n'], route="other", event_stream=False, json_lines=True)
    assert (r.outcome, r.anomalies) == (Outcome.UPSTREAM_ERROR, ["error_event"])


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-ndjson",
        "application/x-ndjson; charset=utf-8",
        "Application/JSONL",
        "application/json-seq",
        "application/stream+json",
        b"application/x-ndjson",
    ],
)
def test_streaming_json_lines_types_are_known(content_type: str | bytes) -> None:
    assert is_json_lines(content_type)


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "text/event-stream", ""])
def test_other_types_are_no_json_lines(content_type: str) -> None:
    assert not is_json_lines(content_type)


# Bursty delivery -------------------------------------------------------------------------


def _content(n: int) -> list[bytes]:
    return [chunk({"content": f"t{i} "}) for i in range(n)]


def _stream(times: list[float]) -> StreamResult:
    """A healthy stream whose content frames arrive at `times` (role chunk at 0.05 s)."""
    frames = [
        chunk({"role": "assistant", "content": ""}),
        *_content(len(times)),
        chunk({}, finish="stop"),
        DONE,
    ]
    last = times[-1] if times else 0.05
    return run(frames, [0.05, *times, last + 0.001, last + 0.002], include_usage=False)


def test_clumps_of_ten_after_long_silences_are_bursty() -> None:
    # 120 content frames as 12 clumps of 10, each within a millisecond, 250 ms apart.
    times = [0.3 + 0.25 * c + 0.00005 * i for c in range(12) for i in range(10)]
    r = _stream(times)
    assert r.anomalies == ["bursty"]


def test_clumps_in_single_reads_are_bursty() -> None:
    # What a buffering hop does: each clump of 10 frames is one write, so one read.
    frames = [chunk({"role": "assistant", "content": ""})]
    frames += [b"".join(_content(10)) for _ in range(10)]
    frames += [chunk({}, finish="stop") + DONE]
    times = [0.05, *[0.4 + 0.3 * c for c in range(10)], 3.5]
    r = run(frames, times, include_usage=False)
    assert r.anomalies == ["bursty"]


def test_slow_first_token_then_smooth_tokens_is_not_bursty() -> None:
    assert _stream([2.0 + 0.02 * i for i in range(150)]).anomalies == []


def test_fast_upstream_with_frames_coalesced_by_tcp_is_not_bursty() -> None:
    rng = random.Random(7)
    times: list[float] = []
    t = 0.2
    while len(times) < 400:  # 250 tokens/s; TCP delivers 1 to 3 per read
        t += 0.004 * rng.choice((1, 2, 3))
        times += [t] * rng.choice((1, 2, 3))
    assert _stream(times[:400]).anomalies == []


def test_very_fast_upstream_without_stalls_is_not_bursty() -> None:
    # 1,000 tokens/s after a 0.5 s first token: one long clump, one burst at most.
    assert _stream([0.5 + 0.001 * i for i in range(300)]).anomalies == []


def test_jittery_real_world_timing_is_not_bursty() -> None:
    for seed in range(20):
        rng = random.Random(seed)
        times, t = [], 0.3
        for _ in range(300):
            t += rng.uniform(0.005, 0.08)
            times.append(t)
        assert _stream(times).anomalies == [], seed


def test_a_stall_in_the_middle_of_a_fast_stream_is_not_bursty() -> None:
    times = [0.1 + 0.001 * i for i in range(100)]
    times += [3.2 + 0.001 * i for i in range(100)]
    assert _stream(times).anomalies == []


def test_keepalive_comments_neither_make_nor_break_clumps() -> None:
    frames = [chunk({"role": "assistant", "content": ""})]
    times = [0.05]
    t = 0.1
    for i in range(200):  # smooth 20 ms tokens, a keep-alive comment between every two
        frames.append(chunk({"content": f"t{i}"}))
        times.append(t)
        frames.append(b": keep-alive\n\n")
        times.append(t + 0.0001)
        t += 0.02
    frames.append(chunk({}, finish="stop") + DONE)
    times.append(t)
    r = run(frames, times, include_usage=False)
    assert (r.outcome, r.anomalies, r.keepalives) == (Outcome.COMPLETE, [], 200)


def test_one_withheld_burst_is_buffered_not_bursty() -> None:
    assert _stream([3.0 + 0.00001 * i for i in range(100)]).anomalies == ["buffered"]


def test_bursts_holding_a_small_share_of_the_content_are_not_bursty() -> None:
    smooth = [0.1 + 0.02 * i for i in range(300)]  # 6 s of smooth tokens
    clumps = [6.5 + 0.3 * c + 0.00001 * i for c in range(3) for i in range(10)]
    assert _stream(smooth + clumps).anomalies == []


def test_bursty_thresholds_are_the_documented_defaults() -> None:
    th = Thresholds()
    assert (
        th.bursty_min_bursts,
        th.bursty_min_clump,
        th.bursty_min_silence,
        th.bursty_max_spacing,
        th.bursty_min_share,
    ) == (3, 10, 0.2, 0.002, 0.5)


def test_what_comes_after_done_is_not_judged_as_the_sdks_read_no_more() -> None:
    # The openai SDKs stop at `[DONE]`: an error frame after it failed nothing.
    r = run([chunk({"content": "a"}), chunk({}, finish="stop"), DONE, ERROR], include_usage=False)
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, [])


def test_an_event_stream_labelled_json_lines_is_read_as_the_event_stream_it_is() -> None:
    """`application/x-ndjson` on SSE (uvicorn, hypercorn, granian, Node servers given that
    label): the openai SDK reads every chunk, but the stream was read as lines of JSON, each
    `data:` line malformed and `[DONE]` never seen: `truncated` with five anomalies (an
    outside review). It is a mislabelled event stream, as `text/plain` is."""
    r = run(healthy(), event_stream=False, json_lines=True)
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, ["wrong_content_type"])
    assert r.content_frames == run(healthy()).content_frames > 0


@pytest.mark.parametrize(("route", "want"), [("chat_completions", ["not_streamed"]), ("other", [])])
def test_json_lines_are_no_stream_on_a_route_whose_sdks_read_event_streams_only(
    route: str, want: list[str]
) -> None:
    """Chat chunks as JSON lines (`application/x-ndjson`, no `data:`): the openai SDK yields no
    chunk of them and ends without an error, yet the stream was `complete` with no anomaly (an
    outside review). Where clients read JSON lines (a route with no dialect), a stream."""
    lines = [f[len(b"data: ") : -1] for f in healthy() if f != DONE]
    r = run(lines, event_stream=False, json_lines=True, route=route)
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, want)


def gzip_anomalies(members: list[bytes]) -> list[str]:
    audit = StreamAudit(ChatCompletions(), 0.0, include_usage=True, content_encoding="gzip")
    audit.feed(b"".join(gzip.compress(m) for m in members), 0.3)
    # one read: all frames at once, `buffered` by their times
    return [a for a in audit.finish(0.4, End.UPSTREAM_EOF).anomalies if a != "buffered"]


def test_gzip_members_is_said_of_a_later_member_with_something_in_it() -> None:
    """httpx (the openai and anthropic Python SDKs) and curl read a gzip body's first member
    only: a later one with frames in it costs their callers those frames. An empty one (or a
    stray byte of gzip's magic) costs them nothing, and was a bad stream all the same (a
    second review)."""
    body = b"".join(healthy())
    half = len(body) // 2
    assert gzip_anomalies([body[:half], body[half:]]) == ["gzip_members"]
    assert gzip_anomalies([body, b""]) == []
    assert gzip_anomalies([body]) == []


OPENROUTER_FAILURE = frame(
    {
        "error": {"message": "provider failed", "code": 502},
        "choices": [{"index": 0, "finish_reason": "error"}],
    }
)


@pytest.mark.parametrize(
    ("before", "after", "want"),
    [
        # OpenRouter's failure chunk (an error and a choice finishing "error") after `[DONE]`
        # made a whole answer `upstream_error`, its finish reasons ["error"] (an outside review)
        (
            [chunk({}, finish="stop"), usage_chunk()],
            [OPENROUTER_FAILURE],
            (Outcome.COMPLETE, [], ["stop"]),
        ),
        # usage or a finish reason sent after `[DONE]` never reached a caller: the SDKs saw none
        ([chunk({}, finish="stop")], [usage_chunk()], (Outcome.COMPLETE, ["missing_usage"], ["stop"])),
        ([usage_chunk()], [chunk({}, finish="stop")], (Outcome.COMPLETE, ["missing_finish_reason"], [])),
    ],
    ids=["failure", "usage", "finish_reason"],
)
def test_nothing_after_done_counts_as_the_sdks_read_no_more(
    before: list[bytes], after: list[bytes], want: tuple[object, ...]
) -> None:
    r = run([chunk({"content": "a"}), *before, DONE, *after])
    assert (r.outcome, r.anomalies, r.finish_reasons) == want


@pytest.mark.parametrize(("value", "counted"), [(b"1_000", True), (b"\xef\xbc\x93", True), (b"+-5", False)])
def test_a_retry_line_alone_counts_when_the_sdk_takes_its_number(value: bytes, counted: bool) -> None:
    # What Python's int() takes (underscores, any script's digits), as the openai SDK parses it.
    r = run([b"retry: " + value + b"\n\n", chunk({"content": "a"}), chunk({}, finish="stop"), DONE])
    assert ("malformed_frame" in r.anomalies) is counted


def test_an_anthropic_ping_without_its_name_costs_the_sdk_nothing() -> None:
    assert run([frame({"type": "ping"})], route="messages").anomalies.count("malformed_frame") == 0


@pytest.mark.parametrize("sentinel", [b"data: [DONE] \n\n", b"data: [DONE]\t\n\n", b"data:[DONE]  \n\n"])
def test_done_with_trailing_whitespace_ends_the_stream_as_the_openai_sdks_read_it(sentinel: bytes) -> None:
    """Both openai SDKs end a stream on data that starts with `[DONE]`: for their callers a
    stream that ends so is whole, not cut short."""
    frames = healthy()
    assert frames[-1] == DONE
    r = run([*frames[:-1], sentinel])
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, [])
    r = run([*frames[:-1], b"data: [DON]\n\n"])  # not it
    assert r.outcome is Outcome.TRUNCATED


def test_a_clean_close_after_every_finish_reason_says_the_answer_was_whole() -> None:
    """transformers serve never sends `[DONE]`: every one of its streams is `truncated` by the
    terminal-marker rule, and its reason read as a cut (an outside review). The openai SDKs stop
    at the body's end and take such an answer as whole; the reason says so, and says nothing of
    the kind where a finish reason or the usage asked for is missing, or the connection broke."""
    whole = run(healthy(4, done=False))
    assert (whole.outcome, whole.anomalies) == (Outcome.TRUNCATED, ["missing_done"])
    assert whole.reasons[0].endswith(
        "the upstream closed the connection cleanly after a finish_reason for every choice it "
        "sent, the last frame whole: an upstream that sends no [DONE] (the body was not cut "
        "mid-answer)"
    ), whole.reasons
    # A tool call's arguments cut short before a `tool_calls` finish: not whole (a second review).
    opened = {"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}
    call = [
        chunk({"tool_calls": [opened]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Par'}}]}),
        chunk(finish="tool_calls"),
        usage_chunk(),
    ]
    for cut in (
        run(healthy(4, done=False, usage=False)),  # the usage asked for never came
        run(healthy(4, done=False, finish=None)),
        run(healthy(4, done=False), end=End.UPSTREAM_BROKEN),
        run(call),
        # Text after the finish (the SDK reads on to the body's end), a last frame left open
        # (SSE readers drop it): a second review's cases.
        run([chunk({"content": "Hi"}, finish="stop"), chunk({"content": " and"})], include_usage=False),
        # ... also when a frame with no text follows it (a fourth review: vLLM sends `""`).
        run(
            [chunk({"content": "Hi"}, finish="stop"), chunk({"content": " and"}), chunk({"content": ""})],
            include_usage=False,
        ),
        run([*healthy(4, done=False), b"data: [DO"]),
    ):
        assert cut.outcome is Outcome.TRUNCATED
        assert "sends no [DONE]" not in cut.reasons[0], cut.reasons
    assert "sends no [DONE]" in run(healthy(4, done=False, usage=False), include_usage=False).reasons[0]
