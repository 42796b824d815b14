"""Starting an aiohttp site and learning the port it really got (port 0 means any free one)."""

from __future__ import annotations

import socket

from aiohttp import web


async def listen(runner: web.BaseRunner, host: str, port: int, **site_kwargs: object) -> int:
    site = web.TCPSite(runner, host, port, **site_kwargs)  # type: ignore[arg-type]
    await site.start()
    server = site._server
    sockets: list[socket.socket] = list(getattr(server, "sockets", None) or ())
    return int(sockets[0].getsockname()[1]) if sockets else port
