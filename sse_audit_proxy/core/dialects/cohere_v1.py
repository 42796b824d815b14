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
    is_error_frame,
    reason_word,
    token_count,
)
from sse_audit_proxy.core.dialects.native_lines import NativeLines

# Finish reasons of a generation that failed (Cohere's v1 API reference).
_FAILED = frozenset({"ERROR", "ERROR_TOXIC", "ERROR_LIMIT"})


class CohereV1Chat(NativeLines):
    route = "cohere_v1_chat"
    path_suffixes = ("/v1/chat",)
    end_marker = "`stream-end` line"

    __slots__ = ()

    @staticmethod
    def opens(doc: dict[str, Any]) -> bool:
        return type(doc.get("is_finished")) is bool and isinstance(doc.get("event_type"), str)

    def _line(self, doc: dict[str, Any]) -> int:
        if is_error_frame(doc):
            self._errors += 1
            self._failed = True
            return ERROR
        kind = doc.get("event_type")
        if not isinstance(kind, str):
            # The SDK hands such a line on as a plain dict, and its caller's `.event_type` raises.
            self._malformed += 1
            return MALFORMED
        if kind == "text-generation":
            text = doc.get("text")
            if text is not None and not isinstance(text, str):
                self._malformed += 1  # handed on as it is: the caller's join of the text fails
                return MALFORMED
            return CONTENT if text else 0
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
            if isinstance(counts, dict) and self._counted(
                token_count(counts.get("input_tokens")), token_count(counts.get("output_tokens"))
            ):
                return bits | USAGE
        return bits
