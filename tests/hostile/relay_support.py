"""Small raw-socket upstreams and clients for the hostile upstream-path tests (issue 12, 16)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

# A script answers one parsed request with the raw bytes to write (and sleeps in between).
Script = Callable[["RawRequest", asyncio.StreamWriter], Awaitable[None]]


@dataclass
class RawRequest:
    head: bytes
    body: bytes
    conn_no: int  # which upstream connection it came on (1, 2, ...)

    @property
    def target(self) -> bytes:
        return self.head.split(b" ", 2)[1]

    def header(self, name: bytes) -> list[bytes]:
        out = []
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower():
                out.append(value.strip())
        return out


@dataclass
class RawUpstream:
    port: int
    requests: list[RawRequest] = field(default_factory=list)
    connections: int = 0


async def read_request(reader: asyncio.StreamReader, conn_no: int) -> RawRequest | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    req = RawRequest(head, b"", conn_no)
    length = req.header(b"content-length")
    if length:
        req.body = await reader.readexactly(int(length[0]))
    elif b"chunked" in b"".join(req.header(b"transfer-encoding")).lower():
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            parts.append(await reader.readexactly(size + 2))
            if size == 0:
                break
        req.body = b"".join(p[:-2] for p in parts)
    return req


@contextlib.asynccontextmanager
async def raw_upstream(script: Script) -> AsyncIterator[RawUpstream]:
    """An HTTP/1.1 upstream that answers each request on a connection with `script`."""
    state = RawUpstream(0)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        conn_no = state.connections
        try:
            while (req := await read_request(reader, conn_no)) is not None:
                state.requests.append(req)
                await script(req, writer)
                if writer.is_closing():
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)


async def raw_exchange(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send `data` on a new connection and read until the proxy closes it (or `timeout`)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        got = b""
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(timeout):
                while chunk := await reader.read(65536):
                    got += chunk
        return got
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One Content-Length or chunked response from a raw client connection: (head, body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    fields = {}
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        fields[key.strip().lower()] = value.strip()
    status = int(head.split(b" ", 2)[1])
    if status in (204, 304):
        return head, b""
    if b"content-length" in fields:
        return head, await reader.readexactly(int(fields[b"content-length"]))
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        body += (await reader.readexactly(size + 2))[:-2]
        if size == 0:
            return head, body


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def owned_upstream(handler: Handler) -> AsyncIterator[int]:
    """A raw upstream whose `handler` owns each connection (reads what it likes of a request,
    answers when it likes); yields its port."""

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(handler(reader, writer), 20)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(run, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def read_body(reader: asyncio.StreamReader, head: bytes) -> int:
    """A request's body read whole, by its Content-Length or its chunks; its size."""
    fields = head.lower()
    if b"content-length:" in fields:
        length = int(fields.split(b"content-length:")[1].split(b"\r\n")[0])
        return len(await reader.readexactly(length))
    total = 0
    for _ in range(100_000):  # chunked: bounded
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        await reader.readexactly(size + 2)
        total += size
        if size == 0:
            break
    return total
