"""Ollama's native API (`/api/chat`, `/api/generate`): JSON lines, the last saying `"done": true`.

Each line is an object with `"done": false` and a piece of the answer (`message.content`,
`message.thinking`, `message.tool_calls` on chat; `response`, `thinking` on generate), until
one with `"done": true`, its `done_reason` and the token counts (`prompt_eval_count`,
`eval_count`). A failure mid-generation is an `{"error": "..."}` line. Ollama's own clients
raise on a body that ends before the done line (the npm `ollama`: "Did not receive done or
success response in stream"; LiteLLM likewise), so here that is `truncated`, where a route
with no dialect would be `complete`.

Only a stream that begins with such a line is read so; anything else on these paths (they are
not Ollama's alone) is read as on a route with no dialect.
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

# Where a line's piece of the answer is: chat's `message`, generate's top level.
_TEXT_FIELDS = ("content", "thinking", "response")


class Ollama(Generic):
    route = "ollama"
    path_suffixes = ("/api/chat", "/api/generate")
    end_marker = 'end line (`"done": true`)'

    __slots__ = ("_finish", "_lines", "_malformed", "_native", "_tool_calls", "_usage")

    def __init__(self) -> None:
        super().__init__()
        self._lines = 0
        self._native = False  # the first line was Ollama's (an object with a boolean `done`)
        self._finish: str | None = None
        self._usage: dict[str, int] | None = None
        self._tool_calls = 0
        self._malformed = 0

    def observe_data(self, data: bytes) -> int:
        self._lines += 1
        if self._lines == 1 and data[:1] == b"{":
            doc = load_object(data)
            self._native = doc is not None and type(doc.get("done")) is bool
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
        """A line too large to read: in Ollama's lines it may be the done line (its `context`,
        the token IDs of prompt and answer, passed 1 MiB at about 150,000 tokens), so what it
        said cannot be told, and a last one leaves the end to the connection."""
        if self._native:
            return None
        return super().observe_unread(name)

    def _line(self, doc: dict[str, Any]) -> int:
        if is_error_frame(doc):
            self._errors += 1
            self._failed = True
            return ERROR
        self._failed = False
        message = doc.get("message")
        where = message if isinstance(message, dict) else doc  # chat's `message`, generate's top
        bits = _content(where)
        calls = where.get("tool_calls")
        if isinstance(calls, list) and calls:
            self._tool_calls += len(calls)  # whole objects, arguments included: nothing to join
            bits |= CONTENT
        if doc.get("done") is True:
            self._done = True
            bits |= TERMINAL | FINISH
            reason = doc.get("done_reason")
            self._finish = reason_word(reason) if isinstance(reason, str) else "stop"
            prompt, completion = token_count(doc.get("prompt_eval_count")), token_count(doc.get("eval_count"))
            counts = (("prompt_tokens", prompt), ("completion_tokens", completion))
            if prompt is not None or completion is not None:
                self._usage = {name: n for name, n in counts if n is not None}
                bits |= USAGE
        return bits

    def summary(self) -> DialectSummary:
        summary = super().summary()
        summary.read_as_other = not self._native
        if self._native:
            summary.has_end_marker = True
            summary.done = False  # (Generic's `done` is `[DONE]`, which Ollama never sends)
            summary.finish_reasons = [self._finish] if self._finish is not None else []
            summary.usage = dict(self._usage) if self._usage is not None else None
            if self._usage is not None:
                summary.prompt_tokens = self._usage.get("prompt_tokens")
                summary.completion_tokens = self._usage.get("completion_tokens")
            summary.tool_calls = self._tool_calls
            summary.malformed_frames = self._malformed
        return summary


def _content(where: dict[str, Any]) -> int:
    for name in _TEXT_FIELDS:
        text = where.get(name)
        if isinstance(text, str) and text:
            return CONTENT
    return 0
