"""How the upstream frames its response, and what the client gets framed from it.

A Transfer-Encoding other than exactly `chunked` was told by substring while llhttp goes by
the last coding (upstream review, finding 4): `gzip, chunked` reached the client still
gzipped under the proxy's own chunking with a clean record, and `chunked, gzip` or
`xchunked`, read to the close, were cut without a final chunk (`upstream_broken`). As nginx,
such a response is now `502 upstream_bad_response` and its connection is never reused.

Trailer fields that came in the same read as the head were merged into the relayed head
(finding 3): a duplicate `X-Usage`, and a trailer `Content-Encoding: gzip` that made
`curl --compressed` fail (error 61); in a later read they were dropped. Now always dropped.

`Connection: Content-Length` made the proxy drop the length the client needed (finding 2),
yet the body was still taken as length-framed: no chunking, the connection kept alive, so a
keep-alive client hung until `--keepalive-timeout` while the record said a clean 200.
"""

from __future__ import annotations

import asyncio
import gzip

import pytest
from peers import Child, serve
from relay_support import RawRequest, raw_exchange, raw_upstream, read_response
from yarl import URL

PAYLOAD = b'{"object":"list","data":[]}'


def own_answer(req: RawRequest) -> bytes:
    body = b"OK-" + req.target
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def fields(head: bytes) -> list[tuple[bytes, bytes]]:
    out = []
    for line in head.split(b"\r\n")[1:]:
        if line:
            name, _, value = line.partition(b":")
            out.append((name.strip().lower(), value.strip()))
    return out


def ends(child: Child) -> list[tuple[int, str | None]]:
    return [(e["status"], e.get("error")) for e in child.events("request_end") + child.events("stream_end")]


async def records(child: Child, count: int) -> list[tuple[int, str | None]]:
    for _ in range(50):  # the record is written just before the client sees the end
        if len(ends(child)) >= count:
            break
        await asyncio.sleep(0.05)
    return ends(child)


