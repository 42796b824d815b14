"""Slow and vanished clients (issue 5, item 2): bounded buffering, upstream closed fast."""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from tests.reliability_support import CHAT, STREAM_BODY, Tally, chunk, streaming_handler

REQUEST = (
    b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n" % len(orjson.dumps(STREAM_BODY))
) + orjson.dumps(STREAM_BODY)


def big_frames(n: int, size: int = 16384) -> Iterator[bytes]:
    for _ in range(n):
        yield chunk("x" * size)


async def test_client_that_stops_reading_is_aborted_as_slow_client_after_the_unsent_cap(
    upstream: Any, proxy: Any
) -> None:
    tally = Tally()
    frames = 4000  # ~64 MiB if nothing stopped it: far beyond any socket buffer
    url = await upstream(streaming_handler(big_frames(frames), tally), handler_cancellation=True)
    cap = 256 << 10
    p = await proxy(url, max_unsent_bytes=cap, send_timeout=1.0)

    # A client with a tiny receive window that sends its request and then never reads.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", p.service.proxy.port))
    await loop.sock_sendall(sock, REQUEST)
    try:
        rec = await p.record(timeout=20)
        assert rec.stream is not None
        assert (rec.stream.outcome, rec.stream.end) == ("client_disconnect", "slow_client")
        upstream_total = frames * len(chunk("x" * 16384))
        assert rec.bytes < upstream_total / 4, "the proxy stopped reading the upstream early"
        assert rec.stream.content_frames > 0 and rec.stream.ttft is not None
        # The proxy hung up on the client and closed the upstream request.
        await asyncio.wait_for(_until(lambda: bool(tally.closed_at)), 2)
        # With a reset: the socket is gone, not left sending its queue to a shut window.
        assert _kernel_queue(p.service.proxy.port, sock.getsockname()[1]) is None
        assert await _reads_to_end(loop, sock)
    finally:
        sock.close()
    assert (
        p.metric(
            "sse_audit_streams_total", route="chat_completions", model="gpt-test", outcome="client_disconnect"
        )
        == 1
    )
    assert p.metric("sse_audit_active_streams", route="chat_completions") == 0


