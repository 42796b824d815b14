"""The upstream's clock starts when it has the whole request, not when the request arrived.

The stream's clock started when the request head reached the proxy, so the time a client took
to send its body (a large body on a slow link, node fetch's chunked ReadableStream body, an
`Expect: 100-continue` round trip) was added to TTFB and TTFT, and the `buffered` rule blamed a
fast upstream for the client's upload: a body whose last part came 1.5 s late gave `ttft_ms`
1,508 and `buffered`. TTFB, TTFT, the gaps and the timing rules now count from the request's
last byte written to the upstream (`request_sent_ms` after the arrival); `duration_ms` still
counts from the arrival. An upstream that answers before the body is all sent has its body left
unread until the upload ends (the relay starts then), so its clock starts there too: timed from
its early head, a stream it paced during the upload looked withheld (`buffered`). No figure is
negative or missing, and `request_sent_ms` is the upload's real end.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from peers import Child, read_to_close, serve
from relay_support import owned_upstream, read_body
from yarl import URL

SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
LATE = 1.0  # seconds the client holds back the end of its body


def sse(*datas: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(d) + 8, b"data: " + d + b"\n\n") for d in datas)


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    return json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}).encode()


# A whole answer, as a fast upstream writes it a few milliseconds after the request: 20 content
# frames in one write (`buffered` if its first token were late).
ANSWER = (
    sse(chunk({"role": "assistant", "content": ""}), *(chunk({"content": f" t{i}"}) for i in range(20)))
    + sse(chunk({}, "stop"), b"[DONE]")
    + b"0\r\n\r\n"
)


async def fast(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads the whole request, then answers all of it at once."""
    head = await reader.readuntil(b"\r\n\r\n")
    await read_body(reader, head)
    writer.write(SSE_HEAD + ANSWER)
    await writer.drain()


async def early_pacing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Full duplex: answers at once and paces its tokens 50 ms apart while the body comes."""
    head = await reader.readuntil(b"\r\n\r\n")
    writer.write(SSE_HEAD)
    for i in range(10):
        writer.write(sse(chunk({"content": f"t{i}"})))
        await writer.drain()
        await asyncio.sleep(0.05)
    await read_body(reader, head)
    writer.write(ANSWER)
    await writer.drain()


async def early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers as soon as the head is read (a role chunk), reads the body, then the rest."""
    head = await reader.readuntil(b"\r\n\r\n")
    writer.write(SSE_HEAD + sse(chunk({"role": "assistant", "content": ""})))
    await writer.drain()
    await read_body(reader, head)
    writer.write(ANSWER)
    await writer.drain()


async def slow_upload(port: int, trace: str, *, size: int, chunked: bool, late: float) -> bytes:
    """POST a streaming chat request whose body's last bytes come `late` seconds after the rest."""
    body = json.dumps(
        {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi " * (size // 3)}]}
    ).encode()
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % len(body)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nX-Client-Request-Id: %s\r\n%s\r\n\r\n" % (trace.encode(), framing)
    )
    first, rest = body[:-100], body[-100:]
    parts = (
        [b"%x\r\n%s\r\n" % (len(p), p) for p in (first, rest)] + [b"0\r\n\r\n"] if chunked else [first, rest]
    )
    writer.write(parts[0])
    await writer.drain()
    await asyncio.sleep(late)
    writer.write(b"".join(parts[1:]))
    got, _ = await read_to_close(reader, 10.0)
    writer.close()
    return got


def record(child: Child, trace: str) -> dict[str, Any]:
    found = [line for line in child.events("stream_end") if line.get("trace_id") == trace]
    assert len(found) == 1, [line.get("event") for line in child.lines]
    return found[0]


async def records(child: Child, traces: list[str]) -> list[dict[str, Any]]:
    for _ in range(100):  # bounded: the records are written before the clients see the end
        if all(any(line.get("trace_id") == t for line in child.events("stream_end")) for t in traces):
            break
        await asyncio.sleep(0.02)
    return [record(child, t) for t in traces]


async def test_a_slow_upload_is_not_the_upstreams_ttft_nor_buffering() -> None:
    # A small body (held whole before the upstream is contacted) and a large chunked one (the
    # head goes to the upstream at once, the body streams after it).
    cases = {"small": (4_000, False), "chunked": (200_000, True), "prompt": (4_000, False)}
    async with owned_upstream(fast) as port, serve(URL(f"http://127.0.0.1:{port}")) as child:
        assert child.url.port is not None
        for trace, (size, chunked) in cases.items():
            late = 0.0 if trace == "prompt" else LATE
            got = await slow_upload(child.url.port, trace, size=size, chunked=chunked, late=late)
            assert got.startswith(b"HTTP/1.1 200 ") and b"data: [DONE]" in got, got[:300]
        got_records = await records(child, list(cases))
    for rec in got_records:
        slow = rec["trace_id"] != "prompt"
        assert rec["outcome"] == "complete" and rec["content_frames"] == 20, rec
        assert rec["anomalies"] == [], rec  # not `buffered`: the upstream answered at once
        assert 0 <= rec["ttfb_ms"] <= rec["ttft_ms"] < 500, rec
        # The proxy's clock starts when it reads the head, which may be a moment after the
        # client wrote it: the held-back end came about LATE after that, not exactly.
        assert (rec["request_sent_ms"] >= 0.9 * LATE * 1000) is slow, rec
        # The whole request still counts in the duration.
        assert rec["duration_ms"] + 0.01 >= rec["request_sent_ms"] + rec["ttft_ms"], rec
        assert (rec["duration_ms"] >= 0.9 * LATE * 1000) is slow, rec


async def test_an_answer_before_the_body_ends_stops_the_upstreams_clock() -> None:
    async with owned_upstream(early) as port, serve(URL(f"http://127.0.0.1:{port}")) as child:
        assert child.url.port is not None
        got = await slow_upload(child.url.port, "early", size=200_000, chunked=True, late=LATE)
        (rec,) = await records(child, ["early"])
    assert got.startswith(b"HTTP/1.1 200 ") and b"data: [DONE]" in got, got[:300]
    assert rec["outcome"] == "complete" and rec["content_frames"] == 20, rec
    # The upstream's body was not read before the upload ended: its clock starts there.
    assert 0.9 * LATE * 1000 <= rec["request_sent_ms"] <= rec["duration_ms"], rec
    assert 0 <= rec["ttfb_ms"] <= rec["ttft_ms"], rec
    assert rec["request_sent_ms"] + rec["ttft_ms"] <= rec["duration_ms"] + 0.01, rec


async def test_tokens_paced_during_the_upload_are_not_buffered() -> None:
    """The reviewer's case: the tokens came 50 ms apart while the client uploaded for a second;
    the proxy read them only after the upload, at once. Timed from the early head, the stream
    was `buffered` (TTFT the upload's length, every token within a millisecond)."""
    async with owned_upstream(early_pacing) as port, serve(URL(f"http://127.0.0.1:{port}")) as child:
        assert child.url.port is not None
        got = await slow_upload(child.url.port, "paced", size=200_000, chunked=True, late=LATE)
        (rec,) = await records(child, ["paced"])
    assert got.startswith(b"HTTP/1.1 200 ") and b"data: [DONE]" in got, got[:300]
    assert rec["outcome"] == "complete" and "buffered" not in rec["anomalies"], rec
    assert rec["request_sent_ms"] >= 0.9 * LATE * 1000 and 0 <= rec["ttft_ms"] < LATE * 1000, rec
