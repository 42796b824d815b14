"""Anthropic Messages streams (`/v1/messages`): typed events, `message_stop` last.

`message_start` carries the input usage and `message_delta` the `stop_reason` and the
output usage (cumulative: the last one wins, key by key). Text, thinking and tool-input
deltas are content; a tool's input is assembled per content block and validated as JSON.
`ping` is the protocol's keep-alive, timed like an SSE comment. An `error` event ends the
stream as failed (Anthropic sends it, e.g. `overloaded_error`, then closes).

Structure is checked where the official SDKs' stream helpers (Python's `messages.stream()`,
TypeScript's `MessageStream`) depend on it: one `message_start`, first; blocks started at the
next position (both helpers append them to a list and find them by `index`); a delta or a
block's stop naming a block that was started, a delta of that block's kind; nothing but pings
after `message_stop` (TypeScript's final message is made there); a `message_start` carrying
`message.usage` and a `message_delta` a `usage` object, and no content delta; a frame with its
`event:` line (the SDK skips one without) and its data a `type` (the SDK reads it by that). An
index is read as the helpers read it (`0`, `0.0` and `"0"` alike). Anything else is
`malformed_frame` (a helper raises or loses output).
"""

from __future__ import annotations

from typing import Any, ClassVar

from sse_audit_proxy.core.dialects.base import (
    CONTENT,
    ERROR,
    FINISH,
    KEEPALIVE,
    MAX_KEYS,
    MAX_USAGE_FIELDS,
    SHAPE,
    TERMINAL,
    USAGE,
    Usage,
    held_usage,
    id_key,
    loses_data_line,
    model_in_target,
    sdk_index,
    sse_field,
    token_count,
    vertex_publisher,
)
from sse_audit_proxy.core.dialects.typed import TypedEvents

# Delta type -> the field holding its content. Other types (signature, citations) are not content.
_DELTA_FIELDS = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json"}
_TOOL_BLOCKS = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})
# Events the stream helpers fold into the message that message_start begins (pings and errors
# they handle before it).
_NEED_START = frozenset(
    {"content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop"}
)
# Events that change the message: after message_stop, TypeScript's final message is made and
# they are lost.
_CHANGE = _NEED_START - {"message_stop"}
# Delta type -> the block types it may extend (unknown delta types are let through).
_DELTA_BLOCKS = {
    "text_delta": frozenset({"text"}),
    "citations_delta": frozenset({"text"}),
    "thinking_delta": frozenset({"thinking"}),
    "signature_delta": frozenset({"thinking"}),
    "input_json_delta": _TOOL_BLOCKS,
}
_INPUT_TOKENS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
# Claude on Vertex AI: the same stream at `…/publishers/anthropic/models/{model}:streamRawPredict`
# (the SDK's AnthropicVertex moves `model` from the body into the URL).
_VERTEX = vertex_publisher("anthropic")


