"""A hostile upstream opens a new tool call in every frame, without end.

Each new call id used to make the audit hold about 420 bytes for a frame of about 100: memory in
step with the stream, for as long as the upstream goes on. The real `serve` process relays the
whole stream byte for byte, holds no more memory for it than for a plain stream of the same
size, and its `stream_end` line flags the stream as malformed.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web
from peers import serve

from tests.reliability_support import CHAT, STREAM_BODY

FRAMES = 150_000  # about 15 MB of frames: 60 MB held by the audit without the bound


def call_frame(i: int) -> bytes:
    call = b'{"id":"call_%d","type":"function","function":{"name":"f","arguments":"{}"}}' % i
    return b'data: {"choices":[{"index":0,"delta":{"tool_calls":[%b]}}]}\n\n' % call


def plain_frame(i: int) -> bytes:
    return b'data: {"choices":[{"index":0,"delta":{"content":"%d"}}]}\n\n' % i


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_a_new_tool_call_in_every_frame_holds_no_more_memory(upstream: Any) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        frame = call_frame if request.headers.get("X-Flood") else plain_frame
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        batch = 500
        for start in range(0, FRAMES, batch):
            await resp.write(b"".join(frame(i) for i in range(start, start + batch)))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    url = await upstream(handler)
    async with serve(url) as child, aiohttp.ClientSession() as http:

        async def stream(flood: bool) -> tuple[bytes, int]:
            headers = {"X-Flood": "1"} if flood else {}
            async with http.post(child.url / CHAT.lstrip("/"), json=STREAM_BODY, headers=headers) as resp:
                assert resp.status == 200
                body = await resp.read()
            return body, rss_kib(child.proc.pid)

        _, _warm = await stream(False)  # the process at its working size for such a stream
        _, after_plain = await stream(False)
        body, after_flood = await stream(True)

    expected = b"".join(call_frame(i) for i in range(FRAMES)) + b"data: [DONE]\n\n"
    assert body == expected  # relayed byte for byte
    grown = after_flood - after_plain
    assert grown < 8 << 10, f"the flood left the proxy {grown} KiB larger"
    ends = child.events("stream_end")
    assert "malformed_frame" in ends[-1]["anomalies"], ends[-1]["anomalies"]
    assert ends[-1]["tool_calls"] == 256
