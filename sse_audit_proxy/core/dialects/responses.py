"""OpenAI Responses streams (`/v1/responses`): typed events, one JSON object per frame.

The type is read from the JSON `type` (the `event:` line is only a fallback: gateways drop
it). Output deltas are content; `response.completed` (or `response.done`, which some
gateways send instead) ends the stream normally and carries usage; `response.incomplete`
ends it with `incomplete_details.reason` as the finish reason; `response.failed` and
`error` end it with `failed`. `[DONE]` is optional here. `sequence_number` must rise by
exactly one per event: any other step is reported once as `sequence_gap`.

The openai SDKs' stream helpers build the response from the events and raise on a stream out
of order (responses_order.py): each event they raise on is a `malformed_frame`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sse_audit_proxy.core.dialects.base import (
    CONTENT,
    ERROR,
    FINISH,
    KEEPALIVE,
    MAX_KEYS,
    SHAPE,
    TERMINAL,
    USAGE,
    held_usage,
    id_key,
    load_object,
)
from sse_audit_proxy.core.dialects.responses_order import SETS_UP, ResponsesOrder
from sse_audit_proxy.core.dialects.typed import TypedEvents

SEQUENCE_GAP = "sequence_gap"

_FUNCTION_ARGS_DELTA = "response.function_call_arguments.delta"
# Output items that are calls the client carries out, besides `function_call`: their input is
# free text or actions, not JSON arguments, so they are counted (`tool_calls`), not judged.
_FREE_CALLS = frozenset(
    {"custom_tool_call", "computer_call", "local_shell_call", "shell_call", "apply_patch_call"}
)
# Deltas of model output, each with a string `delta` (text, reasoning, tool input, audio).
_CONTENT_DELTAS = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.reasoning_text.delta",
        "response.reasoning_summary_text.delta",
        _FUNCTION_ARGS_DELTA,
        "response.custom_tool_call_input.delta",
        "response.mcp_call_arguments.delta",
        "response.code_interpreter_call_code.delta",
        "response.audio.delta",
        "response.audio.transcript.delta",
    }
)
# Terminal events carrying the final `response` object, with the status each implies.
_ENDS = {
    "response.completed": "completed",
    "response.done": None,  # gateways' name for the end: the response's own status decides
    "response.incomplete": "incomplete",
    "response.failed": "failed",
}
_DONE = "response.done"
_FUNCTION_ARGS_DONE = "response.function_call_arguments.done"
_ITEM_EVENTS = frozenset({"response.output_item.added", "response.output_item.done"})


class Responses(TypedEvents):
    route = "responses"
    always_streams = True
    path_suffixes = ("/responses",)
    member_of = ("/responses",)  # GET /v1/responses/{id}?stream=true
    expects_done = False  # OpenAI sends none; some gateways append one
    expects_finish_reason = False  # the finish is the terminal event: without one, `truncated`
    usage_always = True  # every terminal response object carries usage
    # (an event both helpers pass over: frames rebuilt from `response.created` made new items)
    replay_filler: ClassVar[dict[str, Any] | None] = {
        "event": "response.audio.done",
        "data": {"type": "response.audio.done", "sequence_number": 0},
    }
    openai_sdk = True
    extra_anomalies: ClassVar[dict[str, str]] = {
        SEQUENCE_GAP: "(Responses) an event's `sequence_number` was not the previous one plus one"
    }

    __slots__ = ("_holes", "_items", "_order", "_seq", "_seq_breaks")

    def __init__(self) -> None:
        super().__init__()
        self._seq: int | None = None
        self._seq_breaks = 0
        self._holes = 0  # frames too large to read since the last numbered one: their numbers
        self._items: dict[str, int] = {}  # output item id -> output_index
        self._order = ResponsesOrder()  # what the SDKs' stream helpers raise on

    def _sequence(self, doc: dict[str, Any]) -> None:
        seq = doc.get("sequence_number")
        if type(seq) is int:
            if self._seq is not None and seq != self._seq + 1 + self._holes:
                self._seq_breaks += 1
            self._seq = seq
            self._holes = 0

    def trusts_type(self, name: str) -> bool:
        return name not in _ENDS or _ENDS[name] == "failed"  # a failure either way: see base

    def observe_unread(self, name: str) -> int | None:
        # Each takes one number, exactly where it came: not a gap, and no cover for one (a
        # count of them forgiven at the end hid an event lost before a last one: an outside
        # review).
        self._holes += 1
        self._order.unknown(name)
        return super().observe_unread(name)

    def _error_event(self, data: bytes) -> None:
        self._order.failed_first()
        doc = load_object(data)  # numbered like every other event
        if doc is not None:
            self._sequence(doc)

    def _on(self, kind: str, doc: dict[str, Any]) -> int:
        self._sequence(doc)
        order = self._order
        breaks = order.breaks
        order.event(kind, doc)
        self._malformed += order.breaks - breaks
        bits = self._read(kind, doc)
        return bits | SHAPE if kind in SETS_UP else bits

    def _read(self, kind: str, doc: dict[str, Any]) -> int:
        if kind in _CONTENT_DELTAS:
            return self._delta(kind, doc)
        if kind in _ENDS:
            if kind == _DONE:
                # Both SDKs' stream helpers raise on it (Python: no `response.completed`; npm:
                # an unhandled event), and so does the Agents SDK's run: an outside review.
                self._malformed += 1
            return self._end(_ENDS[kind], doc)
        if kind == "error":
            self._fail()
            return TERMINAL | ERROR
        if kind == "keepalive":  # OpenAI's, while a long reasoning writes nothing: not output
            return KEEPALIVE
        if kind == _FUNCTION_ARGS_DONE:
            arguments = doc.get("arguments")
            key = self._call_key(doc, doc.get("item_id"))
            if key is None or not isinstance(arguments, str):
                self._malformed += 1
            else:
                self._tools.complete(key, arguments)
        elif kind in _ITEM_EVENTS:
            self._item(kind, doc)
        return 0

    def _delta(self, kind: str, doc: dict[str, Any]) -> int:
        delta = doc.get("delta")
        if not isinstance(delta, str):
            self._malformed += 1
            return 0
        if kind == _FUNCTION_ARGS_DELTA:
            key = self._call_key(doc, doc.get("item_id"))
            if key is None:
                self._malformed += 1
            else:
                self._tools.append(key, delta)
        return CONTENT if delta else 0

    def _item(self, kind: str, doc: dict[str, Any]) -> None:
        item = doc.get("item")
        if not isinstance(item, dict):
            self._malformed += 1
            return
        kind_of_item = item.get("type")
        if kind_of_item != "function_call" and not (
            isinstance(kind_of_item, str) and kind_of_item in _FREE_CALLS
        ):
            return  # (an upstream's `type` can be any JSON value: a dict is not hashable)
        key = self._call_key(doc, item.get("id"))
        if key is None:
            self._malformed += 1
            return
        if kind_of_item != "function_call":
            self._tools.open_free(key)
            return
        self._tools.open(key)
        arguments = item.get("arguments")
        if kind == "response.output_item.done" and isinstance(arguments, str):
            self._tools.complete(key, arguments)

    def _call_key(self, doc: dict[str, Any], item_id: Any) -> object | None:
        """Arguments are assembled per output item: by `output_index`, else by item id."""
        index = doc.get("output_index")
        if isinstance(item_id, str):
            item_id = id_key(item_id)
        if type(index) is int:
            items = self._items
            if isinstance(item_id, str) and (item_id in items or len(items) < MAX_KEYS):
                items[item_id] = index
            return index
        if isinstance(item_id, str) and item_id:
            return self._items.get(item_id, item_id)
        return None

    def _end(self, status: str | None, doc: dict[str, Any]) -> int:
        self._terminal = True
        response = doc.get("response")
        if not isinstance(response, dict):
            self._malformed += 1  # the end is clear, what it says is not
            response = {}
        bits = TERMINAL
        usage = response.get("usage")
        if usage:
            self._usage = held_usage(usage)
            bits |= USAGE
        if status is None:
            status = response.get("status")
            if not isinstance(status, str) or not status:
                status = "completed"
        if status == "failed":
            self._fail()
            return bits | ERROR
        if status == "incomplete":
            details = response.get("incomplete_details")
            reason = details.get("reason") if isinstance(details, dict) else None
            self._finished(reason if isinstance(reason, str) and reason else "incomplete")
        else:
            self._finished(status)  # `completed`, or `cancelled` for a cancelled response
        return bits | FINISH

    def _fail(self) -> None:
        super()._fail()
        self._finish = "failed"

    def _named(self, name: str) -> int:
        # A Responses image stream's `response.completed` carries its images: too large to
        # read, but its name says the stream ended; a cut after a partial image does not.
        if name in _ENDS:
            return self._end(_ENDS[name], {"response": {}})  # its status and usage are unknown
        return CONTENT if name in _CONTENT_DELTAS else 0

    def _anomalies(self) -> tuple[str, ...]:
        return (SEQUENCE_GAP,) if self._seq_breaks else ()
