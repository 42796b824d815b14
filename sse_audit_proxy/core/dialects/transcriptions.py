"""Transcription streams (`/v1/audio/transcriptions`, `/v1/audio/translations`, `stream=true`).

Two shapes are served under this path. OpenAI's: typed events, `transcript.text.delta` (and
`transcript.text.segment`, diarized) carry text, `transcript.text.done` ends the stream with
usage. vLLM's and its kin: Chat-like chunks without a `type` (`object:
"transcription.chunk"`, text in `choices[].delta.content`, a `finish_reason`), then
`data: [DONE]`, their end.
"""

from __future__ import annotations

from typing import Any

from sse_audit_proxy.core.dialects.base import (
    CONTENT,
    ERROR,
    FINISH,
    TERMINAL,
    USAGE,
    DialectSummary,
    failed_reason,
    held_usage,
    is_done,
)
from sse_audit_proxy.core.dialects.typed import NamedEvents
from sse_audit_proxy.core.sse import Event


class Transcriptions(NamedEvents):
    route = "audio_transcriptions"
    path_suffixes = ("/audio/transcriptions", "/audio/translations")
    content_events = frozenset({"transcript.text.delta", "transcript.text.segment"})
    end_events = frozenset({"transcript.text.done"})
    # vLLM's chunks end their text with a finish_reason, as Chat's do; OpenAI's typed events
    # finish with their end event (summary: never missing there).
    expects_finish_reason = True

    __slots__ = ("_typed",)

    def __init__(self) -> None:
        super().__init__()
        self._typed = False  # OpenAI's typed events came: only `transcript.text.done` ends it

    def observe(self, event: Event) -> int:
        if is_done(event.data):
            self._done = True
            if self._typed:  # a gateway's `[DONE]` after typed events: not their end
                return 0
            self._terminal = True  # the chunks' end
            return TERMINAL
        return super().observe(event)

    def _on(self, kind: str, doc: dict[str, Any]) -> int:
        self._typed = True
        return super()._on(kind, doc)

    def summary(self) -> DialectSummary:
        summary = super().summary()
        if self._typed:
            summary.missing_finish_reason = False  # the end event is the finish
        return summary

    def _untyped(self, doc: dict[str, Any]) -> int:
        choices = doc.get("choices")
        if not isinstance(choices, list):
            return super()._untyped(doc)
        bits = 0
        for choice in choices:
            if not isinstance(choice, dict):
                self._malformed += 1
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict) and delta.get("content"):
                bits |= CONTENT
            reason = choice.get("finish_reason")
            if isinstance(reason, str) and reason:
                bits |= FINISH
                if failed_reason(reason):  # vLLM's `abort`, `error`: the text stops there
                    self._fail()
                    bits |= ERROR
                else:
                    self._finished(reason)
        usage = doc.get("usage")
        if usage:
            self._usage = held_usage(usage)
            bits |= USAGE
        return bits
