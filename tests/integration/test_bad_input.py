"""Bad input (issue 5, item 4): body cap, malformed JSON, header limits, trace IDs, labels."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import TEST_KEYS
from tests.reliability_support import (
    CHAT,
    STREAM_BODY,
    Tally,
    cli_proxy,
    complete_stream,
    raw_exchange,
    status_and_json,
    streaming_handler,
)


async def test_body_over_the_cap_is_refused_413_without_reaching_upstream(
    upstream: Any, proxy: Any, http: aiohttp.ClientSession
) -> None:
    tally = Tally()
    p = await proxy(await upstream(streaming_handler([], tally)), max_body_bytes=1024)
    async with http.post(
        p.url / CHAT.lstrip("/"), data=b"{" + b" " * 2048 + b"}", headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 413
        error = (await resp.json())["error"]
    assert error["code"] == "request_too_large" and error["type"] == "invalid_request_error"
    rec = await p.record()
    assert (rec.status, rec.error) == (413, "request_too_large")
    assert tally.requests == 0
    assert p.metric("sse_audit_requests_total", route="chat_completions", method="POST", status="413") == 1


async def test_chunked_body_growing_past_the_cap_is_refused_413_without_reaching_upstream(
    upstream: Any, proxy: Any, http: aiohttp.ClientSession
) -> None:
    tally = Tally()
    p = await proxy(await upstream(streaming_handler([], tally)), max_body_bytes=4096)

    async def body() -> AsyncIterator[bytes]:  # no Content-Length: the cap is counted as read
        for _ in range(64):
            yield b" " * 1024

    async with http.post(p.url / CHAT.lstrip("/"), data=body()) as resp:
        assert resp.status == 413
        assert (await resp.json())["error"]["code"] == "request_too_large"
    rec = await p.record()
    assert rec.status == 413 and tally.requests == 0


async def test_malformed_json_is_forwarded_untouched_and_audited_with_model_unknown(
    upstream: Any, proxy: Any, http: aiohttp.ClientSession
) -> None:
    seen: list[bytes] = []

    async def judge(request: web.Request) -> web.Response:
        seen.append(await request.read())
        return web.json_response(
            {"error": {"message": "bad json", "type": "invalid_request_error", "code": None}}, status=400
        )

    p = await proxy(await upstream(judge))
    broken = b'{"model": "gpt-test", "stream": tru\xff'
    async with http.post(
        p.url / CHAT.lstrip("/"), data=broken, headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 400  # the upstream's verdict, relayed
        assert (await resp.json())["error"]["message"] == "bad json"
    assert seen == [broken]
    rec = await p.record()
    assert (rec.model, rec.status, rec.error) == ("unknown", 400, None)
    assert p.metric("sse_audit_requests_total", route="chat_completions", method="POST", status="400") == 1


async def test_oversized_header_is_refused_431_without_echoing_or_forwarding_it(
    upstream: Any, proxy: Any
) -> None:
    tally = Tally()
    p = await proxy(await upstream(streaming_handler([], tally)))
    secret = f"Bearer {TEST_KEYS[0]}" + "A" * 20000
    raw = await raw_exchange(
        p.service.proxy.port,
        (
            f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nAuthorization: {secret}\r\nContent-Length: 2\r\n\r\n{{}}"
        ).encode(),
    )
    status, body = status_and_json(raw)
    assert status == 431
    assert body["error"]["code"] == "request_header_too_large"
    assert TEST_KEYS[0].encode() not in raw
    rec = await p.record()
    assert (rec.status, rec.error) == (431, "request_header_too_large")
    assert tally.requests == 0


@pytest.mark.parametrize("pieces", [1, 24])
async def test_a_head_over_64_kib_refused_431_keeps_the_clients_trace_id(
    upstream: Any, proxy: Any, pieces: int
) -> None:
    """The 431 for a head past 64 KiB had a random trace ID in its answer and record, in one
    write or in many (a soak review: 58 of 58)."""
    tally = Tally()
    p = await proxy(await upstream(streaming_handler([], tally)))
    fields = "".join(f"X-Pad-{i}: {'p' * 4000}\r\n" for i in range(20))  # ~80 KiB in 20 fields
    head = f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nX-Client-Request-Id: soak-431-trace\r\n{fields}\r\n".encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", p.service.proxy.port)
    step = -(-len(head) // pieces)
    for i in range(0, len(head), step):
        writer.write(head[i : i + step])
        await writer.drain()
        await asyncio.sleep(0.005)
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert raw.split(b" ", 2)[1] == b"431", raw[:80]
    assert b"soak-431-trace" in raw.partition(b"\r\n\r\n")[0]
    rec = await p.record()
    assert (rec.trace_id, rec.status) == ("soak-431-trace", 431)
    assert tally.requests == 0


async def test_too_many_headers_are_refused_431(upstream: Any, proxy: Any) -> None:
    tally = Tally()
    p = await proxy(await upstream(streaming_handler([], tally)))
    headers = "".join(f"X-Filler-{i}: {i}\r\n" for i in range(150))
    raw = await raw_exchange(
        p.service.proxy.port, f"GET /v1/models HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode()
    )
    status, body = status_and_json(raw)
    assert status == 431 and body["error"]["code"] == "request_header_too_large"
    assert (await p.record()).status == 431
    assert tally.requests == 0


async def test_100_header_fields_are_served_and_101_are_refused_431(upstream: Any, proxy: Any) -> None:
    """The documented limit is 100 header fields (docs/operate/security.md), Host counted as
    any other: a head of exactly 100 is forwarded, one of 101 is refused 431 before the
    upstream is contacted. An outside mutation review found the boundary untested."""
    tally = Tally()
    p = await proxy(await upstream(streaming_handler([], tally)))

    def head(fields: int) -> bytes:
        fillers = "".join(f"X-Filler-{i}: {i}\r\n" for i in range(fields - 2))  # + Host, Connection
        return f"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{fillers}\r\n".encode()

    raw = await raw_exchange(p.service.proxy.port, head(100))
    assert raw.startswith(b"HTTP/1.1 200 "), raw[:80]
    assert tally.requests == 1 and len(tally.headers[0]) >= 100  # all 100 went on
    raw = await raw_exchange(p.service.proxy.port, head(101))
    assert raw.split(b" ", 2)[1] == b"431", raw[:80]  # answered as HTTP/1.0: the head was not read
    status, body = status_and_json(raw)
    assert status == 431 and body["error"]["code"] == "request_header_too_large"
    assert tally.requests == 1


async def test_a_body_of_exactly_max_body_bytes_passes_and_one_byte_more_is_refused_413(
    upstream: Any, proxy: Any
) -> None:
    """--max-body-bytes is the largest body let through: 1000 bytes pass at a cap of 1000,
    1001 are refused 413, sent with a Content-Length or chunked; a declared 1001 is refused
    from the head alone, before any `100 Continue` (the body is never asked for). An outside
    mutation review found the boundary untested."""
    echoed: list[bytes] = []

    async def echo(request: web.Request) -> web.Response:
        echoed.append(await request.read())
        return web.Response(body=echoed[-1], content_type="application/json")

    p = await proxy(await upstream(echo), max_body_bytes=1000)
    port = p.service.proxy.port

    def body(size: int) -> bytes:
        start = b'{"model": "m", "messages": []'
        return start + b" " * (size - len(start) - 1) + b"}"

    def post(size: int, *, chunked: bool) -> bytes:
        framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % size
        data = b"%x\r\n%s\r\n0\r\n\r\n" % (size, body(size)) if chunked else body(size)
        return (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\n%s\r\n\r\n%s" % (framing, data)
        )

    for chunked in (False, True):
        raw = await raw_exchange(port, post(1000, chunked=chunked))
        assert raw.startswith(b"HTTP/1.1 200 ") and raw.endswith(body(1000)), (chunked, raw[:80])
        status, error = status_and_json(await raw_exchange(port, post(1001, chunked=chunked)))
        assert (status, error["error"]["code"]) == (413, "request_too_large"), chunked
    assert echoed == [body(1000), body(1000)]

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(  # the head alone: the body waits for a `100 Continue`
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1001\r\nExpect: 100-continue\r\n\r\n"
    )
    try:
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    finally:
        writer.close()
    assert first.startswith(b"HTTP/1.1 413 "), first
    assert len(echoed) == 2


async def test_header_with_control_characters_is_refused_400_openai_shaped(upstream: Any, proxy: Any) -> None:
    tally = Tally()
    p = await proxy(await upstream(streaming_handler([], tally)))
    raw = await raw_exchange(
        p.service.proxy.port, b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Thing: a\x01b\r\n\r\n"
    )
    status, body = status_and_json(raw)
    assert status == 400 and body["error"]["code"] == "invalid_http_request"
    assert (await p.record()).error == "invalid_http_request"
    assert tally.requests == 0


@pytest.mark.parametrize(
    "head",
    [
        # raw UTF-8 in the query (curl sends it so), a control character in a value
        b"GET /v1/models?q=\xc3\xa9 HTTP/1.1\r\nHost: x\r\nX-Client-Request-Id: mytrace2\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Client-Request-Id: mytrace2\r\nX-Thing: a\x01b\r\n\r\n",
    ],
)
async def test_a_refused_head_keeps_the_clients_trace_id(upstream: Any, proxy: Any, head: bytes) -> None:
    """nginx and HAProxy pass a head the proxy's strict parser refuses (raw UTF-8 in a query,
    control characters in a value): its 400 and its record had a random trace ID, so the
    client's own could not be found (outside review, behind a front proxy)."""
    tally = Tally()
    p = await proxy(await upstream(streaming_handler([], tally)))
    raw = await raw_exchange(p.service.proxy.port, head)
    status, body = status_and_json(raw)
    assert status == 400 and body["error"]["code"] == "invalid_http_request"
    assert b"\r\nX-Client-Request-Id: mytrace2\r\n" in raw.split(b"\r\n\r\n")[0] + b"\r\n"
    rec = await p.record()
    assert (rec.error, rec.trace_id) == ("invalid_http_request", "mytrace2")
    assert tally.requests == 0


