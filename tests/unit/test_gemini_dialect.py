"""Gemini's native stream (`models/{model}:streamGenerateContent?alt=sse`): each candidate's
`finishReason` is its end, and the model and the ask for a stream are in the URL.

Google's SDKs (google-genai, @google/genai) hand on what came of a stream cut before the finish
reason without an error; with no dialect the proxy said `complete` and found no finish reason,
usage or model. The recorded streams are in conformance/ (gemini_stream*)."""

from __future__ import annotations

import orjson
import pytest

from sse_audit_proxy.core.audit import End, Outcome, StreamAudit, StreamResult
from sse_audit_proxy.core.dialects import dialect_for_route, route_for_path
from sse_audit_proxy.core.dialects.base import MAX_KEYS
from sse_audit_proxy.core.dialects.gemini import Gemini
from sse_audit_proxy.core.form_scan import scanner_for
from sse_audit_proxy.core.request_info import REDACTED_MODEL, UNKNOWN_MODEL, RequestInfo, with_target
from sse_audit_proxy.core.verdict import Thresholds

PATH = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"


def frame(doc: dict[str, object], event: str = "") -> bytes:
    head = f"event: {event}\r\n".encode() if event else b""
    return head + b"data: " + orjson.dumps(doc) + b"\r\n\r\n"


def chunk(text: str, reason: str | None = None, index: int | None = None) -> dict[str, object]:
    candidate: dict[str, object] = {"content": {"parts": [{"text": text}], "role": "model"}}
    if reason:
        candidate["finishReason"] = reason
    if index is not None:
        candidate["index"] = index
    return candidate


def run(frames: list[bytes], end: End = End.UPSTREAM_EOF) -> StreamResult:
    audit = StreamAudit(dialect_for_route(route_for_path(PATH))(), 0.0, event_stream=True)
    for i, data in enumerate(frames):
        audit.feed(data, 0.2 + 0.02 * i)
    return audit.finish(0.2 + 0.02 * len(frames) + 0.001, end)


USAGE = {"promptTokenCount": 4, "candidatesTokenCount": 3, "totalTokenCount": 7}
WHOLE = [
    frame({"candidates": [chunk("Hel")]}),
    frame({"candidates": [chunk("lo", "STOP")], "usageMetadata": USAGE}),
]


@pytest.mark.parametrize(
    "target,said",
    [
        (PATH + "?alt=sse", ("gemini-2.5-flash", True)),
        (PATH, ("gemini-2.5-flash", False)),  # a JSON array, no event stream
        (PATH + "?alt=json", ("gemini-2.5-flash", False)),
        (PATH + "?alt=ssex", ("gemini-2.5-flash", False)),
        (PATH + "?key=AIzaSyA-not-a-model&alt=sse", ("gemini-2.5-flash", True)),
        ("/v1beta/models/gemini-2.5-flash:generateContent?alt=sse", ("gemini-2.5-flash", False)),
        (
            "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
            ("gemini-2.5-pro", True),
        ),
        ("/v1beta/tunedModels/my-tune-7:streamGenerateContent?alt=sse", ("my-tune-7", True)),
        ("/v1beta/models/gemini%2D2.5-flash:streamGenerateContent?alt=sse", ("gemini-2.5-flash", True)),
        ("/models/x:streamGenerateContent?alt=sse#frag", ("x", True)),  # LiteLLM's own route
    ],
)
def test_the_target_names_the_model_and_asks_for_the_event_stream(
    target: str, said: tuple[str, bool]
) -> None:
    assert route_for_path(target) == "gemini"
    assert Gemini.target_info(target) == said


def test_the_body_model_and_stream_win_and_the_urls_model_is_shown_as_any_model() -> None:
    body = RequestInfo(model="from-body", stream=False)
    assert with_target(body, ("from-url", True)) == RequestInfo(model="from-body", stream=True)
    assert with_target(RequestInfo(), ("gemini-2.5-flash", False)).model == "gemini-2.5-flash"
    assert with_target(RequestInfo(), None) == RequestInfo()
    # A key pasted where the model goes is not shown, as in a body's `model`.
    assert with_target(RequestInfo(), ("AIzaSyD3xampleKeyThatIsLong0123456789", True)).model == REDACTED_MODEL
    # Through the scanner the proxy uses, a Gemini body (no `model`, no `stream`) and a form alike.
    scanner = scanner_for("application/json", None, Gemini.target_info(PATH + "?alt=sse"))
    scanner.feed_whole([b'{"contents": [{"parts": [{"text": "hi"}]}]}'])
    assert (scanner.info().model, scanner.info().stream) == ("gemini-2.5-flash", True)
    unreadable = scanner_for("application/json", None, ("m", True))
    unreadable.feed_whole([b"not json"])
    assert (unreadable.info().model, unreadable.info().stream) == ("m", True)
    assert scanner_for("application/json").info().model == UNKNOWN_MODEL


