"""Hugging Face text-generation-inference's native stream (`POST /generate_stream`).

An event stream (`data:` with no space, an empty comment `:` as the keep-alive) of one frame a
token: `index`, `token` (`id`, `text`, `logprob`, `special`), `generated_text` null and
`details` null, until the last, whose `generated_text` is the whole answer and whose `details`,
when the request asked for them (`parameters.details`: TGI's `text_generation` client always
does, huggingface_hub's `InferenceClient` when told), hold the finish reason (`length`,
`eos_token`, `stop_sequence`) and the token counts (`input_length`, `generated_tokens`). There
is no `[DONE]`. A failure, mid-stream or before the first token (a request TGI refuses once
the stream has begun), is a frame `{"error": "...", "error_type": "..."}`, on which both
clients raise; LoRAX and Predibase stream the same shape.

Neither client says a word about a stream that ends before the last frame: both hand on the
partial text as the answer. Here that stream is `truncated`, where a route with no dialect
said `complete`. Only a stream whose first frame is TGI's is read so (Triton streams another
shape on `/v2/models/{model}/generate_stream`); anything else is read as on a route with no
dialect.
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
    is_done,
    loses_data_line,
    reason_word,
    token_count,
)
from sse_audit_proxy.core.dialects.native_lines import NativeLines

SUFFIX = "/generate_stream"


class TextGenerationInference(NativeLines):
    route = "tgi"
    path_suffixes = (SUFFIX,)
    evidence_path = SUFFIX
    end_marker = "last frame (`generated_text`)"
    always_streams = True  # the path is the stream: its answers are event streams
    empty_event_raises = False  # both clients skip what is not a `data:` line

    __slots__ = ("_refused",)

    @classmethod
    def loses_to_bom(cls, line: bytes) -> bool:
        return loses_data_line(line)  # huggingface_hub loses TGI's first token

    def __init__(self) -> None:
        super().__init__()
        self._refused = False  # a validation error: the client's request, refused

    @classmethod
    def target_info(cls, target: str) -> tuple[str | None, bool]:
        """The path asks for the stream; TGI serves one model, named nowhere in the request."""
        return None, True

    @staticmethod
    def opens(doc: dict[str, Any]) -> bool:
        token = doc.get("token")
        if type(doc.get("index")) is int and isinstance(token, dict):
            return True
        return isinstance(doc.get("error"), str) and isinstance(doc.get("error_type"), str)

    def observe_data(self, data: bytes) -> int:
        if self._native and is_done(data):
            # Not TGI's, but huggingface_hub's client stops at it, as at the last frame.
            self._done = True
            return TERMINAL
        return super().observe_data(data)

    def summary(self) -> DialectSummary:
        summary = super().summary()
        summary.refused = self._refused
        return summary

    def _line(self, doc: dict[str, Any]) -> int:
        if doc.get("error") is not None:  # both clients raise on it (an empty one too)
            self._errors += 1
            self._failed = True
            # TGI refuses a request it cannot take (an input too long, `best_of` on a stream)
            # inside the stream it already answered 200: the client's error, as a 4xx is.
            self._refused = self._refused or doc.get("error_type") == "validation"
            return ERROR
        if self._failed:
            return 0  # nothing after an error reaches a client's caller
        token = doc.get("token")
        bits = 0
        if isinstance(token, dict) and token.get("special") is not True:
            text = token.get("text")
            if isinstance(text, str) and text:
                bits = CONTENT
        if isinstance(doc.get("generated_text"), str):
            self._done = True
            bits |= TERMINAL
            details = doc.get("details")
            if isinstance(details, dict):
                reason = details.get("finish_reason")
                if isinstance(reason, str) and reason:
                    self._finish = reason_word(reason)
                    bits |= FINISH
                if self._counted(
                    token_count(details.get("input_length")), token_count(details.get("generated_tokens"))
                ):
                    bits |= USAGE
        return bits
