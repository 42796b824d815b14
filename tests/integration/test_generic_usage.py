"""A route without a dialect that reads usage never reports `missing_usage` (it cannot know)."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web

from sse_audit_proxy.core.audit import End, StreamAudit
from sse_audit_proxy.core.dialects import dialect_for_route, route_for_path

STREAM = (
    b'data: {"choices":[{"text":"Hi","index":0,"finish_reason":null}]}\n\n'
    b'data: {"choices":[{"text":"","index":0,"finish_reason":"stop"}]}\n\n'
    b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\n'
    b"data: [DONE]\n\n"
)


def test_generic_dialect_does_not_report_usage_it_never_reads() -> None:
    audit = StreamAudit(dialect_for_route("other")(), 0.0, include_usage=True)
    audit.feed(STREAM, 0.1)
    result = audit.finish(0.2, End.UPSTREAM_EOF)
    assert (result.outcome.value, result.anomalies) == ("complete", [])


async def test_stream_on_an_unknown_route_that_asked_for_usage_gets_no_missing_usage(
    upstream: Any, proxy: Any, http: aiohttp.ClientSession
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(STREAM)
        return resp

    running = await proxy(await upstream(handler))
    path = "/v1/custom/generate"
    assert route_for_path(path) == "other"
    body = {"model": "m", "stream": True, "stream_options": {"include_usage": True}}
    async with http.post(running.url.with_path(path), json=body) as resp:
        assert await resp.read() == STREAM
    rec = await running.record()
    assert rec.stream is not None and rec.stream.anomalies == []
