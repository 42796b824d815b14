"""Response framing from the upstream: broken chunking cuts the client at once; framing is
redone only where the two HTTP sides need it (issue 12, item 2)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from yarl import URL

from tests.hostile.relay_support import RawRequest, raw_exchange, raw_upstream
from tests.reliability_support import CHAT, STREAM_BODY

SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
FRAME = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@pytest.mark.parametrize("then", ["close", "hold"])
async def test_invalid_chunk_size_mid_body_cuts_the_client_at_once_and_records_truncated(
    then: str, proxy: Any
) -> None:
    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + chunk(FRAME) + b"zzzz\r\n")
        if then == "hold":
            await asyncio.sleep(10)  # the bytes already say it all: no need to wait for a close
        writer.close()

    async with raw_upstream(script) as up:
        p = await proxy(URL(f"http://127.0.0.1:{up.port}"))
        t0 = time.monotonic()
        got = b""
        async with (
            aiohttp.ClientSession() as http,
            http.post(p.url / CHAT.lstrip("/"), json=STREAM_BODY) as resp,
        ):
            assert resp.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):  # a broken stream, not a clean end
                async with asyncio.timeout(5):
                    async for data in resp.content.iter_any():
                        got += data
        assert time.monotonic() - t0 < 2
    assert got == FRAME
    rec = await p.record()
    assert rec.stream is not None
    assert (rec.stream.outcome, rec.stream.end) == ("truncated", "upstream_broken")


async def test_http10_client_of_a_chunked_upstream_gets_the_plain_body_and_a_close(proxy: Any) -> None:
    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + chunk(FRAME) + chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")

    async with raw_upstream(script) as up:
        p = await proxy(URL(f"http://127.0.0.1:{up.port}"))
        raw = await raw_exchange(p.service.proxy.port, b"GET /v1/models HTTP/1.0\r\nHost: p\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK\r\n")
    assert b"transfer-encoding" not in head.lower()
    assert body == FRAME + b"data: [DONE]\n\n"  # de-chunked; the close ends it


async def test_http11_client_of_a_chunked_upstream_gets_the_same_body_bytes(proxy: Any) -> None:
    frames = [FRAME * n for n in (1, 3, 7)] + [b"data: [DONE]\n\n"]

    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD)
        for f in frames:
            writer.write(chunk(f))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")

    async with raw_upstream(script) as up:
        p = await proxy(URL(f"http://127.0.0.1:{up.port}"))
        async with aiohttp.ClientSession() as http, http.get(p.url / "v1/x") as resp:
            assert resp.headers["Transfer-Encoding"] == "chunked"
            assert await resp.read() == b"".join(frames)


async def test_client_reading_slowly_is_not_an_idle_upstream(proxy: Any) -> None:
    """Plain backpressure stops reading the upstream; that pause is not upstream silence."""
    body = b"x" * (8 << 20)

    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    async with raw_upstream(script) as up:
        p = await proxy(URL(f"http://127.0.0.1:{up.port}"), idle_timeout=0.3)
        reader, writer = await asyncio.open_connection("127.0.0.1", p.service.proxy.port, limit=1 << 16)
        writer.write(b"GET /v1/files/f/content HTTP/1.1\r\nHost: p\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(1.0)  # the client stalls for three idle timeouts
        got = await asyncio.wait_for(reader.readexactly(len(body)), 20)
        writer.close()
    assert head.startswith(b"HTTP/1.1 200 ") and got == body
    rec = await p.record()
    assert rec.error is None and rec.bytes == len(body)
