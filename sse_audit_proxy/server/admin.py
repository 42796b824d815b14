"""The metrics port: `/metrics`, `/healthz` (liveness) and `/readyz` (readiness).

The same port serves the stream records (`/streams/...`, the inspector's pages). A page in an
operator's browser could read them through DNS rebinding (its own name, re-pointed at this
address, makes its requests same-origin): those paths answer only a `Host` that no web page
can re-point, an IP address or `localhost`, or a name the operator allowed (`--admin-hosts`),
and 421 Misdirected Request to any other. Prometheus scrapes `/metrics` by whatever name or
address it found the pod under, so `/metrics` and the health checks take any `Host`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from sse_audit_proxy.server.off_loop import uncollected
from sse_audit_proxy.server.tcp import reset

# Paths any Host may read: they hold no stream record.
OPEN_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})
# /readyz's status: 200 with READY, else 503 with why (see server/reach.py for UNREACHED).
READY, DRAINING, UNREACHED, WORKERS_NOT_READY = (
    "ready",
    "draining",
    "upstream_unreachable",
    "workers_not_ready",
)
MISDIRECTED = (
    "421 Misdirected Request: stream records and pages answer only a Host that is an IP "
    "address, localhost, or a name given to `serve --admin-hosts NAME[,NAME]` "
    "(env SSE_AUDIT_ADMIN_HOSTS).\n"
)


def host_name(host: str) -> str:
    """A Host header's name: lower-cased, without its port and a final dot; an IPv6 literal
    without its brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def trusted_host(host: str | None, names: frozenset[str]) -> bool:
    """Whether a request with this Host header may read stream records: no Host (no browser
    sends none), an IP literal or `localhost` (neither is looked up in DNS, so no page can
    re-point it), or a name in `names`."""
    if host is None:
        return True
    name = host_name(host)
    if name == "localhost" or name in names:
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def admin_hosts(names: Iterable[str]) -> frozenset[str]:
    """--admin-hosts as host_name() writes a Host: lower-cased, no final dot."""
    return frozenset(n for n in (host_name(name) for name in names) if n)


def host_guard(names: frozenset[str]) -> Middleware:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS or trusted_host(request.headers.get("Host"), names):
            return await handler(request)
        return web.Response(
            status=421,
            text=MISDIRECTED,
            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"},
        )

    return guard


async def _no_sniff(_: web.Request, response: web.StreamResponse) -> None:
    # Every answer of this port: the JSON of records and evidence holds an upstream's header
    # values as they were (`<script>` text), never to be read as a page.
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


class Exposition:
    """The metrics in the Prometheus text format, rendered in a thread, one rendering at a time.

    prometheus-client renders about 8 µs a sample line in Python: with `--max-models` models on
    three routes and two sides (80,000 lines) a scrape took 0.7 s, and on the loop it held every
    stream that long, and made the frames behind it look read together to the audit. In a
    thread the loop gets the GIL back every switch interval. Scrapes that come while one
    renders share its result: concurrent scrapers cost one rendering, not one each.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._running: asyncio.Future[bytes] | None = None

    async def __call__(self) -> bytes:
        running = self._running
        if running is None:
            running = self._running = asyncio.ensure_future(
                asyncio.to_thread(uncollected, lambda: _render(self._registry))
            )
            running.add_done_callback(self._done)
        return await asyncio.shield(running)  # a scraper that leaves does not cancel the others'

    def _done(self, _: object) -> None:
        self._running = None


def _render(registry: CollectorRegistry) -> bytes:
    try:
        return generate_latest(registry)
    except Exception:
        # --workers: a worker's metrics file exists, still empty, for a moment after it starts,
        # and the merge of the files fails on it (a 500 once in a while after a restart).
        time.sleep(0.05)
        return generate_latest(registry)


# A scrape's answer must be taken within this long. A scraper that asked and never read held
# its connection and a copy of the rendered body (4.7 MB with 300 models) for ever, so a few
# dozen such connections held hundreds of MB (an outside review). Prometheus gives a scrape
# 10 s by default, and never more than its interval.
SEND_TIMEOUT = 30.0


async def send_within(
    request: web.Request, status: int, headers: Mapping[str, str], body: bytes
) -> web.StreamResponse:
    """A whole answer, taken by the client within SEND_TIMEOUT or its connection is reset (the
    body it held goes with it, the kernel's part too); a HEAD's answer is the head alone."""
    resp = web.StreamResponse(status=status, headers=headers)
    resp.content_length = len(body)
    await resp.prepare(request)
    if request.method != "HEAD":
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                await resp.write(body)  # waits while the client's window is full
        except TimeoutError:
            if request.transport is not None:
                reset(request.transport)
            return resp
    await resp.write_eof()
    return resp


@web.middleware
async def _send_deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer of the port is sent by send_within: the record lookups and the pages hold
    megabytes too (1,000 records of one trace ID), and a client that asked and never read
    held them for ever (an outside review: 40 such connections, 70 MB)."""
    resp = await handler(request)
    if type(resp) is web.Response and not resp.prepared and isinstance(resp.body, bytes):
        return await send_within(request, resp.status, resp.headers, resp.body)
    return resp


def admin_app(
    registry: CollectorRegistry, readiness: Callable[[], Awaitable[str]], hosts: Iterable[str] = ()
) -> web.Application:
    """`readiness()`: READY, or why not: /readyz's status."""
    render = Exposition(registry)

    async def metrics(request: web.Request) -> web.StreamResponse:
        return await send_within(request, 200, {"Content-Type": CONTENT_TYPE_LATEST}, await render())

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        status = await readiness()
        return web.json_response({"status": status}, status=200 if status == READY else 503)

    app = web.Application(middlewares=[host_guard(admin_hosts(hosts)), _send_deadline])
    app.on_response_prepare.append(_no_sniff)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
