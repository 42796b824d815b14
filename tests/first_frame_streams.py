"""Whole streams of a few routes whose first frame carries part of the text ("Hel", then "lo"),
as the routes' servers write them: what a client loses with the first frame shows."""

from __future__ import annotations

import json
from typing import Any

from chat_streams import DONE, chunk


def sse(*docs: dict[str, Any], named: bool = False) -> bytes:
    """Each doc a `data:` frame, after an `event:` line with its `type` when `named`."""
    out = b""
    for doc in docs:
        if named:
            out += b"event: " + doc["type"].encode() + b"\n"
        out += b"data: " + json.dumps(doc).encode() + b"\n\n"
    return out


def _text_completion(text: str, finish: str | None = None) -> dict[str, Any]:
    choice = {"index": 0, "text": text, "finish_reason": finish}
    return {"id": "c", "object": "text_completion", "created": 1, "model": "m", "choices": [choice]}


CHAT = chunk({"role": "assistant", "content": "Hel"}) + chunk({"content": "lo"}) + chunk({}, "stop") + DONE
COMPLETIONS = sse(_text_completion("Hel"), _text_completion("lo", "stop")) + b"data: [DONE]\n\n"
MESSAGES = sse(
    {
        "type": "message_start",
        "message": {
            "id": "m",
            "type": "message",
            "role": "assistant",
            "model": "c",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": 1},
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}},
    {"type": "content_block_stop", "index": 0},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 2},
    },
    {"type": "message_stop"},
    named=True,
)
GEMINI = sse(
    {"candidates": [{"content": {"parts": [{"text": "Hel"}], "role": "model"}, "index": 0}]},
    {
        "candidates": [
            {"content": {"parts": [{"text": "lo"}], "role": "model"}, "finishReason": "STOP", "index": 0}
        ],
        "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 2},
    },
)
