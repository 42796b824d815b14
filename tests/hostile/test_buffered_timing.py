"""`buffered` on real sockets: what the real `serve` reads, not chosen arrival times.

- A fast decoder's short answer (Groq, Cerebras: 1,000+ tokens/s, one chunk per token, after
  an ordinary 300 ms first token) met all four rules of `buffered` (the first token 80 % of the
  wait, the tokens under 2 ms apart on average) and was flagged as a withheld answer. The
  tokens were paced, not released: no anomaly now. A withheld answer released chunk by chunk,
  each in its own write, is still `buffered`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

from peers import Child, serve
from relay_support import RawRequest, raw_exchange, raw_upstream
from yarl import URL

SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
BODY = b'{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}'


def request(trace: str, path: str) -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
        b"X-Client-Request-Id: %s\r\nContent-Length: %d\r\n\r\n%s"
        % (path.encode(), trace.encode(), len(BODY), BODY)
    )


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    doc = {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    data = b"data: " + json.dumps(doc).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


TAIL = chunk({}, "stop") + b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"


async def answer(req: RawRequest, writer: asyncio.StreamWriter) -> None:
    """`/paced/TTFT_MS/TOKENS/RATE/...`: tokens paced by busy-waiting, one write each (asyncio
    sets TCP_NODELAY: one segment each). RATE 0: held, then written back to back, one write each."""
    _, _, ttft_ms, tokens, rate = req.target.decode().split("/")[:5]
    writer.write(SSE_HEAD + chunk({"role": "assistant", "content": ""}))
    await writer.drain()
    await asyncio.sleep(int(ttft_ms) / 1000)
    spacing = 1.0 / int(rate) if int(rate) else 0.0
    due = time.perf_counter()
    for i in range(int(tokens)):
        while time.perf_counter() < due:  # an event loop sleep is 1 ms at best
            pass
        writer.write(chunk({"content": f" t{i}"}))
        due += spacing
    writer.write(TAIL)
    await writer.drain()
    writer.close()


def record(child: Child, trace: str) -> dict[str, Any]:
    found = [line for line in child.events("stream_end") if line.get("trace_id") == trace]
    assert len(found) == 1, [line.get("event") for line in child.lines]
    return found[0]


async def stream(child: Child, trace: str, path: str) -> dict[str, Any]:
    assert child.url.port is not None
    got = await asyncio.wait_for(raw_exchange(child.url.port, request(trace, path), timeout=10.0), 15)
    assert got.startswith(b"HTTP/1.1 200 ") and b"data: [DONE]" in got, got[:300]
    for _ in range(100):  # the record is written before the end reaches the client; bounded
        if any(line.get("trace_id") == trace for line in child.events("stream_end")):
            break
        await asyncio.sleep(0.02)
    return record(child, trace)


async def test_fast_decoder_short_answer_is_not_buffered_and_a_release_still_is() -> None:
    async with raw_upstream(answer) as up, serve(URL(f"http://127.0.0.1:{up.port}")) as child:
        # The reported cases: a 300 ms first token, then 30 tokens at 1,000/s; 40 at 1,250/s.
        fast = [
            await stream(child, "fast-1000", "/paced/300/30/1000/v1/chat/completions"),
            await stream(child, "fast-1250", "/paced/200/40/1250/v1/chat/completions"),
        ]
        released = await stream(child, "release", "/paced/300/30/0/v1/chat/completions")
    for rec in fast:
        assert rec["outcome"] == "complete" and rec["content_frames"] in (30, 40), rec
        assert rec["ttft_ms"] >= 200, rec  # the wait was most of the stream, as reported
        assert rec["anomalies"] == [], rec
    assert released["outcome"] == "complete" and released["content_frames"] == 30, released
    assert released["anomalies"] == ["buffered"], released
    assert "of the 29 gaps between them under 0.5 ms" in released["reasons"][0], released


async def nagle(req: RawRequest, writer: asyncio.StreamWriter) -> None:
    """tornado's habit: Nagle on while it streams, the head written with the first token after a
    300 ms wait, then a token a millisecond; the connection kept for the next request."""
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
    await asyncio.sleep(0.3)
    writer.write(SSE_HEAD + chunk({"content": "t"}))
    for i in range(39):
        await asyncio.sleep(0.001)
        writer.write(chunk({"content": f" t{i}"}))
    writer.write(TAIL)
    await writer.drain()


async def test_a_nagle_upstreams_tokens_are_paced_on_a_reused_connection() -> None:
    """On a pooled connection Linux delayed the proxy's acknowledgements (it had sent the
    request soon after the last response), so such an upstream's tokens waited for them: they
    came in clumps (tornado's first token 40 ms late), every stream after the first judged
    `buffered`; a client connecting to it afresh saw them paced."""
    async with raw_upstream(nagle) as up, serve(URL(f"http://127.0.0.1:{up.port}")) as child:
        recs = [await stream(child, f"nagle-{i}", "/v1/chat/completions") for i in range(4)]
    assert len(up.requests) == 4 and up.connections == 1  # the later three on a reused connection
    for rec in recs:
        assert (rec["outcome"], rec["content_frames"]) == ("complete", 40), rec
        assert rec["anomalies"] == [], rec  # before: ["buffered"] from the second on
