"""What a paused upstream sent is seen waiting, over TLS too (client_held then leaves the hold
out of the gap that spans it: a third review saw a 30 ms gap read as 2.5 s behind a slow client
on an https upstream, FIONREAD seeing 0 while the TLS transport held the frames)."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from sse_audit_proxy.server.tcp import unread


class _Collect(asyncio.Protocol):
    def __init__(self) -> None:
        self.got = 0

    def data_received(self, data: bytes) -> None:
        self.got += len(data)


@pytest.mark.parametrize("tls", [False, True])
async def test_bytes_sent_to_a_paused_transport_are_seen_waiting(
    tls_upstream: tuple[ssl.SSLContext, Path], tls: bool
) -> None:
    server_ctx, ca_file = tls_upstream
    writers: list[asyncio.StreamWriter] = []

    async def handle(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx if tls else None)
    port = server.sockets[0].getsockname()[1]
    client_ctx = ssl.create_default_context(cafile=str(ca_file)) if tls else None
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(_Collect, "127.0.0.1", port, ssl=client_ctx)
    try:
        for _ in range(100):  # bounded: the server's side of the connection
            if writers:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # the TLS transport settled, reading its socket
        transport.pause_reading()
        assert unread(transport) == 0
        writers[0].write(b'data: {"x":1}\n\n' * 10)
        await writers[0].drain()
        # Time for a paused TLS transport to read the socket on (it does, into its own buffer).
        await asyncio.sleep(0.3)
        assert protocol.got == 0 and unread(transport) > 0
    finally:
        transport.close()
        for w in writers:
            w.close()
        server.close()
        await server.wait_closed()
