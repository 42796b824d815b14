"""Frames over --max-frame-bytes: relayed, not read, and never taken for a fault of the stream.

A Responses stream with the `image_generation` tool carries the image, base64, in its
`partial_image`, `output_item.done` and `response.completed` frames: several MiB each. Skipped
whole, the last of them took the end marker with it, and a valid stream was judged
`truncated` with `missing_usage`, `sequence_gap` and `malformed_frame`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from sse_audit_proxy.core.audit import End, Outcome, StreamAudit, StreamResult, Thresholds
from sse_audit_proxy.core.dialects import dialect_for_route
from sse_audit_proxy.core.skeleton import split_entry
from sse_audit_proxy.tools.case import materialise

CAP = 4096
IMAGE = "iVBORw0KGgo" * 1000  # 11 KB of base64, larger than CAP
USAGE = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}


def frame(doc: dict[str, Any]) -> bytes:
    return f"event: {doc['type']}\ndata: {json.dumps(doc)}\n\n".encode()


def audit(route: str, reads: list[bytes], end: End = End.UPSTREAM_EOF, **kwargs: Any) -> StreamResult:
    a = StreamAudit(dialect_for_route(route)(), 0.0, thresholds=Thresholds(max_frame_bytes=CAP), **kwargs)
    t = 0.0
    for read in reads:
        t += 0.02
        # An upstream writes a large frame in pieces: the cap trips mid-frame, as on the wire.
        for i in range(0, len(read), 1500):
            a.feed(read[i : i + 1500], t)
    return a.finish(t + 0.01, end)


def image_stream(*, last_small: bool = False, terminal: bool = True) -> list[bytes]:
    """OpenAI's Responses stream with the image_generation tool, sequence numbers and all."""
    done_response = {"id": "resp_1", "status": "completed", "usage": USAGE}
    item = {"id": "ig_1", "type": "image_generation_call", "status": "completed", "result": IMAGE}
    docs = [
        {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}},
        {"type": "response.output_item.added", "output_index": 0, "item": {**item, "result": None}},
        {"type": "response.image_generation_call.partial_image", "partial_image_b64": IMAGE},
        {
            "type": "response.output_item.added",
            "output_index": 1,
            "item": {"id": "m", "type": "message", "content": []},
        },
        {"type": "response.content_part.added", "output_index": 1, "part": {"type": "output_text"}},
        {
            "type": "response.output_text.delta",
            "output_index": 1,
            "content_index": 0,
            "item_id": "m",
            "delta": "Here",
        },
        {"type": "response.output_item.done", "output_index": 0, "item": item},
    ]
    if terminal:
        output = [] if last_small else [item]
        docs.append({"type": "response.completed", "response": {**done_response, "output": output}})
    return [frame({**doc, "sequence_number": n}) for n, doc in enumerate(docs)]


def test_an_image_stream_whose_last_frame_is_too_large_is_complete() -> None:
    r = audit("responses", image_stream())
    assert r.outcome is Outcome.COMPLETE
    assert r.anomalies == ["oversized_frame"]  # not truncated, missing_usage, sequence_gap
    assert r.content_frames == 1


def test_a_lost_event_before_a_last_frame_too_large_is_still_a_gap() -> None:
    """Each unread frame forgave one break of the numbering, anywhere: the last one, which
    broke none (nothing came after it), hid an event lost before it (an outside review)."""
    frames = image_stream()
    lost = frames[:1] + frames[2:]  # `output_item.added`, sequence number 1, never came
    r = audit("responses", lost)
    # (and the next item added is at index 1 of none: the TypeScript helper raises there)
    assert sorted(r.anomalies) == ["malformed_frame", "oversized_frame", "sequence_gap"]
    assert audit("responses", frames).anomalies == ["oversized_frame"]


def test_a_large_frame_before_a_readable_end_keeps_every_rule() -> None:
    r = audit("responses", image_stream(last_small=True))
    assert r.outcome is Outcome.COMPLETE
    assert r.anomalies == ["oversized_frame"]  # the skipped frames' numbers are no gap
    assert r.usage == USAGE


def test_a_stream_cut_after_a_large_frame_is_still_truncated() -> None:
    # The last frame whole but unnamed (no `event:` line, its data not beginning with its
    # type), then a broken connection: it may not have been the end.
    unnamed = [data_only({"sequence_number": n, **doc}) for n, doc in enumerate(docs_of(image_stream()))]
    broken = audit("responses", unnamed, end=End.UPSTREAM_BROKEN)
    assert broken.outcome is Outcome.TRUNCATED
    # Named `response.completed` by its `event:` line, it was the end, whatever came after it.
    assert audit("responses", image_stream(), end=End.UPSTREAM_BROKEN).outcome is Outcome.COMPLETE
    # By its data's leading type alone, not: the object unread may not parse, or say more
    # after its first key (an `error`), and the SDK then sees no end (a second review).
    typed = [read.split(b"\n", 1)[1] for read in image_stream()]
    assert audit("responses", typed, end=End.UPSTREAM_BROKEN).outcome is Outcome.TRUNCATED
    # Frames after the large one, then a clean end without the end marker: it was not in it.
    reads = [*image_stream(terminal=False), frame({"type": "response.in_progress", "sequence_number": 7})]
    cut = audit("responses", reads)
    assert cut.outcome is Outcome.TRUNCATED
    # Usage may have been in the frame not read: not called missing.
    assert cut.anomalies == ["oversized_frame"]


