"""Guarantees of the relay and the upstream pool that no test held until a mutation review of
the server layer (2026-12-05) broke each in a copy and saw the suite pass: the idle clock
while a slow client holds the stream, and after it catches up; an early 4xx refusal of an
upload on a keep-alive upstream; one early close not stopping all reuse; one record when the
client leaves while the proxy reads its body after a failed connect; the body cap's
boundary; the upstream head cap. Each test here fails on the mutant it is named for.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator

from peers import read_response_head, read_to_close, serve
from relay_support import Handler, owned_upstream
from yarl import URL

SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
BIG_FRAME = b"data: " + b"x" * 4000 + b"\n\n"
BIG_FRAMES = 1500  # 6 MB: far more than the kernel and the proxy hold for a client not reading


@contextlib.asynccontextmanager
async def upstream(handler: Handler) -> AsyncIterator[URL]:
    async with owned_upstream(handler) as port:
        yield URL(f"http://127.0.0.1:{port}")


async def head_of(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)


async def big_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, then_silent: bool) -> None:
    await head_of(reader)
    writer.write(SSE_HEAD)
    for _ in range(BIG_FRAMES):
        writer.write(b"%x\r\n%s\r\n" % (len(BIG_FRAME), BIG_FRAME))
        await writer.drain()
    if not then_silent:
        writer.write(b"0\r\n\r\n")
        await writer.drain()
    await asyncio.sleep(30)  # the connection stays open: only the proxy's timers end it


async def hold_then_read(port: int, held: float) -> tuple[int, float]:
    """(bytes read, seconds from the end of the hold to the close): a client that reads the
    head, then nothing for `held` seconds, then everything."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 16)
    writer.write(b"GET /v1/chat/completions HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    await read_response_head(reader, 10)
    await asyncio.sleep(held)
    started = time.monotonic()
    body, _ = await read_to_close(reader, 20)
    writer.close()
    return len(body), time.monotonic() - started


TIMERS = ("--idle-timeout", "1", "--total-timeout", "40", "--send-timeout", "20")


async def test_a_client_that_holds_a_stream_past_the_idle_timeout_still_gets_all_of_it() -> None:
    """While the client does not read, the upstream is not read either (backpressure): its
    silence is the client's doing, not the upstream's. With the idle clock running then, a
    client pausing longer than --idle-timeout (but within --send-timeout) lost the rest of its
    answer and the upstream was blamed (an idle timeout). Mutant U19."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await big_stream(reader, writer, then_silent=False)

    async with upstream(handler) as url, serve(url, *TIMERS, "--max-unsent-bytes", "65536") as child:
        got, _ = await hold_then_read(child.url.port or 0, held=3.0)
        await asyncio.sleep(0.5)
    assert got > BIG_FRAMES * len(BIG_FRAME), got
    end = child.events("stream_end")[0]
    assert end["end_reason"] == "upstream_eof" and end["outcome"] != "timeout", end


async def test_an_upstream_silent_after_a_slow_client_caught_up_is_cut_at_the_idle_timeout() -> None:
    """Once the client has taken what was held, the idle clock runs again: an upstream that
    then goes silent is cut after --idle-timeout, not left to --total-timeout (an hour by
    default). Mutant U21."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await big_stream(reader, writer, then_silent=True)

    async with upstream(handler) as url, serve(url, *TIMERS, "--max-unsent-bytes", "65536") as child:
        got, until_close = await hold_then_read(child.url.port or 0, held=3.0)
        await asyncio.sleep(0.5)
    assert got > BIG_FRAMES * len(BIG_FRAME) // 2, got
    assert until_close < 10, until_close  # 1 s of silence after the last frame (40 s: the total)
    end = child.events("stream_end")[0]
    assert (end["outcome"], end["end_reason"]) == ("timeout", "idle_timeout"), end


async def test_an_early_4xx_refusal_of_an_upload_reaches_a_client_that_paused_at_once() -> None:
    """An upstream refusing an upload with a 413 head, keeping the connection (no `Connection:
    close`) and sending its body a little later, is a refusal as a 5xx is: the client, which
    stopped sending when the upstream stopped reading, gets the 413 at once, not the proxy's
    408 after --body-timeout. Mutant U28 (only a 5xx counted)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await head_of(reader)
        body = b'{"error":"too large"}'
        writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n")
        writer.write(b"Content-Length: %d\r\n\r\n" % len(body))
        await writer.drain()
        await asyncio.sleep(8)
        writer.write(body)
        async with asyncio.timeout(10):
            while await reader.read(65536):
                pass

    async with upstream(handler) as url, serve(url, "--body-timeout", "6") as child:
        reader, writer = await asyncio.open_connection("127.0.0.1", child.url.port)
        writer.write(b"POST /v1/files HTTP/1.1\r\nHost: a\r\nContent-Type: application/octet-stream\r\n")
        writer.write(b"Content-Length: 10000000\r\n\r\n" + b"a" * 200_000)  # then nothing more
        started = time.monotonic()
        head = await read_response_head(reader, 10)
        took = time.monotonic() - started
        writer.close()
    assert head.startswith(b"HTTP/1.1 413 "), head
    assert took < 3, took


async def test_one_upstream_close_soon_after_an_answer_does_not_stop_connection_reuse() -> None:
    """The pool learns how long an upstream keeps idle connections from closes it sees; one
    seen 0.3 s after an answer (a restart) must not teach it to reuse nothing: every later
    request would open a new connection for ten minutes. Mutant U31 (LEARN_FROM dropped)."""

    taken = [0]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        taken[0] += 1
        conn = taken[0]
        while True:
            try:
                await head_of(reader)
            except asyncio.IncompleteReadError:
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            if conn == 1:
                await asyncio.sleep(0.3)
                return  # its first connection closed 0.3 s after the answer

    async with upstream(handler) as url, serve(url) as child:
        reader, writer = await asyncio.open_connection("127.0.0.1", child.url.port)
        for i in range(6):
            writer.write(b"GET /v1/models HTTP/1.1\r\nHost: a\r\n\r\n")
            await asyncio.wait_for(reader.readuntil(b"ok"), 10)
            await asyncio.sleep(0.6 if i == 0 else 0.2)
        writer.close()
    assert taken[0] == 2, taken  # the one closed, then one reused for the other five


async def test_a_client_leaving_while_its_body_is_read_after_a_failed_connect_has_one_record() -> None:
    """The upstream refused the connection; the proxy reads the rest of the body to learn the
    model for the record, and the client leaves meanwhile: one record, `client_disconnect`.
    Only the handler's last resort writes it. Mutant P18: no record at all."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = URL(f"http://127.0.0.1:{s.getsockname()[1]}")  # closed: connections refused
    async with serve(dead) as child:
        _, writer = await asyncio.open_connection("127.0.0.1", child.url.port)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n")
        writer.write(b'Content-Length: 10000000\r\n\r\n{"model":"m","stream":true,"x":"' + b"a" * 200_000)
        await writer.drain()
        await asyncio.sleep(1.0)
        writer.transport.abort()
        await asyncio.sleep(1.5)
    records = [line for line in child.lines if line.get("event") in ("stream_end", "request_end")]
    assert [(r["status"], r["error"]) for r in records] == [(499, "client_disconnect")], records


async def test_a_body_of_exactly_the_cap_is_forwarded() -> None:
    """--max-body-bytes N allows N bytes (Mutant P24: N was refused with a 413)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await head_of(reader)
        await asyncio.wait_for(reader.readexactly(100), 10)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    body = b"a" * 100
    async with upstream(handler) as url, serve(url, "--max-body-bytes", "100") as child:
        chunked = b"Transfer-Encoding: chunked\r\n\r\n64\r\n" + body + b"\r\n0\r\n\r\n"
        for framing in (b"Content-Length: 100\r\n\r\n" + body, chunked):
            reader, writer = await asyncio.open_connection("127.0.0.1", child.url.port)
            writer.write(b"POST /v1/files HTTP/1.1\r\nHost: a\r\nConnection: close\r\n" + framing)
            got, _ = await read_to_close(reader, 5)
            writer.close()
            assert got.startswith(b"HTTP/1.1 200 "), (framing[:30], got[:60])


async def test_an_upstream_head_over_64_kib_is_refused_not_relayed() -> None:
    """An upstream response head is held until it is whole: at most 64 KiB of it, then it is
    refused with a 502 (`upstream_bad_response`), not buffered and relayed. Mutant U10 (the
    cap loosened 64 times: 4 MiB held per upstream connection)."""
    field = b"X-Big: " + b"a" * 8000 + b"\r\n"

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await head_of(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + field * 25 + b"\r\nhi")  # 200 KB
        await writer.drain()
        await asyncio.sleep(1)

    async with upstream(handler) as url, serve(url) as child:
        reader, writer = await asyncio.open_connection("127.0.0.1", child.url.port)
        writer.write(b"GET /v1/models HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        got, _ = await read_to_close(reader, 5)
        writer.close()
    assert got.startswith(b"HTTP/1.1 502 ") and b"upstream_bad_response" in got, got[:200]
    assert b"X-Big" not in got
