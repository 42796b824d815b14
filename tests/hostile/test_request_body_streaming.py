"""Request bodies flow to the upstream as they arrive, never held whole (issue 12, item 11)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
from yarl import URL

from tests.cli_process import serve_process
from tests.hostile.relay_support import RawRequest, raw_upstream
from tests.reliability_support import CHAT

MB = 1 << 20


@contextlib.asynccontextmanager
async def sink_upstream() -> AsyncIterator[dict[str, int]]:
    """An upstream that reads request bodies as they come (counting) and answers at the end."""
    seen = {"port": 0, "bytes": 0, "requests": 0}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                seen["requests"] += 1
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                chunked = b"transfer-encoding: chunked" in head.lower()
                if chunked:
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                        left = size + 2
                        while left:
                            got = await reader.read(min(left, 1 << 20))
                            if not got:
                                return
                            left -= len(got)
                            seen["bytes"] += len(got)
                        if size == 0:
                            break
                else:
                    while length:
                        got = await reader.read(min(length, 1 << 20))
                        if not got:
                            return
                        length -= len(got)
                        seen["bytes"] += len(got)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    seen["port"] = server.sockets[0].getsockname()[1]
    try:
        yield seen
    finally:
        server.close()


async def until(check: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.02)
    return bool(check())


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """Resident memory now (VmRSS) or at its peak so far (VmHWM), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field}")


