"""The order of a Responses stream's events, as the openai SDKs' stream helpers read it.

Both helpers build the response from the events and raise where the order breaks (Python's
`client.responses.stream()`, TypeScript's `ResponseStream`): the TypeScript one keeps the
output items in a list, by position, and each message's content parts and each reasoning
item's content and summary parts likewise; the Python one keeps items by `output_index` and
asserts the item's type for text and argument deltas. What either raises on is reported
here, so that the dialect calls the frame `malformed_frame`:

- a first event other than `response.created` (not a first `error`, nor a resumed stream);
- an `output_item.added` whose `output_index` is not the next position (a gap or a repeat);
- an event about an output item (a delta, a part, a `.done`, a tool call's progress) whose
  `output_index` names no item; a part's event whose index names no part of that kind;
- a text delta on an item that is not a message, an argument delta on one that is not a
  function call; a summary part for a reasoning item without a `summary` list;
- a `response.completed` whose `output` does not hold an item that was streamed and done
  (neither by its identity nor as an item of its type at its place): the helpers' final
  response is that list, so the item is lost to their callers though they raise nothing.

Pure and bounded: an item is a few small ints, a message's parts a bytearray; past MAX_KEYS
items or parts the order is not judged any more (the dialect counts the flood itself).
"""

from __future__ import annotations

from typing import Any

from sse_audit_proxy.core.dialects.base import MAX_KEYS, sdk_index

CREATED = "response.created"
ITEM_ADDED = "response.output_item.added"
PART_ADDED = "response.content_part.added"
SUMMARY_PART_ADDED = "response.reasoning_summary_part.added"
_ITEM_DONE = "response.output_item.done"
MAX_PARTS = 4 * MAX_KEYS  # content parts held in all: a hostile stream's cost stays a few KiB
# Lifecycle events with a response object, whose id Python compares with the created one's.
_LIFECYCLE = frozenset(
    {
        CREATED,
        "response.queued",
        "response.in_progress",
        "response.completed",
        "response.failed",
        "response.incomplete",
    }
)
# Lifecycle events: the TypeScript helper takes its snapshot again from their `response`.
_RESETS = frozenset({CREATED, "response.queued", "response.in_progress"})
# Part kinds, as held per message (or reasoning item): one byte a part.
_OTHER, _TEXT, _REFUSAL, _REASONING_TEXT = 0, 1, 2, 3
_PART_KINDS = {"output_text": _TEXT, "refusal": _REFUSAL, "reasoning_text": _REASONING_TEXT}
# Events about one output item, by `output_index`, and the part kind they need at their
# `content_index` in a message (None: the item alone).
_ON_MESSAGE_PART: dict[str, int] = {
    "response.output_text.delta": _TEXT,
    "response.output_text.done": _TEXT,
    "response.output_text.annotation.added": _TEXT,
    "response.refusal.delta": _REFUSAL,
    "response.refusal.done": _REFUSAL,
}
_TEXT_ON_MESSAGE = frozenset({"response.output_text.delta", "response.output_text.done"})
_ON_REASONING_TEXT = frozenset({"response.reasoning_text.delta", "response.reasoning_text.done"})
_ON_SUMMARY_PART = frozenset(
    {
        "response.reasoning_summary_part.done",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
    }
)
_ON_ITEM = frozenset(
    {
        _ITEM_DONE,
        PART_ADDED,
        "response.content_part.done",
        SUMMARY_PART_ADDED,
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.custom_tool_call_input.delta",
        "response.custom_tool_call_input.done",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.code_interpreter_call_code.delta",
        "response.code_interpreter_call_code.done",
        "response.code_interpreter_call.in_progress",
        "response.code_interpreter_call.interpreting",
        "response.code_interpreter_call.completed",
        "response.file_search_call.in_progress",
        "response.file_search_call.searching",
        "response.file_search_call.completed",
        "response.web_search_call.in_progress",
        "response.web_search_call.searching",
        "response.web_search_call.completed",
        "response.image_generation_call.in_progress",
        "response.image_generation_call.generating",
        "response.image_generation_call.completed",
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
        "response.mcp_call.failed",
        *_ON_MESSAGE_PART,
        *_ON_REASONING_TEXT,
        *_ON_SUMMARY_PART,
    }
)
# Items Python identifies by their call_id (else by their id); those whose added event may
# lack the id its done event has.
_CALLS = frozenset({"function_call", "custom_tool_call", "shell_call", "shell_call_output"})
_ID_LATER = frozenset({"function_call", "custom_tool_call"})
_COMPLETED = "response.completed"
# What each event that sets up later ones adds (the dialect marks its frame SHAPE).
SETS_UP = frozenset({CREATED, ITEM_ADDED, PART_ADDED, SUMMARY_PART_ADDED, _ITEM_DONE})


