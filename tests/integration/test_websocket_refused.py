"""A WebSocket upgrade (the Realtime API) is refused in the proxy's own words.

Forwarded without its hop-by-hop `Upgrade`, it reached the upstream as a plain GET; the
upstream's 400 told the openai SDK's Realtime client nothing of why, and the record was an
ordinary upstream 400.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.reliability_support import Tally


def counting_upstream(tally: Tally) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        tally.requests += 1
        return web.Response(status=400, text="not a websocket endpoint")

    return handler


async def test_a_websocket_upgrade_is_answered_501_and_never_forwarded(upstream: Any, proxy: Any) -> None:
    tally = Tally()
    p = await proxy(await upstream(counting_upstream(tally)))
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
            await http.ws_connect(p.url / "v1/realtime?model=gpt-realtime")
        assert exc.value.status == 501
        # An ordinary request carrying another Upgrade (curl --http2 asks for h2c) is served.
        async with http.get(p.url / "v1/models", headers={"Upgrade": "h2c", "Connection": "Upgrade"}) as r:
            assert r.status == 400 and await r.text() == "not a websocket endpoint"
    records = await p.sink.wait(2)
    refused = records[0]
    assert (refused.status, refused.error) == (501, "websocket_not_supported")
    assert tally.requests == 1  # the h2c one only


async def test_the_openai_sdk_realtime_client_is_told_why(upstream: Any, proxy: Any) -> None:
    pytest.importorskip("websockets", reason="the openai SDK's Realtime client needs websockets")
    from openai import AsyncOpenAI

    tally = Tally()
    p = await proxy(await upstream(counting_upstream(tally)))
    client = AsyncOpenAI(base_url=str(p.url / "v1"), api_key="sk-test", max_retries=0)
    try:
        with pytest.raises(Exception, match="501"):
            async with client.realtime.connect(model="gpt-realtime"):
                pass
    finally:
        await client.close()
    record = await p.record()
    assert (record.status, record.error) == (501, "websocket_not_supported")
    assert tally.requests == 0


@pytest.mark.parametrize("first", [b"h2c", b""])
async def test_websocket_in_a_second_upgrade_field_is_refused_too(
    upstream: Any, proxy: Any, first: bytes
) -> None:
    """The request's field map keeps a field's first value: `Upgrade: h2c` (or an empty one)
    before `Upgrade: websocket` slipped past the check and reached the upstream as a GET."""
    tally = Tally()
    p = await proxy(await upstream(counting_upstream(tally)))
    reader, writer = await asyncio.open_connection(p.url.host, p.url.port)
    writer.write(
        b"GET /v1/realtime HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: " + first + b"\r\n"
        b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    status = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    assert status.split()[1] == b"501"
    (record,) = await p.sink.wait(1)
    assert record.error == "websocket_not_supported" and tally.requests == 0
