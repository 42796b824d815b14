"""A hostile upstream sends a gzip bomb as an event stream (issue 12, item 1).

Decoding is audit-side work; it must never delay forwarding, for this stream or any other.
The bomb reaches its client byte for byte; the audit stops decoding it and flags it.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import zlib
from typing import Any

import aiohttp
from aiohttp import web
from peers import serve

from tests.reliability_support import CHAT, STREAM_BODY, chunk

INFLATED = 32 << 20  # the proxy on main stalled ~1.3 s auditing this much


def gzip_bomb() -> bytes:
    """INFLATED bytes of realistic frames, gzip'd."""
    frame = chunk("tok")
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = frame * ((1 << 20) // len(frame))
    parts = [z.compress(block) for _ in range(INFLATED // len(block))]
    return b"".join(parts) + z.flush()


async def test_gzip_bomb_is_forwarded_unchanged_flagged_and_never_delays_other_requests(
    upstream: Any,
) -> None:
    bomb = gzip_bomb()
    assert len(bomb) * 200 < INFLATED  # ~250x, like the 196 KB -> 64 MB bomb of the report

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        if request.path == "/v1/models":
            return web.json_response({"data": []})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Content-Encoding": "gzip"})
        await resp.prepare(request)
        for i in range(0, len(bomb), 16 << 10):
            await resp.write(bomb[i : i + (16 << 10)])
        await resp.write_eof()
        return resp

    url = await upstream(handler)
    async with serve(url) as child, aiohttp.ClientSession(auto_decompress=False) as http:
        models = child.url / "v1/models"

        async def probe() -> float:
            t = time.monotonic()
            async with http.get(models) as resp:
                assert resp.status == 200
                await resp.read()
            return time.monotonic() - t

        baseline = [await probe() for _ in range(20)]
        normal = statistics.median(baseline)

        async def bomb_stream() -> bytes:
            async with http.post(
                child.url / CHAT.lstrip("/"), json=STREAM_BODY, headers={"X-Client-Request-Id": "bomb-1"}
            ) as resp:
                assert resp.status == 200
                return await resp.read()

        received = asyncio.create_task(bomb_stream())
        during: list[float] = []
        deadline = time.monotonic() + 20
        extra = 5
        while extra and time.monotonic() < deadline:  # probes while the bomb goes through
            during.append(await probe())
            await asyncio.sleep(0.005)
            if received.done():
                extra -= 1
        body = await asyncio.wait_for(received, 20)
        await asyncio.sleep(0.2)
        ends = [line for line in child.events("stream_end") if line["trace_id"] == "bomb-1"]

    assert body == bomb, "the client gets the upstream's bytes unchanged"
    assert len(during) >= 5
    assert max(during) <= normal + 0.1, (normal, sorted(during)[-5:])
    assert len(ends) == 1
    assert "compression_bomb" in ends[0]["anomalies"]
    assert "malformed_frame" not in ends[0]["anomalies"]
    assert ends[0]["outcome"] == "complete"  # from the transport: the upstream ended it cleanly
