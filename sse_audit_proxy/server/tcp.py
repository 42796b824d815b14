"""What the kernel holds for a connection, and the way to drop it (Linux: the queues).

A transport's own buffer is what the event loop could not hand the kernel yet; the kernel's
send queue in front of it holds megabytes on loopback (tcp_wmem), and the transport's buffer
does not shrink until the kernel has room for half of what it holds. An abort alone closes the
socket but leaves the kernel sending that queue to a peer that keeps its window shut
(FIN-WAIT-1) for as long as its retries allow.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import struct
import sys
import termios

_LINUX = sys.platform == "linux"
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST, drops the send queue
_INT = b"\0\0\0\0"


def _ioctl(transport: asyncio.BaseTransport, request: int) -> int:
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    try:
        value: int = struct.unpack("i", fcntl.ioctl(sock.fileno(), request, _INT))[0]
    except OSError:
        return 0
    return value


def unsent(transport: asyncio.WriteTransport) -> int:
    """Bytes written for the peer that its kernel has not taken: the transport's buffer and,
    on Linux, the kernel's send queue (SIOCOUTQ). It shrinks when the peer opens its receive
    window, which it does once it has read a good share of its receive buffer."""
    queued = _ioctl(transport, termios.TIOCOUTQ) if _LINUX else 0
    return transport.get_write_buffer_size() + queued


def unread(transport: asyncio.BaseTransport) -> int:
    """Bytes the peer sent that wait to be delivered: in the kernel (FIONREAD), and over TLS in
    the transport's own buffer too (a paused TLS transport goes on reading the socket, and holds
    what came encrypted: FIONREAD alone saw 0 while the upstream's frames waited)."""
    waiting = _ioctl(transport, termios.FIONREAD)
    held = getattr(transport, "get_read_buffer_size", None)  # TLS transports (asyncio, uvloop)
    if held is not None:
        with contextlib.suppress(AttributeError, RuntimeError, OSError):  # closed meanwhile
            waiting += held()
    return waiting


_ESTABLISHED = 1  # tcpi_state, the first byte of struct tcp_info (linux/tcp.h)


def peer_closed(transport: asyncio.BaseTransport) -> bool:
    """The peer has sent its FIN or a reset (Linux: the socket is no longer ESTABLISHED). A
    transport that is not reading learns neither until it writes: this is how it looks."""
    sock = transport.get_extra_info("socket")
    if sock is None or not _LINUX:
        return False
    try:
        state: int = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    except OSError:
        return True  # the descriptor is gone with the connection
    return state != _ESTABLISHED


# struct tcp_info's tcpi_bytes_received (Linux 4.1 and later): a u64 at byte 128.
_BYTES_RECEIVED = struct.Struct("=Q")
_BYTES_RECEIVED_AT = 128


def bytes_received(transport: asyncio.BaseTransport) -> int | None:
    """Bytes of the peer's that the kernel has taken in on this connection so far (Linux), or
    None where it cannot tell. Unlike FIONREAD it counts what was read already: over TLS, the
    transport reads the socket on and holds what is not a whole record yet where nothing else
    shows it."""
    sock = transport.get_extra_info("socket")
    if sock is None or not _LINUX:
        return None
    try:
        info: bytes = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except OSError:
        return None
    if len(info) < _BYTES_RECEIVED_AT + _BYTES_RECEIVED.size:
        return None
    received: int = _BYTES_RECEIVED.unpack_from(info, _BYTES_RECEIVED_AT)[0]
    return received


def reset(transport: asyncio.WriteTransport) -> None:
    """Abort with a reset: what the kernel still held for the peer is dropped with it."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):  # already gone
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    transport.abort()
