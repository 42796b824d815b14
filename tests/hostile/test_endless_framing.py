"""An upstream that sends a response head, or chunk lines or trailers, without end.

llhttp sets no limit, and httptools gathers a header's value in one growing bytes object: an
upstream answering with an endless header made `serve` grow by gigabytes (one endless value:
280 MB in 20 s with no answer to the client; endless header lines: 1.3 GB). The proxy now
stops after 64 KiB without a body byte: before the head ends the client gets `502
upstream_bad_response`, after it the stream is cut, and either way `serve` stays at its size
and writes one record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from peers import read_to_close, serve
from relay_support import RawRequest, raw_exchange, raw_upstream
from test_key_flood import rss_kib
from yarl import URL

REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    b"Content-Type: application/json\r\nContent-Length: 41\r\n\r\n"
    b'{"model":"m","stream":true,"messages":[]}'
)
ENOUGH = 64 << 20  # what an endless upstream sends at most in a test run
SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
FRAME = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'


def endless(start: bytes, piece: bytes) -> Callable[[RawRequest, asyncio.StreamWriter], Awaitable[None]]:
    async def script(_: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(start)
        for _ in range(ENOUGH // len(piece)):
            writer.write(piece)
            await writer.drain()
        writer.close()

    return script


CASES = {
    "header value": (b"HTTP/1.1 200 OK\r\nX-Big: ", b"a" * 65536, 502),
    "header lines": (b"HTTP/1.1 200 OK\r\n", b"".join(b"X-H%d: v\r\n" % i for i in range(4000)), 502),
    "status reason": (b"HTTP/1.1 200 ", b"O" * 65536, 502),
    "interim responses": (b"", b"HTTP/1.1 100 Continue\r\n\r\n" * 2000, 502),
    "chunk extension": (SSE_HEAD + b"%x\r\n%s\r\n" % (len(FRAME), FRAME) + b"5;ext=", b"e" * 65536, 200),
    "trailers": (SSE_HEAD + b"%x\r\n%s\r\n0\r\n" % (len(FRAME), FRAME), b"X-T: v\r\n" * 8000, 200),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_an_endless_head_is_refused_and_holds_no_memory(case: str) -> None:
    start, piece, status = CASES[case]
    async with raw_upstream(endless(start, piece)) as up, serve(URL(f"http://127.0.0.1:{up.port}")) as child:
        before = rss_kib(child.proc.pid)
        got = await asyncio.wait_for(raw_exchange(child.url.port, REQUEST, timeout=10.0), 15)
        grown = rss_kib(child.proc.pid) - before
        await asyncio.sleep(0.2)  # the record is written
    assert got.startswith(b"HTTP/1.1 %d " % status), got[:200]
    if status == 502:
        assert b'"upstream_bad_response"' in got
        ends = child.events("request_end") + child.events("stream_end")
    else:
        assert got.count(FRAME) == 1 and not got.endswith(b"0\r\n\r\n")  # the stream was cut
        ends = child.events("stream_end")
        assert ends and ends[-1]["outcome"] == "truncated", ends
    assert len(ends) == 1, [line.get("event") for line in child.lines]
    assert grown < 16 << 10, f"serve grew {grown} KiB"


async def ok(_: RawRequest, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")


CLIENT_CASES = {
    "trailer value": (b"0\r\nX-T: ", b"a" * 65536),
    "chunk extension": (b"5;e=", b"e" * 65536),
}


@pytest.mark.parametrize("case", list(CLIENT_CASES))
async def test_an_endless_request_trailer_or_chunk_line_is_refused(case: str) -> None:
    """The same from a client, in a chunked request body: an endless trailer value made `serve`
    grow with it (httptools gathers it); now the request ends `400 invalid_request_body`."""
    start, piece = CLIENT_CASES[case]
    async with raw_upstream(ok) as up, serve(URL(f"http://127.0.0.1:{up.port}")) as child:
        before = rss_kib(child.proc.pid)
        reader, writer = await asyncio.open_connection(child.url.host, child.url.port)
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\n{}\r\n" + start
        )
        for _ in range(ENOUGH // len(piece)):
            try:
                writer.write(piece)
                await asyncio.wait_for(writer.drain(), 5)
            except ConnectionError:
                break  # closed (after the lingering close below: it discards what follows)
        grown = rss_kib(child.proc.pid) - before
        answer, ended = await read_to_close(reader, 5.0)
        writer.close()
        await asyncio.sleep(0.2)  # the record is written
    assert answer.startswith(b"HTTP/1.1 400 ") and ended, answer[:200]
    assert grown < 16 << 10, f"serve grew {grown} KiB"
    ends = child.events("request_end") + child.events("stream_end")
    assert [(e["status"], e.get("error")) for e in ends] == [(400, "invalid_request_body")]
