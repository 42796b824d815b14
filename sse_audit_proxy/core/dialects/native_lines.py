"""What a provider's native JSON-lines stream (Ollama's, Cohere v1's) keeps and reports alike.

Its lines end with one the provider marks as the last (Ollama's `"done": true`, Cohere's
`stream-end`), carrying the finish reason and the token counts. Only a stream whose first line
is the provider's (`opens`) is read so; anything else on its paths (they are not the
provider's alone) is read as on a route with no dialect.
"""

from __future__ import annotations

from typing import Any

from sse_audit_proxy.core.dialects.base import MALFORMED, DialectSummary, load_object
from sse_audit_proxy.core.dialects.generic import Generic


class NativeLines(Generic):
    __slots__ = ("_finish", "_lines", "_malformed", "_native", "_tool_calls", "_usage")

    def __init__(self) -> None:
        super().__init__()
        self._lines = 0
        self._native = False  # the first line was the provider's
        self._finish: str | None = None
        self._usage: dict[str, int] | None = None  # prompt_tokens, completion_tokens
        self._tool_calls = 0
        self._malformed = 0

    @staticmethod
    def opens(doc: dict[str, Any]) -> bool:
        """A first line of the provider's stream."""
        raise NotImplementedError

    def _line(self, doc: dict[str, Any]) -> int:
        """One of the provider's lines: the observe() bits."""
        raise NotImplementedError

    def observe_data(self, data: bytes) -> int:
        self._lines += 1
        if self._lines == 1 and data[:1] == b"{":
            doc = load_object(data)
            self._native = doc is not None and self.opens(doc)
            if doc is not None and self._native:
                return self._line(doc)
        if not self._native:
            return super().observe_data(data)
        doc = load_object(data)
        if doc is None:
            self._malformed += 1
            return MALFORMED
        return self._line(doc)

    def observe_unread(self, name: str) -> int | None:
        """A line too large to read: the last line carries what made the answer (Ollama's
        token IDs, Cohere's whole text and history), so it may be the end line; a last one
        leaves the end to the connection."""
        if self._native:
            return None
        return super().observe_unread(name)

    def _counted(self, prompt: int | None, completion: int | None) -> bool:
        """Keep the end line's token counts; False when it had neither."""
        if prompt is None and completion is None:
            return False
        pairs = (("prompt_tokens", prompt), ("completion_tokens", completion))
        self._usage = {name: n for name, n in pairs if n is not None}
        return True

    def summary(self) -> DialectSummary:
        summary = super().summary()
        summary.read_as_other = not self._native
        if self._native:
            summary.has_end_marker = True
            summary.done = False  # (Generic's `done` is `[DONE]`, which neither sends)
            summary.finish_reasons = [self._finish] if self._finish is not None else []
            summary.usage = dict(self._usage) if self._usage is not None else None
            if self._usage is not None:
                summary.prompt_tokens = self._usage.get("prompt_tokens")
                summary.completion_tokens = self._usage.get("completion_tokens")
            summary.tool_calls = self._tool_calls
            summary.malformed_frames = self._malformed
        return summary
