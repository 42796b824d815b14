"""Gemini's native stream (`models/{model}:streamGenerateContent?alt=sse`; Vertex AI's too).

Each frame is a whole `GenerateContentResponse`: `candidates[]`, each with `content.parts[]`
(text, a thought's text, a `functionCall` whose `args` come whole, inline data, code) and, in
its last chunk, a `finishReason` (`STOP`, `MAX_TOKENS`, `SAFETY`, `MALFORMED_FUNCTION_CALL`,
...); `usageMetadata` (`promptTokenCount`, `candidatesTokenCount`, `thoughtsTokenCount`, ...)
in the last chunk at least; `promptFeedback.blockReason` and no candidates when the prompt was
blocked. There is no `[DONE]` and no end event: each candidate's finish reason is its end. A
failure mid-stream is an `{"error": {...}}` frame, which both official SDKs raise on. Neither
(google-genai for Python, @google/genai for Node) says a word about a stream that ends before
the finish reason: they hand on what came, so here that stream is `truncated`, where a route
with no dialect said `complete`.

The model is named in the URL and `alt=sse` asks for the event stream (without it the answer
is a JSON array, no event stream): target_info reads both. Frames with an `event:` or `id:`
line, several `data:` lines or a `data:` without its space, and comment lines, are not
Gemini's: @google/genai drops or throws on such an event (it skips comments), and google-genai
raises on any line but `data: ...`, so each is a `malformed_frame`.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from sse_audit_proxy.core.dialects.base import (
    CONTENT,
    ERROR,
    ERROR_EVENT,
    FINISH,
    MALFORMED,
    MAX_KEYS,
    TERMINAL,
    USAGE,
    Dialect,
    DialectSummary,
    clean_usage,
    held_usage,
    is_error_frame,
    load_object,
    reason_word,
    token_count,
)
from sse_audit_proxy.core.sse import Event

STREAM_METHOD = ":streamGenerateContent"
# The model of a Gemini API, Vertex AI or tuned-model URL: `.../models/gemini-2.5-flash:...`,
# `.../publishers/google/models/gemini-2.5-pro:...`, `.../tunedModels/my-model:...`.
_MODEL = re.compile(r"/(?:tunedModels|models)/([^/:]+):[A-Za-z]+$")
_ASKS_SSE = re.compile(r"(?:^|&)(?:\$|%24)?alt=sse(?:&|$)")  # (`$alt` is Google's spelling too)
# What a part carries that the client sees: text (a thought's too), a call, data, code.
_OUTPUT_PARTS = ("functionCall", "inlineData", "fileData", "executableCode", "codeExecutionResult")


class Gemini(Dialect):
    route = "gemini"
    path_suffixes = (STREAM_METHOD, ":generateContent")
    evidence_path = "/v1beta/models/model" + STREAM_METHOD + "?alt=sse"
    # The finish reasons are the end: a stream without all of them is `truncated`, so none is
    # judged missing on its own.
    expects_finish_reason = False
    end_marker = "finishReason for each candidate"
    usage_always = True  # `usageMetadata` comes with every stream's last chunk
    always_streams = True
    empty_event_raises = False
    data_lines_only = True

    __slots__ = (
        "_blocked",
        "_calls",
        "_errors",
        "_failed",
        "_finish",
        "_malformed",
        "_open",
        "_unread",
        "_usage",
    )

    @classmethod
    def loses_to_bom(cls, line: bytes) -> bool:
        return True  # google-genai reads the first line, whatever it is, as JSON: it fails

    def __init__(self) -> None:
        self._finish: dict[int, str] = {}  # candidate index -> its finish reason
        self._open: set[int] = set()  # candidates seen without one yet
        self._blocked: str | None = None  # the prompt's blockReason: no candidates will come
        self._usage: Any = None
        self._calls = 0
        self._errors = 0
        # An error frame came: both SDKs raise on it, so nothing after it reaches their users.
        self._failed = False
        self._malformed = 0
        # A frame too large to read, with no output read after it: it may have finished what is
        # open (an image model's last chunk); output after it shows it did not end the answer.
        self._unread = False

    @classmethod
    def target_info(cls, target: str) -> tuple[str | None, bool]:
        path, _, query = target.partition("#")[0].partition("?")
        path = unquote(path)
        found = _MODEL.search(path)
        asked = path.endswith(STREAM_METHOD) and _ASKS_SSE.search(query) is not None
        return (found.group(1) if found else None), asked

    def observe(self, event: Event) -> int:
        if event.event == ERROR_EVENT:
            return self._fail()
        bits = self.observe_data(event.data)
        # Not Gemini's: several `data:` lines, which @google/genai throws on (any other line is
        # counted by the decoder: data_lines_only).
        if b"\n" in event.data:
            self._malformed += 1
            bits |= MALFORMED
        return bits

    def observe_unread(self, name: str) -> int | None:
        """A frame too large to read (an image's `inlineData`): it may carry a finish reason."""
        self._unread = True
        return None

    def observe_data(self, data: bytes) -> int:
        doc = load_object(data)
        if doc is None:
            self._malformed += 1
            return MALFORMED
        if is_error_frame(doc):
            return self._fail()
        bits = 0
        candidates = doc.get("candidates")
        if isinstance(candidates, list):
            for candidate in candidates:
                bits |= self._candidate(candidate)
        elif candidates is not None:
            self._malformed += 1
            bits |= MALFORMED
        feedback = doc.get("promptFeedback")
        block = feedback.get("blockReason") if isinstance(feedback, dict) else None
        if isinstance(block, str) and block:
            self._blocked = reason_word(block)
            bits |= FINISH
        usage = doc.get("usageMetadata")
        if isinstance(usage, dict) and usage:
            self._usage = held_usage(usage, len(data))
            bits |= USAGE
        if bits & FINISH and self._ended():
            bits |= TERMINAL
        return bits

    def _candidate(self, candidate: Any) -> int:
        index = candidate.get("index") if isinstance(candidate, dict) else False
        if index is None:  # proto3 JSON leaves out an index of 0; re-serialised, it is null
            index = 0
        if type(index) is not int:
            self._malformed += 1
            return MALFORMED
        bits = 0
        content = candidate.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        if isinstance(parts, list):
            bits = self._parts(parts)
            if bits & CONTENT:
                self._unread = False
        reason = candidate.get("finishReason")
        if index in self._finish:
            return bits
        if index not in self._open and len(self._open) + len(self._finish) >= MAX_KEYS:
            self._malformed += 1
            return bits | MALFORMED
        if isinstance(reason, str) and reason:
            self._finish[index] = reason_word(reason)
            self._open.discard(index)
            return bits | FINISH
        self._open.add(index)
        return bits

    def _parts(self, parts: list[Any]) -> int:
        bits = 0
        for part in parts:
            if type(part) is not dict:
                self._malformed += 1
                bits |= MALFORMED
                continue
            call = part.get("functionCall")
            text = part.get("text")
            if not (text is None or type(text) is str) or (
                type(call) is dict and call.get("args") is not None and type(call.get("args")) is not dict
            ):
                # google-genai's types refuse the chunk (a pydantic ValidationError): a number
                # for text, arguments sent as a JSON string (as OpenAI's are) rather than an object.
                self._malformed += 1
                bits |= MALFORMED
                continue
            if type(call) is dict and call.get("name"):
                self._calls += 1  # its `args` come whole, an object: nothing to assemble
                bits |= CONTENT
            elif not bits & CONTENT and ((type(text) is str and text) or any(map(part.get, _OUTPUT_PARTS))):
                bits |= CONTENT
        return bits

    def _fail(self) -> int:
        self._errors += 1
        self._failed = True
        return TERMINAL | ERROR

    def _ended(self) -> bool:
        return self._blocked is not None or self._unread or (bool(self._finish) and not self._open)

    def summary(self) -> DialectSummary:
        usage = clean_usage(self._usage)
        reasons = list(self._finish.values()) if self._blocked is None else [self._blocked]
        return DialectSummary(
            terminal=self._ended() or self._failed,
            failed=self._failed,
            finish_reasons=reasons,
            missing_finish_reason=not self._ended(),
            usage=usage,
            prompt_tokens=_count(usage, "promptTokenCount"),
            completion_tokens=_output_tokens(usage),
            error_events=self._errors,
            malformed_frames=self._malformed,
            tool_calls=self._calls,
        )


def _count(usage: dict[str, Any] | None, name: str) -> int | None:
    return token_count(usage.get(name)) if usage else None


def _output_tokens(usage: dict[str, Any] | None) -> int | None:
    """The tokens written: the answer's and the thoughts' (both billed as output)."""
    answer, thoughts = _count(usage, "candidatesTokenCount"), _count(usage, "thoughtsTokenCount")
    if answer is None and thoughts is None:
        return None
    return (answer or 0) + (thoughts or 0)
