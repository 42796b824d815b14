"""Header bytes pass exactly, both ways; every Connection line counts; nothing is added
(issue 12, items 5 and 7)."""

from __future__ import annotations

import asyncio
from typing import Any

from yarl import URL

from tests.hostile.relay_support import RawRequest, raw_exchange, raw_upstream


def ok(extra: bytes = b"", status: bytes = b"200 OK") -> bytes:
    return b"HTTP/1.1 %s\r\n%sContent-Length: 2\r\n\r\nok" % (status, extra)


async def test_non_utf8_request_header_bytes_reach_the_upstream_exactly(proxy: Any) -> None:
    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(ok())

    async with raw_upstream(script) as up:
        p = await proxy(URL(f"http://127.0.0.1:{up.port}"))
        await raw_exchange(
            p.service.proxy.port,
            b"GET /v1/models HTTP/1.1\r\nHost: p\r\n"
            b"X-Note: caf\xe9 \xff\x80 end\r\nConnection: close\r\n\r\n",
        )
    assert up.requests[0].header(b"x-note") == [b"caf\xe9 \xff\x80 end"]


async def test_non_utf8_response_header_and_reason_bytes_reach_the_client_exactly(proxy: Any) -> None:
    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(ok(b"X-Note: caf\xe9 \xff end\r\n", status=b"200 Tr\xe8s bien"))

    async with raw_upstream(script) as up:
        p = await proxy(URL(f"http://127.0.0.1:{up.port}"))
        raw = await raw_exchange(
            p.service.proxy.port, b"GET /v1/models HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n"
        )
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 200 Tr\xe8s bien"
    assert b"X-Note: caf\xe9 \xff end" in lines
    assert body == b"ok"


async def test_every_connection_line_counts_in_the_request(proxy: Any) -> None:
    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(ok())

    async with raw_upstream(script) as up:
        p = await proxy(URL(f"http://127.0.0.1:{up.port}"))
        await raw_exchange(
            p.service.proxy.port,
            b"GET /v1/models HTTP/1.1\r\nHost: p\r\n"
            b"Connection: keep-alive\r\nConnection: X-Hop, X-Other\r\n"
            b"X-Hop: for-the-proxy-only\r\nX-Other: 1\r\nX-Kept: 2\r\n\r\n",
            timeout=1.0,
        )
    req = up.requests[0]
    assert req.header(b"x-hop") == [] and req.header(b"x-other") == []
    assert req.header(b"x-kept") == [b"2"]
    assert req.header(b"connection") in ([], [b"keep-alive"])


async def test_every_connection_line_counts_in_the_response(proxy: Any) -> None:
    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(ok(b"Connection: keep-alive\r\nConnection: X-Hop\r\nX-Hop: 1\r\nX-Kept: 2\r\n"))

    async with raw_upstream(script) as up:
        p = await proxy(URL(f"http://127.0.0.1:{up.port}"))
        raw = await raw_exchange(
            p.service.proxy.port, b"GET /v1/models HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n"
        )
    head = raw.partition(b"\r\n\r\n")[0].lower()
    assert b"\r\nx-hop:" not in head
    assert b"\r\nx-kept: 2" in head


async def test_no_header_is_added_but_the_trace_id(proxy: Any) -> None:
    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(ok(b"X-Up: 1\r\n"))

    async with raw_upstream(script) as up:
        p = await proxy(URL(f"http://127.0.0.1:{up.port}"))
        raw = await raw_exchange(
            p.service.proxy.port, b"GET /v1/models HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n"
        )
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and raw.endswith(b"\r\n\r\nok")
    names = {line.partition(b":")[0].lower() for line in raw.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]}
    # Connection: close is the proxy's own hop-by-hop answer to the client's close.
    assert names <= {b"x-up", b"content-length", b"x-client-request-id", b"connection"}
    assert b"server" not in names and b"date" not in names and b"content-type" not in names


async def test_interim_100_continue_is_not_the_final_response_and_101_is_refused(proxy: Any) -> None:
    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        if req.target == b"/switch":
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\nrawbytes")
        else:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"X-Final: 1\r\n"))

    async with raw_upstream(script) as up:
        p = await proxy(URL(f"http://127.0.0.1:{up.port}"))
        raw = await raw_exchange(
            p.service.proxy.port, b"GET /v1/models HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n"
        )
        switched = await raw_exchange(
            p.service.proxy.port, b"GET /switch HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n"
        )
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and raw.endswith(b"\r\n\r\nok")
    assert b"x-final: 1" in raw.lower() and b" 100 " not in raw
    assert switched.startswith(b"HTTP/1.1 502 ")
    assert b"upstream_bad_response" in switched and b"rawbytes" not in switched
