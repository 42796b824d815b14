"""Habits of real servers and clients, over real sockets through the proxy (issue 11).

Each upstream here behaves as a third-party server was seen to behave on the wire; each
client is the official SDK or a byte-exact aiohttp client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from chat_streams import chunk, frame, healthy
from openai import APIError, AsyncOpenAI
from yarl import URL

from sse_audit_proxy.core.audit import End, Outcome

KEY = "sk-test-SECRET-0123456789abcdef"
CHAT = "/v1/chat/completions"
STREAM_BODY = {
    "model": "gpt-test",
    "stream": True,
    "stream_options": {"include_usage": True},
    "messages": [{"role": "user", "content": "hi"}],
}
Start = Callable[..., Awaitable[URL]]


def streamer(
    frames: list[bytes],
    *,
    content_type: str = "text/event-stream",
    terminator_after: float = 0.0,
    gap: float = 0.0,
) -> Any:
    """An upstream writing `frames` one write each, then the chunked terminator
    `terminator_after` seconds later in a write of its own (uvicorn/Starlette servers do)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": content_type})
        await resp.prepare(request)
        for data in frames:
            await resp.write(data)
            if gap:
                await asyncio.sleep(gap)
        if terminator_after:
            await asyncio.sleep(terminator_after)
        await resp.write_eof()
        return resp

    return handler


async def test_openai_sdk_closing_after_done_before_a_late_terminator_is_complete_20_of_20(
    upstream: Start, proxy: Any
) -> None:
    up = await upstream(streamer(healthy(), terminator_after=0.2))
    p = await proxy(up)
    client = AsyncOpenAI(base_url=str(p.url / "v1"), api_key=KEY, max_retries=0)
    try:
        for _ in range(20):
            stream = await client.chat.completions.create(
                model="gpt-test",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            assert text == "tok0 tok1 tok2 tok3 tok4 "
    finally:
        await client.close()
    records = await p.sink.wait(20, timeout=10)
    streams = [r.stream for r in records]
    assert all(s is not None for s in streams)
    assert [(s.outcome, s.anomalies) for s in streams if s] == [(Outcome.COMPLETE, [])] * 20
    # The SDK did leave before the body ended: this is the case under test, not a lucky one.
    assert any(s.end is End.CLIENT_GONE for s in streams if s)


async def test_sdk_leaving_after_an_error_frame_before_the_body_ends_is_an_upstream_error(
    upstream: Start, proxy: Any
) -> None:
    error = frame(
        {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
    )
    up = await upstream(streamer([chunk({"role": "assistant", "content": ""}), error], terminator_after=0.3))
    p = await proxy(up)
    client = AsyncOpenAI(base_url=str(p.url / "v1"), api_key=KEY, max_retries=0)
    try:
        with pytest.raises(APIError):
            stream = await client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            async for _ in stream:
                pass
    finally:
        await client.close()
    s = (await p.record()).stream
    assert s is not None
    assert (s.outcome, s.anomalies) == (Outcome.UPSTREAM_ERROR, ["error_event"])


async def test_event_stream_labelled_text_plain_is_audited_flagged_and_counted(
    upstream: Start, proxy: Any, http: aiohttp.ClientSession
) -> None:
    frames = healthy(usage=False)
    up = await upstream(streamer(frames, content_type="text/plain; charset=utf-8", gap=0.02))
    p = await proxy(up)
    async with http.post(p.url.with_path(CHAT), json=STREAM_BODY) as resp:
        body = await resp.read()
        assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert body == b"".join(frames)  # the client's bytes are the upstream's
    s = (await p.record()).stream
    assert s is not None
    assert (s.outcome, s.anomalies) == (Outcome.COMPLETE, ["wrong_content_type", "missing_usage"])
    assert s.ttft is not None and s.ttft > 0.015  # the first token came after a 20 ms gap
    assert (s.frames, s.content_frames, s.done) == (len(frames), 5, True)
    labels = {"route": "chat_completions", "model": "gpt-test"}
    assert p.metric("sse_audit_usage_requested_streams_total", **labels) == 1
    assert p.metric("sse_audit_stream_anomalies_total", anomaly="missing_usage", **labels) == 1
    assert p.metric("sse_audit_stream_anomalies_total", anomaly="wrong_content_type", **labels) == 1


async def test_ordinary_answer_to_a_stream_request_is_still_not_streamed(
    upstream: Start, proxy: Any, http: aiohttp.ClientSession
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"id": "chatcmpl-1", "object": "chat.completion", "choices": []})

    p = await proxy(await upstream(handler))
    async with http.post(p.url.with_path(CHAT), json=STREAM_BODY) as resp:
        await resp.read()
    s = (await p.record()).stream
    assert s is not None and s.anomalies == ["not_streamed"]
    labels = {"route": "chat_completions", "model": "gpt-test"}
    # Not judged for usage, so not in the missing_usage share's denominator either.
    assert p.metric("sse_audit_usage_requested_streams_total", **labels) is None


async def _raw_upstream(response: bytes) -> tuple[asyncio.Server, URL]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(response)
        await writer.drain()
        await asyncio.sleep(0.5)  # let the proxy read it all before the close
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, URL(f"http://127.0.0.1:{port}")


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\ne\r\ndata: [DONE]\n\n\r\n0\r\n\r\n",
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
    ],
    ids=["length", "chunked", "empty"],
)
async def test_no_header_reaches_the_client_that_the_upstream_did_not_send(
    proxy: Any, response: bytes
) -> None:
    server, url = await _raw_upstream(response)
    async with server:
        p = await proxy(url)
        reader, writer = await asyncio.open_connection("127.0.0.1", p.service.proxy.port)
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
            b"Connection: close\r\n\r\n{}"
        )
        raw = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    head = raw.split(b"\r\n\r\n", 1)[0].lower()
    names = {line.split(b":", 1)[0] for line in head.split(b"\r\n")[1:]}
    sent = {line.split(b":", 1)[0] for line in response.split(b"\r\n\r\n", 1)[0].lower().split(b"\r\n")[1:]}
    # Framing fields may be re-done for the client's hop; the trace ID is ours by design.
    assert names - sent <= {b"x-client-request-id", b"connection", b"transfer-encoding", b"content-length"}
    assert b"server" not in names and b"date" not in names and b"content-type" not in names


