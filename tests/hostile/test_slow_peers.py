"""Slow and idle clients (issue 12, item 2): heads must arrive in time, idle connections close.

A client that sends its request head one byte at a time (slowloris) holds a connection and a
descriptor for as long as the server lets it. With a header timeout it is closed; the close
is counted in sse_audit_connections_closed_total so an operator sees the attack.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aiohttp
import pytest
from peers import metric_value, raise_own_nofile, read_to_close, serve

from tests.reliability_support import (
    CHAT,
    STREAM_BODY,
    Tally,
    complete_stream,
    streaming_handler,
)

CLOSED = "sse_audit_connections_closed_total"


async def test_a_head_that_does_not_arrive_in_time_closes_the_connection_and_is_counted(
    upstream: Any, proxy: Any
) -> None:
    p = await proxy(await upstream(streaming_handler([], Tally())), header_timeout=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", p.service.proxy.port)
    started = time.monotonic()
    writer.write(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n")
    for _ in range(10):  # one byte every 0.2 s: never a whole head
        await asyncio.sleep(0.2)
        with contextlib.suppress(ConnectionError):
            writer.write(b"X")
        if reader.at_eof():
            break
    out, closed = await read_to_close(reader, 2.0)
    writer.close()
    assert closed and out == b""  # closed with no answer: there is no request to answer
    assert 0.4 < time.monotonic() - started < 1.5
    assert p.metric(CLOSED, reason="header_timeout") == 1
    assert p.sink.records == []  # not a request: no audit record


async def test_a_slow_but_timely_head_is_served_and_the_body_is_not_under_the_timer(
    upstream: Any, proxy: Any
) -> None:
    tally = Tally()
    p = await proxy(await upstream(streaming_handler(complete_stream(2), tally)), header_timeout=1.0)
    reader, writer = await asyncio.open_connection("127.0.0.1", p.service.proxy.port)
    body = b'{"model": "m", "stream": true}'
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    for i in range(0, len(head), 20):  # the head in 0.5 s
        writer.write(head[i : i + 20])
        await asyncio.sleep(0.5 / (len(head) / 20))
    await asyncio.sleep(1.5)  # the body comes after the header timeout: not its business
    writer.write(body)
    out, closed = await read_to_close(reader, 5.0)
    writer.close()
    assert out.startswith(b"HTTP/1.1 200") and b"[DONE]" in out and closed
    assert tally.bodies == [body]
    assert p.metric(CLOSED, reason="header_timeout") == 0


async def test_an_idle_kept_alive_connection_is_closed_after_the_keepalive_timeout(
    upstream: Any, proxy: Any
) -> None:
    p = await proxy(await upstream(streaming_handler([], Tally())), keepalive_timeout=0.5, header_timeout=5.0)
    reader, writer = await asyncio.open_connection("127.0.0.1", p.service.proxy.port)
    writer.write(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    started = time.monotonic()
    out, closed = await read_to_close(reader, 3.0)
    writer.close()
    assert closed and b"HTTP/" not in out  # (the rest of the first answer, then nothing)
    assert 0.3 < time.monotonic() - started < 2.0
    assert p.metric(CLOSED, reason="keepalive_timeout") == 1
    assert p.metric(CLOSED, reason="header_timeout") == 0


async def test_once_a_head_begins_the_header_timeout_governs_not_the_keepalive_one(
    upstream: Any, proxy: Any
) -> None:
    p = await proxy(await upstream(streaming_handler([], Tally())), keepalive_timeout=0.6, header_timeout=0.4)
    reader, writer = await asyncio.open_connection("127.0.0.1", p.service.proxy.port)
    writer.write(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    await asyncio.sleep(0.3)
    writer.write(b"GET /v1/models HTTP/1.1\r\n")  # the next head begins, then stalls
    out, closed = await read_to_close(reader, 3.0)
    writer.close()
    assert closed and b"HTTP/" not in out  # (the rest of the first answer, then nothing)
    assert p.metric(CLOSED, reason="header_timeout") == 1
    assert p.metric(CLOSED, reason="keepalive_timeout") == 0


SLOW_CLIENTS = 1100
NOFILE = 1024
HEADER_TIMEOUT = 2.0


async def open_slow_clients(port: int, n: int, budget: float) -> list[asyncio.StreamWriter]:
    """Up to `n` connections each starting a request head; stops after `budget` seconds."""
    writers: list[asyncio.StreamWriter] = []
    deadline = time.monotonic() + budget

    async def one() -> None:
        with contextlib.suppress(OSError, TimeoutError):
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
            writer.write(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            writers.append(writer)

    for start in range(0, n, 100):
        if time.monotonic() > deadline:
            break
        await asyncio.gather(*(one() for _ in range(start, min(n, start + 100))))
    return writers


async def stream_with_retries(http: aiohttp.ClientSession, url: Any, deadline: float) -> tuple[bytes, int]:
    """One stream, retried on connection failures and 503s every 0.2 s until `deadline`, as
    SDKs retry them."""
    attempts = 0
    while (left := deadline - time.monotonic()) > 0:
        attempts += 1
        try:
            async with http.post(url, json=STREAM_BODY, timeout=aiohttp.ClientTimeout(total=left)) as resp:
                if resp.status != 503:
                    assert resp.status == 200
                    return await resp.read(), attempts
        except (aiohttp.ClientConnectionError, TimeoutError):
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"no stream within the deadline after {attempts} attempts")


async def test_slowloris_at_the_descriptor_limit_does_not_lock_out_a_real_stream(
    upstream: Any,
) -> None:
    if not raise_own_nofile(SLOW_CLIENTS + 200):
        pytest.skip("this process may not open enough sockets for the attack")
    tally = Tally()
    url = await upstream(streaming_handler(complete_stream(3), tally))
    async with (
        serve(url, "--header-timeout", str(HEADER_TIMEOUT), nofile=NOFILE) as child,
        aiohttp.ClientSession() as http,
    ):
        port = child.url.port
        assert port is not None
        writers = await open_slow_clients(port, SLOW_CLIENTS, budget=10.0)
        assert len(writers) > NOFILE - 100  # the proxy's descriptors are (nearly) all taken

        async def trickle() -> None:  # one more header byte a second, as slowloris does
            for _ in range(15):
                await asyncio.sleep(1.0)
                for writer in writers:
                    with contextlib.suppress(Exception):
                        writer.write(b"a")

        dripping = asyncio.create_task(trickle())
        try:
            # Past the connections the limit allows, the proxy answers 503 as they come (it
            # once hit the limit itself: libuv accepted and at once closed each, no answer),
            # so a client retries, as SDKs do, until it is served.
            started = time.monotonic()
            body, attempts = await stream_with_retries(
                http, child.url / CHAT.lstrip("/"), started + HEADER_TIMEOUT + 5.0
            )
            elapsed = time.monotonic() - started
            await asyncio.sleep(HEADER_TIMEOUT + 0.5)  # every slow client has now timed out
            async with http.get(child.metrics_url / "metrics") as resp:
                exposition = await resp.text()
        finally:
            dripping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await dripping
            for writer in writers:
                writer.close()
        assert body.endswith(b"data: [DONE]\n\n")
        assert elapsed < HEADER_TIMEOUT + 5.0 and attempts >= 1
    timed_out = metric_value(exposition, CLOSED, reason="header_timeout")
    refused = metric_value(exposition, CLOSED, reason="too_many_connections")
    assert timed_out is not None and refused is not None
    assert timed_out > (NOFILE - 64) // 2 - 100 and refused > 0  # the cap held them off
    assert timed_out + refused > NOFILE - 200
    assert any(line.get("open_files_limit") == NOFILE for line in child.events("proxy_started"))