def test_a_whole_stream_is_complete_with_its_finish_usage_and_tokens() -> None:
    r = run(WHOLE)
    assert (r.outcome, r.anomalies, r.finish_reasons) == (Outcome.COMPLETE, [], ["STOP"])
    assert (r.prompt_tokens, r.completion_tokens, r.content_frames) == (4, 3, 2)


def test_a_stream_ended_before_its_finish_reason_is_truncated() -> None:
    r = run(WHOLE[:1])
    assert r.outcome is Outcome.TRUNCATED
    assert "no finishReason for each candidate" in r.reasons[0]
    # and a stream whose last chunk lost its usage is missing it (finance reads it there)
    r = run([WHOLE[0], frame({"candidates": [chunk("lo", "STOP")]})])
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, ["missing_usage"])


def test_every_candidate_must_finish() -> None:
    two = [
        frame({"candidates": [chunk("a"), chunk("b", index=1)]}),
        frame({"candidates": [chunk("a", "STOP"), chunk("b", index=1)], "usageMetadata": USAGE}),
    ]
    assert run(two).outcome is Outcome.TRUNCATED
    done = frame({"candidates": [chunk("", "MAX_TOKENS", index=1)]})
    r = run([*two, done])
    assert (r.outcome, r.finish_reasons) == (Outcome.COMPLETE, ["STOP", "MAX_TOKENS"])


def test_an_error_frame_is_an_upstream_error_and_a_blocked_prompt_its_end() -> None:
    error = frame(
        {"error": {"code": 500, "message": "An internal error has occurred.", "status": "INTERNAL"}}
    )
    r = run([WHOLE[0], error])
    assert (r.outcome, r.anomalies) == (Outcome.UPSTREAM_ERROR, ["error_event"])
    blocked = frame({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 9}})
    r = run([blocked])
    assert (r.outcome, r.finish_reasons, r.content_frames) == (Outcome.COMPLETE, ["SAFETY"], 0)


def test_function_calls_and_thoughts_are_output() -> None:
    call = {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"}
    usage = {"promptTokenCount": 30, "candidatesTokenCount": 8, "thoughtsTokenCount": 40}
    thought = frame({"candidates": [{"content": {"parts": [{"text": "Planning", "thought": True}]}}]})
    r = run(
        [
            thought,
            frame(
                {
                    "candidates": [{"content": {"parts": [call]}, "finishReason": "STOP"}],
                    "usageMetadata": usage,
                }
            ),
        ]
    )
    assert (r.outcome, r.tool_calls, r.content_frames, r.completion_tokens) == (Outcome.COMPLETE, 1, 2, 48)


def test_a_frame_with_an_event_line_is_malformed_for_googles_sdks() -> None:
    """@google/genai drops an event whose first line is not `data:`; google-genai raises on it."""
    r = run([frame({"candidates": [chunk("Hel")]}, event="message"), WHOLE[1]])
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, ["malformed_frame"])


def test_candidates_kept_are_bounded() -> None:
    many = frame({"candidates": [chunk("x", index=i) for i in range(MAX_KEYS + 50)]})
    dialect = Gemini()
    audit = StreamAudit(dialect, 0.0, event_stream=True)
    audit.feed(many, 0.1)
    r = audit.finish(0.2, End.UPSTREAM_EOF)
    assert len(dialect._open) + len(dialect._finish) == MAX_KEYS
    assert "malformed_frame" in r.anomalies and r.outcome is Outcome.TRUNCATED


def test_a_null_index_is_index_0() -> None:
    """A gateway re-serialising google-genai's objects with their nulls (`model_dump_json`)
    writes `"index": null`: its healthy streams were `truncated` (an outside review)."""
    frames = [frame({"candidates": [{**chunk("Hel"), "index": None}]})]
    frames.append(frame({"candidates": [{**chunk("lo", "STOP"), "index": None}], "usageMetadata": USAGE}))
    r = run(frames)
    assert (r.outcome, r.anomalies, r.finish_reasons, r.content_frames) == (Outcome.COMPLETE, [], ["STOP"], 2)