class AnthropicMessages(TypedEvents):
    route = "messages"
    always_streams = True
    path_suffixes = ("/v1/messages",)
    path_pattern = _VERTEX
    expects_done = False  # Anthropic sends no `[DONE]`
    expects_finish_reason = True  # `message_delta.stop_reason`
    usage_always = True  # `message_start` and `message_delta` always carry usage
    event_line_needed = True  # the SDKs skip a frame without its `event:` line
    error_is_final = True  # the SDKs raise at `event: error` (Python's and TypeScript's)
    empty_event_raises = False  # the SDKs skip an event with empty data
    read_by_type = frozenset({"message_start", "content_block_start", "content_block_delta", "message_delta"})
    # Neither helper reads an event of a type it does not know: a rebuilt frame of kind `other`
    # (a block's stop) is none of the events whose order is judged.
    replay_filler: ClassVar[dict[str, Any] | None] = {"event": "replayed", "data": {"type": "replayed"}}

    __slots__ = ("_blocks", "_message", "_no_start_usage", "_started", "_starts")

    @classmethod
    def loses_to_bom(cls, line: bytes) -> bool:
        """The Python SDK reads events by their names: a first event's is lost too, unless it
        is a `ping`, which the SDK skips anyway."""
        field, value = sse_field(line)
        return loses_data_line(line) or (field == b"event" and bool(value) and value != b"ping")

    @classmethod
    def target_info(cls, target: str) -> tuple[str | None, bool] | None:
        return model_in_target(_VERTEX, target)

    def __init__(self) -> None:
        super().__init__()
        self._blocks: dict[int, str] = {}  # index -> type of each started content block
        self._starts = 0  # blocks started: the helpers' position for the next one
        self._message = False  # message_start came (a second one: TypeScript raises)
        # message_start had no `usage`: the Python SDK's stream helper raises at a message_delta
        self._no_start_usage = False
        self._started = False  # message_start came: the SDKs' stream helpers need it first

    def _on(self, kind: str, doc: dict[str, Any]) -> int:
        if not self._started and kind in _NEED_START:
            # The Python stream helper raised at anything but message_start first (before
            # anthropic 2.x: its final message never made); both helpers still lose a delta,
            # a block or a stop reason that comes before it.
            self._started = True  # (said once)
            self._malformed += 1
        elif self._terminal and kind in _CHANGE and not self._failed:  # (not after an error)
            self._malformed += 1  # TypeScript's final message was made at message_stop
        if kind == "content_block_delta":
            return self._delta(doc)
        if kind == "ping":
            return KEEPALIVE
        if kind == "content_block_start":  # its kind decides what its deltas may be
            return self._block_start(doc) | SHAPE
        if kind == "message_delta":
            return self._message_delta(doc)
        if kind == "content_block_stop":
            index = sdk_index(doc.get("index"))
            if index is None or not -self._starts <= index < self._starts:
                self._malformed += 1  # Python's helper looks the block up: IndexError
            return 0
        if kind == "message_start":
            self._started = True
            if self._message:  # "Unexpected event order" (TypeScript)
                self._malformed += 1
                return 0
            self._message = True
            message = doc.get("message")
            if isinstance(message, dict):
                usage = message.get("usage")
                self._no_start_usage = not isinstance(usage, dict)
                return USAGE if self._add_usage(usage) else 0
            self._malformed += 1
        elif kind == "message_stop":
            self._terminal = True
            return TERMINAL
        elif kind == "error":
            self._fail()
            return TERMINAL | ERROR
        return 0

    def _delta(self, doc: dict[str, Any]) -> int:
        delta = doc.get("delta")
        index = doc.get("index")
        if type(index) is not int:
            index = sdk_index(index)
        block = self._blocks.get(index) if index is not None else None
        kind = delta.get("type") if isinstance(delta, dict) else None
        if block is None or not isinstance(kind, str) or block not in _DELTA_BLOCKS.get(kind, (block,)):
            self._malformed += 1  # the SDK indexes the block it started: this breaks it
            return 0
        assert isinstance(delta, dict) and index is not None
        field = _DELTA_FIELDS.get(kind)
        if field is None:
            return 0
        value = delta.get(field)
        if not isinstance(value, str):
            self._malformed += 1
            return 0
        if field == "partial_json":
            self._tools.append(index, value)
        return CONTENT if value else 0

    def _block_start(self, doc: dict[str, Any]) -> int:
        block = doc.get("content_block")
        index = sdk_index(doc.get("index"))
        if not isinstance(block, dict) or index is None:
            self._malformed += 1
            return 0
        if index not in self._blocks and len(self._blocks) >= MAX_KEYS:
            self._malformed += 1  # new blocks without end: counted, not held
            return 0
        if index != self._starts:
            # The helpers append each started block to a list and find it by position: a block
            # at index 1 first (a gateway that dropped the thinking block at 0) raised
            # IndexError at its first delta (Python) or lost it; one started again at its index
            # took the next position, and the deltas of the block meant for it went to the
            # repeat, the text lost (outside reviews).
            self._malformed += 1
        self._starts += 1
        kind = block.get("type")
        kind = id_key(kind) if isinstance(kind, str) else ""  # held: bounded, and hashable
        self._blocks[index] = kind
        if kind in _TOOL_BLOCKS:
            given = block.get("input")
            # A tool without parameters gets no input_json_delta: its start input stands. Only
            # whether it is an object is judged, so that is all that is kept (not its text).
            self._tools.open(index, "" if given is None else "{}" if isinstance(given, dict) else "null")
            return CONTENT  # the tool's name is the first output the client sees
        text = block.get("text") or block.get("thinking")
        return CONTENT if isinstance(text, str) and text else 0

    def _message_delta(self, doc: dict[str, Any]) -> int:
        if self._no_start_usage:  # the stream helper raises here (AttributeError), once
            self._no_start_usage = False
            self._malformed += 1
        delta = doc.get("delta")
        reason = delta.get("stop_reason") if isinstance(delta, dict) else None
        if (
            not isinstance(delta, dict)
            or "type" in delta
            or "index" in delta
            or not (reason is None or isinstance(reason, str))
        ):
            self._malformed += 1  # e.g. a content delta in the wrong place: nothing to take
            return 0
        bits = 0
        if reason:
            self._finished(reason)
            bits = FINISH
        usage = doc.get("usage")
        if not isinstance(usage, dict):
            # Both helpers read `usage.output_tokens` from every one and raise without it (an
            # object without the count loses only the count, which is not judged here).
            self._malformed += 1
        return bits | USAGE if self._add_usage(usage) else bits

    def _add_usage(self, usage: Any) -> bool:
        if not usage or not isinstance(usage, dict):
            return False
        usage = held_usage(usage)
        held = self._usage
        if held is None:
            held = self._usage = {}
        # message_delta repeats some keys with cumulative values and may null others. New keys
        # are taken up to a bound: an upstream sending new ones in every event would make the
        # merged object grow with the stream.
        for key, value in usage.items():
            if value is not None and (key in held or len(held) < MAX_USAGE_FIELDS):
                held[key] = value
        return True

    def _tokens(self, usage: Usage | None) -> tuple[int | None, int | None]:
        """Prompt tokens are all input, cached or not, as OpenAI's `prompt_tokens` count them."""
        if not usage:
            return None, None
        counts = [c for k in _INPUT_TOKENS if (c := token_count(usage.get(k))) is not None]
        return (token_count(sum(counts)) if counts else None), token_count(usage.get("output_tokens"))
