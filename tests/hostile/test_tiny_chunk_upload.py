"""A chunked upload in 1-byte chunks must not hold the event loop.

Each chunk was its own queued piece, handed out with `list.pop(0)` (quadratic in the pieces of
one read: 43,690 in a 256 KiB read) and written upstream as its own chunk, without a yield:
one client's 1 MB body (6 MB on the wire) cost `serve` 8 s of CPU, `/healthz` on the metrics
port took up to 5.9 s, and the upstream got a million 1-byte chunks. Now a body read takes all
that is pending in one piece, and the upstream gets it in chunks of what arrived per read.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

from peers import serve
from yarl import URL

BODY_BYTES = 1_000_000


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def healthz_latencies(port: int, stop: asyncio.Event, out: list[float]) -> None:
    for _ in range(2000):  # bounded: about 0.02 s a round, or the latency itself
        if stop.is_set():
            return
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader.read(), 30)
        writer.close()
        out.append(time.monotonic() - started)
        await asyncio.sleep(0.02)


async def test_a_body_in_one_byte_chunks_costs_little_and_does_not_stall_the_loop() -> None:
    seen = {"chunks": 0, "bytes": 0}

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            for _ in range(BODY_BYTES + 1):
                size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
                seen["chunks"] += 1
                seen["bytes"] += size
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with serve(URL(f"http://127.0.0.1:{port}")) as child:
            stop = asyncio.Event()
            latencies: list[float] = []
            pinger = asyncio.create_task(healthz_latencies(child.metrics_url.port or 0, stop, latencies))
            await asyncio.sleep(0.3)
            cpu_before = cpu_seconds(child.proc.pid)
            reader, writer = await asyncio.open_connection("127.0.0.1", child.url.port)
            writer.write(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            writer.write(b"1\r\nx\r\n" * BODY_BYTES + b"0\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 60)
            cpu = cpu_seconds(child.proc.pid) - cpu_before
            writer.close()
            stop.set()
            await asyncio.wait_for(pinger, 60)
    finally:
        server.close()
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]
    assert seen["bytes"] == BODY_BYTES
    # Re-chunked by what arrived per read, not one upstream chunk per client chunk.
    assert seen["chunks"] < BODY_BYTES // 100, seen
    assert cpu < 3.0, f"serve used {cpu:.1f} s of CPU for a 1 MB body"  # was 8 s; now 0.2 s
    assert latencies and max(latencies) < 2.0, f"/healthz took up to {max(latencies):.2f} s"
