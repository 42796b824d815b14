"""An unfinished request head costs at most the whole-head cap (64 KiB), not 1.6 MB.

The head was bounded only by the per-line limits (a request line of 8190 bytes, 100 fields of
16 KiB), and its fields are held until the head ends: 300 connections sending such a head
without its blank line grew `serve` by 475 MB for --header-timeout, and it kept 527 MB after
they were closed. A head is now refused with `431` once 64 KiB have come without its end.
"""

from __future__ import annotations

import asyncio
import contextlib

from peers import read_to_close, serve
from relay_support import RawRequest, raw_exchange, raw_upstream
from test_key_flood import rss_kib
from yarl import URL

FIELD = b"v" * 16000  # under the 16 KiB field limit
CONNECTIONS = 60


async def ok(_: RawRequest, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")


async def test_unfinished_heads_within_the_line_limits_are_refused_at_the_head_cap() -> None:
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-%02d: %s\r\n" % (i, FIELD) for i in range(98)
    )  # 1.6 MB, never the blank line
    async with raw_upstream(ok) as up, serve(URL(f"http://127.0.0.1:{up.port}")) as child:
        before = rss_kib(child.proc.pid)
        conns = [await asyncio.open_connection("127.0.0.1", child.url.port) for _ in range(CONNECTIONS)]
        try:
            for _, writer in conns:
                writer.write(head)
            answers = []
            for reader, writer in conns:
                with contextlib.suppress(ConnectionError, TimeoutError):
                    await asyncio.wait_for(writer.drain(), 5)
                answers.append(await read_to_close(reader, 5.0))
            grown = rss_kib(child.proc.pid) - before
        finally:
            for _, writer in conns:
                writer.close()
        # A whole head: 63 KiB in all is served, 78 KiB refused (the fields each within limits).
        fine = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + b"".join(
            b"X-%d: %s\r\n" % (i, FIELD) for i in range(4)
        )
        served = await raw_exchange(child.url.port, fine + b"Connection: close\r\n\r\n")
        big = fine + b"X-5: %s\r\n" % FIELD
        refused = await raw_exchange(child.url.port, big + b"Connection: close\r\n\r\n")
    # Closed at once (the 431 answer is written, but the client's unread 1.5 MB makes the
    # close a reset, which can discard it), not held until --header-timeout (60 s).
    assert all(closed for _, closed in answers)
    assert grown < 30 << 10, f"serve grew {grown} KiB for {CONNECTIONS} unfinished heads"
    assert served.startswith(b"HTTP/1.1 200 "), served[:100]
    assert refused.startswith(b"HTTP/1.0 431 "), refused[:100]  # the stand-in request's version
    assert b'"request_header_too_large"' in refused
