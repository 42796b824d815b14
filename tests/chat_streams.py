"""Building blocks for Chat Completions streams in tests."""

from __future__ import annotations

from typing import Any

import orjson

DONE = b"data: [DONE]\n\n"
USAGE = {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}


def frame(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def chunk(
    delta: dict[str, Any] | None = None,
    finish: str | None = None,
    index: int = 0,
    usage: dict[str, Any] | None = None,
) -> bytes:
    choice = {"index": index, "delta": delta or {}, "finish_reason": finish}
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [choice],
    }
    if usage is not None:
        body["usage"] = usage
    return frame(body)


def usage_chunk(usage: dict[str, Any] = USAGE) -> bytes:
    return frame(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [],
            "usage": usage,
        }
    )


def healthy(n: int = 5, *, usage: bool = True, done: bool = True, finish: str | None = "stop") -> list[bytes]:
    frames = [chunk({"role": "assistant", "content": ""})]
    frames += [chunk({"content": f"tok{i} "}) for i in range(n)]
    frames.append(chunk({}, finish=finish))
    if usage:  # each token frame is at least one token (else it is `usage_inconsistent`)
        frames.append(
            usage_chunk(
                USAGE if n <= 5 else {"prompt_tokens": 11, "completion_tokens": n, "total_tokens": 11 + n}
            )
        )
    if done:
        frames.append(DONE)
    return frames


def tool_call_stream(arguments: list[str]) -> list[bytes]:
    frames = [
        chunk(
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ],
            }
        )
    ]
    frames += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}) for part in arguments]
    frames += [chunk({}, finish="tool_calls"), DONE]
    return frames
