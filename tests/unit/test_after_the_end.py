"""What the official SDKs read around a typed stream's end, and so what a verdict counts.

The openai SDKs stop reading at `[DONE]` and raise at a frame whose data has a non-empty
`error`, on every route of theirs (Responses, Assistants, images, speech, transcriptions); they
pass a typed `error` event on and read on. The Anthropic SDKs skip a frame without its
`event:` line, and raise at `event: error` wherever it comes. An outside review served each
stream below to the SDKs and compared what their callers got with the verdict.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from sse_audit_proxy.core.audit import End, StreamAudit
from sse_audit_proxy.core.dialects import dialect_for_route

DONE = b"data: [DONE]\n\n"
USAGE = {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}


def named(obj: dict[str, Any]) -> bytes:
    return ("event: " + obj["type"] + "\ndata: " + json.dumps(obj) + "\n\n").encode()


def unnamed(obj: dict[str, Any]) -> bytes:
    return ("data: " + json.dumps(obj) + "\n\n").encode()


START = [
    named({"type": "response.created", "response": {"status": "in_progress"}}),
    named(
        {"type": "response.output_item.added", "output_index": 0, "item": {"type": "message", "content": []}}
    ),
    named({"type": "response.content_part.added", "output_index": 0, "part": {"type": "output_text"}}),
    named({"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "delta": "Hi"}),
]
OUTPUT = [{"type": "message", "content": [{"type": "output_text", "text": "Hi"}]}]  # (the helpers need it)
COMPLETED = named(
    {"type": "response.completed", "response": {"status": "completed", "usage": USAGE, "output": OUTPUT}}
)
COMPLETED_NO_USAGE = named(
    {"type": "response.completed", "response": {"status": "completed", "output": OUTPUT}}
)
ERROR_FRAME = unnamed({"error": {"message": "boom", "type": "server_error"}})
ERROR_EVENT = named({"type": "error", "code": "server_error", "message": "boom"})

MESSAGE = [
    named(
        {"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 5, "output_tokens": 1}}}
    ),
    named({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    named({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
    named({"type": "content_block_stop", "index": 0}),
    named({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}}),
    named({"type": "message_stop"}),
]
OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "x"}}


def verdict(route: str, frames: list[bytes]) -> tuple[str, list[str]]:
    audit = StreamAudit(dialect_for_route(route)(), 0.0, include_usage=True)
    t = 0.2
    for data in frames:
        audit.feed(data, t)
        t += 0.01
    r = audit.finish(t, End.UPSTREAM_EOF)
    return r.outcome.value, r.anomalies


@pytest.mark.parametrize(
    ("route", "frames", "want"),
    [
        # the SDKs stopped at [DONE]: the answer was whole (was upstream_error)
        ("responses", [*START, COMPLETED, DONE, ERROR_FRAME], ("complete", [])),
        # ... and never saw the completion: the stream helper raises "Didn't receive a
        # `response.completed` event" (was complete)
        ("responses", [*START, DONE, COMPLETED], ("truncated", ["missing_usage"])),
        # ... nor the usage of a second completion (was complete, usage present)
        ("responses", [*START, COMPLETED_NO_USAGE, DONE, COMPLETED], ("complete", ["missing_usage"])),
        # they raised at the error frame: the completion after it never reached the caller
        # (was complete + error_event)
        ("responses", [*START, ERROR_FRAME, COMPLETED], ("upstream_error", ["error_event"])),
        # a typed error event after the completion is passed on: the answer was whole (was
        # upstream_error), as one before a completion is
        ("responses", [*START, COMPLETED, ERROR_EVENT], ("complete", ["error_event"])),
        ("responses", [*START, ERROR_EVENT, COMPLETED], ("complete", ["error_event"])),
        # Anthropic's SDKs skip an error frame without its `event:` line: the message was
        # whole (was upstream_error + malformed_frame + error_event)
        ("messages", [*MESSAGE[:3], unnamed(OVERLOADED), *MESSAGE[3:]], ("complete", ["malformed_frame"])),
        # ... and raise at `event: error`, after `message_stop` too
        ("messages", [*MESSAGE, named(OVERLOADED)], ("upstream_error", ["error_event"])),
    ],
    ids=[
        "error_after_done",
        "completed_after_done",
        "usage_after_done",
        "error_frame_then_completed",
        "typed_error_after_completed",
        "typed_error_before_completed",
        "anthropic_error_without_event_line",
        "anthropic_error_event_after_stop",
    ],
)
def test_the_verdict_counts_what_the_sdks_callers_got(
    route: str, frames: list[bytes], want: tuple[str, list[str]]
) -> None:
    assert verdict(route, frames) == want


def _untyped(frame: bytes) -> bytes:
    """The frame with its data's `type` taken out (its `event:` line kept)."""
    head, _, data = frame.partition(b"\ndata: ")
    doc = json.loads(data)
    del doc["type"]
    return head + b"\ndata: " + json.dumps(doc).encode() + b"\n\n"


@pytest.mark.parametrize(
    ("frames", "want"),
    [
        # The SDK reads a frame by its data's `type`: a delta without one loses its text, a
        # message_delta its stop reason, and the stream helper raises on a message_start
        # without one (were complete with no anomaly)
        ([*MESSAGE[:2], _untyped(MESSAGE[2]), *MESSAGE[3:]], ("complete", ["malformed_frame"])),
        (
            [*MESSAGE[:4], _untyped(MESSAGE[4]), MESSAGE[5]],
            ("complete", ["missing_finish_reason", "malformed_frame"]),
        ),
        ([_untyped(MESSAGE[0]), *MESSAGE[1:]], ("complete", ["malformed_frame"])),
        # A message_stop, a content_block_stop or an event the SDK does not know lose nothing
        # without a type (the second pass: a vendor's `event: keepalive` with `{}` was flagged)
        ([*MESSAGE[:5], _untyped(MESSAGE[5])], ("complete", [])),
        ([*MESSAGE[:3], _untyped(MESSAGE[3]), *MESSAGE[4:]], ("complete", [])),
        ([*MESSAGE[:2], b"event: keepalive\ndata: {}\n\n", *MESSAGE[2:]], ("complete", [])),
        # The stream helper raises at message_delta when message_start had no usage (AttributeError)
        (
            [named({"type": "message_start", "message": {"id": "m"}}), *MESSAGE[1:]],
            ("complete", ["malformed_frame"]),
        ),
        (
            [named({"type": "message_start", "message": {"id": "m", "usage": None}}), *MESSAGE[1:]],
            ("complete", ["malformed_frame"]),
        ),
        # ... and not without one (no stop reason then: missing_finish_reason says it)
        (
            [named({"type": "message_start", "message": {"id": "m"}}), *MESSAGE[1:4], MESSAGE[5]],
            ("complete", ["missing_finish_reason", "missing_usage"]),
        ),
    ],
    ids=[
        "delta",
        "message_delta",
        "message_start",
        "message_stop",
        "content_block_stop",
        "unknown-event",
        "start-no-usage",
        "start-usage-null",
        "start-no-usage-no-delta",
    ],
)
def test_anthropic_frames_the_sdk_cannot_read_by_their_type_are_malformed(
    frames: list[bytes], want: tuple[str, list[str]]
) -> None:
    assert verdict("messages", frames) == want