async def keep_alive_exchange(port: int, targets: list[bytes]) -> list[tuple[bytes, bytes]]:
    """Requests one after another on one kept-alive client connection, each answer read by its
    framing (a response without framing leaves `read_response` waiting: the timeout says so)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        out = []
        for target in targets:
            writer.write(b"GET %s HTTP/1.1\r\nHost: p\r\n\r\n" % target)
            out.append(await asyncio.wait_for(read_response(reader), 5))
        return out
    finally:
        writer.close()


CONNECTION_NAMES = {
    # (the upstream's framing fields, its body as sent, the body the client must get)
    "Content-Length": (b"Content-Length: %d\r\n" % len(PAYLOAD), PAYLOAD, PAYLOAD),
    "Transfer-Encoding": (
        b"Transfer-Encoding: chunked\r\n",
        b"%x\r\n%s\r\n0\r\n\r\n" % (len(PAYLOAD), PAYLOAD),
        PAYLOAD,
    ),
}


@pytest.mark.parametrize("named", list(CONNECTION_NAMES))
async def test_a_framing_field_named_by_connection_still_frames_the_clients_response(named: str) -> None:
    framing, sent, body = CONNECTION_NAMES[named]

    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, %s\r\nContent-Type: application/json\r\n%s\r\n%s"
            % (named.encode(), framing, sent)
        )

    async with (
        raw_upstream(script) as up,
        serve(URL(f"http://127.0.0.1:{up.port}"), "--keepalive-timeout", "30") as child,
    ):
        got = await keep_alive_exchange(child.url.port, [b"/v1/models", b"/v1/models?second"])
        assert await records(child, 2) == [(200, None), (200, None)]
    for head, answer in got:
        assert answer == body  # byte for byte
        framed = [name for name, _ in fields(head) if name in (b"content-length", b"transfer-encoding")]
        assert len(framed) == 1, head
    # The upstream framed both answers exactly: its connection was rightly kept for the second.
    assert up.connections == 1 and len(up.requests) == 2


TRAILED_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Usage: pending\r\n"
    b"Transfer-Encoding: chunked\r\nTrailer: X-Usage, Content-Encoding\r\n\r\n"
)
TRAILERS = b"0\r\nX-Usage: 42\r\nContent-Encoding: gzip\r\n\r\n"


@pytest.mark.parametrize("when", ["same read", "later read"])
async def test_trailer_fields_never_reach_the_relayed_head(when: str) -> None:
    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        if req.target != b"/v1/models":
            writer.write(own_answer(req))
            return
        chunk = b"%x\r\n%s\r\n" % (len(PAYLOAD), PAYLOAD)
        if when == "same read":
            writer.write(TRAILED_HEAD + chunk + TRAILERS)  # one write, one read at the proxy
            return
        writer.write(TRAILED_HEAD + chunk)
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.write(TRAILERS)

    async with raw_upstream(script) as up, serve(URL(f"http://127.0.0.1:{up.port}")) as child:
        got = await keep_alive_exchange(child.url.port, [b"/v1/models", b"/next"])
        raw = await raw_exchange(
            child.url.port, b"GET /v1/models HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n"
        )
        assert await records(child, 3) == [(200, None)] * 3
    (head, body), (_, second) = got
    assert body == PAYLOAD and second == b"OK-/next"
    head_fields = fields(head)
    assert [v for n, v in head_fields if n == b"x-usage"] == [b"pending"], head
    assert b"content-encoding" not in [n for n, _ in head_fields], head
    # Dropped, as documented: the client's chunked body ends with no trailer section.
    assert raw.endswith(b"\r\n0\r\n\r\n") and b"X-Usage: 42" not in raw, raw
    assert b"Content-Encoding" not in raw, raw


GZIPPED = gzip.compress(PAYLOAD)
CODINGS = {
    # The upstream keeps its connection open after these...
    "gzip, chunked": b"Transfer-Encoding: gzip, chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
    % (len(GZIPPED), GZIPPED),
    "chunked twice": b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nBODY!\r\n0\r\n\r\n",
    "chunked, chunked": b"Transfer-Encoding: chunked, chunked\r\n\r\n5\r\nBODY!\r\n0\r\n\r\n",
    # ...and closes it after these (the body is delimited by the close, RFC 9112 6.3).
    "chunked, gzip": b"Transfer-Encoding: chunked, gzip\r\n\r\nRAWBODY",
    "xchunked": b"Transfer-Encoding: xchunked\r\n\r\nRAWBODY",
    "identity": b"Transfer-Encoding: identity\r\n\r\nRAWBODY",
}


@pytest.mark.parametrize("coding", list(CODINGS))
async def test_a_transfer_coding_other_than_chunked_is_a_bad_response(coding: str) -> None:
    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        if req.target != b"/v1/models":
            writer.write(own_answer(req))
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + CODINGS[coding])
        if b"RAWBODY" in CODINGS[coding]:
            await writer.drain()
            writer.close()

    async with raw_upstream(script) as up, serve(URL(f"http://127.0.0.1:{up.port}")) as child:
        bad = await raw_exchange(
            child.url.port, b"GET /v1/models HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n"
        )
        [(_, after)] = await keep_alive_exchange(child.url.port, [b"/next"])
        assert await records(child, 2) == [(502, "upstream_bad_response"), (200, None)]
    assert bad.startswith(b"HTTP/1.1 502 "), bad[:200]
    assert b'"upstream_bad_response"' in bad
    assert b"RAWBODY" not in bad and b"BODY!" not in bad and GZIPPED not in bad
    # Never reused: the next client's request went on a new upstream connection.
    assert after == b"OK-/next"
    assert [r.conn_no for r in up.requests] == [1, 2]


@pytest.mark.parametrize("spelling", [b"chunked", b"Chunked", b"CHUNKED", b"chunked  "])
async def test_exactly_chunked_in_any_case_is_read(spelling: bytes) -> None:
    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: %s\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
            % (spelling, len(PAYLOAD), PAYLOAD)
        )

    async with raw_upstream(script) as up, serve(URL(f"http://127.0.0.1:{up.port}")) as child:
        got = await keep_alive_exchange(child.url.port, [b"/v1/models", b"/v1/models?again"])
        assert await records(child, 2) == [(200, None), (200, None)]
    assert [body for _, body in got] == [PAYLOAD, PAYLOAD]
    assert up.connections == 1


SSE_BODY = b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\ndata: [DONE]\n\n'


@pytest.mark.parametrize("framing", ["chunked", "length"])
async def test_head_lines_ended_by_lf_alone_are_read_and_the_head_relayed_with_crlf(framing: str) -> None:
    """RFC 9112 2.2: a recipient may accept LF alone as a line end; httpx and curl do, so a
    hand-written upstream whose head has it worked direct and was a 502 through the proxy."""

    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        head = b"HTTP/1.1 200 OK\nContent-Type: text/event-stream\n"
        if framing == "chunked":
            body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(SSE_BODY), SSE_BODY)
            writer.write(head + b"Transfer-Encoding: chunked\n\n" + body)
        else:
            writer.write(head + b"Content-Length: %d\n\n%s" % (len(SSE_BODY), SSE_BODY))

    async with raw_upstream(script) as up, serve(URL(f"http://127.0.0.1:{up.port}")) as child:
        got = await keep_alive_exchange(child.url.port, [b"/a", b"/b"])
        assert await records(child, 2) == [(200, None), (200, None)]
        outcomes = [e["outcome"] for e in child.events("stream_end")]
    assert [body for _, body in got] == [SSE_BODY, SSE_BODY]
    assert all(head.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\n\r\n" in head for head, _ in got)
    assert outcomes == ["complete", "complete"]
    assert up.connections == 1  # each answer ended exactly: the connection was reused


@pytest.mark.parametrize("ending", [b"0\n\n", b"0\r\n\n"])
async def test_chunk_framing_after_a_lenient_head_is_strict_and_never_hangs(ending: bytes) -> None:
    """The LF leniency reached into the chunks unevenly: `0\n\n` never ended the body, and
    the client held a finished stream until the idle timeout (a second review). The body's
    framing is strict again: the stream is cut there, at once."""

    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\nContent-Type: text/event-stream\nTransfer-Encoding: chunked\n\n"
            b"%x\r\n%s\r\n" % (len(SSE_BODY), SSE_BODY) + ending
        )

    async with (
        raw_upstream(script) as up,
        serve(URL(f"http://127.0.0.1:{up.port}"), "--idle-timeout", "30") as child,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", child.url.port)
        writer.write(b"GET /a HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n")
        got = await asyncio.wait_for(reader.read(), 5)  # not held until the idle timeout
        writer.close()
        await records(child, 1)
        [end] = child.events("stream_end") or [None]
    assert got.startswith(b"HTTP/1.1 200 OK\r\n")
    assert not got.endswith(b"0\r\n\r\n")  # cut: no clean end the upstream did not send
    assert end is not None and end["end_reason"] == "upstream_broken"


async def test_lines_ended_by_cr_alone_are_still_a_bad_response() -> None:
    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\rContent-Length: 2\r\r\nok")

    async with raw_upstream(script) as up, serve(URL(f"http://127.0.0.1:{up.port}")) as child:
        bad = await raw_exchange(child.url.port, b"GET /a HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n")
        assert await records(child, 1) == [(502, "upstream_bad_response")]
    assert bad.startswith(b"HTTP/1.1 502 "), bad[:200]


@pytest.mark.parametrize(
    ("status_line", "fields", "want_line", "gone"),
    [
        # A server must not send a 204's Content-Length (RFC 9110 8.6): a hop in front that
        # framed the answer by it waited for 5 bytes, or took the next answer's as them.
        (b"HTTP/1.1 204 No Content", b"Content-Length: 5\r\n", b"HTTP/1.1 204 No Content", b"content-length"),
        # A reason phrase is HTAB, SP, VCHAR, obs-text (RFC 9112 4): NUL and ESC went out as
        # they came, a terminal escape in whatever prints the head.
        (b"HTTP/1.1 200 O\x00K\x1b[2J", b"Content-Length: 2\r\n", b"HTTP/1.1 200 ", b"\x1b"),
    ],
    ids=["204_content_length", "control_in_reason"],
)
async def test_a_head_a_server_must_not_send_is_not_relayed_as_it_came(
    status_line: bytes, fields: bytes, want_line: bytes, gone: bytes
) -> None:
    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(status_line + b"\r\n" + fields + b"\r\n" + (b"" if b" 204 " in status_line else b"ok"))

    async with raw_upstream(script) as up, serve(URL(f"http://127.0.0.1:{up.port}")) as child:
        got = await raw_exchange(
            child.url.port, b"GET /v1/models HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n"
        )
    head = got.split(b"\r\n\r\n", 1)[0]
    assert head.split(b"\r\n")[0] == want_line, head
    assert gone not in head.lower(), head
    assert b"\x00" not in head
