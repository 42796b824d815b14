"""The metrics port is no more trusting than the proxy port (issue 12, item 5).

A malformed or oversized request head sent to /metrics got aiohttp's default handling: the
parser's message (quoting the header, API key included) printed to stdout and echoed in a
text/plain body. Now: the same head limits, a generic JSON answer, nothing echoed or logged.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from peers import read_to_close, serve

from tests.conftest import TEST_KEYS
from tests.reliability_support import Tally, streaming_handler

KEY = TEST_KEYS[1]


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (f"X-Api-Key: {KEY}{'A' * 20000}", 431),  # a field over the limit
        (f"X-Api-Key: {KEY}\x01", 400),  # a control character
        (f"X-Api-Key {KEY}", 400),  # no colon
        ("".join(f"X-{i}: {KEY}\r\n" for i in range(150)).rstrip(), 431),  # too many fields
    ],
    ids=["field-too-long", "control-character", "no-colon", "too-many-fields"],
)
async def test_a_malformed_head_on_the_metrics_port_is_answered_generically_and_not_logged(
    head: str,
    status: int,
    upstream: Any,
) -> None:
    url = await upstream(streaming_handler([], Tally()))
    async with serve(url) as child:
        port = child.metrics_url.port
        assert port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /metrics HTTP/1.1\r\nHost: x\r\n{head}\r\n\r\n".encode("latin-1"))
        raw, closed = await read_to_close(reader, 5.0)
        writer.close()
        # Still serving afterwards.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        healthy, _ = await read_to_close(reader, 5.0)
        writer.close()
        await asyncio.sleep(0.2)
    response_head, _, body = raw.partition(b"\r\n\r\n")
    assert response_head.split(b" ")[1] == str(status).encode()
    assert b"application/json" in response_head and closed
    assert KEY.encode() not in raw and b"AAAA" not in raw
    assert set(orjson.loads(body)["error"]) == {"message", "code"}
    assert healthy.startswith(b"HTTP/1.1 200")
    output = repr(child.lines) + child.stderr.decode()
    assert KEY not in output and "AAAA" not in output


async def test_the_metrics_port_closes_slow_heads_too(upstream: Any) -> None:
    url = await upstream(streaming_handler([], Tally()))
    async with serve(url, "--header-timeout", "0.5") as child:
        port = child.metrics_url.port
        assert port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\n")
        raw, closed = await read_to_close(reader, 3.0)
        writer.close()
    assert closed and raw == b""
