"""Helpers for the reliability tests: Chat Completions frames, scripted upstreams, raw sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from yarl import URL

CHAT = "/v1/chat/completions"
STREAM_BODY = {"model": "gpt-test", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


def chunk(content: str | None = "tok", finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    doc = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "gpt-test",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(doc) + b"\n\n"


DONE = b"data: [DONE]\n\n"


def complete_stream(n: int = 3) -> list[bytes]:
    return [chunk(f"t{i}") for i in range(n)] + [chunk(None, "stop"), DONE]


@dataclass
class Tally:
    """What a scripted upstream saw."""

    requests: int = 0
    closed_at: list[float] = field(default_factory=list)  # loop time its stream was cut
    paths: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)


def streaming_handler(
    frames: Iterable[bytes],
    tally: Tally,
    *,
    delay: float = 0.0,
    head_delay: float = 0.0,
    reset_after: int | None = None,
    hang: bool = False,
) -> Handler:
    """An upstream that streams `frames` (optionally pausing, resetting or hanging).

    Run it with `handler_cancellation=True` to note (in `tally.closed_at`) when the proxy
    closes the connection even while it is sleeping.
    """

    async def handler(request: web.Request) -> web.StreamResponse:
        tally.requests += 1
        tally.paths.append(request.raw_path)
        tally.hosts.append(request.headers.get("Host", ""))
        tally.headers.append(dict(request.headers))
        tally.bodies.append(await request.read())
        resp = web.StreamResponse(headers=SSE_HEADERS)
        try:
            if head_delay:
                await asyncio.sleep(head_delay)
            await resp.prepare(request)
            for i, frame in enumerate(frames):
                if reset_after is not None and i == reset_after:
                    assert request.transport is not None
                    request.transport.abort()  # RST mid-stream
                    return resp
                await resp.write(frame)
                if delay:
                    await asyncio.sleep(delay)
            if hang:
                await asyncio.sleep(3600)
        except (asyncio.CancelledError, ConnectionError):
            tally.closed_at.append(asyncio.get_running_loop().time())
            raise
        return resp

    return handler


@asynccontextmanager
async def canary_listener() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A listener on another loopback port that records every connection it gets.

    Open-proxy tests point requests at it; it must see nothing.
    """
    seen: list[bytes] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.read(1024) or b"<connected>")
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, seen
    finally:
        server.close()
        await server.wait_closed()


async def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes (or `timeout`)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    out = b""
    try:
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                out += chunk
    except TimeoutError:
        pass
    finally:
        writer.close()
    return out


def status_and_json(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"chunked" in head.lower():
        size, _, rest = body.partition(b"\r\n")
        body = rest[: int(size, 16)]
    return status, orjson.loads(body)


def full_backlog_listener() -> tuple[socket.socket, list[socket.socket]]:
    """A loopback port that never completes a TCP handshake: its accept queue is full.

    Connections to it hang in SYN-SENT, which is how an unreachable host looks, without
    sending a packet anywhere but loopback.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.connect(listener.getsockname())
        fillers.append(s)
    return listener, fillers


@contextlib.asynccontextmanager
async def cli_proxy(upstream: URL, *extra: str) -> AsyncIterator[tuple[Any, URL, URL]]:
    """The real `sse-audit-proxy serve` in a child process: (process, proxy URL, admin URL)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("SSE_AUDIT_")}
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sse_audit_proxy",
        "serve",
        "--upstream",
        str(upstream),
        "--port",
        "0",
        "--metrics-port",
        "0",
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None
    try:
        line = await asyncio.wait_for(child.stdout.readline(), 20)
        started = json.loads(line)
        assert started["event"] == "proxy_started", line
        yield child, URL(started["listen"]), URL(started["metrics"]).with_path("/")
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()


async def ask_without_reading(host: str, port: int, path: bytes) -> socket.socket:
    """GET `path` on a socket with a small receive buffer, and read nothing yet: return once
    the answer has begun to arrive (peeked, not read), so that a caller's "not read for longer
    than the deadline" starts after the server has built the answer, however busy the machine."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (host, port))
    await loop.sock_sendall(sock, b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    for _ in range(600):  # 30 s at most
        try:
            if sock.recv(1, socket.MSG_PEEK):
                return sock
        except BlockingIOError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"no answer to {path!r} within 30 s")


async def read_what_is_left(sock: socket.socket) -> tuple[int, int]:
    """Drain `sock` to its end (or its reset): the answer's declared Content-Length and the
    body bytes that came."""
    loop = asyncio.get_running_loop()
    got = bytearray()
    with contextlib.suppress(ConnectionResetError):
        async with asyncio.timeout(10):
            while chunk := await loop.sock_recv(sock, 1 << 16):
                got += chunk
    sock.close()
    head, _, body = bytes(got).partition(b"\r\n\r\n")
    fields = (line.split(b":", 1) for line in head.split(b"\r\n")[1:])
    return int(next(v for k, v in fields if k.strip().lower() == b"content-length")), len(body)
