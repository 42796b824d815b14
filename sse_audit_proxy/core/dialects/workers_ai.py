"""Cloudflare Workers AI's own route (`…/ai/run/@cf/{author}/{model}` with `"stream": true`;
through AI Gateway `…/workers-ai/@cf/…`).

An event stream of `data: {"response": "<text>"}` frames (a `p` field of padding beside it,
`tool_calls` in pieces, a number as the response of some models), a frame with `usage`
(`prompt_tokens`, `completion_tokens`) near the end, then `data: [DONE]`, which Cloudflare's
docs name as the end of the stream. Newer models stream Chat chunks (`choices[].delta`, a
`finish_reason`) on the same route. Cloudflare's own provider for the AI SDK
(workers-ai-provider) calls a stream that ends with neither `[DONE]` nor a finish reason
"stream-truncated"; here it is `truncated`, where a route with no dialect said `complete`.
Some models answer `"stream": true` with one JSON document, so a whole answer is not judged
bad. The model is named in the URL.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from sse_audit_proxy.core.dialects.base import (
    CONTENT,
    ERROR,
    FINISH,
    MALFORMED,
    TERMINAL,
    USAGE,
    Dialect,
    DialectSummary,
    clean_usage,
    held_usage,
    is_done,
    is_error_frame,
    load_object,
    reason_word,
    token_counts,
)
from sse_audit_proxy.core.sse import Event

# `/client/v4/accounts/{id}/ai/run/@cf/meta/llama-3.1-8b-instruct`; AI Gateway's
# `/v1/{account}/{gateway}/workers-ai/@cf/...` (and `.../workers-ai/run/@cf/...`).
_PATH = re.compile(r"(?:/ai/run|/workers-ai(?:/run)?)/(@(?:cf|hf)/.+)$")
# What a Chat chunk's delta carries that the client sees.
_DELTA_FIELDS = ("content", "reasoning_content", "reasoning", "tool_calls")


class WorkersAI(Dialect):
    route = "workers_ai"
    path_pattern = _PATH
    evidence_path = "/client/v4/accounts/account/ai/run/@cf/meta/llama-3.1-8b-instruct"
    expects_done = True
    # `[DONE]` is the end; a finish reason, which only Chat-shaped chunks carry, is not asked for.
    expects_finish_reason = False
    end_marker = "`data: [DONE]` or finish_reason"
    empty_event_raises = False  # the AI SDK provider skips an event with no data

    __slots__ = ("_done", "_errors", "_failed", "_finish", "_malformed", "_tool_calls", "_usage")

    @classmethod
    def loses_to_bom(cls, line: bytes) -> bool:
        return False  # the AI SDK's provider takes a BOM off (TextDecoder)

    def __init__(self) -> None:
        self._done = False
        self._finish: str | None = None
        self._usage: Any = None
        self._errors = 0
        self._failed = False
        self._malformed = 0
        self._tool_calls = 0

    @classmethod
    def target_info(cls, target: str) -> tuple[str | None, bool] | None:
        found = _PATH.search(unquote(target.partition("#")[0].partition("?")[0]))
        return (found.group(1), False) if found else None

    def observe(self, event: Event) -> int:
        if event.event == "error":
            return self._fail()
        return self.observe_data(event.data)

    def observe_data(self, data: bytes) -> int:
        if is_done(data):
            self._done = True
            return TERMINAL
        doc = load_object(data)
        if doc is None:
            self._malformed += 1
            return MALFORMED
        if is_error_frame(doc) or (doc.get("success") is False and doc.get("errors")):
            return self._fail()
        response = doc.get("response")
        bits = CONTENT if (isinstance(response, str) and response) or type(response) in (int, float) else 0
        calls = doc.get("tool_calls")
        if isinstance(calls, list) and calls:
            self._tool_calls += len(calls)
            bits |= CONTENT
        choices = doc.get("choices")
        if isinstance(choices, list):
            bits |= self._choices(choices)
        reason = doc.get("finish_reason")
        if isinstance(reason, str) and reason:
            self._finish = reason_word(reason)
            bits |= FINISH | TERMINAL
        usage = doc.get("usage")
        if isinstance(usage, dict) and usage:
            self._usage = held_usage(usage)
            bits |= USAGE
        return bits

    def _choices(self, choices: list[Any]) -> int:
        bits = 0
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict) and any(delta.get(name) for name in _DELTA_FIELDS):
                bits |= CONTENT
            reason = choice.get("finish_reason")
            if isinstance(reason, str) and reason:
                self._finish = reason_word(reason)
                bits |= FINISH | TERMINAL
        return bits

    def _fail(self) -> int:
        self._errors += 1
        self._failed = True
        return TERMINAL | ERROR

    def summary(self) -> DialectSummary:
        usage = clean_usage(self._usage)
        prompt, completion = token_counts(usage)
        return DialectSummary(
            terminal=self._done or self._finish is not None or self._failed,
            failed=self._failed,
            done=self._done,
            finish_reasons=[self._finish] if self._finish is not None else [],
            missing_finish_reason=False,
            usage=usage,
            prompt_tokens=prompt,
            completion_tokens=completion,
            error_events=self._errors,
            malformed_frames=self._malformed,
            tool_calls=self._tool_calls,
        )
