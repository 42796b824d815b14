"""An upstream that answers while the request body is still on its way.

- A refusal (`413`, `401`) sent as soon as the head is read, then a close with the body unread:
  the upstream's kernel resets the connection, the proxy's next body write fails, and the
  transport closed before the answer, already in the socket, was read. The client got the
  proxy's `502 upstream_disconnected` (which the openai SDK retries, uploading the body again)
  and the record blamed the upstream. Now the answer is read from the socket before the
  connection is given up.
- An early `2xx` from an upstream that goes on reading the body (full duplex): the proxy stopped
  sending at once, and the request died at the idle timeout. Now the body is sent whole.
- When the proxy stops sending (the upstream refused the body), it closes the client's
  connection after the answer: the relayed head now says `Connection: close`.
- An answer (a refusal, or a `2xx` in full) from an upstream that then reads no more and keeps
  the connection open: the upload stalled, and the answer waited behind it until the upstream
  closed, with no timer left running. The answer now stops the upload and is relayed at once.
- An upload slower than `--idle-timeout`: the idle clock ran from the request's start, so the
  upstream, waiting for the body, was timed out (`504`); body bytes taken by the upstream are
  progress now.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from peers import read_to_close, serve
from relay_support import owned_upstream, read_body
from yarl import URL

REFUSAL = b'{"error":{"message":"payload too large","code":"too_big"}}'
MiB = 1 << 20


def request_head(length: int) -> bytes:
    return (
        b"POST /v1/files HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % length
    )


async def upload(
    port: int, size: int, *, pace: float = 0.0, timeout: float = 10.0, until: bytes = b"0\r\n\r\n"
) -> bytes:
    """POST a `size`-byte body while reading the answer (the whole body at once, or in 16
    pieces `pace` seconds apart); what came back before the proxy closed, the answer ended
    with `until`, or `timeout` passed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = b"{" + b" " * (size - 2) + b"}"
    writer.write(request_head(size))

    async def send() -> None:
        with contextlib.suppress(ConnectionError):
            step = size if not pace else -(-size // 16)
            for at in range(0, size, step):
                writer.write(body[at : at + step])
                await writer.drain()
                await asyncio.sleep(pace)

    sending = asyncio.create_task(send())
    got, _ = await read_to_close(reader, timeout, until=until)
    sending.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sending
    writer.close()
    return got


def records(child: Any) -> list[tuple[int, str | None]]:
    return [(e["status"], e.get("error")) for e in child.events("request_end") + child.events("stream_end")]


async def refuse_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """nginx's `client_max_body_size`, or any server that refuses after the head: answer, close
    with the body unread (the kernel resets the connection)."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(
        b"HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(REFUSAL), REFUSAL)
    )
    await writer.drain()


async def test_an_early_refusal_then_reset_reaches_the_client() -> None:
    trials = 6
    async with owned_upstream(refuse_and_close) as port, serve(URL(f"http://127.0.0.1:{port}")) as child:
        answers = [await upload(child.url.port, MiB) for _ in range(trials)]
        await asyncio.sleep(0.3)  # the records are written
    firsts = [a.split(b"\r\n", 1)[0] for a in answers]
    assert firsts == [b"HTTP/1.1 413 Payload Too Large"] * trials, answers[0][-300:]
    assert all(a.endswith(REFUSAL) for a in answers)
    assert records(child) == [(413, None)] * trials


async def duplex(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers `200` at once, then reads the whole body and reports its size."""
    head = await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nSTART\r\n")
    got = await read_body(reader, head)
    msg = b"GOT %d" % got
    writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(msg), msg))
    await writer.drain()


async def test_an_early_2xx_gets_the_whole_body() -> None:
    size = 8 * MiB
    async with (
        owned_upstream(duplex) as port,
        serve(URL(f"http://127.0.0.1:{port}"), "--idle-timeout", "2") as child,
    ):
        got = await upload(child.url.port, size, timeout=15)
        await asyncio.sleep(0.3)
    assert got.startswith(b"HTTP/1.1 200 OK\r\n"), got[:300]
    assert b"START" in got and b"GOT %d" % size in got and got.endswith(b"0\r\n\r\n"), got[-300:]
    assert records(child) == [(200, None)]


HOLD = 15.0  # how long the upstreams below keep a connection open after answering


async def refuse_and_wait(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Refuses after the head and keeps the connection open, reading nothing more."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\n{}")
    await writer.drain()
    await asyncio.sleep(HOLD)


async def answer_and_wait(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers `200` in full after the head and keeps the connection open, reading nothing."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    await writer.drain()
    await asyncio.sleep(HOLD)


@pytest.mark.parametrize(("upstream", "status"), [(refuse_and_wait, 401), (answer_and_wait, 200)])
async def test_an_answer_before_the_body_ended_is_relayed_at_once_with_connection_close(
    upstream: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]], status: int
) -> None:
    """The upload stalls on an upstream that reads no more; its answer reached the client only
    when the upstream closed (the answer in full had stopped the request's timers: an upstream
    that never closed held the client for ever)."""
    async with owned_upstream(upstream) as port, serve(URL(f"http://127.0.0.1:{port}")) as child:
        began = time.monotonic()
        got = await upload(child.url.port, 32 * MiB)  # more than the sockets between hold
        took = time.monotonic() - began
        await asyncio.sleep(0.3)
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), got[:300]
    assert b"\r\nConnection: close" in head and body == b"{}", got[:300]
    assert took < HOLD / 3, f"answered after {took:.1f} s"
    assert records(child) == [(status, None)]


async def read_all_then_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    got = await read_body(reader, await reader.readuntil(b"\r\n\r\n"))
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%d" % (len(str(got)), got))
    await writer.drain()


async def test_an_upload_slower_than_the_idle_timeout_is_not_cut() -> None:
    size = 2 * MiB
    async with (
        owned_upstream(read_all_then_answer) as port,
        serve(URL(f"http://127.0.0.1:{port}"), "--idle-timeout", "1") as child,
    ):
        # About 3 s in all; the answer has a length, and the connection stays open after it.
        got = await upload(child.url.port, size, pace=0.2, until=b"\r\n\r\n%d" % size)
        await asyncio.sleep(0.3)
    assert got.startswith(b"HTTP/1.1 200 OK\r\n"), got[:300]
    assert got.endswith(b"\r\n\r\n%d" % size)
    assert records(child) == [(200, None)]


async def test_a_refusal_while_the_client_pauses_its_upload_is_relayed_at_once() -> None:
    """The client has sent part of its body and pauses, reading: the upstream's refusal waited
    for the client's next bytes, and at --body-timeout became the proxy's own 408."""
    async with (
        owned_upstream(refuse_and_wait) as port,
        serve(URL(f"http://127.0.0.1:{port}"), "--body-timeout", "5") as child,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", child.url.port)
        writer.write(request_head(200_000) + b"{" + b" " * 80_000)  # then nothing more
        began = time.monotonic()
        got, _ = await read_to_close(reader, 8.0)
        took = time.monotonic() - began
        writer.close()
        await asyncio.sleep(0.3)
    assert got.startswith(b"HTTP/1.1 401 ") and b"\r\nConnection: close" in got, got[:300]
    assert took < 2.5, f"answered after {took:.1f} s"
    assert records(child) == [(401, None)]
