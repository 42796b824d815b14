"""Cohere's native chat stream (`/v2/chat`): typed events from `message-start` to `message-end`.

Text comes in `content-delta` (`delta.message.content.text`, or `.thinking` from reasoning
models), a tool plan in `tool-plan-delta`, tool calls as `tool-call-start` (the name) and
`tool-call-delta` (argument fragments, per `index`), and the stream ends with `message-end`,
whose `delta` carries the finish reason (`COMPLETE`, `MAX_TOKENS`, `TOOL_CALL`, ...), the usage
(`tokens`, `billed_units`) and, when generation failed, an `error`. There is no `[DONE]`.
Cohere's SDK returns what it got of a stream cut before `message-end` without a word, so a cut
is `truncated` here, where a route with no dialect would say `complete`.

Only a stream whose first typed event is one of Cohere's is read so (a `debug` event, or one
with no data, may come first and decides nothing); anything else on the path is read as on a
route with no dialect.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from sse_audit_proxy.core.dialects.base import (
    CONTENT,
    ERROR,
    ERROR_EVENT,
    FINISH,
    TERMINAL,
    USAGE,
    DialectSummary,
    Usage,
    held_usage,
    load_object,
    token_count,
)
from sse_audit_proxy.core.dialects.generic import Generic
from sse_audit_proxy.core.dialects.tool_args import CUT_REASONS
from sse_audit_proxy.core.dialects.typed import TypedEvents
from sse_audit_proxy.core.sse import Event

# Cohere's finish reasons that mean the generation failed or was cut, not finished.
_FAILED = frozenset({"ERROR", "TIMEOUT"})
# The event types of Cohere's v2 stream (its SDK's); `debug` may come before `message-start`.
_TYPES = frozenset(
    {
        "message-start",
        "content-start",
        "content-delta",
        "content-end",
        "tool-plan-delta",
        "tool-call-start",
        "tool-call-delta",
        "tool-call-end",
        "citation-start",
        "citation-end",
        "message-end",
        "debug",
    }
)


class CohereChat(TypedEvents):
    route = "cohere_chat"
    path_suffixes = ("/v2/chat",)
    expects_done = False
    # The finish and the usage are in `message-end`, the end marker itself: a stream without
    # one is `truncated`, so neither is judged missing on its own.
    expects_finish_reason = False
    expects_usage = False
    has_end_marker = False  # (until the stream shows it is Cohere's: summary() says)
    empty_event_raises = False

    __slots__ = ("_native", "_other")

    def __init__(self) -> None:
        super().__init__()
        self._native: bool | None = None  # decided by the first typed event
        self._other = Generic()  # how a stream that is not Cohere's is read

    def observe(self, event: Event) -> int:
        if self._native is None:
            data = event.data
            doc = load_object(data) if data.strip() else None
            kind = doc.get("type") if doc is not None else None
            if event.event != ERROR_EVENT and (not data.strip() or kind == "debug"):
                return 0  # undecided: nothing said yet (the SDK skips both)
            # (an event named `error` first is a failure, as on every route)
            self._native = isinstance(kind, str) and kind in _TYPES
        if not self._native:
            return self._other.observe(event)
        return super().observe(event)

    def observe_unread(self, name: str) -> int | None:
        if not self._native:
            return self._other.observe_unread(name)
        return super().observe_unread(name)

    def _on(self, kind: str, doc: dict[str, Any]) -> int:
        message = _message(doc)
        if kind == "content-delta":
            content = message.get("content")
            if not isinstance(content, dict):
                return 0
            text, thinking = content.get("text"), content.get("thinking")
            if not _maybe_text(text) or not _maybe_text(thinking):
                self._malformed += 1  # the SDK skips the event with a warning: its text is lost
                return 0
            return CONTENT if _text(text) or _text(thinking) else 0
        if kind == "tool-plan-delta":
            return CONTENT if _text(message.get("tool_plan")) else 0
        if kind in ("tool-call-start", "tool-call-delta"):
            return self._tool_call(kind, doc.get("index"), message.get("tool_calls"))
        if kind == "message-end":
            return self._end(doc.get("delta"))
        return 0  # message-start, content-start/-end, tool-call-end, citations, debug

    def _tool_call(self, kind: str, index: Any, call: Any) -> int:
        if type(index) is not int or not isinstance(call, dict):
            self._malformed += 1
            return 0
        function = call.get("function")
        arguments = function.get("arguments") if isinstance(function, dict) else None
        if kind == "tool-call-start":
            self._tools.open(index)
            if isinstance(arguments, str):
                self._tools.append(index, arguments)
            return CONTENT  # the tool's name is the first output the client sees
        if not isinstance(arguments, str):
            self._malformed += 1
            return 0
        self._tools.append(index, arguments)
        return CONTENT if arguments else 0

    def _end(self, delta: Any) -> int:
        self._terminal = True
        if not isinstance(delta, dict):
            self._malformed += 1
            return TERMINAL
        bits = TERMINAL
        reason = delta.get("finish_reason")
        if isinstance(reason, str) and reason:
            self._finished(reason)
            bits |= FINISH
        if delta.get("error") or (isinstance(reason, str) and reason in _FAILED):
            self._fail()
            bits |= ERROR
        usage = delta.get("usage")
        if isinstance(usage, dict) and usage:
            self._usage = held_usage(usage)
            bits |= USAGE
        return bits

    def _cut_call(self) -> tuple[Hashable, ...]:
        last = self._tools.last
        finish = self._finish
        return (last,) if last is not None and finish and finish.lower() in CUT_REASONS else ()

    def _tokens(self, usage: Usage | None) -> tuple[int | None, int | None]:
        """The tokens the model read and wrote (`tokens`), else those billed."""
        for name in ("tokens", "billed_units"):
            counts = usage.get(name) if usage else None
            if isinstance(counts, dict):
                pair = token_count(counts.get("input_tokens")), token_count(counts.get("output_tokens"))
                if pair != (None, None):
                    return pair
        return None, None

    def summary(self) -> DialectSummary:
        if not self._native:
            summary = self._other.summary()
            summary.read_as_other = True
            return summary
        summary = super().summary()
        summary.has_end_marker = True
        return summary


def _message(doc: dict[str, Any]) -> dict[str, Any]:
    delta = doc.get("delta")
    message = delta.get("message") if isinstance(delta, dict) else None
    return message if isinstance(message, dict) else {}


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _maybe_text(value: Any) -> bool:
    """Text or nothing, as the clients' types have it."""
    return value is None or isinstance(value, str)