class _Item:
    """An output item as the helpers hold it: its type, a message's (or reasoning item's)
    content parts, a reasoning item's summary parts (-1: it has no `summary` list), its
    identity as Python's compares it (hashes: an upstream's ids are not held), and whether
    its `output_item.done` came."""

    __slots__ = ("done", "id_later", "id_none", "identity", "kind", "parts", "summary", "the_id")

    def __init__(self, item: Any) -> None:
        self.done = False
        kind = item.get("type") if isinstance(item, dict) else None
        self.kind = kind if kind in ("message", "reasoning", "function_call") else ""
        the_id = item.get("id") if isinstance(item, dict) else None
        call_id = item.get("call_id") if isinstance(item, dict) else None
        self.id_none = the_id is None
        self.the_id = hash(_key(the_id))
        named = isinstance(kind, str)  # (an upstream's `type` may be any JSON value)
        self.id_later = named and kind in _ID_LATER
        # openai-python's _output_identity: calls by their call_id, other items by their id
        shown = None if named and kind in _CALLS else the_id
        self.identity = hash((_key(kind), _key(shown), _key(call_id)))
        content = item.get("content") if isinstance(item, dict) else None
        # None: no content list (a message without one breaks both helpers at its first part)
        self.parts: bytearray | None = (
            bytearray(_part_kind(p) for p in content[:MAX_KEYS]) if isinstance(content, list) else None
        )
        summary = item.get("summary") if isinstance(item, dict) else None
        self.summary = min(len(summary), MAX_KEYS) if isinstance(summary, list) else -1


