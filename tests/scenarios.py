"""A small scenario upstream for the deployment tests: one aiohttp app, faults chosen per request.

The scenario comes from the `X-Demo-Scenario` header, else from a `demo-<scenario>` model name:
the same names and selection rules as the demo gateway (`sse-audit-proxy gateway`), so a test
can switch to that gateway by changing only the base URL it sends to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from chat_streams import DONE, USAGE, chunk, frame, usage_chunk
from yarl import URL

SSE = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
SLOW_FIRST_TOKEN = 1.2  # seconds: above the TTFT alert's 0.5 s floor, a bucket boundary away
TOKEN_DELAY = 0.004
TOKENS = 8

HEALTHY = ("healthy", "tool-call", "keepalive")
FAULTY = ("buffered", "truncated", "no-usage", "no-done", "no-finish", "slow-first-token",
          "error-midstream", "http-429", "http-500")


def scenario_of(request: web.Request, body: dict[str, Any]) -> str:
    header = request.headers.get("X-Demo-Scenario")
    if header:
        return header
    model = str(body.get("model", ""))
    return model.removeprefix("demo-") if model.startswith("demo-") else "healthy"


def _content(n: int = TOKENS) -> list[bytes]:
    return [chunk({"role": "assistant", "content": ""})] + [
        chunk({"content": f"tok{i} "}) for i in range(n)]


def _tail(usage: bool, *, finish: str | None = "stop", done: bool = True) -> list[bytes]:
    frames = [chunk({}, finish=finish)] if finish else []
    if usage:
        frames.append(usage_chunk())
    if done:
        frames.append(DONE)
    return frames


async def _send(resp: web.StreamResponse, frames: list[bytes], delay: float,
                between: bytes = b"") -> None:
    for data in frames:
        await resp.write(data)
        if between:
            await resp.write(between)
        await asyncio.sleep(delay)


async def handle(request: web.Request) -> web.StreamResponse:
    body = orjson.loads(await request.read() or b"{}")
    scenario = scenario_of(request, body)
    usage = bool((body.get("stream_options") or {}).get("include_usage"))
    if scenario in ("http-429", "http-500"):
        status = int(scenario[-3:])
        return web.json_response({"error": {"message": scenario, "type": "demo", "code": scenario}},
                                 status=status)
    if not body.get("stream"):
        return web.json_response({"id": "chatcmpl-1", "object": "chat.completion",
                                  "choices": [{"index": 0, "finish_reason": "stop",
                                               "message": {"role": "assistant", "content": "hi"}}],
                                  "usage": USAGE})
    resp = web.StreamResponse(headers=SSE)
    await resp.prepare(request)
    content = _content()
    if scenario == "buffered":
        await asyncio.sleep(SLOW_FIRST_TOKEN)
        await resp.write(b"".join(content + _tail(usage)))
    elif scenario == "slow-first-token":
        await asyncio.sleep(SLOW_FIRST_TOKEN)
        await _send(resp, content + _tail(usage), TOKEN_DELAY)
    elif scenario == "truncated":
        await _send(resp, content[: TOKENS // 2], TOKEN_DELAY)
    elif scenario == "no-usage":
        await _send(resp, content + _tail(False), TOKEN_DELAY)
    elif scenario == "no-done":
        await _send(resp, content + _tail(usage, done=False), TOKEN_DELAY)
    elif scenario == "no-finish":
        await _send(resp, content + _tail(usage, finish=None), TOKEN_DELAY)
    elif scenario == "error-midstream":
        error = frame({"error": {"message": "overloaded", "type": "server_error"}})
        await _send(resp, [*content[:3], error, DONE], TOKEN_DELAY)
    elif scenario == "tool-call":
        frames = [chunk({"role": "assistant", "tool_calls": [
            {"index": 0, "id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": ""}}]})]
        frames += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]})
                   for part in ('{"ci', 'ty": "Pa', 'ris"}')]
        await _send(resp, frames + _tail(usage, finish="tool_calls"), TOKEN_DELAY)
    elif scenario == "keepalive":
        await _send(resp, content + _tail(usage), TOKEN_DELAY, between=b": ping\n\n")
    else:
        await _send(resp, content + _tail(usage), TOKEN_DELAY)
    return resp


def scenario_app() -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def send(http: aiohttp.ClientSession, base: URL, scenario: str, *, model: str = "gpt-canary",
               stream: bool = True, trace_id: str | None = None) -> int:
    """One chat request through `base`, read to the end; returns the status."""
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream_options"] = {"include_usage": True}
    headers = {"X-Demo-Scenario": scenario, "Content-Type": "application/json"}
    if trace_id:
        headers["X-Client-Request-Id"] = trace_id
    try:
        async with http.post(base / "v1/chat/completions", data=orjson.dumps(body),
                             headers=headers) as resp:
            await resp.read()
            return resp.status
    except aiohttp.ClientPayloadError:
        return -1  # a cut stream, as the client sees it


async def drive(http: aiohttp.ClientSession, base: URL, mix: Sequence[str], *, count: int,
                concurrency: int, model: str = "gpt-canary") -> list[int]:
    """Send `count` requests cycling through `mix`, at most `concurrency` at once."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> int:
        async with gate:
            scenario = mix[i % len(mix)]
            return await send(http, base, scenario, model=model, stream=i % 7 != 6 or
                              scenario.startswith("http-"))

    return list(await asyncio.gather(*(one(i) for i in range(count))))
