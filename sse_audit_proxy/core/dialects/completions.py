"""Legacy OpenAI Completions streams (`/v1/completions`): Chat's framing, text in `choices[].text`.

Everything but the content field is Chat Completions: `[DONE]` last, `finish_reason` per
choice, usage on request (`stream_options.include_usage`), an `{"error": ...}` frame.

Two other shapes share the path: Mistral's FIM completions (`/v1/fim/completions`) stream
`choices[].delta.content`, read as Chat reads it; and llama.cpp's server answers
`/completions` without `/v1` in its native shape (`{"content": ..., "stop": false}` frames,
the last with `"stop": true` and its `stop_type`, no `[DONE]`), whose last frame is the end.
Its legacy `/completion` is claimed at the root only: DashScope's apps and the AI SDK's
`useCompletion` stream other shapes on paths that end so.
"""

from __future__ import annotations

import re
from typing import Any

from sse_audit_proxy.core.dialects.base import FINISH, TERMINAL, USAGE, DialectSummary
from sse_audit_proxy.core.dialects.chat import ChatCompletions

# llama.cpp's `stop_type` as its OpenAI-compatible routes report it: `limit` is `n_predict`.
_LLAMA_REASONS = {"eos": "stop", "word": "stop", "limit": "length"}


class Completions(ChatCompletions):
    route = "completions"
    path_suffixes = ("/completions",)
    # llama.cpp's server streams the same on its legacy `/completion`, at its root only: under
    # a prefix that word ends other streams (DashScope's `/api/v1/apps/{id}/completion`, the AI
    # SDK's `/api/completion`), which read as Completions would be `truncated`.
    path_pattern = re.compile(r"^/completion$")
    _deltas = False  # content is `choices[].text` (ChatCompletions._choice reads it)

    __slots__ = ("_native",)

    @classmethod
    def target_info(cls, target: str) -> tuple[str | None, bool] | None:
        return None  # the model is in the body (Chat's pattern reads it from Vertex's path)

    def __init__(self) -> None:
        super().__init__()
        self._native = False  # llama.cpp's native frames came, not OpenAI's

    def observe_data(self, data: bytes) -> int:
        return self._observe_doc(data)  # Chat's typed reading is of `delta`s

    def _other_shape(self, chunk: dict[str, Any]) -> int:
        stop = chunk.get("stop")
        content = chunk.get("content")
        # Only a stream that began so is native: one such frame inside an OpenAI-shaped stream
        # must not excuse its missing `[DONE]`.
        if type(stop) is bool and isinstance(content, str) and (self._native or not self._choices):
            return self._llama_frame(chunk, stop, content)
        return super()._other_shape(chunk)

    def _llama_frame(self, chunk: dict[str, Any], stop: bool, content: str) -> int:
        self._native = True
        index = chunk.get("index")
        index = index if type(index) is int else 0
        bits = self._choice(index, None, None, content)  # CONTENT when `content` is not empty
        if stop and index in self._choices:
            stop_type = chunk.get("stop_type")
            reason = _LLAMA_REASONS.get(stop_type) if isinstance(stop_type, str) else None
            self._finish[index] = reason or "stop"
            bits |= FINISH | TERMINAL
            prompt, predicted = chunk.get("tokens_evaluated"), chunk.get("tokens_predicted")
            if type(prompt) is int and type(predicted) is int:
                self._usage = {"prompt_tokens": prompt, "completion_tokens": predicted}
                bits |= USAGE
        return bits

    def summary(self) -> DialectSummary:
        summary = super().summary()
        if self._native:  # the last frame (`"stop": true`) is the end: there is no `[DONE]`
            summary.expects_done = False
            summary.terminal = not summary.missing_finish_reason
        return summary
