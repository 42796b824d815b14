"""`Expect: 100-continue` (issue 12, item 4): answered when the body is wanted, never when the
request is refused (the refusal comes instead, and the connection closes)."""

from __future__ import annotations

import asyncio
from typing import Any

from peers import read_response_head, read_to_close

from tests.conftest import TEST_KEYS
from tests.reliability_support import CHAT, Tally, complete_stream, streaming_handler

BODY = b'{"model": "m", "stream": true, "messages": []}'


def head(*extra: str, length: int = len(BODY), version: str = "1.1") -> bytes:
    lines = [
        f"POST {CHAT} HTTP/{version}",
        "Host: x",
        f"Content-Length: {length}",
        "Content-Type: application/json",
        "Expect: 100-continue",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_100_continue_is_sent_then_the_body_is_read_and_forwarded(upstream: Any, proxy: Any) -> None:
    tally = Tally()
    p = await proxy(await upstream(streaming_handler(complete_stream(2), tally)))
    reader, writer = await asyncio.open_connection("127.0.0.1", p.service.proxy.port)
    writer.write(head("Connection: close"))
    interim = await read_response_head(reader, 1.0)  # curl would wait a whole second
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(BODY)
    out, closed = await read_to_close(reader, 5.0)
    writer.close()
    assert out.startswith(b"HTTP/1.1 200") and b"[DONE]" in out and closed
    assert tally.bodies == [BODY]
    assert b"X-Client-Request-Id" not in interim  # nothing of the final answer in the 100
    assert "expect" not in {k.lower() for k in tally.headers[0]}  # hop-by-hop: not forwarded


async def test_a_refused_request_gets_its_refusal_instead_of_100_and_is_closed(
    upstream: Any, proxy: Any
) -> None:
    tally = Tally()
    p = await proxy(
        await upstream(streaming_handler(complete_stream(2), tally)),
        require_keys=(TEST_KEYS[0],),
        max_body_bytes=1024,
    )
    for request, status in (
        (head(), b"401"),  # no key
        (head(f"Authorization: Bearer {TEST_KEYS[0]}", length=4096), b"413"),
    ):  # too large
        reader, writer = await asyncio.open_connection("127.0.0.1", p.service.proxy.port)
        writer.write(request)
        out, closed = await read_to_close(reader, 3.0)  # the body is never sent
        writer.close()
        assert out.startswith(b"HTTP/1.1 " + status), out[:40]
        assert b"100 Continue" not in out
        assert closed
    assert tally.requests == 0


async def test_no_100_for_http_1_0_or_a_request_without_a_body(upstream: Any, proxy: Any) -> None:
    tally = Tally()
    p = await proxy(await upstream(streaming_handler([], tally)))
    reader, writer = await asyncio.open_connection("127.0.0.1", p.service.proxy.port)
    writer.write(head("Connection: close", version="1.0") + BODY)
    out, _ = await read_to_close(reader, 3.0)
    writer.close()
    assert out.startswith(b"HTTP/1.0 200") and b"100 Continue" not in out
    reader, writer = await asyncio.open_connection("127.0.0.1", p.service.proxy.port)
    writer.write(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
    out, _ = await read_to_close(reader, 3.0)
    writer.close()
    assert out.startswith(b"HTTP/1.1 200") and b"100 Continue" not in out
    assert tally.bodies == [BODY, b""]