def test_a_stream_cut_cleanly_after_a_large_partial_image_is_truncated() -> None:
    """An image stream cut after a partial image, the body ended cleanly (a gateway whose
    handler returned): the skipped frame's `event:` line says it was not the end. It was
    judged on the connection alone: `complete`."""
    reads = image_stream(terminal=False)[:3]  # ... the partial image, and nothing more
    r = audit("responses", reads)
    assert r.outcome is Outcome.TRUNCATED and r.anomalies == ["oversized_frame"]
    for route, kind in [("images", "image_generation.partial_image"), ("images", "image_edit.partial_image")]:
        cut = audit(route, [frame({"type": kind, "b64_json": IMAGE})])
        assert cut.outcome is Outcome.TRUNCATED, route
    whole = [frame({"type": "image_generation.partial_image", "b64_json": IMAGE})]
    whole.append(frame({"type": "image_generation.completed", "b64_json": IMAGE, "usage": USAGE}))
    assert audit("images", whole).outcome is Outcome.COMPLETE


def test_a_large_frame_that_never_ended_is_no_end_marker() -> None:
    reads = image_stream(terminal=False)
    unfinished = frame({"type": "response.completed", "response": {"output": [IMAGE]}})[:-2]
    r = audit("responses", [*reads, unfinished])
    assert r.outcome is Outcome.TRUNCATED
    assert r.unterminated_frame


@pytest.mark.parametrize("tail", [b"", b": keep-alive\n\n"])
def test_chat_whose_last_frame_is_too_large_is_judged_on_the_connection(tail: bytes) -> None:
    content = {"choices": [{"index": 0, "delta": {"content": "hi"}}]}
    big = {"choices": [{"index": 0, "delta": {"content": IMAGE}, "finish_reason": "stop"}]}
    reads = [f"data: {json.dumps(content)}\n\n".encode(), f"data: {json.dumps(big)}\n\n".encode() + tail]
    clean = audit("chat_completions", reads)
    assert (clean.outcome, clean.anomalies) == (Outcome.COMPLETE, ["oversized_frame"])
    # With [DONE] after it, it ended as it should; the finish_reason was in the frame not read.
    done = audit("chat_completions", [*reads, b"data: [DONE]\n\n"])
    assert (done.outcome, done.anomalies) == (Outcome.COMPLETE, ["oversized_frame"])
    # Without [DONE] after readable frames, that is still missing: [DONE] comes last.
    cut = audit("chat_completions", [*reads, f"data: {json.dumps(content)}\n\n".encode()])
    assert (cut.outcome, cut.anomalies) == (Outcome.TRUNCATED, ["missing_done", "oversized_frame"])


def test_an_image_streams_large_partial_images_are_its_content() -> None:
    """gpt-image-1's streams: every partial image is a frame of several MiB. Skipped unread,
    they were no frames at all: no TTFT, no gaps, 0 content frames. Their `event:` lines say
    what they are, so they are timed as the content they are (and still `oversized_frame`)."""
    kinds = ["image_generation.partial_image"] * 3 + ["image_generation.completed"]
    reads = [frame({"type": kind, "b64_json": IMAGE, "index": i}) for i, kind in enumerate(kinds)]
    r = audit("images", reads)
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, ["oversized_frame"])
    assert (r.frames, r.content_frames) == (4, 3)
    assert r.ttft == pytest.approx(0.02)  # the first partial image's read (audit() paces 20 ms)
    assert r.max_gap == pytest.approx(0.02)


def test_an_unread_frame_is_kept_as_its_name_and_size_and_replays_unread() -> None:
    big = frame({"type": "image_generation.partial_image", "b64_json": IMAGE})
    r = audit("images", [big])
    number, bits, doc = split_entry(r.skeletons[0])
    assert (number, bits) == (1, 1)  # the first frame, content
    assert doc == {"bytes": len(big), "event": "image_generation.partial_image", "raw": True, "unread": True}
    # Rebuilt from its skeleton (evidence replays), it is as large again: unread again.
    again = audit("images", [materialise(doc)])
    assert (again.frames, again.content_frames, again.anomalies) == (1, 1, ["oversized_frame"])


