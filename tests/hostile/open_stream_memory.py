"""What each open stream holds on the Python heap, by allocating line (a tool, not a test).

    python tests/hostile/open_stream_memory.py [streams]

Opens N slow streams through an in-process proxy (uvloop) and prints the tracemalloc
difference per stream, largest first. The test upstream here is an aiohttp server in the same
process, so aiohttp's server lines count both it and the proxy's client-facing side.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import tracemalloc

import aiohttp
import uvloop
from aiohttp import web
from prometheus_client import CollectorRegistry
from yarl import URL

from sse_audit_proxy.proxy import ProxyConfig
from sse_audit_proxy.service import Service, ServiceConfig

FRAME = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
BODY = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hello"}]}


async def main(n: int) -> None:
    release = asyncio.Event()

    async def slow(request: web.BaseRequest) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(FRAME)
        await release.wait()
        await resp.write(b"data: [DONE]\n\n")
        return resp

    runner = web.ServerRunner(web.Server(slow), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    config = ProxyConfig(URL(f"http://127.0.0.1:{port}"), port=0)
    service = Service(ServiceConfig(config, metrics_port=0), registry=CollectorRegistry())
    await service.start()
    url = f"http://127.0.0.1:{service.proxy.port}/v1/chat/completions"
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    release.set()
    async with http.post(url, json=BODY) as warm:  # warm-up: first-use allocations
        await warm.read()
    release.clear()
    gc.collect()
    tracemalloc.start(4)
    before = tracemalloc.take_snapshot()
    open_streams = []
    for _ in range(n):
        resp = await http.post(url, json=BODY)
        await resp.content.readuntil(b"\n\n")
        open_streams.append(resp)
    await asyncio.sleep(0.3)
    gc.collect()
    after = tracemalloc.take_snapshot()
    skip = [tracemalloc.Filter(False, "*/aiohttp/client*"), tracemalloc.Filter(False, "*tracemalloc*")]
    stats = after.filter_traces(skip).compare_to(before.filter_traces(skip), "lineno")
    print(f"{sum(s.size_diff for s in stats) / n / 1024:.2f} KiB per open stream (Python heap)")
    for s in stats[:30]:
        print(f"{s.size_diff / n:8.0f} B {s.count_diff / n:6.1f} objects  {s.traceback[0]}")
    release.set()
    for resp in open_streams:
        await resp.read()
        resp.release()
    await http.close()
    await service.close(1.0)
    await runner.cleanup()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 300))
