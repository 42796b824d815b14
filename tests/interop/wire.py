"""Raw HTTP/1.1 fetches over a plain socket: the bytes a server sends, as it sends them.

The interop matrix derives the verdict it expects from these bytes, never from the proxy's own
output: status, headers, the chunked framing (so a late `0\\r\\n\\r\\n` terminator shows), each
chunk's arrival time, and whether the connection ended cleanly or was reset.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Wire:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    chunks: list[tuple[float, bytes]] = field(default_factory=list)  # (seconds since request, data)
    terminator_at: float | None = None  # when `0\r\n\r\n` arrived (chunked bodies only)
    ended: str = "eof"  # eof | terminator | reset | cut (closed inside a chunked body)
    chunked: bool = False

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    @property
    def body(self) -> bytes:
        return b"".join(data for _, data in self.chunks)

    @property
    def broken(self) -> bool:
        return self.ended in ("reset", "cut")

    @property
    def last_data_at(self) -> float | None:
        return self.chunks[-1][0] if self.chunks else None

    @property
    def terminator_delay(self) -> float | None:
        """Seconds between the last data chunk and the chunked terminator."""
        if self.terminator_at is None or self.last_data_at is None:
            return None
        return self.terminator_at - self.last_data_at


def fetch(
    url: str,
    body: dict[str, Any] | None,
    headers: dict[str, str] | None = None,
    timeout: float = 20.0,
    read_after_terminator: float = 0.0,
    keep_alive: bool = False,
) -> Wire:
    """POST (or GET without a body) `url` and read the whole answer, keeping the chunk framing."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    payload = json.dumps(body).encode() if body is not None else b""
    lines = [
        f"{'POST' if body is not None else 'GET'} {parts.path or '/'} HTTP/1.1",
        f"Host: {host}:{port}",
        "Accept-Encoding: identity",
    ]
    if not keep_alive:
        lines.append("Connection: close")
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + payload
    with socket.create_connection((host, port), timeout=timeout) as sock:
        start = time.monotonic()
        sock.sendall(request)
        return _read(sock, start, read_after_terminator)


def _read(sock: socket.socket, start: float, read_after_terminator: float) -> Wire:
    buf = b""
    wire: Wire | None = None
    pending = b""  # chunked framing not yet decoded
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            if wire is None:
                raise
            wire.ended = "reset"
            return wire
        now = time.monotonic() - start
        if not data:
            if wire is None:
                raise ConnectionError("closed before the head")
            if wire.chunked:
                wire.ended = "cut"  # no terminator: the body did not end, the connection did
            return wire
        if wire is None:
            buf += data
            if b"\r\n\r\n" not in buf:
                continue
            head, data = buf.split(b"\r\n\r\n", 1)
            wire = _head(head)
        if not wire.chunked:
            if data:
                wire.chunks.append((now, data))
            continue
        pending += data
        pending = _dechunk(wire, pending, now)
        if wire.terminator_at is not None:
            wire.ended = "terminator"
            if read_after_terminator:
                sock.settimeout(read_after_terminator)
            return wire


def _head(head: bytes) -> Wire:
    status_line, *rest = head.decode("latin-1").split("\r\n")
    _, status, *reason = status_line.split(" ", 2)
    headers = [(k.strip(), v.strip()) for k, v in (line.split(":", 1) for line in rest if ":" in line)]
    wire = Wire(int(status), reason[0] if reason else "", headers)
    wire.chunked = (wire.header("Transfer-Encoding") or "").lower() == "chunked"
    return wire


def _dechunk(wire: Wire, pending: bytes, now: float) -> bytes:
    while b"\r\n" in pending:
        size_line, after = pending.split(b"\r\n", 1)
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            wire.terminator_at = now
            return b""
        if len(after) < size + 2:
            return pending
        wire.chunks.append((now, after[:size]))
        pending = after[size + 2 :]
    return pending
