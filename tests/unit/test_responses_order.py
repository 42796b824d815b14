"""The order of a Responses stream as the openai SDKs' stream helpers read it
(core/dialects/responses_order.py): cases an outside review found, each checked against the
real helpers (tests/interop/test_responses_helpers.py holds the differential test)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sse_audit_proxy.core.audit import End, StreamAudit
from sse_audit_proxy.core.dialects import dialect_for_route

USAGE = {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}


def run(*events: dict[str, Any] | bytes) -> list[str]:
    audit = StreamAudit(dialect_for_route("responses")(), 0.0)
    for n, event in enumerate(events):
        data = event if isinstance(event, bytes) else json.dumps({**event, "sequence_number": n}).encode()
        audit.feed(b"data: " + data + b"\n\n", 0.01 * (n + 1))
    return audit.finish(1.0, End.UPSTREAM_EOF).anomalies


def created(response_id: Any = "resp_1", output: list[Any] | None = None) -> dict[str, Any]:
    return {"type": "response.created", "response": {"id": response_id, "output": output or []}}


def completed(output: list[Any], response_id: Any = "resp_1") -> dict[str, Any]:
    return {"type": "response.completed", "response": {"id": response_id, "usage": USAGE, "output": output}}


def added(index: Any, item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "response.output_item.added", "output_index": index, "item": item}


def done(index: Any, item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "response.output_item.done", "output_index": index, "item": item}


MESSAGE = {"type": "message", "content": []}


def test_an_id_nested_as_deep_as_the_parser_allows_is_no_crash() -> None:
    deep = b"[" * 990 + b'"x"' + b"]" * 990  # (hashing its text recursed: RecursionError)
    item = b'{"type":"response.output_item.added","sequence_number":1,"output_index":0,'
    item += b'"item":{"type":"message","content":[],"id":' + deep + b"}}"
    # (an item neither done nor in the output: Python refuses to complete the response)
    assert run(created(), item, completed([])) == ["malformed_frame"]


def test_a_response_id_that_changes_is_malformed() -> None:
    assert run(created("resp_1"), completed([], "resp_2")) == ["malformed_frame"]
    assert run(created("resp_1"), completed([], "resp_1")) == []


def test_a_lifecycle_event_without_a_response_object_is_malformed() -> None:
    assert "malformed_frame" in run({"type": "response.created", "response": None}, completed([]))


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"type": "message", "content": []}, {"type": "message", "content": []}),  # no ids
        ({"type": "message", "id": "m", "content": []}, {"type": "message", "id": "m", "content": []}),
        (
            {"type": "function_call", "call_id": "c", "arguments": "{}"},
            {"type": "function_call", "call_id": "c", "arguments": "{}"},
        ),
    ],
)
def test_two_items_done_as_one_are_malformed(first: dict[str, Any], second: dict[str, Any]) -> None:
    # Python: "Response snapshot has conflicting output identities."
    events = [created(), added(0, first), done(0, first), added(1, second), done(1, second)]
    assert run(*events, completed([first, second])) == ["malformed_frame"]
    other = {**second, "id": "m2", "call_id": "c2"}
    assert (
        run(
            created(),
            added(0, first),
            done(0, first),
            added(1, other),
            done(1, other),
            completed([first, other]),
        )
        == []
    )


def test_a_reasoning_text_part_done_must_have_been_added() -> None:
    item = {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": ""}]}
    part = {"type": "reasoning_text", "text": "t"}
    ok = {"type": "response.content_part.done", "output_index": 0, "content_index": 0, "part": part}
    assert run(created(), added(0, item), ok, done(0, item), completed([item])) == []
    gone = {**ok, "content_index": 1}  # TypeScript: "missing content at index 1"
    assert run(created(), added(0, item), gone, done(0, item), completed([item])) == ["malformed_frame"]


@pytest.mark.parametrize(
    ("index", "malformed"), [(0, False), (0.0, False), ("0", False), (True, True), ("00", True)]
)
def test_an_index_is_read_as_both_helpers_read_it(index: Any, malformed: bool) -> None:
    part = {"type": "response.content_part.added", "output_index": index, "part": {"type": "output_text"}}
    events = [created(), added(0, MESSAGE), part, done(0, MESSAGE), completed([MESSAGE])]
    assert run(*events) == (["malformed_frame"] if malformed else [])


def test_a_flood_of_parts_is_not_held() -> None:
    messages = [
        {"type": "message", "id": f"m{i}", "content": [{"type": "output_text"}] * 256} for i in range(8)
    ]
    assert run(created(output=messages), completed([])) == []  # past 1,024 parts: not judged


CALL = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "arguments": "{}"}
TEXT = {"type": "message", "id": "msg_1", "content": [{"type": "output_text", "text": "Hi"}]}


@pytest.mark.parametrize(
    ("listed", "anomalies"),
    [
        ([TEXT, CALL], []),
        ([], ["malformed_frame"]),  # ChatGPT's Codex backend: both helpers' final output is empty
        ([TEXT], ["malformed_frame"]),  # the Agents SDK runs no tool call left out
        ([CALL], ["malformed_frame"]),
        ([CALL, TEXT], []),  # another order: each held by its identity
        ([TEXT, TEXT], ["malformed_frame"]),  # the call's place taken by another item
        ([TEXT, {"type": "reasoning", "id": "rs_x", "summary": []}], ["malformed_frame"]),
    ],
)
def test_an_item_streamed_and_done_must_be_in_the_completed_output(
    listed: list[Any], anomalies: list[str]
) -> None:
    """Both helpers' final response is the completed event's: what it leaves out of the items
    streamed and done is lost to their callers (an outside review)."""
    message = {**TEXT, "content": []}
    events = [
        created(),
        added(0, message),
        {
            "type": "response.content_part.added",
            "output_index": 0,
            "content_index": 0,
            "part": TEXT["content"][0],
        },
        {"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "delta": "Hi"},
        done(0, TEXT),
        added(1, {**CALL, "arguments": ""}),
        done(1, CALL),
        completed(listed),
    ]
    assert run(*events) == anomalies


def test_response_done_as_the_end_is_malformed() -> None:
    """Both helpers wait for `response.completed` (Python: "Didn't receive a
    `response.completed` event"; npm: an unhandled event), and so does the Agents SDK's run."""
    end = {
        "type": "response.done",
        "response": {"id": "resp_1", "usage": USAGE, "status": "completed", "output": []},
    }
    audit = StreamAudit(dialect_for_route("responses")(), 0.0)
    for n, event in enumerate([created(), end]):
        audit.feed(b"data: " + json.dumps({**event, "sequence_number": n}).encode() + b"\n\n", 0.01 * (n + 1))
    r = audit.finish(1.0, End.UPSTREAM_EOF)
    assert (r.outcome.value, r.anomalies) == ("complete", ["malformed_frame"])


def test_final_items_may_carry_ids_the_streamed_ones_lacked() -> None:
    """Held at its place by an item of its type: a gateway that gives the completed output's
    items their ids (the streamed ones had none) loses nothing for the helpers."""
    message = {"type": "message", "content": [{"type": "output_text", "text": "Hi"}]}
    events = [created(), added(0, {**message, "content": []}), done(0, message)]
    assert run(*events, completed([{**message, "id": "msg_late"}])) == []
    assert run(*events, completed([])) == ["malformed_frame"]