class ResponsesOrder:
    """Feed it each typed event (`event`) in order; `breaks` counts those the helpers raise
    on. `off` once the order cannot be told (then nothing more is counted)."""

    __slots__ = ("began", "breaks", "done_at", "held", "items", "off", "response_id")

    def __init__(self) -> None:
        self.breaks = 0
        self.held = 0  # parts held, all items together (MAX_PARTS)
        self.response_id = 0  # the created response's id, hashed
        # identity -> output_index of items done (Python's _completed_positions), at most MAX_KEYS
        self.done_at: dict[int, int] = {}
        self.began = False
        self.off = False
        # Output items by position; None: an added event without an item (a hole at lookup).
        self.items: list[_Item | None] = []

    def unknown(self, name: str) -> None:
        """An event too large to read, known by its name alone: what it set up is unknown."""
        if name in SETS_UP or name in _RESETS or not name or not self.began:
            self.off = True
        self.began = True

    def failed_first(self) -> None:
        """An `error` event: if it is the first, the request failed at once (no order)."""
        if not self.began:
            self.began = True
            self.off = True

    def event(self, kind: str, doc: dict[str, Any]) -> None:
        if self.off:
            return
        if not self.began:
            self.began = True
            seq = doc.get("sequence_number")
            if kind != CREATED:
                if not (kind == "error" or (type(seq) is int and seq > 0)):
                    self.breaks += 1  # the helpers raised here and read no more
                self.off = True  # ... or resumed, or failed at once: what came before is unseen
                return
        if kind in _LIFECYCLE:
            self._lifecycle(kind, doc.get("response"))
        if kind in _RESETS:
            response = doc.get("response")
            output = response.get("output") if isinstance(response, dict) else None
            listed = [self._item(i) for i in output[:MAX_KEYS]] if isinstance(output, list) else []
            self.items = list(listed)
            if not self.off and len({item.identity for item in listed}) < len(listed):
                self.breaks += 1  # Python: "Response snapshot has conflicting output identities."
        elif kind == ITEM_ADDED:
            self._added(doc)
        elif kind in _ON_ITEM:
            self._on_item(kind, doc)
        elif kind == _COMPLETED:
            self._completed(doc)
        if self.off:
            self.items = []  # nothing more is judged: nothing more is held

    def _lifecycle(self, kind: str, response: Any) -> None:
        """The response object of a lifecycle event: one (TypeScript copies it), with the id
        the created one had (Python: "Lifecycle response identity changed.")."""
        if not isinstance(response, dict):
            self.breaks += 1
            return
        response_id = hash(_key(response.get("id")))
        if kind == CREATED:
            self.response_id = response_id
        elif response_id != self.response_id:
            self.breaks += 1

    def _completed(self, doc: dict[str, Any]) -> None:
        """Python's helper refuses to complete a response with an item neither done nor in
        the completed response's `output`; and both helpers' final response is that `output`,
        so a done item it does not hold is lost to their callers (the Agents SDK runs no tool
        call left out; an `output` of `[]`, as ChatGPT's Codex backend sends, loses every
        item: an outside review). A done item is held by its identity, or by an item of its
        type at its place: a gateway may give the final items ids the streamed ones lacked."""
        response = doc.get("response")
        output = response.get("output") if isinstance(response, dict) else None
        listed = list(map(_Item, output[:MAX_KEYS])) if isinstance(output, list) else []
        final = {item.identity: item for item in listed}
        for at, item in enumerate(self.items):
            if item is None:
                continue
            last = final.get(item.identity)
            if item.done:
                held = last is not None or (at < len(listed) and listed[at].kind == item.kind)
            else:
                held = last is not None and _compatible(item, last)
            if not held:
                self.breaks += 1
                return

    def _added(self, doc: dict[str, Any]) -> None:
        items = self.items
        if len(items) >= MAX_KEYS:
            self.off = True
            return
        if sdk_index(doc.get("output_index"), lookup=False) != len(items):
            self.breaks += 1  # TypeScript reads items by position, Python refuses a repeat
        item = doc.get("item")
        items.append(None if item is None else self._item(item))

    def _on_item(self, kind: str, doc: dict[str, Any]) -> None:
        index = sdk_index(doc.get("output_index"))
        items = self.items
        if index is None or not 0 <= index < len(items) or (item := items[index]) is None:
            self.breaks += 1  # "missing output at index …" / "… before receiving its output item"
            return
        if kind == _ITEM_DONE:
            done = items[index] = self._item(doc.get("item"))
            done.done = True
            if done.identity != item.identity or not _compatible(item, done):
                self.breaks += 1  # Python: "Completed output item identity changed."
            at = self.done_at.get(done.identity)
            if at is not None and at != index:
                self.breaks += 1  # Python: done twice at two places ("conflicting output identities")
            elif at is None and len(self.done_at) < MAX_KEYS:
                self.done_at[done.identity] = index
            if done.kind == "message" and done.parts is None:
                self.breaks += 1  # TypeScript reads a done message's content list
        elif kind in _ON_MESSAGE_PART or kind == PART_ADDED or kind == "response.content_part.done":
            self._on_part(kind, doc, item)
        elif kind == "response.function_call_arguments.delta":
            if item.kind != "function_call":
                self.breaks += 1  # Python asserts the item's type
        elif item.kind == "reasoning":
            self._on_reasoning(kind, doc, item)

    def _on_part(self, kind: str, doc: dict[str, Any], item: _Item) -> None:
        needs = _ON_MESSAGE_PART.get(kind)
        if kind in _TEXT_ON_MESSAGE and item.kind != "message":
            self.breaks += 1  # Python asserts a text delta's item is a message
            return
        if kind == PART_ADDED:
            part = _part_kind(doc.get("part"))
            if (item.kind == "message") is (part != _REASONING_TEXT) and item.kind in (
                "message",
                "reasoning",
            ):
                self._add_part(item, part)  # (TypeScript keeps a message's reasoning text apart)
            return
        if kind == "response.content_part.done":
            reasoning = _part_kind(doc.get("part")) == _REASONING_TEXT
            if item.kind != ("reasoning" if reasoning else "message"):
                return  # (TypeScript checks a message's parts, a reasoning item's text parts)
            needs = None
        elif item.kind != "message":
            return
        if not self._has_part(item.parts, doc.get("content_index"), needs):
            self.breaks += 1

    def _on_reasoning(self, kind: str, doc: dict[str, Any], item: _Item) -> None:
        if kind in _ON_REASONING_TEXT:
            if not self._has_part(item.parts, doc.get("content_index"), _REASONING_TEXT):
                self.breaks += 1
        elif kind == SUMMARY_PART_ADDED:
            if item.summary < 0:
                self.breaks += 1  # TypeScript pushes to an absent list
            elif item.summary < MAX_KEYS:
                item.summary += 1
        elif kind in _ON_SUMMARY_PART:
            at = sdk_index(doc.get("summary_index"))
            if at is None or not 0 <= at < item.summary:
                self.breaks += 1

    def _item(self, doc: Any) -> _Item:
        item = _Item(doc)
        self._hold(len(item.parts or ()))
        return item

    def _hold(self, parts: int) -> None:
        self.held += parts
        if self.held > MAX_PARTS:
            self.off = True  # a flood of parts: past it, not judged (and no more held)

    def _add_part(self, item: _Item, part: int) -> None:
        if item.parts is None:
            if item.kind == "message":
                self.breaks += 1  # both helpers append to the message's absent content list
                return
            item.parts = bytearray()  # a reasoning item's content list is made at its first
        if len(item.parts) >= MAX_KEYS:
            self.off = True
            return
        item.parts.append(part)
        self._hold(1)

    @staticmethod
    def _has_part(parts: bytearray | None, at: Any, needs: int | None) -> bool:
        index = sdk_index(at)
        if parts is None or index is None or not 0 <= index < len(parts):
            return False
        return needs is None or parts[index] == needs


def _compatible(before: _Item, after: _Item) -> bool:
    """openai-python's _compatible_output_id: the same id, or none yet on a call."""
    return before.the_id == after.the_id or (before.id_none and before.id_later)


def _key(value: Any) -> Any:
    """A JSON value as a key, not read into: a list or an object by its type alone (an
    upstream's id may be one, nested as deep as the parser allows)."""
    return (
        value if value is None or isinstance(value, str | int | float) else ("<json>", type(value).__name__)
    )


def _part_kind(part: Any) -> int:
    kind = part.get("type") if isinstance(part, dict) else None
    return _PART_KINDS.get(kind, _OTHER) if isinstance(kind, str) else _OTHER
