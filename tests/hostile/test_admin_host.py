"""The metrics port's stream records answer only a Host that DNS rebinding cannot forge.

The port served `/streams/recent`, evidence and the inspector's pages to any Host, and the
pages could be framed: a web page in an operator's browser, its name re-pointed at
127.0.0.1 (DNS rebinding), could read every recent stream's record. Now the records answer
an IP address, `localhost` or a name from `--admin-hosts` (or SSE_AUDIT_ADMIN_HOSTS), and
421 Misdirected Request to any other Host; the pages forbid framing. Prometheus scrapes
`/metrics` by a service name or a pod IP: `/metrics` and the health checks answer any Host.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from peers import read_to_close, serve

from tests.reliability_support import CHAT, STREAM_BODY, Tally, streaming_handler

RECORD_PATHS = ["/", "/ui", "/ui/streams/t-1", "/streams/recent", "/streams/t-1", "/streams/t-1/evidence"]
OPEN_PATHS = ["/metrics", "/healthz", "/readyz"]
FORGED = ["evil.example", "evil.example:9464", "127.0.0.1.nip.io", "LOCALHOST.evil.example", "inspector"]


async def get(port: int, path: str, host: str) -> tuple[int, bytes, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    raw, _ = await read_to_close(reader, 5.0)
    writer.close()
    response_head, _, body = raw.partition(b"\r\n\r\n")
    return int(response_head.split(b" ")[1]), response_head, body


async def one_stream(child: Any) -> None:
    reader, writer = await asyncio.open_connection(child.url.host, child.url.port)
    body = orjson.dumps(STREAM_BODY)
    writer.write(
        f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nX-Client-Request-Id: t-1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    await read_to_close(reader, 5.0)
    writer.close()
    await asyncio.sleep(0.2)  # the record is written


async def test_records_answer_only_addresses_and_localhost_and_metrics_any_host(upstream: Any) -> None:
    url = await upstream(streaming_handler([b'data: {"choices":[]}\n\ndata: [DONE]\n\n'], Tally()))
    async with serve(url) as child:
        await one_stream(child)
        port = child.metrics_url.port
        assert port is not None
        for path in RECORD_PATHS:
            for host in FORGED:
                status, head, body = await get(port, path, host)
                assert status == 421, (path, host, head)
                assert b"--admin-hosts" in body and b"t-1" not in body and b"SSE_AUDIT_ADMIN_HOSTS" in body
            for host in [
                f"127.0.0.1:{port}",
                f"[::1]:{port}",
                "10.1.2.3",
                f"localhost:{port}",
                "LocalHost.",
            ]:
                status, head, _ = await get(port, path, host)
                assert status == 200, (path, host, head)
                # JSON of records and evidence holds upstream header values as they came.
                assert b"X-Content-Type-Options: nosniff" in head, (path, head)
        for path in OPEN_PATHS:
            for host in [*FORGED, "sse-audit-proxy.monitoring.svc.cluster.local:9464"]:
                status, _, _ = await get(port, path, host)
                assert status == 200, (path, host)
        # The pages forbid framing.
        _, head, _ = await get(port, "/ui/streams/t-1", "127.0.0.1")
        assert b"frame-ancestors 'none'" in head and b"X-Frame-Options: DENY" in head
        _, head, _ = await get(port, "/", "127.0.0.1")
        assert b"frame-ancestors 'none'" in head


@pytest.mark.parametrize("how", ["flag", "env"])
async def test_admin_hosts_names_the_hosts_records_answer(upstream: Any, how: str) -> None:
    url = await upstream(streaming_handler([b"data: [DONE]\n\n"], Tally()))
    names = "inspector.internal, Audit.Example"
    args = ("--admin-hosts", names) if how == "flag" else ()
    env = {"SSE_AUDIT_ADMIN_HOSTS": names} if how == "env" else None
    async with serve(url, *args, env=env) as child:
        port = child.metrics_url.port
        assert port is not None
        for host in ["inspector.internal", f"inspector.internal:{port}", "audit.example", "AUDIT.EXAMPLE."]:
            status, head, _ = await get(port, "/streams/recent", host)
            assert status == 200, (host, head)
        for host in ["evil.example", "internal", "inspector.internal.evil.example"]:
            status, _, _ = await get(port, "/streams/recent", host)
            assert status == 421, host


async def test_the_workers_supervisor_checks_the_host_too(upstream: Any) -> None:
    url = await upstream(streaming_handler([b"data: [DONE]\n\n"], Tally()))
    async with serve(url, "--workers", "2") as child:
        port = child.metrics_url.port
        assert port is not None
        assert (await get(port, "/streams/recent", "evil.example"))[0] == 421
        assert (await get(port, "/streams/recent", f"127.0.0.1:{port}"))[0] == 200
        assert (await get(port, "/metrics", "evil.example"))[0] == 200
