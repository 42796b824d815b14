"""The upstream connection over a real socket: how body reads reach the relay's sink."""

from __future__ import annotations

import asyncio
import time

from sse_audit_proxy.core.audit import End
from sse_audit_proxy.server.upstream import Pool, Target

FIRST, REST = b'data: {"choices":[]}\n\n', b"data: [DONE]\n\n"
HEAD_AND_FIRST_FRAME = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n%s"
    % (len(FIRST + REST), FIRST)
)


async def test_a_body_read_before_the_relay_is_timed_when_it_arrived() -> None:
    """The head and the first frame often come in one read, before the relay is attached: the
    sink must get that read's arrival time (the stream's TTFB and first gap), not the time the
    relay began."""

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(HEAD_AND_FIRST_FRAME)  # one write: the head and a first body read
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.write(REST)  # the rest of the body, long after
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = Pool(connect_timeout=5.0)
    try:
        conn = await pool.acquire(Target("http", "127.0.0.1", port, None))
        conn.start(
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", head_only=False, idle=5.0, deadline=time.monotonic() + 10
        )
        await conn.response_head()
        await asyncio.sleep(0.2)  # the first frame is in by now; the relay is not yet attached
        relay_began = time.monotonic()
        reads: list[tuple[bytes, float]] = []

        def sink(body: bytes, t: float) -> End | None:
            reads.append((body, t))
            return None

        assert await asyncio.wait_for(conn.relay(sink), 5.0) is End.UPSTREAM_EOF
    finally:
        pool.close()
        server.close()
        await server.wait_closed()
    assert [body for body, _ in reads] == [FIRST, REST]
    first, last = reads[0][1], reads[-1][1]
    assert relay_began - first >= 0.15  # held since it arrived, and timed then
    assert last - relay_began >= 0.05  # the later read is timed when it came
