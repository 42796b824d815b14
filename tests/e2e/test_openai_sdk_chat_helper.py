"""The official `openai` SDK's Chat stream helper (`client.chat.completions.stream()`, which
builds the message from the deltas) through the proxy: what it raises on or gets wrong, the
audit reports."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web
from openai import AsyncOpenAI


def tool_call_upstream(indexed: bool, again: dict[str, Any] | None = None) -> Any:
    """A Chat stream with one tool call in two pieces, `index` on each or on none (Gemini's
    OpenAI-compatible API leaves it out), the second with `again`'s fields too."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        first = {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"loc'},
        }
        more = again or {}
        function = {**more.get("function", {}), "arguments": 'ation": "Paris"}'}
        pieces = [first, {**more, "function": function}]
        if indexed:
            pieces = [{"index": 0, **p} for p in pieces]
        deltas: list[dict[str, Any]] = [{"role": "assistant", "tool_calls": [p]} for p in pieces[:1]]
        deltas += [{"tool_calls": [p]} for p in pieces[1:]]
        chunks = [{"index": 0, "delta": d, "finish_reason": None} for d in deltas]
        chunks.append({"index": 0, "delta": {}, "finish_reason": "tool_calls"})
        for i, choice in enumerate(chunks):
            await asyncio.sleep(0.3 if i == len(chunks) - 1 else 0.005)  # a client that raised is gone
            doc = {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "m",
                "choices": [choice],
            }
            await resp.write(b"data: " + json.dumps(doc).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    return handler


@pytest.mark.parametrize("indexed", [True, False])
async def test_tool_call_pieces_without_index_are_malformed_as_the_sdks_helper_raises(
    upstream: Any, proxy: Any, indexed: bool
) -> None:
    running = await proxy(await upstream(tool_call_upstream(indexed)))
    client = AsyncOpenAI(base_url=str(running.url / "v1"), api_key="sk-test", max_retries=0)
    raised: BaseException | None = None
    try:
        async with client.chat.completions.stream(
            model="m", messages=[{"role": "user", "content": "Weather in Paris?"}]
        ) as stream:
            async for _ in stream:
                pass
    except (RuntimeError, TypeError, KeyError) as exc:  # what accumulate_delta raises
        raised = exc
    finally:
        await client.close()
    rec = await running.record()
    s = rec.stream
    assert s is not None
    assert (raised is None) is indexed, raised
    # It raised at the call's second piece and left: the guard counts a stream left on one bad.
    assert s.outcome.value == ("complete" if indexed else "client_disconnect")
    assert s.tool_calls == 1
    assert s.anomalies == ([] if indexed else ["malformed_frame"])


@pytest.mark.parametrize(
    ("again", "repeated"),
    [
        (None, False),
        ({"id": "call_1"}, True),  # LiteLLM, Fireworks, DeepSeek
        ({"function": {"name": "get_weather"}}, True),  # MiniMax on NVIDIA NIM
        ({"type": "function"}, False),  # the helper replaces `type`
    ],
    ids=["once", "id_again", "name_again", "type_again"],
)
async def test_a_tool_calls_id_or_name_sent_again_is_what_the_helper_joins(
    upstream: Any, proxy: Any, again: dict[str, Any] | None, repeated: bool
) -> None:
    running = await proxy(await upstream(tool_call_upstream(True, again)))
    client = AsyncOpenAI(base_url=str(running.url / "v1"), api_key="sk-test", max_retries=0)
    try:
        async with client.chat.completions.stream(
            model="m", messages=[{"role": "user", "content": "Weather in Paris?"}]
        ) as stream:
            final = await stream.get_final_completion()
    finally:
        await client.close()
    (call,) = final.choices[0].message.tool_calls or []
    joined = (call.id, call.function.name) != ("call_1", "get_weather")  # e.g. call_1call_1
    assert joined is repeated, (call.id, call.function.name)
    rec = await running.record()
    s = rec.stream
    assert s is not None
    assert (s.outcome.value, s.tool_calls) == ("complete", 1)
    assert s.anomalies == (["repeated_tool_call_fields"] if repeated else [])
