"""A client for the demo gateway's scenarios: chat requests that pick a scenario per request
with `X-Demo-Scenario`, as the e2e, lookup and worker tests drive them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aiohttp
import orjson
from yarl import URL

# The gateway's keepalive scenario waits `fault_delay` (pinging) before its first token, so it
# belongs to the faulty phase: in a healthy baseline it would lift the TTFT p95 it is compared to.
HEALTHY = ("healthy", "tool-call", "crlf")
# Fast gateway timing for tests; the 1.2 s fault delay keeps the slow first token above the
# TTFT alert's 0.5 s floor.
FAST = {"ttft": 0.01, "interval": 0.004, "jitter": 0.0, "fault_delay": 1.2, "frames": 8}
TOKENS = FAST["frames"]


async def send(
    http: aiohttp.ClientSession,
    base: URL,
    scenario: str,
    *,
    model: str = "gpt-canary",
    stream: bool = True,
    trace_id: str | None = None,
) -> int:
    """One chat request through `base`, read to the end; returns the status."""
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream_options"] = {"include_usage": True}
    headers = {"X-Demo-Scenario": scenario, "Content-Type": "application/json"}
    if trace_id:
        headers["X-Client-Request-Id"] = trace_id
    try:
        async with http.post(base / "v1/chat/completions", data=orjson.dumps(body), headers=headers) as resp:
            await resp.read()
            return resp.status
    except aiohttp.ClientPayloadError:
        return -1  # a cut stream, as the client sees it


async def drive(
    http: aiohttp.ClientSession,
    base: URL,
    mix: Sequence[str],
    *,
    count: int,
    concurrency: int,
    model: str = "gpt-canary",
) -> list[int]:
    """Send `count` requests cycling through `mix`, at most `concurrency` at once."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> int:
        async with gate:
            scenario = mix[i % len(mix)]
            return await send(
                http, base, scenario, model=model, stream=i % 7 != 6 or scenario.startswith("http-")
            )

    return list(await asyncio.gather(*(one(i) for i in range(count))))
