"""A finish reason is kept only when it is a protocol word.

It goes into the stream_end line, the evidence file and the `finish_reason` label, so a
gateway that puts text in it (a bug, or a hostile upstream) must not put completion text
there, nor a megabyte of anything."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest

from sse_audit_proxy.core.audit import End, StreamAudit
from sse_audit_proxy.core.dialects import Dialect
from sse_audit_proxy.core.dialects.anthropic import AnthropicMessages
from sse_audit_proxy.core.dialects.base import MAX_REASON_CHARS, OTHER_REASON
from sse_audit_proxy.core.dialects.chat import ChatCompletions
from sse_audit_proxy.core.dialects.completions import Completions
from sse_audit_proxy.core.dialects.responses import Responses

# What providers and gateways send (OpenAI, Anthropic, Responses' incomplete reasons, vLLM,
# Mistral, Gemini through LiteLLM).
REAL = [
    "stop",
    "length",
    "tool_calls",
    "content_filter",
    "function_call",
    "end_turn",
    "max_tokens",
    "stop_sequence",
    "tool_use",
    "pause_turn",
    "refusal",
    "max_output_tokens",
    "model_length",
    "abort",
    "insufficient_system_resource",
    "SAFETY",
    "FINISH_REASON_UNSPECIFIED",
    "eos_token",
    ("abcdefgh_" * 5)[:MAX_REASON_CHARS],
]
NOT_WORDS = [
    "The answer is 42, said the model",  # text
    "stop\n",
    "stop<script>",
    "x" * (MAX_REASON_CHARS + 1),
    # a key or a token: it reached the `finish_reason` label and the evidence
    "sk-CANARYfinish0123456789abcd",
    "AKIAIOSFODNN7EXAMPLE",
    "sk-lf-0f8fad5b-d9cb-469f-a165-70867728950e",  # a UUID-shaped key
    "gsk_aB3dE5fG7hJ9kL1_mN2pQ4rS6tU8vW0",  # a random token cut into short runs
    "x" * 32,
    "y" * (512 << 10),  # under --max-frame-bytes, so the frame is read
    # shaped as a word but not as a finish reason: text a hostile upstream put there (an
    # outside review; they reached the label and the evidence)
    "the.users.ssn.is.123-45-6789",
    "hunter2:password/is.here",
    "see-the-prompt",
    "_private",
]


def _chat(reason: str) -> list[bytes]:
    choice = {"index": 0, "delta": {"content": "hi"}, "finish_reason": reason}
    return [b"data: " + orjson.dumps({"choices": [choice]}) + b"\n\n", b"data: [DONE]\n\n"]


def _chat_plain(reason: str) -> list[bytes]:  # another shape: the plain JSON reading
    choice = {"index": "0", "delta": {"content": "hi"}, "finish_reason": reason}
    return [b"data: " + orjson.dumps({"choices": [choice]}) + b"\n\n", b"data: [DONE]\n\n"]


def _completions(reason: str) -> list[bytes]:
    choice = {"index": 0, "text": "hi", "finish_reason": reason}
    return [b"data: " + orjson.dumps({"choices": [choice]}) + b"\n\n", b"data: [DONE]\n\n"]


def _responses(reason: str) -> list[bytes]:
    response = {"id": "r", "status": "incomplete", "incomplete_details": {"reason": reason}}
    end = {"type": "response.incomplete", "sequence_number": 0, "response": response}
    return [b"data: " + orjson.dumps(end) + b"\n\n"]


def _anthropic(reason: str) -> list[bytes]:
    delta = {"type": "message_delta", "delta": {"stop_reason": reason}, "usage": {"output_tokens": 1}}
    return [
        b"event: message_delta\ndata: " + orjson.dumps(delta) + b"\n\n",
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
    ]


STREAMS: list[tuple[type[Dialect], Callable[[str], list[bytes]]]] = [
    (ChatCompletions, _chat),
    (ChatCompletions, _chat_plain),
    (Completions, _completions),
    (Responses, _responses),
    (AnthropicMessages, _anthropic),
]


def _reasons(dialect: type[Dialect], frames: list[bytes]) -> list[str]:
    audit = StreamAudit(dialect(), 0.0)
    for i, frame in enumerate(frames):
        audit.feed(frame, 0.01 * (i + 1))
    return audit.finish(1.0, End.UPSTREAM_EOF).finish_reasons


@pytest.mark.parametrize(("dialect", "stream"), STREAMS, ids=lambda v: getattr(v, "__name__", ""))
@pytest.mark.parametrize(
    ("reason", "kept"),
    [(r, r) for r in REAL] + [(r, OTHER_REASON) for r in NOT_WORDS],
    ids=lambda v: v[:20],
)
def test_a_protocol_word_is_kept_as_sent_and_anything_else_as_other(
    dialect: type[Dialect], stream: Callable[[str], list[bytes]], reason: str, kept: str
) -> None:
    assert _reasons(dialect, stream(reason)) == [kept]
