"""Starting an aiohttp site and learning the port it really got (port 0 means any free one)."""

from __future__ import annotations

import errno
import socket
from collections.abc import Awaitable
from typing import TypeVar

from aiohttp import web

T = TypeVar("T")


class ListenFailed(OSError):
    """A port could not be bound; says which one, so an operator knows which flag to change."""

    def __init__(self, what: str, flag: str, host: str, port: int, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror)
        self.what, self.flag, self.host, self.port, self.cause = what, flag, host, port, cause

    def __str__(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return (
            f"cannot listen on the {self.what} port {shown}:{self.port} ({self.flag}): "
            f"{describe_os_error(self.cause)}"
        )


async def bind(what: str, flag: str, host: str, port: int, start: Awaitable[T]) -> T:
    """`start`, which binds host:port; its failure named."""
    try:
        return await start
    except OSError as exc:
        raise ListenFailed(what, flag, host, port, exc) from exc


def describe_os_error(exc: OSError) -> str:
    """Why a socket could not be bound, in a few words."""
    return {
        errno.EADDRINUSE: "address already in use",
        errno.EADDRNOTAVAIL: "address not available",
        errno.EACCES: "permission denied",
    }.get(exc.errno or 0, exc.strerror or str(exc))


async def listen(runner: web.BaseRunner, host: str, port: int, **site_kwargs: object) -> int:
    site = web.TCPSite(runner, host, port, **site_kwargs)  # type: ignore[arg-type]
    await site.start()
    server = site._server
    sockets: list[socket.socket] = list(getattr(server, "sockets", None) or ())
    return int(sockets[0].getsockname()[1]) if sockets else port


def http_url(host: str, port: int, path: str = "") -> str:
    """`http://host:port/path`, an IPv6 address in brackets (`--host ::1` logged `http://::1:8080`)."""
    return f"http://[{host}]:{port}{path}" if ":" in host else f"http://{host}:{port}{path}"