async def test_a_refused_head_of_hostile_lines_is_answered_at_once(upstream: Any, proxy: Any) -> None:
    """Lines of hundreds of tabs made the first lenient reading backtrack: a 20 KB head held
    the event loop 12 s, every other stream with it (third pass). Read line by line now: the
    answer and the next request come within the exchange's 5 s."""
    lines = b"".join(b"a%d:" % i + b"\t" * 510 + b"x" * 600 + b"\r\n" for i in range(30))
    head = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Client-Request-Id: tabs-1\r\n" + lines
    head += b"X-Thing: a\x01b\r\n\r\n"  # refused for the control character
    p = await proxy(await upstream(streaming_handler([], Tally())))
    raw = await raw_exchange(p.service.proxy.port, head)
    assert raw.startswith(b"HTTP/1.0 400") and b"X-Client-Request-Id: tabs-1\r\n" in raw
    healthy = await raw_exchange(p.service.proxy.port, b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
    assert healthy.startswith(b"HTTP/1.1 ")


def test_a_refused_heads_fields_are_read_up_to_its_blank_line_whatever_its_line_ends() -> None:
    from sse_audit_proxy.server.http_server import _lenient_head

    auth = b"Bearer " + b"e" * 2000  # a JWT is longer than any cut a regular expression made
    piece = b"GET /?k=v HTTP/1.1\nHost: x\nAuthorization: " + auth + b"\n\nX-Client-Request-Id: body\r\n"
    assert _lenient_head(piece) == ("k=v", [(b"Host", b"x"), (b"Authorization", auth)])
    # a head's second read begins with a field, not the request line (fourth pass); a request
    # line llhttp refuses for its spacing or version is one all the same (fifth pass)
    assert _lenient_head(b"\r\nGET\t/v1/x?key=k1\thttp/1.1\r\nHost: x\r\n\r\n") == (
        "key=k1",
        [(b"Host", b"x")],
    )
    assert _lenient_head(b"X-Request-Id: split-2\r\nX-Bad: \x01\r\n\r\n")[1][0] == (
        b"X-Request-Id",
        b"split-2",
    )


@pytest.mark.parametrize(
    "head",
    [
        b"GET /v1/models?key=Zq81Hn2Lk0Pw7Xc4&q=\xff HTTP/1.1\r\nHost: x\r\n"
        b"X-Request-Id: Zq81Hn2Lk0Pw7Xc4\r\n\r\n",
        b"POST /v1/chat/completions?api-key=Zq81Hn2Lk0Pw7Xc4 HTTP/1.1\r\nHost: x\r\n"
        b"X-Request-Id: Zq81Hn2Lk0Pw7Xc4\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # a bad chunk
    ],
    ids=["refused-head", "parsed-head-bad-body"],
)
async def test_a_refused_requests_query_key_is_not_taken_for_its_trace_id(
    upstream: Any, proxy: Any, head: bytes
) -> None:
    """A URL's key (`?key=`, Azure's `?api-key=`) is a credential too: a refused request with
    it as its trace ID had it in its answer, its log line and /streams (fourth pass)."""
    p = await proxy(await upstream(streaming_handler([], Tally())))
    raw = await raw_exchange(p.service.proxy.port, head)
    assert b" 400 " in raw.split(b"\r\n")[0] and b"Zq81Hn2Lk0Pw7Xc4" not in raw
    assert (await p.record()).trace_id != "Zq81Hn2Lk0Pw7Xc4"


async def test_a_head_refused_in_its_second_read_keeps_its_query_key_from_the_trace_id(
    upstream: Any, proxy: Any
) -> None:
    """The target came in the first read, the refused field in the second: the key in the query
    was read only from the failing read, and became the trace ID (fifth pass)."""
    p = await proxy(await upstream(streaming_handler([], Tally())))
    reader, writer = await asyncio.open_connection("127.0.0.1", p.service.proxy.port)
    try:
        writer.write(b"GET /v1/chat/completions?key=Qx7tradeWinds42zz HTTP/1.1\r\nHost: a\r\n")
        await writer.drain()
        await asyncio.sleep(0.15)  # its own read
        writer.write(b"X-Request-Id: Qx7tradeWinds42zz\r\nbad line\r\n\r\n")
        raw = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    assert b" 400 " in raw.split(b"\r\n")[0] and b"Qx7tradeWinds42zz" not in raw
    assert (await p.record()).trace_id != "Qx7tradeWinds42zz"


async def test_a_refused_heads_key_is_not_taken_for_its_trace_id(upstream: Any, proxy: Any) -> None:
    key = "Zx9fK2mQ7wLp4Rt8Yv3N"
    head = (
        b"GET /v1/models?q=\xc3\xa9 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
        b"X-Client-Request-Id: %s\r\n\r\n" % (key.encode(), key.encode())
    )
    p = await proxy(await upstream(streaming_handler([], Tally())))
    raw = await raw_exchange(p.service.proxy.port, head)
    assert raw.startswith(b"HTTP/1.0 400") and key.encode() not in raw
    assert (await p.record()).trace_id != key


NASTY_TRACE_ID = 'abc" } \\ {"event":"forged" \t<script>é' + "Z" * 300


async def test_trace_id_is_capped_and_restricted_before_logging_no_line_injection(
    upstream: Any, http: aiohttp.ClientSession
) -> None:
    url = await upstream(streaming_handler(complete_stream(2), Tally()))
    async with cli_proxy(url) as (child, proxy_url, _):
        async with http.post(
            proxy_url / CHAT.lstrip("/"), json=STREAM_BODY, headers={"X-Client-Request-Id": NASTY_TRACE_ID}
        ) as resp:
            echoed = resp.headers["X-Client-Request-Id"]
            await resp.read()
        await asyncio.sleep(0.2)
        child.terminate()
        out = (await child.stdout.read()).decode()
        print(out)
    assert re.fullmatch(r"[A-Za-z0-9._:/@+=-]{1,128}", echoed)
    assert echoed.startswith("abcevent:forgedscript")
    lines = out.splitlines()
    events = [json.loads(line)["event"] for line in lines]  # every line is one JSON object
    assert "forged" not in events
    end = next(json.loads(line) for line in lines if '"stream_end"' in line)
    assert end["trace_id"] == echoed


async def test_model_label_stays_bounded_by_max_models_and_safe_characters(
    upstream: Any, proxy: Any, http: aiohttp.ClientSession
) -> None:
    p = await proxy(await upstream(streaming_handler(complete_stream(1), Tally())), max_models=2)
    models = ["m-1", "m-2", "m-3", "m-4", 'x"\n{}' + "y" * 500]
    for model in models:
        async with http.post(p.url / CHAT.lstrip("/"), json={**STREAM_BODY, "model": model}) as resp:
            await resp.read()
    records = await p.sink.wait(len(models))
    assert records[-1].model == "x" + "y" * 127  # unsafe characters gone, 128 at most
    exposition = await (await http.get(p.metrics_url / "metrics")).text()
    labels = set(re.findall(r'sse_audit_streams_total\{[^}]*model="([^"]*)"', exposition))
    assert labels == {"m-1", "m-2", "other"}
