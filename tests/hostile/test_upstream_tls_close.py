"""An upstream that closes during the TLS handshake, or cuts a close-delimited body.

- Closing after the ClientHello (TLS to a port or name that does not speak it) raised a
  connection reset that was reported `502 upstream_unreachable`, sending operators to the
  network; it is a handshake failure, `upstream_tls_error`.
- A body with no length ends at the close, but over TLS a close without close_notify is a cut
  (RFC 8446 6.1): such a body reached the client as a clean, complete answer with no error in
  its record. It is now recorded `upstream_broken` and the client's chunked answer has no final
  chunk. (uvloop, which `serve` runs on, tells the two closes apart.)
- Over plain TCP a reset in such a body (Django's runserver, HTTP/1.0 servers and aiohttp's
  `force_close` send one, a crash sends a reset) was taken for its end in the same way: the
  openai SDK straight to the upstream raised, through the proxy it returned the cut text, and
  on routes with no end marker the record said `complete`. It is a cut too.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from peers import serve
from relay_support import raw_exchange
from yarl import URL

REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    b"Content-Type: application/json\r\nContent-Length: 27\r\n\r\n"
    b'{"model":"m","messages":[]}'
)
PARTIAL = b'{"choices": ['
FRAME = b'data: {"n": 1}\n\n'

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def server(handler: Serve, context: ssl.SSLContext | None) -> AsyncIterator[int]:
    srv = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=context)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        srv.close()


def records(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("event") in ("request_end", "stream_end")]


async def test_a_close_during_the_handshake_is_a_tls_error() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.read(100)  # the ClientHello
        writer.close()

    async with server(hang_up, None) as port, serve(URL(f"https://127.0.0.1:{port}")) as child:
        got = await raw_exchange(child.url.port, REQUEST)
        await asyncio.sleep(0.3)  # the record is written
    assert got.startswith(b"HTTP/1.1 502 "), got[:100]
    assert b'"upstream_tls_error"' in got
    assert [(r["status"], r.get("error")) for r in records(child.lines)] == [(502, "upstream_tls_error")]


@pytest.mark.parametrize("notify", [True, False], ids=["close_notify", "bare_tcp_close"])
async def test_a_close_delimited_body_cut_without_close_notify_is_a_cut(
    notify: bool, tls_upstream: tuple[ssl.SSLContext, Path]
) -> None:
    context, ca_file = tls_upstream

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n" + PARTIAL
        )
        await writer.drain()
        await asyncio.sleep(0.2)
        if notify:
            writer.close()  # close_notify, then the TCP close: the body's clean end
        else:
            writer.transport.abort()  # the TCP connection only

    async with (
        server(answer, context) as port,
        serve(URL(f"https://127.0.0.1:{port}"), "--upstream-ca-file", str(ca_file)) as child,
    ):
        got = await raw_exchange(child.url.port, REQUEST)
        await asyncio.sleep(0.3)
    assert got.startswith(b"HTTP/1.1 200 "), got[:100]
    assert b"%x\r\n%s\r\n" % (len(PARTIAL), PARTIAL) in got
    ends = records(child.lines)
    assert len(ends) == 1, ends
    if notify:
        assert got.endswith(b"0\r\n\r\n") and ends[0].get("error") is None, (got[-40:], ends)
    else:
        assert not got.endswith(b"0\r\n\r\n"), got[-40:]
        assert ends[0].get("error") == "upstream_broken", ends


@pytest.mark.parametrize("reset", [False, True], ids=["close", "reset"])
async def test_a_close_delimited_body_cut_by_a_reset_is_a_cut(reset: bool) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n" + FRAME)
        await writer.drain()
        await asyncio.sleep(0.2)
        if reset:  # linger 0: the close sends a reset, as a crashed or force-closing server's does
            writer.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
        writer.transport.abort()

    async with server(answer, None) as port, serve(URL(f"http://127.0.0.1:{port}")) as child:
        # A route with no end marker: only the end of the body tells complete from cut.
        got = await raw_exchange(child.url.port, REQUEST.replace(b"/v1/chat/completions", b"/api/chat"))
        await asyncio.sleep(0.3)
    assert got.startswith(b"HTTP/1.1 200 "), got[:100]
    assert b"%x\r\n%s\r\n" % (len(FRAME), FRAME) in got
    ends = records(child.lines)
    assert len(ends) == 1, ends
    if reset:
        assert not got.endswith(b"0\r\n\r\n"), got[-40:]
        assert (ends[0]["end_reason"], ends[0]["outcome"]) == ("upstream_broken", "truncated"), ends
    else:
        assert got.endswith(b"0\r\n\r\n"), got[-40:]
        assert (ends[0]["end_reason"], ends[0]["outcome"]) == ("upstream_eof", "complete"), ends
