"""Clients that stop sending their body, or stop reading their answer (slow body, slow read).

Once a head was whole nothing timed the body: a client sending `Content-Length: 1000` and 13
bytes held its connection, its descriptor and its handler until it chose to leave (1,100 of
them locked a 1,024-descriptor proxy out for as long as the attacker stayed), with no answer
and no record. Now a body read waits at most --body-timeout for the next bytes (nginx's
client_body_timeout), and never past --total-timeout from the request's start: then `408
request_timeout`, one record, the connection closed, and an upstream that had part of the body
cut. A client that never read a non-stream answer was held for ever too: the relay waited for
it to drain and never saw the total timeout end the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import Any

import pytest
from peers import Child, read_response_head, read_to_close, serve
from relay_support import RawRequest, Script, raw_upstream
from yarl import URL

CHAT = "/v1/chat/completions"
BODY = b'{"model":"m","stream":true,"messages":[{"role":"user","content":"'


def head(length: int, extra: bytes = b"") -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
        % (CHAT.encode(), length, extra)
    )


def records(child: Child) -> list[dict[str, Any]]:
    return child.events("request_end") + child.events("stream_end")


async def ok(_: RawRequest, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")


async def until(check: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.05)
    return bool(check())


async def stalled(port: int, data: bytes, timeout: float) -> tuple[bytes, bool, float]:
    """Send `data`, then nothing more: (what came back, closed, after how long)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    try:
        writer.write(data)
        out, closed = await read_to_close(reader, timeout)
        return out, closed, time.monotonic() - started
    finally:
        writer.close()


def assert_408(out: bytes, closed: bool, child: Child) -> None:
    assert out.startswith(b"HTTP/1.1 408 "), out[:200]
    assert b'"request_timeout"' in out and closed
    ends = records(child)
    assert [(e["status"], e.get("error")) for e in ends] == [(408, "request_timeout")], ends


async def test_a_body_that_stops_before_the_upstream_is_contacted_gets_408() -> None:
    async with (
        raw_upstream(ok) as up,
        serve(URL(f"http://127.0.0.1:{up.port}"), "--body-timeout", "1") as child,
    ):
        out, closed, took = await stalled(child.url.port, head(1000) + b'{"model":"m",', 8.0)
        await until(lambda: records(child), 2.0)
    assert_408(out, closed, child)
    assert 0.8 < took < 5.0, took
    assert up.connections == 0  # within the hold: the upstream never heard of it


async def test_a_body_that_stops_midway_gets_408_and_the_upstream_request_is_cut() -> None:
    length = 200_000
    async with (
        raw_upstream(ok) as up,
        serve(URL(f"http://127.0.0.1:{up.port}"), "--body-timeout", "1") as child,
    ):
        out, closed, took = await stalled(child.url.port, head(length) + BODY + b"x" * 100_000, 8.0)
        await until(lambda: records(child), 2.0)
    assert_408(out, closed, child)
    assert 0.8 < took < 5.0, took
    # The upstream had the head and part of the body, then its connection closed: it never
    # saw a whole request (read_request reads exactly the Content-Length).
    assert up.connections == 1 and up.requests == []


