"""A client that never reads an event stream is held at --max-unsent-bytes, not 16 MB later,
and cut after --send-timeout.

The relay's sink said `slow_client` once the client's buffer passed the cap, but the upstream
connection went on handing it every later body read (llhttp finishes the read it is in, and
under uvloop more reads came before the relay's task ran): each was written to the client's
buffer, 16.5 MB a client whatever the cap (100 such clients: +930 MB). Now a sink that ended
gets nothing more and the upstream is read no further.
"""

from __future__ import annotations

import asyncio
import socket
import time

from peers import serve
from relay_support import RawRequest, raw_upstream
from test_key_flood import rss_kib
from yarl import URL

FRAME = b'data: {"choices":[{"index":0,"delta":{"content":"' + b"a" * 16000 + b'"}}]}\n\n'
PIECE = b"%x\r\n%s\r\n" % (len(FRAME), FRAME)
FRAMES = 3000  # 48 MB, sent as fast as the proxy takes it


async def fast_stream(_: RawRequest, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(FRAMES):
        writer.write(PIECE)
        await writer.drain()
    writer.write(b"0\r\n\r\n")


async def test_a_client_that_does_not_read_is_cut_near_the_cap() -> None:
    async with (
        raw_upstream(fast_stream) as up,
        serve(
            URL(f"http://127.0.0.1:{up.port}"), "--max-unsent-bytes", "64k", "--send-timeout", "1"
        ) as child,
    ):
        loop = asyncio.get_running_loop()
        before = rss_kib(child.proc.pid)
        body = b'{"model":"m","stream":true,"messages":[]}'
        request = (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        socks = []
        try:
            for _ in range(10):
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.setblocking(False)
                await loop.sock_connect(sock, ("127.0.0.1", child.url.port))
                await loop.sock_sendall(sock, request)
                socks.append(sock)
            deadline = time.monotonic() + 20
            peak = 0
            while time.monotonic() < deadline and len(child.events("stream_end")) < len(socks):
                peak = max(peak, rss_kib(child.proc.pid) - before)
                await asyncio.sleep(0.05)
        finally:
            for sock in socks:
                sock.close()
    ends = child.events("stream_end")
    assert [e["end_reason"] for e in ends] == ["slow_client"] * len(socks), ends
    # What a client was handed: the kernel's socket buffers (a few MB on loopback), the cap
    # and one read. It was 16.5 MB with a 64 KiB cap.
    assert max(e["bytes"] for e in ends) < 8 << 20, [e["bytes"] for e in ends]
    assert peak < 60 << 10, f"serve grew {peak} KiB for {len(socks)} clients"
