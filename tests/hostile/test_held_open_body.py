"""A body held open after `[DONE]`, through the real `serve`: the client that reads to the body's
end (as the Node SDKs do) waits, and the record says so; one that closes at `[DONE]` (the
Python SDK) does not wait, and its record says nothing of it."""

from __future__ import annotations

import asyncio

from peers import serve
from relay_support import RawRequest, raw_upstream
from yarl import URL

FRAMES = [
    b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n',
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n',
    b"data: [DONE]\n\n",
]
HOLD = 1.5


async def holds_open(_: RawRequest, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
    for frame in FRAMES:
        writer.write(b"%x\r\n%s\r\n" % (len(frame), frame))
        await writer.drain()
    await asyncio.sleep(HOLD)  # a slow callback after the last yield
    writer.write(b"0\r\n\r\n")
    await writer.drain()


async def exchange(port: int, trace: bytes, *, close_at_done: bool) -> bytes:
    body = b'{"model":"m","stream":true,"messages":[]}'
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Client-Request-Id: %s\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (trace, len(body), body)
    )
    got = b""
    async with asyncio.timeout(10):
        while not got.endswith(b"0\r\n\r\n"):
            got += await reader.read(65536)
            if close_at_done and b"[DONE]" in got:
                break
    writer.close()
    return got


async def test_a_body_held_open_after_done_is_recorded_as_held_open() -> None:
    async with raw_upstream(holds_open) as up, serve(URL(f"http://127.0.0.1:{up.port}")) as child:
        loop = asyncio.get_running_loop()
        began = loop.time()
        await exchange(child.url.port, b"reads-to-end", close_at_done=False)
        waited = loop.time() - began
        await exchange(child.url.port, b"closes-at-done", close_at_done=True)
        for _ in range(50):  # bounded: 5 s for the two records
            if len(child.events("stream_end")) == 2:
                break
            await asyncio.sleep(0.1)
    assert waited >= HOLD  # what a Node client lives through
    ends = {e["trace_id"]: e for e in child.events("stream_end")}
    assert (ends["reads-to-end"]["outcome"], ends["reads-to-end"]["anomalies"]) == ("complete", ["held_open"])
    assert (ends["closes-at-done"]["outcome"], ends["closes-at-done"]["anomalies"]) == ("complete", [])
