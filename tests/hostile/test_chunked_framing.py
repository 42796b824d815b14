"""Response framing from the upstream: broken chunking cuts the client at once; framing is
redone only where the two HTTP sides need it (issue 12, item 2)."""

from __future__ import annotations

import asyncio
import json
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


def dechunk(raw: bytes) -> tuple[list[bytes], bool]:
    """The chunks of a chunked body, and whether its final chunk came."""
    chunks: list[bytes] = []
    at = 0
    while (eol := raw.find(b"\r\n", at)) >= 0:
        size = int(raw[at:eol], 16)
        if size == 0:
            return chunks, True
        chunks.append(raw[eol + 2 : eol + 2 + size])
        at = eol + 2 + size + 2
    return chunks, False


async def test_an_upstream_writing_each_byte_as_its_own_chunk_is_relayed_a_read_a_chunk(proxy: Any) -> None:
    """Each body byte its own chunk (6 bytes on the wire a byte): each was a write to the client
    and a feed of the audit, 14 times a normal stream's CPU a byte, and other streams waited
    seconds behind one such read (an outside review). A read's body bytes go on as one chunk."""
    frames = [FRAME] * 200 + [b"data: [DONE]\n\n"]
    body = b"".join(frames)
    request = json.dumps(STREAM_BODY).encode()

    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + b"".join(chunk(body[i : i + 1]) for i in range(len(body))) + b"0\r\n\r\n")

    async with raw_upstream(script) as up:
        p = await proxy(URL(f"http://127.0.0.1:{up.port}"))
        raw = await raw_exchange(
            p.service.proxy.port,
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: p\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(request), request),
        )
        record = (await p.sink.wait(1))[0]
    head, _, framed = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    chunks, ended = dechunk(framed)
    assert ended and b"".join(chunks) == body
    assert len(chunks) < len(body) // 100, len(chunks)  # a few reads, not 12,000 chunks
    assert record.stream is not None and record.stream.outcome.value == "complete", record.stream
    assert record.stream.frames == len(frames)