def data_only(doc: dict[str, Any]) -> bytes:
    """A frame without its `event:` line (a gateway that rewrites the stream); the SDKs read
    the event's type from the JSON."""
    return f"data: {json.dumps(doc)}\n\n".encode()


def test_a_large_frame_without_an_event_line_is_named_by_its_leading_type() -> None:
    """A 3 MiB partial image with no `event:` line went unnamed: a stream cut cleanly after
    two of them was `complete`, with no content frame and no TTFT (an outside review)."""
    kinds = ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    docs = [{"type": kind, "b64_json": IMAGE, "index": i} for i, kind in enumerate(kinds)]
    whole = audit("images", [data_only(doc) for doc in docs])
    assert (whole.outcome, whole.anomalies) == (Outcome.COMPLETE, ["oversized_frame"])
    assert (whole.frames, whole.content_frames) == (3, 2)
    assert whole.ttft == pytest.approx(0.02)
    # An end is not taken from the type (see above): the last frame, unknown, leaves the end
    # to the connection.
    broken = audit("images", [data_only(doc) for doc in docs], end=End.UPSTREAM_BROKEN)
    assert broken.outcome is Outcome.TRUNCATED
    cut = audit("images", [data_only(doc) for doc in docs[:2]])
    assert (cut.outcome, cut.content_frames) == (Outcome.TRUNCATED, 2)
    # Its skeleton keeps the type, and a replay of the evidence gives the same verdict.
    _, _, skeleton = split_entry(cut.skeletons[0])
    assert skeleton["type"] == "image_generation.partial_image" and "event" not in skeleton
    again = audit("images", [materialise(split_entry(entry)[2]) for entry in cut.skeletons])
    assert (again.outcome, again.content_frames) == (Outcome.TRUNCATED, 2)
    # Responses too: the image tool's partial image, then a clean end without response.completed.
    responses = audit("responses", [data_only(doc) for doc in docs_of(image_stream(terminal=False)[:3])])
    assert responses.outcome is Outcome.TRUNCATED


@pytest.mark.parametrize(
    "doc",
    [
        {"b64_json": IMAGE, "type": "image_generation.completed"},  # not the first key
        {"item": {"type": "image_generation.completed"}, "b64_json": IMAGE},  # not its own
        {"type": "bad name with spaces", "b64_json": IMAGE},
    ],
)
def test_only_a_leading_type_of_the_frames_own_names_it(doc: dict[str, Any]) -> None:
    """Read from the data's first bytes, the type is the object's own first key or nothing:
    an unnamed frame is judged on the connection, as before."""
    partial = data_only({"type": "image_generation.partial_image", "b64_json": IMAGE})
    r = audit("images", [partial, data_only(doc)])
    assert r.content_frames == 1  # the partial image, named; the last frame unnamed
    assert r.outcome is Outcome.COMPLETE  # judged on the clean end, as an unknown last frame is


def docs_of(frames: list[bytes]) -> list[dict[str, Any]]:
    return [json.loads(f.split(b"data: ", 1)[1]) for f in frames]


@pytest.mark.parametrize("end", [End.UPSTREAM_EOF, End.UPSTREAM_BROKEN])
def test_a_large_failure_without_an_event_line_is_a_failure_by_its_type(end: End) -> None:
    """A last `response.failed` too large to read, data-only: parsed, the SDK yields the
    failure; unparsed, it raises. Either way not `complete`, which it was left unnamed (a
    third pass)."""
    reads = image_stream(terminal=False)[:3]
    failed = {"type": "response.failed", "response": {"status": "failed", "output": [IMAGE]}}
    r = audit("responses", [*reads, data_only({**failed, "sequence_number": 3})], end=end)
    assert r.outcome is Outcome.UPSTREAM_ERROR
    assert "error_event" in r.anomalies and "oversized_frame" in r.anomalies
    error = audit("images", [data_only({"type": "error", "error": {"message": IMAGE}})], end=end)
    assert error.outcome is Outcome.UPSTREAM_ERROR


def test_every_unread_frame_keeps_its_skeleton_so_evidence_replays_it() -> None:
    """Only a kind's first frame kept its skeleton: a later oversized one came back from the
    evidence a small filler, read, and the replay's verdict differed (a third pass)."""
    item = {"type": "response.output_item.done", "output_index": 0, "item": {"result": IMAGE}}
    reads = [*image_stream(terminal=False)[:3], data_only({**item, "sequence_number": 3})]
    r = audit("responses", reads)
    unread = [split_entry(e)[2] for e in r.skeletons if split_entry(e)[2].get("unread")]
    assert len(unread) == 2  # the partial image's and the item's
    again = audit("responses", [materialise(split_entry(e)[2]) for e in r.skeletons])
    assert again.anomalies.count("oversized_frame") == 1 and again.frames >= 2
