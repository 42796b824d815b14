"""An open stream does not hold on to its request body: a long prompt is sent upstream and
let go, so memory per open stream does not grow with the prompt."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from typing import Any

import aiohttp
import orjson
from aiohttp import web

STREAMS = 8
PROMPT = 768 << 10  # bytes of prompt per request (the test upstream takes up to 1 MiB)


async def test_open_streams_do_not_keep_their_request_bodies(upstream: Any, proxy: Any) -> None:
    release = asyncio.Event()

    async def slow_stream(request: web.Request) -> web.StreamResponse:
        assert len(await request.content.read()) > PROMPT  # read and let go (read() would keep it)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n')
        await asyncio.wait_for(release.wait(), 10.0)
        await resp.write(b"data: [DONE]\n\n")
        return resp

    running = await proxy(await upstream(slow_stream))
    body = orjson.dumps(
        {"model": "m", "stream": True, "messages": [{"role": "user", "content": "x" * PROMPT}]}
    )
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        async with aiohttp.ClientSession() as http:
            responses = [
                await http.post(
                    running.url / "v1/chat/completions",
                    data=body,
                    headers={"Content-Type": "application/json"},
                )
                for _ in range(STREAMS)
            ]
            for resp in responses:
                assert b"hi" in await resp.content.readuntil(b"\n\n")
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before
            release.set()
            for resp in responses:
                await resp.read()
                resp.release()
    finally:
        tracemalloc.stop()
    # Holding the bodies would be STREAMS * PROMPT (6 MiB) on its own.
    assert held < 2 * PROMPT, f"{held / 2**20:.1f} MiB held by {STREAMS} open streams"