def test_nothing_after_an_error_frame_reaches_the_sdks_users() -> None:
    """Both SDKs raise on an error frame: a finish after it does not make the stream whole."""
    error = frame({"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}})
    r = run([WHOLE[0], error, *WHOLE[1:]])
    assert (r.outcome, r.anomalies) == (Outcome.UPSTREAM_ERROR, ["error_event"])


def test_a_frame_too_large_to_read_may_have_finished_the_candidates() -> None:
    """An image model's chunk of MBs of `inlineData` carries the finish reason; a usage chunk
    after it ended the stream: not `truncated` for a finish that could not be read."""
    image = frame(
        {
            "candidates": [
                {"content": {"parts": [{"inlineData": {"data": "A" * 4096}}]}, "finishReason": "STOP"}
            ]
        }
    )
    audit = StreamAudit(Gemini(), 0.0, event_stream=True, thresholds=Thresholds(max_frame_bytes=1024))
    for i, data in enumerate([WHOLE[0], image, frame({"usageMetadata": USAGE})]):
        audit.feed(data, 0.1 * (i + 1))
    r = audit.finish(0.5, End.UPSTREAM_EOF)
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, ["oversized_frame"])


def test_several_data_lines_in_one_event_are_malformed_for_googles_sdks() -> None:
    joined = b'data: {"candidates": [{"content": {"parts": [{"text": "a"}]}}],\r\ndata: "x": 1}\r\n\r\n'
    r = run([joined, WHOLE[1]])
    assert "malformed_frame" in r.anomalies and r.outcome is Outcome.COMPLETE


@pytest.mark.parametrize("query", ["$alt=sse", "%24alt=sse", "key=k&$alt=sse"])
def test_googles_own_spelling_of_alt_asks_for_the_stream(query: str) -> None:
    assert Gemini.target_info(f"{PATH}?{query}") == ("gemini-2.5-flash", True)


def test_output_after_a_frame_too_large_to_read_shows_it_did_not_end_the_answer() -> None:
    """An image model cut after its first image was `complete` for good (a third review)."""
    image = frame({"candidates": [{"content": {"parts": [{"inlineData": {"data": "A" * 4096}}]}}]})
    audit = StreamAudit(Gemini(), 0.0, event_stream=True, thresholds=Thresholds(max_frame_bytes=1024))
    for i, data in enumerate([WHOLE[0], image, frame({"candidates": [chunk("more text")]})]):
        audit.feed(data, 0.1 * (i + 1))
    r = audit.finish(0.5, End.UPSTREAM_EOF)
    assert (r.outcome, r.anomalies) == (Outcome.TRUNCATED, ["oversized_frame"])


def test_a_keep_alive_comment_is_malformed_for_google_genai() -> None:
    """google-genai reads every line but `data: ...` as JSON: a gateway's `: ping` makes every
    Python user's stream raise (UnknownApiResponseError); @google/genai skips it."""
    r = run([b": ping\r\n\r\n", *WHOLE])
    assert (r.outcome, r.anomalies, r.keepalives) == (Outcome.COMPLETE, ["malformed_frame"], 1)
    assert "comment line" in r.reasons[0]
    # On other routes a comment is a keep-alive and nothing more.
    audit = StreamAudit(dialect_for_route("chat_completions")(), 0.0, event_stream=True)
    audit.feed(b": ping\n\n", 0.1)
    assert "malformed_frame" not in audit.finish(0.2, End.UPSTREAM_EOF).anomalies


@pytest.mark.parametrize(
    "first",
    [
        b"id: 0\r\n" + frame({"candidates": [chunk("Hel")]}),  # google-genai raises at the id line
        frame({"candidates": [chunk("Hel")]}).replace(b"data: ", b"data:"),  # ... at `data:` bare
        # ... and at any other line (the second pass over this fix)
        b"id:\r\n" + frame({"candidates": [chunk("Hel")]}),  # an empty id resets the last one
        b"retry: 3000\r\n\r\n" + frame({"candidates": [chunk("Hel")]}),
        b"retry: 3000\r\n" + frame({"candidates": [chunk("Hel")]}),
        b"event: ping\r\n\r\n" + frame({"candidates": [chunk("Hel")]}),
        b"foo: bar\r\n" + frame({"candidates": [chunk("Hel")]}),
    ],
    ids=[
        "id-line",
        "data-without-space",
        "empty-id",
        "retry-alone",
        "retry-in-frame",
        "event-only",
        "unknown-field",
    ],
)
@pytest.mark.parametrize("split", [False, True])
def test_any_line_but_data_with_its_space_is_malformed_for_google_genai(first: bytes, split: bool) -> None:
    """google-genai raises `UnknownApiResponseError` at any line but `data: ...` (an `id:` line,
    `data:` without the space, `retry:`, an unknown field), and @google/genai yields nothing of
    a stream whose frames carry `id:`; each was `complete` with no anomaly (a review with the
    SDKs). In one read or alone."""
    frames = [first + WHOLE[1]] if split else [first, WHOLE[1]]
    r = run(frames)
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, ["malformed_frame"]), r
    assert run([WHOLE[0] + WHOLE[1]] if split else WHOLE).anomalies == []  # the same, spaced
