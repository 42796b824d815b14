"""Client connections past what the open-files limit allows are answered 503 as they come.

Past the limit, accepts failed: new clients got resets or empty replies with no record, and the
metrics port (the liveness probe's) answered nothing, so a pod whose streams ran fine was
killed (outside review). The cap is half of the limit less a reserve, each client connection
needing its upstream one; here it is lowered to three.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson

from sse_audit_proxy.server import proxy as proxy_module

REQUEST = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Client-Request-Id: %s\r\nConnection: close\r\n\r\n"


async def ask(port: int, trace: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(REQUEST % trace)
    got = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return got


async def models(request: Any) -> Any:
    from aiohttp import web

    return web.json_response({"object": "list", "data": []})


async def test_connections_past_the_cap_get_a_503_and_a_record_and_the_metrics_port_answers(
    upstream: Any, proxy: Any, monkeypatch: Any, http: aiohttp.ClientSession
) -> None:
    monkeypatch.setattr(proxy_module, "max_connections", lambda: 3)
    p = await proxy(await upstream(models))
    port = p.service.proxy.port
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]  # idle, at the cap
    try:
        await asyncio.sleep(0.1)
        refused = await ask(port, b"over-1")
        head, _, body = refused.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 503 ")  # as to a refused head: its request unread
        assert orjson.loads(body)["error"]["code"] == "too_many_connections"
        async with http.get(p.metrics_url / "healthz") as resp:
            assert resp.status == 200
        async with http.get(p.metrics_url / "metrics") as resp:
            assert (
                'sse_audit_connections_closed_total{reason="too_many_connections"} 1.0' in await resp.text()
            )
    finally:
        for _, writer in held:
            writer.close()
    await asyncio.sleep(0.2)
    served = await ask(port, b"after-1")
    assert served.startswith(b"HTTP/1.1 200 ")
    records = await p.sink.wait(2)
    assert sorted(r.status for r in records) == [200, 503]


def test_the_cap_is_half_the_open_files_limit_less_the_reserve(monkeypatch: Any) -> None:
    """Each client connection needs its upstream connection: at a soft limit of 1,024 the cap
    is (1,024 - 64) // 2 = 480 client connections (docs/operate/failure-behaviour.md: half the
    limit, less the 64 kept for the metrics port, logs and listeners), not 960, which would let
    the descriptors run out before the 503s begin. An outside mutation review found it untested."""
    monkeypatch.setattr(proxy_module.resource, "getrlimit", lambda _which: (1024, 4096))
    assert proxy_module.FD_RESERVE == 64
    assert proxy_module.max_connections() == 480
