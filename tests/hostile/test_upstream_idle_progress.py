"""The idle timeout counts progress, not bytes.

Every read from the upstream set the idle clock: an upstream that trickled its head a byte at a
time, sent `100 Continue` after `100 Continue`, or trickled a chunk extension mid-stream was
never idle, and the request ran to `--total-timeout` (an hour by default) instead of ending
after `--idle-timeout` (`504 upstream_idle_timeout` before the head, a `timeout` cut after it).
Now only the final head and body bytes move the clock; framing alone does not.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
from peers import serve
from relay_support import RawRequest, raw_exchange, raw_upstream
from yarl import URL

BODY = b'{"model":"m","stream":true,"messages":[]}'
REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
)
SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
FRAME = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
CHUNK = b"%x\r\n%s\r\n" % (len(FRAME), FRAME)
PACE = 0.3  # seconds between the upstream's pieces: well within the 1 s idle timeout
PIECES = 40  # 12 s of trickle: past the 10 s total timeout
PACED_FRAMES = 10  # the control: 3 s of frames, three times the idle timeout


def trickle(
    start: bytes, piece: bytes, end: bytes = b"", pieces: int = PIECES
) -> Callable[[RawRequest, asyncio.StreamWriter], Awaitable[None]]:
    async def script(_: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(start)
        for _ in range(pieces):
            await asyncio.sleep(PACE)
            writer.write(piece)
            await writer.drain()
        writer.write(end)

    return script


CASES = {
    "head trickled": (b"HTTP/1.1 200 OK\r\nX-Slow: ", b"a", 504),
    "interim responses": (b"", b"HTTP/1.1 100 Continue\r\n\r\n", 504),
    "chunk extension trickled": (SSE_HEAD + CHUNK + b"5;x=", b"a", 200),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_framing_without_progress_ends_at_the_idle_timeout(case: str) -> None:
    start, piece, status = CASES[case]
    args = ("--idle-timeout", "1", "--total-timeout", "10")
    async with (
        raw_upstream(trickle(start, piece)) as up,
        serve(URL(f"http://127.0.0.1:{up.port}"), *args) as child,
    ):
        began = time.monotonic()
        got = await asyncio.wait_for(raw_exchange(child.url.port, REQUEST, timeout=15.0), 20)
        took = time.monotonic() - began
        await asyncio.sleep(0.2)  # the record is written
    ends = child.events("stream_end")
    assert len(ends) == 1, [line.get("event") for line in child.lines]
    assert (ends[0]["outcome"], ends[0]["end_reason"]) == ("timeout", "idle_timeout"), ends
    assert got.startswith(b"HTTP/1.1 %d " % status), got[:200]
    if status == 504:
        assert b'"upstream_idle_timeout"' in got
    else:
        assert got.count(FRAME) == 1 and not got.endswith(b"0\r\n\r\n")  # cut
    assert took < 5, f"ended after {took:.1f} s"


async def test_body_bytes_are_progress() -> None:
    """The control: frames at the same pace keep a stream alive past the idle timeout."""
    script = trickle(SSE_HEAD, CHUNK, b"0\r\n\r\n", PACED_FRAMES)
    args = ("--idle-timeout", "1", "--total-timeout", "30")
    async with raw_upstream(script) as up, serve(URL(f"http://127.0.0.1:{up.port}"), *args) as child:
        got = await asyncio.wait_for(raw_exchange(child.url.port, REQUEST, timeout=20.0), 25)
        await asyncio.sleep(0.2)
    assert got.count(FRAME) == PACED_FRAMES and got.endswith(b"0\r\n\r\n"), got[-200:]
    ends = child.events("stream_end")
    assert [e["end_reason"] for e in ends] == ["upstream_eof"], ends
