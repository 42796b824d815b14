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
    is_error_frame,
    reason_word,
    token_count,
)
from sse_audit_proxy.core.dialects.native_lines import NativeLines

# Where a line's piece of the answer is: chat's `message`, generate's top level.
_TEXT_FIELDS = ("content", "thinking", "response")


class Ollama(NativeLines):
    """Only a stream whose first line is an object with a boolean `done` is read so. A line too
    large to read may be the done line: its `context`, the token IDs of prompt and answer,
    passed 1 MiB at about 150,000 tokens."""

    route = "ollama"
    path_suffixes = ("/api/chat", "/api/generate")
    data_lines_only = True  # ollama's Python client fails on a blank line (json.loads of each)
    end_marker = 'end line (`"done": true`)'

    __slots__ = ()

    @staticmethod
    def opens(doc: dict[str, Any]) -> bool:
        return type(doc.get("done")) is bool

    @classmethod
    def loses_to_bom(cls, line: bytes) -> bool:
        return True  # ollama's Python client fails on the first line ("Unexpected UTF-8 BOM")

    def _line(self, doc: dict[str, Any]) -> int:
        if is_error_frame(doc):
            self._errors += 1
            self._failed = True
            return ERROR
        if self._failed:
            return 0  # Ollama's clients (Python's, JavaScript's) raise at the error line
        message = doc.get("message")
        where = message if isinstance(message, dict) else doc  # chat's `message`, generate's top
        bits = _content(where)
        calls = where.get("tool_calls")
        if isinstance(calls, list) and calls:
            self._tool_calls += len(calls)  # whole objects, arguments included: nothing to join
            bits |= CONTENT
        if not _typed(where, calls):
            self._malformed += 1
            bits |= MALFORMED
        if doc.get("done") is True:
            self._done = True
            bits |= TERMINAL | FINISH
            reason = doc.get("done_reason")
            self._finish = reason_word(reason) if isinstance(reason, str) else "stop"
            if self._counted(token_count(doc.get("prompt_eval_count")), token_count(doc.get("eval_count"))):
                bits |= USAGE
        return bits


def _typed(where: dict[str, Any], calls: Any) -> bool:
    """Text fields are text, and each tool call a named function with its arguments as an
    object: ollama's Python client refuses the line otherwise (a pydantic ValidationError), a
    number for text or arguments sent as a JSON string, as OpenAI's are."""
    for name in _TEXT_FIELDS:
        value = where.get(name)
        if value is not None and type(value) is not str:
            return False
    if calls is None:
        return True
    if type(calls) is not list:
        return False
    for call in calls:
        function = call.get("function") if type(call) is dict else None
        if type(function) is not dict or type(function.get("name")) is not str:
            return False
        if type(function.get("arguments")) is not dict:
            return False
    return True


def _content(where: dict[str, Any]) -> int:
    for name in _TEXT_FIELDS:
        text = where.get(name)
        if isinstance(text, str) and text:
            return CONTENT
    return 0