async def test_expect_100_continue_and_then_no_body_gets_408() -> None:
    async with (
        raw_upstream(ok) as up,
        serve(URL(f"http://127.0.0.1:{up.port}"), "--body-timeout", "1") as child,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", child.url.port)
        try:
            writer.write(head(100, b"Expect: 100-continue\r\n"))
            interim = await read_response_head(reader, 5.0)
            out, closed = await read_to_close(reader, 8.0)
        finally:
            writer.close()
        await until(lambda: records(child), 2.0)
    assert interim.startswith(b"HTTP/1.1 100 ")
    assert_408(out, closed, child)


async def test_a_body_trickled_past_the_total_timeout_gets_408() -> None:
    """One byte every 0.4 s never trips the body timeout (60 s); --total-timeout counts from
    the request's start, body included."""
    async with (
        raw_upstream(ok) as up,
        serve(URL(f"http://127.0.0.1:{up.port}"), "--total-timeout", "2") as child,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", child.url.port)
        started = time.monotonic()
        try:
            writer.write(head(1000) + BODY)
            for _ in range(25):  # 10 s at most
                await asyncio.sleep(0.4)
                if reader.at_eof() or records(child):
                    break
                with contextlib.suppress(ConnectionError):
                    writer.write(b"x")
            out, closed = await read_to_close(reader, 5.0)
            took = time.monotonic() - started
        finally:
            writer.close()
        await until(lambda: records(child), 2.0)
    assert_408(out, closed, child)
    assert 1.8 < took < 6.0, took


async def test_a_client_that_never_reads_a_large_answer_is_ended_by_the_total_timeout() -> None:
    """--total-timeout cut the upstream, but the relay waited for the client to drain and never
    looked: no record and the connection held (40 s in the reviewer's run, until the client
    left). Now the record comes at the timeout and the connection is reset."""
    size = 50 << 20
    piece = b"a" * 65536

    async def big(_: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % size
        )
        for _ in range(size // len(piece)):
            writer.write(piece)
            await writer.drain()

    async with (
        raw_upstream(big) as up,
        serve(URL(f"http://127.0.0.1:{up.port}"), "--total-timeout", "2", "--idle-timeout", "30") as child,
    ):
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, ("127.0.0.1", child.url.port))
            body = b'{"model":"m","messages":[]}'
            await loop.sock_sendall(sock, head(len(body), b"Connection: close\r\n") + body)
            started = time.monotonic()
            recorded = await until(lambda: records(child), 12.0)
            took = time.monotonic() - started
            got, ended = 0, False
            for _ in range(2000):  # what is left in the kernel's buffers, then the end
                try:
                    chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 5.0)
                except (ConnectionError, TimeoutError):
                    ended = True
                    break
                if not chunk:
                    ended = True
                    break
                got += len(chunk)
        finally:
            sock.close()
    assert recorded, "no record while the client did not read"
    assert 1.8 < took < 8.0, took
    ends = records(child)
    assert [(e["status"], e.get("error")) for e in ends] == [(200, "total_timeout")], ends
    assert ended and got < size // 2, got
    assert ends[0]["bytes"] < size


async def test_an_upload_pause_longer_than_the_idle_timeout_is_not_blamed_on_the_upstream() -> None:
    """The upstream's idle clock ran while the proxy waited for the client's body: a pause of
    1.5 s with --idle-timeout 1 was `504 upstream_idle_timeout` and a `timeout` stream, an
    upstream alert for a slow client. A pause within --body-timeout is the client's to take."""
    async with (
        raw_upstream(ok) as up,
        serve(URL(f"http://127.0.0.1:{up.port}"), "--idle-timeout", "1", "--body-timeout", "5") as child,
    ):
        reader, writer = await paused_upload(child)
        try:
            answer = await asyncio.wait_for(read_response_head(reader, 5), 6)
        finally:
            writer.close()
        assert await until(lambda: records(child), 5)
        (rec,) = records(child)
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert rec["status"] == 200 and rec.get("error") is None, rec
    assert up.requests[0].body.endswith(REST)


FIRST, REST = BODY + b"x" * 100_000, b'hi"}]}'  # past the 64 KiB held before the upstream


async def paused_upload(child: Child) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A request whose body pauses 1.6 s after its first 100 KB, then ends."""
    assert child.url.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", child.url.port)
    writer.write(head(len(FIRST) + len(REST)) + FIRST)
    await writer.drain()
    await asyncio.sleep(1.6)
    writer.write(REST)
    await writer.drain()
    return reader, writer


async def silent(_: RawRequest, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(30)  # the body taken, nothing answered (the proxy cuts it first)


async def one_frame_then_silent(_: RawRequest, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
    frame = b'data: {"a":1}\n\n'
    writer.write(b"%x\r\n%s\r\n" % (len(frame), frame))
    await asyncio.sleep(30)


@pytest.mark.parametrize(("script", "status"), [(silent, b"504"), (one_frame_then_silent, b"200")])
async def test_an_upstream_silent_after_a_paused_upload_still_meets_the_idle_timeout(
    script: Script, status: bytes
) -> None:
    """A check of the idle clock that ran while it was stopped for the client's body moved the
    one timer to the total deadline, and nothing set it back: after an upload that paused
    longer than --idle-timeout, a silent upstream was held to --total-timeout (3600 s by
    default) and ended as `total_timeout` (an outside review)."""
    async with (
        raw_upstream(script) as up,
        serve(
            URL(f"http://127.0.0.1:{up.port}"),
            *("--idle-timeout", "1", "--body-timeout", "5", "--total-timeout", "20"),
        ) as child,
    ):
        reader, writer = await paused_upload(child)
        sent = time.monotonic()
        try:
            out = await asyncio.wait_for(read_response_head(reader, 15), 16)
            assert await until(lambda: records(child), 15)
            took = time.monotonic() - sent
        finally:
            writer.close()
        (rec,) = records(child)
    assert out.startswith(b"HTTP/1.1 " + status), out[:100]
    assert took < 8, took  # the idle timeout's 1 s, with room for a busy machine
    assert rec["end_reason"] == "idle_timeout", rec
    assert up.requests[0].body.endswith(REST)
