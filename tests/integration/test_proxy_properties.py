"""Property of the real proxy over sockets: whatever bytes the upstream sends, in whatever
writes, the client receives them unchanged and the request gets its audit record."""

from __future__ import annotations

import asyncio
import http.client
import itertools
import json
import threading
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest
from aiohttp import web
from conftest import RecordingSink, start_app
from fuzz_strategies import cuts, split, sse_bytes
from hypothesis import given
from hypothesis import strategies as st
from hypothesis_budget import budget
from prometheus_client import CollectorRegistry

from sse_audit_proxy.server.proxy import ProxyConfig
from sse_audit_proxy.server.service import Service, ServiceConfig

PATHS = ["/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages", "/v1/other"]
HEADERS = [
    {"Content-Type": "text/event-stream"},
    {"Content-Type": "text/event-stream", "Content-Encoding": "gzip"},
    {"Content-Type": "text/event-stream", "Content-Encoding": "deflate"},
    {"Content-Type": "text/event-stream", "Content-Encoding": "br"},
    {"Content-Type": "application/json"},
    {"Content-Type": "application/json", "Content-Encoding": "gzip"},
]


class LiveProxy:
    """A real upstream and the real proxy on an event loop in a background thread, so that
    hypothesis (synchronous) can drive many examples through the same pair of servers."""

    def __init__(self) -> None:
        self.plans: dict[str, tuple[list[bytes], dict[str, str], bool]] = {}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self._start())

    def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._serve)
        self.runner, upstream = await start_app(app)
        self.sink = RecordingSink()
        config = ServiceConfig(
            proxy=ProxyConfig(upstream=upstream, host="127.0.0.1", port=0),
            metrics_host="127.0.0.1",
            metrics_port=0,
        )
        self.service = Service(config, registry=CollectorRegistry(), extra_sinks=[self.sink])
        await self.service.start()
        self.port = self.service.proxy.port

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        pieces, headers, pause = self.plans[request.headers["X-Plan"]]
        await request.read()
        resp = web.StreamResponse(status=200, headers=headers)
        await resp.prepare(request)
        for piece in pieces:
            await resp.write(piece)
            await asyncio.sleep(0.001 if pause else 0)
        await resp.write_eof()
        return resp

    async def _stop(self) -> None:
        await self.service.close()
        await self.runner.cleanup()

    def close(self) -> None:
        self.call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module")
def live() -> Iterator[LiveProxy]:
    server = LiveProxy()
    yield server
    server.close()


_ids = itertools.count()


@budget(40)
@given(
    body=sse_bytes,
    cut_at=cuts,
    path=st.sampled_from(PATHS),
    headers=st.sampled_from(HEADERS),
    pause=st.booleans(),
    usage=st.booleans(),
)
def test_proxy_forwards_any_upstream_bytes_unchanged_and_records_the_request(
    live: LiveProxy,
    body: bytes,
    cut_at: list[int],
    path: str,
    headers: dict[str, str],
    pause: bool,
    usage: bool,
) -> None:
    plan = str(next(_ids))
    live.plans[plan] = ([p for p in split(body, cut_at) if p], headers, pause)
    request: dict[str, Any] = {"model": "m", "stream": True}
    if usage:
        request["stream_options"] = {"include_usage": True}
    before = len(live.sink.records)
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=10)
    try:
        conn.request(
            "POST",
            path,
            body=json.dumps(request),
            headers={"X-Plan": plan, "Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        received = resp.read()
        assert resp.status == 200
        assert resp.getheader("Content-Encoding") == headers.get("Content-Encoding")
    finally:
        conn.close()
    assert received == body
    rec = live.call(live.sink.wait(before + 1))[before]
    assert rec.bytes == len(body)
    if headers["Content-Type"] == "text/event-stream":
        assert rec.stream is not None
        assert rec.stream.bytes == len(body)
    del live.plans[plan]