@pytest.mark.parametrize("stream", [False, True])
async def test_ttfb_is_recorded_for_error_bodies(
    upstream: Start, proxy: Any, http: aiohttp.ClientSession, stream: bool
) -> None:
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(0.05)
        return web.json_response({"error": {"message": "slow down", "code": "rate_limit"}}, status=429)

    p = await proxy(await upstream(handler))
    async with http.post(p.url.with_path(CHAT), json={**STREAM_BODY, "stream": stream}) as resp:
        assert resp.status == 429
        await resp.read()
    rec = await p.record()
    assert rec.ttfb is not None and 0.04 < rec.ttfb < rec.duration
    if stream:
        assert rec.stream is not None and rec.stream.ttfb is not None
        assert rec.stream.outcome is Outcome.UPSTREAM_ERROR
    else:
        assert rec.stream is None


async def test_request_end_log_line_carries_ttfb(
    upstream: Start, proxy: Any, http: aiohttp.ClientSession
) -> None:
    from sse_audit_proxy.sinks.logs import record_fields

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "no", "code": "invalid_api_key"}}, status=401)

    p = await proxy(await upstream(handler))
    async with http.post(p.url.with_path(CHAT), json={"model": "m"}) as resp:
        await resp.read()
    fields = record_fields(await p.record())
    assert fields["status"] == 401 and fields["ttfb_ms"] is not None and fields["ttfb_ms"] > 0


async def test_done_then_late_terminator_read_to_the_end_is_complete_at_eof(
    upstream: Start, proxy: Any, http: aiohttp.ClientSession
) -> None:
    up = await upstream(streamer(healthy(), terminator_after=0.2))
    p = await proxy(up)
    async with http.post(p.url.with_path(CHAT), json=STREAM_BODY) as resp:
        assert await resp.read() == b"".join(healthy())
    s = (await p.record()).stream
    assert s is not None
    assert (s.outcome, s.anomalies, s.end) == (Outcome.COMPLETE, [], End.UPSTREAM_EOF)


async def test_client_leaving_before_done_is_still_a_disconnect(upstream: Start, proxy: Any) -> None:
    up = await upstream(streamer(healthy(40), gap=0.02))
    p = await proxy(up)
    async with (
        aiohttp.ClientSession() as session,
        session.post(p.url.with_path(CHAT), json=STREAM_BODY) as resp,
    ):
        await resp.content.readuntil(b"tok3")
    s = (await p.record()).stream
    assert s is not None
    assert (s.outcome, s.anomalies) == (Outcome.CLIENT_DISCONNECT, [])
    assert not s.done and s.content_frames < 40


@pytest.mark.parametrize(("method", "status"), [("HEAD", 200), ("GET", 204), ("GET", 304)])
async def test_an_answer_without_a_body_is_no_stream_to_judge(
    upstream: Start, proxy: Any, method: str, status: int
) -> None:
    # A health check's `HEAD` of a stream's route (`curl -I`), or a 204/304 labelled as an
    # event stream: no body by definition, so no `truncated` stream in the metrics.
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, headers={"Content-Type": "text/event-stream"})

    up = await upstream(handler)
    p = await proxy(up)
    async with aiohttp.ClientSession() as http:
        for _ in range(2):  # the connection stays usable after an answer with no body
            async with http.request(method, p.url / "v1/chat/completions") as resp:
                assert resp.status == status
                assert await resp.read() == b""
    records = await p.sink.wait(2, timeout=10)
    assert [(r.status, r.stream) for r in records] == [(status, None)] * 2
