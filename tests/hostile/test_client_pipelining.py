"""The proxy port's own HTTP/1.1 server against the real `serve`: pipelining, `Upgrade`
requests, and bytes after a request that closes the connection.

- A slow stream followed by 20,000 tiny requests in one write: llhttp parsed the whole read
  (up to 256 KiB), and every request in it waited in the queue behind the stream, about 2 MB a
  connection (`MAX_QUEUED` only stopped further reads). The proxy now parses a head at a time
  and holds the rest of the read unparsed until the queue has room.
- `curl --http2` on http:// sends `Upgrade: h2c`: such a POST got `400 invalid_request_body`
  whenever its body did not come whole in the head's read.
- A request pipelined after `Connection: close` (or after HTTP/1.0 without keep-alive), or bytes
  after the chunked body of an `Upgrade` request, were recorded as a `400 invalid_http_request` that was
  never sent, under a made-up trace id. A malformed head after queued requests took the place
  of the next one's answer, which was lost with no record.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from peers import serve
from relay_support import RawRequest, raw_exchange, raw_upstream, read_request, read_response
from test_key_flood import rss_kib
from yarl import URL

from sse_audit_proxy.server.http_server import MAX_QUEUED

CHAT = b"/v1/chat/completions"
STREAM_BODY = b'{"model":"m","stream":true,"messages":[]}'
SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
FRAME = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
TINY = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"
FLOOD_CONNS = 20
FLOOD_REQUESTS = 20_000  # 720 KB a connection: more than any one read
UPGRADE = (
    b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
)


def post(target: bytes, body: bytes, *extra: bytes, trace: bytes = b"") -> bytes:
    fields = b"".join(extra) + (b"X-Client-Request-Id: %s\r\n" % trace if trace else b"")
    head = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" % target
    return head + b"Content-Length: %d\r\n%s\r\n%s" % (len(body), fields, body)


def get(trace: str, *extra: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    return b"GET /v1/models %s\r\nHost: x\r\nX-Client-Request-Id: %s\r\n%s\r\n" % (
        version,
        trace.encode(),
        b"".join(extra),
    )


def echo_trace(req: RawRequest) -> bytes:
    """An answer naming the request it answers (its trace id and body), so order shows."""
    trace = req.header(b"x-client-request-id")
    body = (trace[0] if trace else b"-") + b"|" + req.body
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def ends(child: Any) -> list[dict[str, Any]]:
    return [line for line in child.lines if line.get("event") in ("stream_end", "request_end")]


async def wait_for_ends(child: Any, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    for _ in range(int(timeout / 0.05)):
        if len(ends(child)) >= n:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"{len(ends(child))} records, not {n}: {ends(child)}")
    await asyncio.sleep(0.3)  # a record too many would show by now
    return ends(child)


async def test_a_pipelining_flood_behind_a_stream_holds_one_read_not_a_queue_of_thousands() -> None:
    release = asyncio.Event()

    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        if req.target == CHAT:  # a frame every 0.1 s until the test is done measuring
            writer.write(SSE_HEAD)
            for _ in range(600):
                writer.write(b"%x\r\n%s\r\n" % (len(FRAME), FRAME))
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(release.wait(), 0.1)
                if release.is_set():
                    break
            writer.write(b"0\r\n\r\n")
        else:
            writer.write(echo_trace(req))

    async with raw_upstream(script) as up, serve(URL(f"http://127.0.0.1:{up.port}")) as child:
        port = child.url.port
        assert port is not None
        # Warm-up: the first stream and request load what serve loads lazily.
        warm = asyncio.create_task(raw_exchange(port, post(CHAT, STREAM_BODY) + get("warm"), timeout=1.0))
        await asyncio.sleep(0.5)
        release.set()
        await warm
        await wait_for_ends(child, 2)
        release.clear()
        before = rss_kib(child.proc.pid)
        writers = []
        payload = post(CHAT, STREAM_BODY) + TINY * FLOOD_REQUESTS
        try:
            for _ in range(FLOOD_CONNS):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(payload)  # what the kernel does not take waits in this process
                writers.append(writer)
            async with asyncio.timeout(20):
                while sum(r.target == CHAT for r in up.requests) < 1 + FLOOD_CONNS:
                    await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # every connection's first read is parsed by now
            grown = rss_kib(child.proc.pid) - before
        finally:
            for writer in writers:
                writer.transport.abort()
        # Each connection's stream, and the requests parsed and queued behind it (no more).
        records = await wait_for_ends(child, 2 + FLOOD_CONNS * (1 + MAX_QUEUED))
        release.set()
    # Before: about 2,200 KiB a connection (thousands of parsed requests queued).
    assert grown < 200 * FLOOD_CONNS, f"serve grew {grown} KiB for {FLOOD_CONNS} connections"
    streams = [r for r in records[2:] if r["event"] == "stream_end"]
    queued = [r for r in records[2:] if r["event"] != "stream_end"]
    assert len(streams) == FLOOD_CONNS, records
    assert {r["outcome"] for r in streams} == {"client_disconnect"}
    # The queued ones were never served: each recorded as its client's leaving, none answered.
    assert len(queued) == FLOOD_CONNS * MAX_QUEUED, len(queued)
    assert {(r["status"], r["error"]) for r in queued} == {(499, "client_disconnect")}
    assert len(up.requests) == 2 + FLOOD_CONNS  # nothing queued behind the streams went upstream


async def test_pipelined_requests_beyond_the_queue_are_all_answered_in_order_one_record_each() -> None:
    """Held bytes resume where they stopped: a mix of GETs and POSTs with Content-Length and
    chunked bodies, over 256 KiB in one write behind a slow first request."""
    first = asyncio.Event()

    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        if not first.is_set():
            first.set()
            await asyncio.sleep(0.5)  # the rest arrives and queues meanwhile
        writer.write(echo_trace(req))

    count = 700
    requests, expected = [], []
    for i in range(count):
        trace = f"p{i:04d}"
        body = b'{"n":%d,"pad":"%s"}' % (i, b"x" * (i * 7 % 1500))
        if i % 3 == 0:
            requests.append(get(trace))
            expected.append(trace.encode() + b"|")
        elif i % 3 == 1:
            requests.append(post(b"/v1/embeddings", body, trace=trace.encode()))
            expected.append(trace.encode() + b"|" + body)
        else:
            chunks = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (5, body[:5], len(body) - 5, body[5:])
            requests.append(
                b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                b"X-Client-Request-Id: %s\r\n\r\n%s" % (trace.encode(), chunks)
            )
            expected.append(trace.encode() + b"|" + body)
    data = b"".join(requests)
    assert len(data) > 256 << 10  # more than one read of uvloop's
    async with raw_upstream(script) as up, serve(URL(f"http://127.0.0.1:{up.port}")) as child:
        reader, writer = await asyncio.open_connection("127.0.0.1", child.url.port)
        writer.write(data)
        bodies = []
        async with asyncio.timeout(60):
            for _ in range(count):
                head, body = await read_response(reader)
                assert head.startswith(b"HTTP/1.1 200 "), head
                bodies.append(body)
        writer.close()
        records = await wait_for_ends(child, count)
    assert bodies == expected
    assert [r["trace_id"] for r in records] == [f"p{i:04d}" for i in range(count)]
    assert len(up.requests) == count


async def ok(req: RawRequest, writer: asyncio.StreamWriter) -> None:
    writer.write(echo_trace(req))


CHAT_BODY = b'{"model":"m","messages":[{"role":"user","content":"' + b"hello " * 40 + b'"}]}'
CHUNKED_BODY = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (7, CHAT_BODY[:7], len(CHAT_BODY) - 7, CHAT_BODY[7:])


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("with_head", [0, 10])
async def test_an_upgrade_request_whose_body_comes_after_its_head_is_served(
    framing: str, with_head: int
) -> None:
    """`with_head`: body bytes in the head's write (the rest comes in a later one)."""
    chunked = framing == "chunked"
    length = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % len(CHAT_BODY)
    head = b"POST %s HTTP/1.1\r\nHost: x\r\n%s\r\n%s\r\n" % (CHAT, length, UPGRADE)
    body = CHUNKED_BODY if chunked else CHAT_BODY
    async with raw_upstream(ok) as up, serve(URL(f"http://127.0.0.1:{up.port}")) as child:
        reader, writer = await asyncio.open_connection("127.0.0.1", child.url.port)
        writer.write(head + body[:with_head])
        await writer.drain()
        await asyncio.sleep(0.3)  # read apart from the rest by the proxy
        writer.write(body[with_head:])
        got, answer = await asyncio.wait_for(read_response(reader), 10)
        writer.close()
        records = await wait_for_ends(child, 1)
    assert got.startswith(b"HTTP/1.1 200 "), got + answer  # before: 400 invalid_request_body
    assert answer.partition(b"|")[2] == CHAT_BODY
    assert [r["status"] for r in records] == [200]
    assert not up.requests[0].header(b"upgrade")  # hop-by-hop: not forwarded


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_http2_over_http_posts_a_large_body_through_serve(tmp_path: Path) -> None:
    """`curl --http2` asks for h2c with `Upgrade`; the proxy answers over HTTP/1.1."""
    body = b'{"model":"m","messages":[{"role":"user","content":"' + b"x" * 200_000 + b'"}]}'
    (tmp_path / "body.json").write_bytes(body)
    async with raw_upstream(ok) as up, serve(URL(f"http://127.0.0.1:{up.port}")) as child:
        curl = await asyncio.create_subprocess_exec(
            "curl",
            "-sS",
            "--http2",
            "-o",
            str(tmp_path / "out"),
            "-w",
            "%{http_code}",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            f"@{tmp_path / 'body.json'}",
            f"http://127.0.0.1:{child.url.port}/v1/chat/completions",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(curl.communicate(), 20)
        records = await wait_for_ends(child, 1)
    assert out == b"200", (out, err, (tmp_path / "out").read_bytes()[:200])  # before: 400
    assert up.requests[0].body == body
    assert [r["status"] for r in records] == [200]


AFTER_CLOSE = {
    # bytes sent -> (answers the client gets, records, by trace id)
    "after Connection: close": (
        get("c1", b"Connection: close\r\n") + get("c2"),
        ["200"],
        ["c1"],
    ),
    "after HTTP/1.0": (get("h1", version=b"HTTP/1.0") + get("h2", version=b"HTTP/1.0"), ["200"], ["h1"]),
    "after a queued Connection: close": (
        get("q1") + get("q2", b"Connection: close\r\n") + get("q3") + b"garbage\r\n\r\n",
        ["200", "200"],
        ["q1", "q2"],
    ),
    "after the chunked body of an upgrade request": (
        b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n%s"
        b'X-Client-Request-Id: u1\r\n\r\n7\r\n{"a":1}\r\n0\r\n\r\ngarbage\r\n\r\n' % UPGRADE,
        ["200"],
        ["u1"],
    ),
    # After a body of known length the connection goes on (as nginx's): what follows is the
    # next request's head, answered and recorded as after any other request.
    "after the sized body of an upgrade request": (
        post(b"/v1/embeddings", b'{"a":1}', UPGRADE, trace=b"u1") + b"garbage\r\n\r\n",
        ["200", "400"],
        ["u1", "400"],
    ),
    "after the sized body of an upgrade request with Connection: close": (
        post(b"/v1/embeddings", b'{"a":1}', b"Connection: Upgrade, close\r\nUpgrade: h2c\r\n", trace=b"u1")
        + get("u2"),
        ["200"],
        ["u1"],
    ),
    "a malformed head after queued requests": (
        get("m1") + get("m2") + b"GET /\x01 HTTP/1.1\r\n\r\n",
        ["200", "200", "400"],
        ["m1", "m2", "400"],
    ),
}


@pytest.mark.parametrize("case", list(AFTER_CLOSE))
async def test_only_the_requests_answered_are_recorded_around_a_closing_request(case: str) -> None:
    data, answers, traces = AFTER_CLOSE[case]

    async def slow(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.1)  # whatever follows is parsed while the first is handled
        writer.write(echo_trace(req))

    async with raw_upstream(slow) as up, serve(URL(f"http://127.0.0.1:{up.port}")) as child:
        port = child.url.port
        assert port is not None
        got = await raw_exchange(port, data, timeout=5.0)
        records = await wait_for_ends(child, len(traces))
    assert [m.decode() for m in re.findall(rb"HTTP/1\.[01] (\d+)", got)] == answers, got
    named = [r["trace_id"] if r["status"] != 400 else "400" for r in records]
    assert named == traces, records  # before: a 400 record for a 400 never sent, or one lost
    assert len(up.requests) == answers.count("200")


SLOW_STREAM_FRAMES = 40


async def slow_stream(req: RawRequest, writer: asyncio.StreamWriter) -> None:
    if req.target != CHAT:
        writer.write(echo_trace(req))
        return
    writer.write(SSE_HEAD)
    for _ in range(SLOW_STREAM_FRAMES):  # 4 s: longer than any trigger below waits
        writer.write(b"%x\r\n%s\r\n" % (len(FRAME), FRAME))
        await writer.drain()
        await asyncio.sleep(0.1)
    writer.write(b"0\r\n\r\n")


@pytest.mark.parametrize("trigger", ["client leaves", "drain ends", "refused with a close"])
async def test_pipelined_requests_that_are_never_served_each_have_their_record(trigger: str) -> None:
    """Requests parsed and queued behind one that does not end well vanished with no record,
    no metric and no answer: the client left while the first streamed, the drain cut the first
    at SIGTERM, or the first was refused with a close (a 401 whose body the proxy does not read)."""
    args = ["--drain-timeout", "0.5", "--require-key", "good-key"]
    key = b"Authorization: Bearer good-key\r\n"
    first = post(CHAT, STREAM_BODY, key, trace=b"first")
    if trigger == "refused with a close":
        first = post(CHAT, STREAM_BODY, trace=b"first")  # no key: 401, the connection closes
    queued = get("q1", key) + get("q2", key)
    async with raw_upstream(slow_stream) as up, serve(URL(f"http://127.0.0.1:{up.port}"), *args) as child:
        _, writer = await asyncio.open_connection("127.0.0.1", child.url.port)
        writer.write(first + queued)
        await asyncio.sleep(0.5)  # all three are parsed; the first streams (or was refused)
        if trigger == "client leaves":
            writer.close()
        elif trigger == "drain ends":
            child.proc.terminate()
            await asyncio.wait_for(child.proc.wait(), 10)
        records = await wait_for_ends(child, 3)
        metrics = ""
        if trigger != "drain ends":
            async with aiohttp.ClientSession() as http, http.get(child.metrics_url / "metrics") as resp:
                metrics = await resp.text()
        writer.close()
    by_trace = {r["trace_id"]: r for r in records}
    assert sorted(by_trace) == ["first", "q1", "q2"], records
    expected = {
        "client leaves": "client_disconnect",
        "drain ends": "shutdown",
        "refused with a close": "not_served",
    }
    for trace in ("q1", "q2"):
        assert (by_trace[trace]["status"], by_trace[trace]["error"]) == (499, expected[trigger]), by_trace[
            trace
        ]
    assert [r.target for r in up.requests if r.target != CHAT] == []  # never sent upstream
    if metrics:
        assert re.search(r'sse_audit_requests_total\{[^}]*status="499"[^}]*\} 2\.0', metrics), metrics


async def test_a_client_that_leaves_while_its_pipelined_requests_wait_is_heard_within_a_second() -> None:
    """With MAX_QUEUED requests queued the proxy stops reading the client, so its close was not
    heard: a stream whose upstream had not answered yet ran on upstream until that upstream's
    next byte (5.5 s in an outside review), and was then recorded as a 200 the client never got."""
    closed_after: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader, 1)
        started = asyncio.get_running_loop().time()
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(8):
                await reader.read()  # the proxy's close: the stream it was asked for is given up
        if not closed_after.done():
            closed_after.set_result(asyncio.get_running_loop().time() - started)
        writer.close()

    up = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = up.sockets[0].getsockname()[1]
    try:
        async with serve(URL(f"http://127.0.0.1:{port}")) as child:
            _, writer = await asyncio.open_connection("127.0.0.1", child.url.port)
            writer.write(post(CHAT, STREAM_BODY, trace=b"first") + TINY * (MAX_QUEUED + 4))
            await asyncio.sleep(0.3)  # parsed, queued, reading paused; the upstream is silent
            writer.close()
            # 0.3 s of silence, then the PEER_WATCH (0.5 s) look; a loaded machine may add some
            assert await asyncio.wait_for(closed_after, 10) < 1.8
            records = await wait_for_ends(child, 1 + MAX_QUEUED)
    finally:
        up.close()
    first = next(r for r in records if r["trace_id"] == "first")
    assert (first["status"], first["outcome"], first["bytes"]) == (499, "client_disconnect", 0), first
    assert all(r["status"] == 499 for r in records), records