async def test_a_json_lines_client_that_stops_reading_is_cut_at_the_send_timeout_too(
    upstream: Any, proxy: Any
) -> None:
    """Ollama's native streams are JSON lines: a client that stopped reading one held the
    upstream until --total-timeout (an hour), not --send-timeout (an outside review)."""
    line = orjson.dumps({"model": "m", "response": "x" * 16384, "done": False}) + b"\n"

    async def lines(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        with contextlib.suppress(ConnectionError):
            for _ in range(4000):  # ~64 MiB if nothing stopped it
                await resp.write(line)
        return resp

    p = await proxy(await upstream(lines), max_unsent_bytes=256 << 10, send_timeout=1.0)
    body = b'{"model": "m", "prompt": "hi"}'
    head = b"POST /api/generate HTTP/1.1\r\nHost: proxy\r\nContent-Length: %d\r\n\r\n" % len(body)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", p.service.proxy.port))
    await loop.sock_sendall(sock, head + body)
    try:
        rec = await p.record(timeout=20)
        assert rec.stream is not None and rec.route == "ollama"
        assert (rec.stream.outcome, rec.stream.end) == ("client_disconnect", "slow_client")
        assert rec.duration < 15
    finally:
        sock.close()


async def test_reading_client_is_not_aborted_by_the_unsent_cap(
    upstream: Any, proxy: Any, http: aiohttp.ClientSession
) -> None:
    # The same volume to a client that keeps reading: the cap must not fire.
    tally = Tally()
    url = await upstream(streaming_handler([*big_frames(200), b"data: [DONE]\n\n"], tally))
    p = await proxy(url, max_unsent_bytes=64 << 10)
    async with http.post(p.url / CHAT.lstrip("/"), json=STREAM_BODY) as resp:
        body = await resp.read()
    assert body.endswith(b"data: [DONE]\n\n")
    rec = await p.record()
    assert rec.stream is not None and rec.stream.end == "upstream_eof"


IMAGE_FRAME = 3 << 20  # a partial image of a Responses image stream: base64 of a large PNG


async def test_a_client_reading_frames_larger_than_the_cap_gets_the_whole_stream(
    upstream: Any, proxy: Any, http: aiohttp.ClientSession
) -> None:
    """One 3 MiB frame written leaves more than --max-unsent-bytes (1 MiB) unsent until the
    client reads it: such streams were cut (`slow_client`) from clients that were reading, and
    the openai SDK raised APIConnectionError where straight to the gateway it got the images.
    The upstream now waits for the client, as it would without the proxy."""
    frames = [*big_frames(4, IMAGE_FRAME), b"data: [DONE]\n\n"]
    p = await proxy(await upstream(streaming_handler(frames, Tally())), send_timeout=10.0)
    got = 0
    async with http.post(p.url / CHAT.lstrip("/"), json=STREAM_BODY) as resp:
        while piece := await resp.content.read(256 << 10):  # about 12 MB/s: slower than sent
            got += len(piece)
            await asyncio.sleep(0.02)
    rec = await p.record()
    assert rec.stream is not None
    assert (rec.stream.outcome, rec.stream.end) == ("complete", "upstream_eof")
    assert got == rec.bytes > 4 * IMAGE_FRAME
    # Held for the client, the upstream's frames came at the client's pace: not judged.
    assert not {"buffered", "bursty"} & set(rec.stream.anomalies)


async def test_a_client_that_pauses_reading_within_the_send_timeout_gets_the_whole_stream(
    upstream: Any, proxy: Any
) -> None:
    """An app that opens its streams first and reads them one after another leaves each one
    unread for a while; straight to the gateway they all arrive, and through the proxy too."""
    frames = [*big_frames(400), b"data: [DONE]\n\n"]  # 6.5 MB
    p = await proxy(
        await upstream(streaming_handler(frames, Tally())), max_unsent_bytes=256 << 10, send_timeout=5.0
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", p.service.proxy.port)
    writer.write(REQUEST)
    await asyncio.sleep(2.0)  # reading another stream meanwhile
    body = b""
    async with asyncio.timeout(20):
        while not body.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n"):  # the last chunk, the end
            piece = await reader.read(1 << 20)
            assert piece, body[-200:]
            body += piece
    writer.close()
    rec = await p.record()
    assert rec.stream is not None and (rec.stream.outcome, rec.stream.end) == ("complete", "upstream_eof")
    # The reads relayed after the upstream was held kept their arrival times (they were
    # "infinitely" late: max_gap inf in the log line, a timeline row at inf), and the gap that
    # spans the hold leaves it out: the upstream sent without pause, the client was 2 s late.
    assert rec.stream.client_held >= 1.5
    assert rec.stream.max_gap is not None and math.isfinite(rec.stream.max_gap) and rec.stream.max_gap < 0.5


async def test_a_client_reading_slower_than_the_stream_is_not_cut_while_it_reads(
    upstream: Any, proxy: Any
) -> None:
    """--send-timeout cuts a client that takes nothing for that long. It timed one wait for
    the client to take all but a quarter of --max-unsent-bytes, and more than that waits in
    the kernel's send buffer (megabytes): a client reading 2.6 MB/s was cut within a second."""
    frames = [*big_frames(400), b"data: [DONE]\n\n"]  # 6.5 MB, sent at once
    p = await proxy(
        await upstream(streaming_handler(frames, Tally())), max_unsent_bytes=64 << 10, send_timeout=0.5
    )
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", p.service.proxy.port))
    await loop.sock_sendall(sock, REQUEST)
    body = b""
    try:
        async with asyncio.timeout(20):
            while not body.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n"):
                piece = await loop.sock_recv(sock, 64 << 10)
                assert piece, f"cut after {len(body)} bytes"
                body += piece
                await asyncio.sleep(0.025)
    finally:
        sock.close()
    rec = await p.record()
    assert rec.stream is not None and (rec.stream.outcome, rec.stream.end) == ("complete", "upstream_eof")
    assert rec.stream.client_held > 1.0  # held longer than --send-timeout, reading all along


def _kernel_queue(local: int, remote: int) -> tuple[str, int] | None:
    """The TCP state and send queue of the socket local:remote on loopback, or None if the kernel
    holds no such socket (/proc/net/tcp: ports and queues in hex)."""
    with open("/proc/net/tcp") as table:
        for row in list(table)[1:]:
            fields = row.split()
            here, there = fields[1].rsplit(":", 1)[1], fields[2].rsplit(":", 1)[1]
            if (int(here, 16), int(there, 16)) == (local, remote):
                return fields[3], int(fields[4].split(":")[0], 16)
    return None


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0.01)


async def _reads_to_end(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bool:
    """Drain what the client was sent; True once the proxy's side is closed."""
    try:
        async with asyncio.timeout(5):
            while await loop.sock_recv(sock, 1 << 20):
                pass
    except ConnectionResetError:
        pass
    return True


async def test_disconnecting_client_closes_upstream_within_a_second_with_partial_timings(
    upstream: Any, proxy: Any, http: aiohttp.ClientSession
) -> None:
    tally = Tally()
    frames = [chunk(f"t{i}") for i in range(200)]
    url = await upstream(streaming_handler(frames, tally, delay=0.05), handler_cancellation=True)
    p = await proxy(url)
    loop = asyncio.get_running_loop()
    resp = await http.post(p.url / CHAT.lstrip("/"), json=STREAM_BODY)
    got = b""
    while got.count(b"\n\n") < 3:
        got += await resp.content.readany()
    assert p.metric("sse_audit_active_streams", route="chat_completions") == 1
    resp.close()  # drops the connection mid-stream
    gone_at = loop.time()
    rec = await p.record()
    await asyncio.wait_for(_until(lambda: bool(tally.closed_at)), 2)
    assert tally.closed_at[0] - gone_at < 1.0, "upstream request closed within 1 s"
    s = rec.stream
    assert s is not None
    assert (s.outcome, s.end) == ("client_disconnect", "client_gone")
    assert s.ttfb is not None and s.ttft is not None and s.content_frames >= 3
    assert s.content_frames < 200 and 0 < s.duration < 5
    assert rec.bytes >= len(got), "bytes forwarded before the disconnect are counted"
    assert s.anomalies == [] or "missing_done" not in s.anomalies
    assert (
        p.metric(
            "sse_audit_streams_total", route="chat_completions", model="gpt-test", outcome="client_disconnect"
        )
        == 1
    )
    assert p.metric("sse_audit_active_streams", route="chat_completions") == 0


async def test_client_gone_before_the_upstream_answered_is_recorded_and_upstream_closed(
    upstream: Any, proxy: Any
) -> None:
    tally = Tally()
    url = await upstream(streaming_handler([chunk("late")], tally, head_delay=5), handler_cancellation=True)
    p = await proxy(url)
    loop = asyncio.get_running_loop()
    _reader, writer = await asyncio.open_connection("127.0.0.1", p.service.proxy.port)
    writer.write(REQUEST)
    await writer.drain()
    await asyncio.wait_for(_until(lambda: tally.requests == 1), 2)
    writer.close()
    gone_at = loop.time()
    rec = await p.record()
    await asyncio.wait_for(_until(lambda: bool(tally.closed_at)), 2)
    assert tally.closed_at[0] - gone_at < 1.0
    assert (rec.status, rec.error) == (499, "client_disconnect")
    assert rec.stream is not None and rec.stream.outcome == "client_disconnect"
    assert rec.stream.ttfb is None
    assert p.metric("sse_audit_requests_total", route="chat_completions", method="POST", status="499") == 1
    # Under `other`: no answer showed the model real, so it takes no place among --max-models.
    assert (
        p.metric(
            "sse_audit_streams_total", route="chat_completions", model="other", outcome="client_disconnect"
        )
        == 1
    )
