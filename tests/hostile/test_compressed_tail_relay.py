"""A buffered answer gzipped whole and sent in one write, through the real `serve`: its tail is
decoded before the record, a feed a loop turn, and the stream is judged on all its frames."""

from __future__ import annotations

import asyncio
import gzip

import orjson
import pytest
from peers import serve
from relay_support import RawRequest, raw_exchange, raw_upstream
from yarl import URL

TOKENS = 40_000  # about 5 MiB of frames: more than the audit's finish decodes in one go
REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    b"X-Client-Request-Id: tail-1\r\nContent-Type: application/json\r\nContent-Length: 33\r\n\r\n"
    b'{"model":"m","stream":true,"x":1}'
)


def body() -> bytes:
    frames = [
        b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": {"content": f" w{i % 97}"}}]}) + b"\n\n"
        for i in range(TOKENS)
    ]
    frames.append(b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n')
    frames.append(b"data: [DONE]\n\n")
    return b"".join(frames)


async def test_a_whole_gzipped_answer_in_one_write_is_judged_on_all_its_frames() -> None:
    wire = gzip.compress(body(), 6)

    async def whole(_: RawRequest, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.3)  # the gateway waited for the whole answer
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Encoding: gzip\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(wire), wire)
        )
        await writer.drain()

    async with raw_upstream(whole) as up, serve(URL(f"http://127.0.0.1:{up.port}")) as child:
        got = await asyncio.wait_for(raw_exchange(child.url.port, REQUEST, timeout=20), 30)
        for _ in range(50):
            if child.events("stream_end"):
                break
            await asyncio.sleep(0.1)
    assert got.endswith(wire)  # relayed as it came
    [end] = child.events("stream_end")
    assert (end["outcome"], end["anomalies"], end["done"]) == ("complete", ["buffered"], True)
    assert end["content_frames"] == TOKENS and end["finish_reasons"] == ["stop"]


@pytest.mark.parametrize("ended", [True, False], ids=["done", "cut"])
async def test_a_client_that_leaves_with_the_whole_body_leaves_it_judged_whole(ended: bool) -> None:
    """With a Content-Length the client has the whole answer before the audit has decoded it,
    and closes: the catch-up was cancelled, and the stream recorded as `client_disconnect` with
    a false `compression_bomb` (third review); then, the tail left unread, a cut answer was
    `complete` (fourth review). The catch-up runs to its end, the client gone or not."""
    answer = body() if ended else body().rpartition(b"data: {")[0]  # no finish, no [DONE]
    wire = gzip.compress(answer, 6)

    async def whole(_: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Encoding: gzip\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(wire), wire)
        )
        await writer.drain()

    async with raw_upstream(whole) as up, serve(URL(f"http://127.0.0.1:{up.port}")) as child:
        reader, writer = await asyncio.open_connection("127.0.0.1", child.url.port)
        writer.write(REQUEST)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        got = await asyncio.wait_for(reader.readexactly(length), 20)
        writer.transport.abort()  # at once, as a client that has its whole body does
        for _ in range(100):
            if child.events("stream_end"):
                break
            await asyncio.sleep(0.1)
    assert got == wire
    [end] = child.events("stream_end")
    assert end["end_reason"] == "upstream_eof" and "compression_bomb" not in end["anomalies"], end
    assert end["content_frames"] == TOKENS  # every frame read, the tail too
    if ended:
        assert (end["outcome"], end["done"]) == ("complete", True)
    else:
        assert end["outcome"] == "truncated" and "missing_done" in end["anomalies"]
