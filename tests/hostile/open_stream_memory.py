"""What each open stream holds on the Python heap, by allocating line (a tool, not a test).

    python tests/hostile/open_stream_memory.py [streams]

Opens N slow streams through an in-process proxy (uvloop) and prints the tracemalloc
difference per stream, largest first. The upstream is a raw asyncio server in the same process
(its reader/writer lines are its own); aiohttp's client lines (the test's clients) are left out.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import tracemalloc

import aiohttp
import uvloop
from prometheus_client import CollectorRegistry
from yarl import URL

from sse_audit_proxy.server.proxy import ProxyConfig
from sse_audit_proxy.server.service import Service, ServiceConfig

FRAME = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
BODY = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hello"}]}


async def main(n: int) -> None:
    release = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A raw upstream, so that aiohttp's server lines below are the proxy's alone.
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (len(FRAME), FRAME)
            )
            await release.wait()
            done = b"data: [DONE]\n\n"
            writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))

    server = await asyncio.start_server(slow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
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
    skip = [
        tracemalloc.Filter(False, "*/aiohttp/client*"),
        tracemalloc.Filter(False, "*tracemalloc*"),
        tracemalloc.Filter(False, "*/aiohttp/connector.py"),
    ]
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
    server.close()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 300))