async def test_body_reaches_the_upstream_before_the_client_has_sent_it_all(proxy: Any) -> None:
    async with sink_upstream() as up:
        p = await proxy(URL(f"http://127.0.0.1:{up['port']}"))
        reader, writer = await asyncio.open_connection("127.0.0.1", p.service.proxy.port)
        total = 4 * MB
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: p\r\nContent-Length: %d\r\n\r\n" % total)
        writer.write(b" " * (total // 2))
        await writer.drain()
        # Half the body is out and the client waits: the upstream must already have most of it.
        assert await until(lambda: up["bytes"] >= MB, 5), "the proxy held the body back"
        writer.write(b" " * (total - total // 2))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 ")
        writer.close()
    assert up["bytes"] == total


async def test_model_sent_after_a_huge_messages_array_is_learned(proxy: Any) -> None:
    # The openai SDK's order: messages first, then model and stream.
    body = orjson.dumps(
        {
            "messages": [{"role": "user", "content": "x" * 4096}] * 1024,
            "model": "gpt-after",
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )

    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 14"
            b"\r\n\r\ndata: [DONE]\n\n"
        )

    async with raw_upstream(script) as up:
        p = await proxy(URL(f"http://127.0.0.1:{up.port}"))
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                p.url / CHAT.lstrip("/"),
                data=body,
                headers={"Content-Type": "application/json"},
            ) as resp,
        ):
            await resp.read()
        assert up.requests[0].body == body
    rec = await p.record()
    assert rec.model == "gpt-after"
    assert rec.stream is not None and "missing_usage" in rec.stream.anomalies  # include_usage seen


async def test_expect_100_continue_is_answered_when_the_body_is_read(proxy: Any) -> None:
    async with sink_upstream() as up:
        p = await proxy(URL(f"http://127.0.0.1:{up['port']}"))
        reader, writer = await asyncio.open_connection("127.0.0.1", p.service.proxy.port)
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: p\r\nContent-Length: 2\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"{}")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 ")
        writer.close()


async def test_chunked_body_crossing_the_cap_after_streaming_began_is_cut_and_answered_413(
    proxy: Any,
) -> None:
    async with sink_upstream() as up:
        p = await proxy(URL(f"http://127.0.0.1:{up['port']}"), max_body_bytes=512 << 10)

        async def body() -> AsyncIterator[bytes]:
            for _ in range(64):
                yield b" " * (32 << 10)  # 2 MiB in all, no Content-Length

        async with aiohttp.ClientSession() as http, http.post(p.url / CHAT.lstrip("/"), data=body()) as resp:
            assert resp.status == 413
            assert (await resp.json())["error"]["code"] == "request_too_large"
        # The upstream got the start, then a cut: never the end of a body that did not end.
        assert 0 < up["bytes"] <= (512 << 10) + (64 << 10)
    rec = await p.record()
    assert (rec.status, rec.error) == (413, "request_too_large")


async def test_40_concurrent_30mb_uploads_held_one_byte_short_add_under_100mb_rss() -> None:
    async with sink_upstream() as up, serve_process(URL(f"http://127.0.0.1:{up['port']}")) as s:
        pid = s.proc.pid
        before = rss_kib(pid)
        size = 30 * MB
        conns = []
        block = b" " * MB

        async def upload() -> None:
            _, writer = await asyncio.open_connection(s.url.host, s.url.port)
            conns.append(writer)
            writer.write(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: p\r\nContent-Length: %d\r\n\r\n" % size
            )
            for _ in range(29):
                writer.write(block)
                await writer.drain()
            writer.write(block[:-1])  # one byte short: the proxy can never finish the body
            await writer.drain()

        try:
            await asyncio.wait_for(asyncio.gather(*(upload() for _ in range(40))), 120)
            assert await until(lambda: up["bytes"] >= 40 * (size - 1) - 40 * MB, 60)
            peak = rss_kib(pid, "VmHWM")
        finally:
            for w in conns:
                w.close()
    grown_mb = (peak - before) / 1024
    assert grown_mb < 100, f"RSS grew by {grown_mb:.0f} MB"


async def test_a_1gb_upload_passes_with_the_cap_raised() -> None:
    gb = 1 << 30

    async def body() -> AsyncIterator[bytes]:
        yield b'{"messages":[{"role":"user","content":"'
        block = b"x" * MB
        for _ in range(gb // MB):
            yield block
        yield b'"}],"model":"gpt-big","stream":false}'

    async with (
        sink_upstream() as up,
        serve_process(URL(f"http://127.0.0.1:{up['port']}"), "--max-body-bytes", str(2 * gb)) as s,
    ):
        t0 = time.monotonic()
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http,
            http.post(s.url / CHAT.lstrip("/"), data=body()) as resp,
        ):
            assert resp.status == 200
            assert await resp.read() == b"ok"
        assert time.monotonic() - t0 < 120
        assert up["bytes"] >= gb
        assert rss_kib(s.proc.pid, "VmHWM") < 200 * 1024, "the body was held"
        assert await until(lambda: any(line.get("model") == "gpt-big" for line in s.lines), 5)


async def test_body_that_is_not_utf8_json_goes_through_as_sent(proxy: Any) -> None:
    # yajl lets an encoded surrogate (ED A0 80) through its UTF-8 check and Python's strict
    # decoding then refuses it: the scan once raised, and the client got a 500 for a request
    # the upstream had already been sent. Such a body is not valid JSON: the request goes on
    # as it was sent, and the record knows no model.
    frames = (
        b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    )
    json_type = {"Content-Type": "application/json"}

    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n%s"
            % (len(frames), frames)
        )

    async with raw_upstream(script) as up:
        p = await proxy(URL(f"http://127.0.0.1:{up.port}"))
        for i, odd in enumerate((b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf")):
            body = b'{"model":"m","stream":true,"messages":[{"role":"user","content":"%s"}]}' % odd
            async with (
                aiohttp.ClientSession() as http,
                http.post(p.url / CHAT.lstrip("/"), data=body, headers=json_type) as resp,
            ):
                assert resp.status == 200
                assert await resp.read() == frames
            assert up.requests[-1].body == body
            rec = (await p.sink.wait(i + 1))[i]
            assert (rec.status, rec.error, rec.model) == (200, None, "unknown")
        assert len(p.sink.records) == 3  # one record a request


async def test_body_with_an_integer_past_64_bits_goes_through(proxy: Any) -> None:
    # Valid JSON (a seed of 2**70, say): the request shape once made orjson raise on it, after
    # the request was sent upstream, and the client got a 500.
    frames = b"data: [DONE]\n\n"

    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n%s"
            % (len(frames), frames)
        )

    body = b'{"model":"m","stream":true,"seed":%d,"messages":[]}' % (1 << 70)
    async with raw_upstream(script) as up:
        p = await proxy(URL(f"http://127.0.0.1:{up.port}"))
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                p.url / CHAT.lstrip("/"), data=body, headers={"Content-Type": "application/json"}
            ) as resp,
        ):
            assert resp.status == 200
            assert await resp.read() == frames
        assert up.requests[0].body == body
    rec = await p.record()
    assert (rec.status, rec.error, rec.model) == (200, None, "m")
