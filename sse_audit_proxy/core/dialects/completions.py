"""Legacy OpenAI Completions streams (`/v1/completions`): Chat's framing, text in `choices[].text`.

Everything but the content field is Chat Completions: `[DONE]` last, `finish_reason` per
choice, usage on request (`stream_options.include_usage`), an `{"error": ...}` frame.
"""

from __future__ import annotations

from sse_audit_proxy.core.dialects.chat import ChatCompletions


class Completions(ChatCompletions):
    route = "completions"
    path_suffixes = ("/completions",)
    _deltas = False  # content is `choices[].text` (ChatCompletions._choice reads it)

    __slots__ = ()

    def observe_data(self, data: bytes) -> int:
        return self._observe_doc(data)  # Chat's typed reading is of `delta`s
