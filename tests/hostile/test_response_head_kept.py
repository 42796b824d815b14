"""An upstream's response head of tens of KiB: relayed whole, but a record keeps only what its
evidence shows (a record waits in the recent-streams buffer: 1,200 requests answered with
60 KiB heads grew `serve` by 58 MiB)."""

from __future__ import annotations

import asyncio
from typing import Any

from relay_support import RawRequest, raw_exchange, raw_upstream
from yarl import URL

from sse_audit_proxy.sinks.evidence import KEEP_HEAD_BYTES

FRAMES = (
    b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
)
BIG = b"b" * (60 << 10)
REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Request-Id: big-head\r\n"
    b"Content-Type: application/json\r\nContent-Length: 27\r\n\r\n"
    b'{"model":"m","stream":true}'
)


async def answer(_: RawRequest, writer: asyncio.StreamWriter) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nX-Big: %s\r\nX-After: 1\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (BIG, len(FRAMES), FRAMES)
    )


async def test_a_big_response_head_is_relayed_whole_and_kept_small(proxy: Any) -> None:
    async with raw_upstream(answer) as up:
        p = await proxy(URL(f"http://127.0.0.1:{up.port}"))
        got = await raw_exchange(p.service.proxy.port, REQUEST, timeout=10.0)
        (rec,) = await p.sink.wait(1, timeout=10)
    assert b"\r\nX-Big: " + BIG + b"\r\n" in got and got.endswith(FRAMES)  # relayed as sent
    assert rec.response_head is not None and len(rec.response_head) <= KEEP_HEAD_BYTES + 1024
    assert rec.response_head.startswith(b"HTTP/1.1 200 OK\r\n")
    # What evidence shows of it: its length (a field evidence does not know shows no text)
    assert b"\r\nX-Big: <%d>\r\n" % len(BIG) in rec.response_head
    assert b"\r\nX-After: <1>\r\n" in rec.response_head
