"""Cohere's v1 chat stream (`/v1/chat`): JSON lines (`application/stream+json`), the last of
them `stream-end`.

Each line is an object with `is_finished` and an `event_type`: `stream-start`, then
`text-generation` (`text`), `tool-calls-chunk` (`tool_call_delta`), `tool-calls-generation`
(the calls whole), `citation-generation`, `search-queries-generation`, `search-results`, and
last `stream-end` (`"is_finished": true`), whose `finish_reason` (`COMPLETE`, `MAX_TOKENS`,
`STOP_SEQUENCE`, `ERROR`, `ERROR_TOXIC`, `ERROR_LIMIT`, `USER_CANCEL`) ends it and whose
`response.meta` holds the token counts (`tokens`, `billed_units`). The cohere SDKs' v1
clients and LiteLLM's `cohere/v1/...` models call it; LiteLLM reads a body that ends before
`stream-end` as a whole answer, and so does Cohere's Go SDK. Here that body is `truncated`,
where a route with no dialect said `complete`, and an `ERROR` finish is a failure.

Only a stream that begins with such a line is read so; anything else on the path (it is not
Cohere's alone: LM Studio serves `/api/v1/chat`) is read as on a route with no dialect.
"""

from __future__ import annotations

from typing import Any

from sse_audit_proxy.core.dialects.base import (
    CONTENT,
    ERROR,
    FINISH,
    MALFORMED,
    TERMINAL,
    USAGE,
    DialectSummary,
    is_error_frame,
    load_object,
    reason_word,
    token_count,
)
from sse_audit_proxy.core.dialects.generic import Generic

# Finish reasons of a generation that failed (Cohere's v1 API reference).
_FAILED = frozenset({"ERROR", "ERROR_TOXIC", "ERROR_LIMIT"})


class CohereV1Chat(Generic):
    route = "cohere_v1_chat"
    path_suffixes = ("/v1/chat",)
    end_marker = "`stream-end` line"

    __slots__ = ("_finish", "_lines", "_malformed", "_native", "_tool_calls", "_usage")

    def __init__(self) -> None:
        super().__init__()
        self._lines = 0
        self._native = False  # the first line was Cohere's (an `event_type` and `is_finished`)
        self._finish: str | None = None
        self._usage: dict[str, int] | None = None
        self._tool_calls = 0
        self._malformed = 0

    def observe_data(self, data: bytes) -> int:
        self._lines += 1
        if self._lines == 1 and data[:1] == b"{":
            doc = load_object(data)
            self._native = (
                doc is not None
                and type(doc.get("is_finished")) is bool
                and isinstance(doc.get("event_type"), str)
            )
            if self._native:
                return self._line(doc)  # type: ignore[arg-type]  # (not None when native)
        if not self._native:
            return super().observe_data(data)
        doc = load_object(data)
        if doc is None:
            self._malformed += 1
            return MALFORMED
        return self._line(doc)

    def observe_unread(self, name: str) -> int | None:
        """A line too large to read: `stream-end` carries the whole answer and the chat's
        history, so it may be the end line; a last one leaves the end to the connection."""
        if self._native:
            return None
        return super().observe_unread(name)

    def _line(self, doc: dict[str, Any]) -> int:
        if is_error_frame(doc):
            self._errors += 1
            self._failed = True
            return ERROR
        kind = doc.get("event_type")
        if kind == "text-generation":
            text = doc.get("text")
            return CONTENT if isinstance(text, str) and text else 0
        if kind == "tool-calls-chunk":  # a call's fragment, or the plan's text before it
            text = doc.get("text")
            return (
                CONTENT
                if isinstance(doc.get("tool_call_delta"), dict) or (isinstance(text, str) and text)
                else 0
            )
        if kind == "tool-calls-generation":
            calls = doc.get("tool_calls")
            if isinstance(calls, list):
                self._tool_calls += len(calls)  # whole, parameters an object: nothing to join
                return CONTENT if calls else 0
            return 0
        if kind == "stream-end" or doc.get("is_finished") is True:
            return self._end(doc)
        return 0  # stream-start, citations, search queries and results

    def _end(self, doc: dict[str, Any]) -> int:
        self._done = True
        bits = TERMINAL | FINISH
        reason = doc.get("finish_reason")
        self._finish = reason_word(reason) if isinstance(reason, str) and reason else "COMPLETE"
        self._failed = self._finish in _FAILED
        if self._failed:
            self._errors += 1
            bits |= ERROR
        response = doc.get("response")
        meta = response.get("meta") if isinstance(response, dict) else None
        for name in ("tokens", "billed_units"):
            counts = meta.get(name) if isinstance(meta, dict) else None
            if isinstance(counts, dict):
                prompt = token_count(counts.get("input_tokens"))
                completion = token_count(counts.get("output_tokens"))
                if prompt is not None or completion is not None:
                    pairs = (("prompt_tokens", prompt), ("completion_tokens", completion))
                    self._usage = {key: n for key, n in pairs if n is not None}
                    return bits | USAGE
        return bits

    def summary(self) -> DialectSummary:
        summary = super().summary()
        summary.read_as_other = not self._native
        if self._native:
            summary.has_end_marker = True
            summary.done = False  # (Generic's `done` is `[DONE]`, which Cohere never sends)
            summary.finish_reasons = [self._finish] if self._finish is not None else []
            summary.usage = dict(self._usage) if self._usage is not None else None
            if self._usage is not None:
                summary.prompt_tokens = self._usage.get("prompt_tokens")
                summary.completion_tokens = self._usage.get("completion_tokens")
            summary.tool_calls = self._tool_calls
            summary.malformed_frames = self._malformed
        return summary
