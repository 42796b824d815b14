"""Upstream faults: what the client sees, what is recorded, what is counted (issue 5, item 1)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import aiohttp
import openai
import pytest
import trustme
from aiohttp import web
from yarl import URL

from tests.conftest import TEST_KEYS
from tests.reliability_support import (
    CHAT,
    STREAM_BODY,
    Tally,
    chunk,
    complete_stream,
    full_backlog_listener,
    streaming_handler,
)


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


async def post_stream(http: aiohttp.ClientSession, url: URL) -> tuple[int, dict[str, Any]]:
    async with http.post(
        url / CHAT.lstrip("/"), json=STREAM_BODY, headers={"Authorization": f"Bearer {TEST_KEYS[0]}"}
    ) as resp:
        assert resp.headers["Content-Type"].startswith("application/json")
        return resp.status, await resp.json()


def assert_counted(p: Any, status: int, outcome: str) -> None:
    assert (
        p.metric("sse_audit_requests_total", route="chat_completions", method="POST", status=str(status)) == 1
    )
    assert (
        p.metric("sse_audit_streams_total", route="chat_completions", model="gpt-test", outcome=outcome) == 1
    )
    assert p.metric("sse_audit_active_streams", route="chat_completions") in (None, 0)


async def test_refused_upstream_answers_502_openai_error_and_records_upstream_error(
    proxy: Any, http: aiohttp.ClientSession
) -> None:
    p = await proxy(URL(f"http://127.0.0.1:{closed_port()}"))
    status, body = await post_stream(http, p.url)
    assert status == 502
    assert body["error"]["code"] == "upstream_unreachable"
    assert set(body["error"]) == {"message", "type", "code"}
    rec = await p.record()
    assert (rec.status, rec.error, rec.model) == (502, "upstream_unreachable", "gpt-test")
    assert rec.stream is not None and rec.stream.outcome == "upstream_error"
    assert_counted(p, 502, "upstream_error")


async def test_dns_failure_answers_502_naming_resolution(
    proxy: Any, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real lookup would query the machine's (non-loopback) name server; instead the
    # loop's getaddrinfo fails the way glibc does for an unknown name.
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "gateway.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return await real(host, *args, **kwargs)

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    p = await proxy(URL("http://gateway.invalid:8000"))
    status, body = await post_stream(http, p.url)
    assert status == 502
    assert body["error"]["code"] == "upstream_dns_error"
    assert "resolve" in body["error"]["message"]
    rec = await p.record()
    assert rec.error == "upstream_dns_error" and rec.stream is not None
    assert rec.stream.outcome == "upstream_error"
    assert_counted(p, 502, "upstream_error")


async def test_connect_timeout_answers_504_and_records_timeout(
    proxy: Any, http: aiohttp.ClientSession
) -> None:
    listener, fillers = full_backlog_listener()
    try:
        port = listener.getsockname()[1]
        p = await proxy(URL(f"http://127.0.0.1:{port}"), connect_timeout=0.3)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        status, body = await post_stream(http, p.url)
        assert loop.time() - t0 < 3
    finally:
        for s in (listener, *fillers):
            s.close()
    assert status == 504
    assert body["error"]["code"] == "upstream_connect_timeout"
    rec = await p.record()
    assert rec.stream is not None
    assert (rec.stream.outcome, rec.stream.end) == ("timeout", "connect_timeout")
    assert_counted(p, 504, "timeout")


async def test_upstream_that_accepts_but_never_answers_gets_504_after_idle_timeout(
    proxy: Any, http: aiohttp.ClientSession
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        await asyncio.sleep(30)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        p = await proxy(URL(f"http://127.0.0.1:{port}"), idle_timeout=0.3)
        status, body = await post_stream(http, p.url)
    finally:
        server.close()
    assert status == 504
    assert body["error"]["code"] == "upstream_idle_timeout"
    rec = await p.record()
    assert rec.stream is not None
    assert (rec.stream.outcome, rec.stream.end) == ("timeout", "idle_timeout")
    assert_counted(p, 504, "timeout")


async def test_no_response_head_within_total_timeout_gets_504(
    upstream: Any, proxy: Any, http: aiohttp.ClientSession
) -> None:
    tally = Tally()
    url = await upstream(streaming_handler([chunk("late")], tally, head_delay=2), handler_cancellation=True)
    p = await proxy(url, total_timeout=0.3, idle_timeout=5)
    status, body = await post_stream(http, p.url)
    assert status == 504
    assert body["error"]["code"] == "upstream_timeout"
    rec = await p.record()
    assert rec.stream is not None
    assert (rec.stream.outcome, rec.stream.end) == ("timeout", "total_timeout")
    assert_counted(p, 504, "timeout")


async def read_until_cut(resp: aiohttp.ClientResponse) -> tuple[bytes, BaseException | None]:
    got = b""
    try:
        async for data in resp.content.iter_any():
            got += data
    except aiohttp.ClientPayloadError as exc:
        return got, exc
    return got, None


async def test_stream_silent_past_idle_timeout_is_cut_and_recorded_timeout(
    upstream: Any, proxy: Any, http: aiohttp.ClientSession
) -> None:
    tally = Tally()
    url = await upstream(
        streaming_handler([chunk("a"), chunk("b")], tally, hang=True), handler_cancellation=True
    )
    p = await proxy(url, idle_timeout=0.3)
    async with http.post(p.url / CHAT.lstrip("/"), json=STREAM_BODY) as resp:
        assert resp.status == 200
        got, cut = await read_until_cut(resp)
    assert cut is not None, "the client must see the stream was cut, not a clean end"
    assert got == chunk("a") + chunk("b")
    rec = await p.record()
    assert rec.stream is not None
    assert (rec.stream.outcome, rec.stream.end) == ("timeout", "idle_timeout")
    assert rec.stream.content_frames == 2 and rec.stream.ttft is not None
    for _ in range(100):  # the proxy closed the upstream request too
        if tally.closed_at:
            break
        await asyncio.sleep(0.01)
    assert tally.closed_at
    assert_counted(p, 200, "timeout")


async def test_stream_longer_than_total_timeout_is_cut_and_recorded_timeout(
    upstream: Any, proxy: Any, http: aiohttp.ClientSession
) -> None:
    tally = Tally()
    url = await upstream(streaming_handler(complete_stream(40), tally, delay=0.05))
    p = await proxy(url, total_timeout=0.5, idle_timeout=5)
    async with http.post(p.url / CHAT.lstrip("/"), json=STREAM_BODY) as resp:
        got, cut = await read_until_cut(resp)
    assert cut is not None
    rec = await p.record()
    assert rec.stream is not None
    assert (rec.stream.outcome, rec.stream.end) == ("timeout", "total_timeout")
    assert 0 < rec.stream.content_frames < 40
    assert rec.bytes == len(got)
    assert_counted(p, 200, "timeout")


async def test_reset_mid_stream_raises_in_openai_sdk_and_is_recorded_truncated(
    upstream: Any, proxy: Any
) -> None:
    tally = Tally()
    url = await upstream(streaming_handler(complete_stream(6), tally, reset_after=2))
    p = await proxy(url)
    client = openai.AsyncOpenAI(base_url=str(p.url / "v1"), api_key=TEST_KEYS[0], max_retries=0)
    got: list[str] = []
    with pytest.raises(openai.APIConnectionError):  # the SDK reports the cut as an error
        stream = await client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        async for part in stream:
            got.append(part.choices[0].delta.content or "")
    await client.close()
    assert got == ["t0", "t1"], "everything before the reset reached the client"
    rec = await p.record()
    assert rec.stream is not None
    assert (rec.stream.outcome, rec.stream.end) == ("truncated", "upstream_broken")
    assert "missing_done" in rec.stream.anomalies
    assert_counted(p, 200, "truncated")


# TLS to the upstream -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(tls_ca: trustme.CA, tmp_path: Any) -> Iterator[str]:
    path = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(path))
    yield str(path)


async def tls_upstream(tls_ca: trustme.CA) -> tuple[web.AppRunner, URL]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("127.0.0.1").configure_cert(context)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", streaming_handler(complete_stream(2), Tally()))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, URL(f"https://127.0.0.1:{port}")


async def test_untrusted_upstream_certificate_answers_502_naming_tls(
    tls_ca: trustme.CA, proxy: Any, http: aiohttp.ClientSession
) -> None:
    runner, url = await tls_upstream(tls_ca)
    try:
        p = await proxy(url)
        status, body = await post_stream(http, p.url)
    finally:
        await runner.cleanup()
    assert status == 502
    assert body["error"]["code"] == "upstream_tls_error"
    assert "TLS" in body["error"]["message"] and "certificate" in body["error"]["message"]
    rec = await p.record()
    assert rec.error == "upstream_tls_error"
    assert_counted(p, 502, "upstream_error")


@pytest.mark.parametrize("mode", ["ca_file", "insecure"])
async def test_upstream_tls_passes_with_ca_file_or_explicit_insecure(
    mode: str, tls_ca: trustme.CA, ca_file: str, proxy: Any, http: aiohttp.ClientSession
) -> None:
    runner, url = await tls_upstream(tls_ca)
    try:
        options = {"upstream_ca_file": ca_file} if mode == "ca_file" else {"insecure_upstream": True}
        p = await proxy(url, **options)
        async with http.post(p.url / CHAT.lstrip("/"), json=STREAM_BODY) as resp:
            assert resp.status == 200
            await resp.read()
    finally:
        await runner.cleanup()
    rec = await p.record()
    assert rec.stream is not None and rec.stream.outcome == "complete"
    assert_counted(p, 200, "complete")


async def test_plain_http_upstream_spoken_to_over_tls_answers_502_naming_tls(
    upstream: Any, proxy: Any, http: aiohttp.ClientSession
) -> None:
    url = await upstream(streaming_handler(complete_stream(1), Tally()))
    p = await proxy(url.with_scheme("https"))
    status, body = await post_stream(http, p.url)
    assert status == 502
    assert body["error"]["code"] == "upstream_tls_error"
    assert "TLS" in body["error"]["message"]
