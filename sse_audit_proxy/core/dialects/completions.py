"""Legacy OpenAI Completions streams (`/v1/completions`): Chat's framing, text in `choices[].text`.

Everything but the content field is Chat Completions: `[DONE]` last, `finish_reason` per
choice, usage on request (`stream_options.include_usage`), an `{"error": ...}` frame.
"""

from __future__ import annotations

from typing import Any

from sse_audit_proxy.core.dialects.chat import ChatCompletions


class Completions(ChatCompletions):
    route = "completions"
    path_suffixes = ("/completions",)
    _typed = False

    __slots__ = ()

    def _content(self, index: int, choice: dict[str, Any]) -> bool:
        text = choice.get("text")
        return isinstance(text, str) and bool(text)
