"""A request body with a number of thousands of digits, through the real `serve`.

ijson's C backend (3.6) crashes the process on an integer past Python's int-from-text limit
(4300 digits): one 4.4 KB request killed `serve` with a segmentation fault, cutting every
stream in flight with no record for any of them. The scan now ends before the parser sees
such a number: the request is forwarded as sent, read as unknown, and `serve` lives on.
"""

from __future__ import annotations

import asyncio

import pytest
from peers import serve
from relay_support import RawRequest, raw_exchange, raw_upstream
from yarl import URL

FRAMES = (
    b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
)


def request(body: bytes, trace_id: bytes) -> bytes:
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nX-Request-Id: %s\r\nContent-Length: %d\r\n\r\n%s"
        % (trace_id, len(body), body)
    )


async def answer(req: RawRequest, writer: asyncio.StreamWriter) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n%s"
        % (len(FRAMES), FRAMES)
    )


@pytest.mark.parametrize("digits", [4301, 60000])
@pytest.mark.parametrize("chunked", [False, True])
async def test_a_number_of_thousands_of_digits_is_forwarded_and_serve_lives(
    digits: int, chunked: bool
) -> None:
    number = b"9" * digits
    body = b'{"model":"m","stream":true,"messages":[],"seed":%s}' % number
    async with raw_upstream(answer) as up, serve(URL(f"http://127.0.0.1:{up.port}")) as child:
        if chunked:  # read by the streamed scan, piece by piece
            pieces = b"".join(
                b"%x\r\n%s\r\n" % (len(body[i : i + 1000]), body[i : i + 1000])
                for i in range(0, len(body), 1000)
            )
            data = request(b"", b"long-number").replace(b"Content-Length: 0", b"Transfer-Encoding: chunked")
            got = await raw_exchange(child.url.port, data + pieces + b"0\r\n\r\n", timeout=10.0)
        else:
            got = await raw_exchange(child.url.port, request(body, b"long-number"), timeout=10.0)
        assert got.startswith(b"HTTP/1.1 200 ") and got.endswith(FRAMES), got[:200]
        assert up.requests[-1].body == body  # forwarded as sent
        after = await raw_exchange(
            child.url.port, request(b'{"model":"m","stream":true}', b"after"), timeout=10.0
        )
        assert after.endswith(FRAMES), after[:200]
        await asyncio.sleep(0.2)  # the records are written
        assert child.proc.returncode is None, bytes(child.stderr[-2000:])
    ends = [(e["trace_id"], e["event"]) for e in child.events("stream_end") + child.events("request_end")]
    assert ends == [("long-number", "stream_end"), ("after", "stream_end")]
    assert child.events("stream_end")[0]["model"] == "unknown"
