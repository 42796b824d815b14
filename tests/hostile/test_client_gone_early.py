"""A client that leaves while its request body is read, or just after it sent it all.

A `"stream": true` request whose client closed (or half-closed) within about a millisecond of
sending it was recorded as `request_end` (status 499, model `unknown`, no outcome): the
proxy was still reading the body, or connecting upstream, when the client's close cancelled
it, and recorded it without looking at the body it already held. So such streams were missing
from sse_audit_streams_total{outcome="client_disconnect"}. Now what was read of the body names
the model and says a stream was asked for: one `stream_end` with outcome `client_disconnect`.
"""

from __future__ import annotations

import asyncio
import socket

import aiohttp
from peers import metric_value, serve
from relay_support import RawRequest, raw_upstream
from yarl import URL

BODY = b'{"model":"gpt-early","stream":true,"messages":[{"role":"user","content":"hi"}]}'
REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
)


async def answers_late(_: RawRequest, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(0.5)  # never reached by a client that left: the proxy closes first
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 14\r\n\r\n")
    writer.write(b"data: [DONE]\n\n")


async def records(lines: list[dict[str, object]], count: int) -> list[dict[str, object]]:
    for _ in range(50):  # bounded: 5 s
        ends = [line for line in lines if line.get("event") in ("stream_end", "request_end")]
        if len(ends) >= count:
            return ends
        await asyncio.sleep(0.1)
    return ends


async def test_a_client_gone_before_its_request_went_upstream_is_a_stream_record() -> None:
    async with raw_upstream(answers_late) as up, serve(URL(f"http://127.0.0.1:{up.port}")) as child:
        # Closed mid-body: the proxy is reading the body when the close cancels it.
        _, writer = await asyncio.open_connection("127.0.0.1", child.url.port)
        writer.write(REQUEST[:-20])
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.close()
        # Sent whole, then closed or half-closed at once: the proxy is at most connecting.
        for half in (False, True, False, True):
            sock = socket.create_connection(("127.0.0.1", child.url.port))
            try:
                sock.sendall(REQUEST)
                if half:
                    sock.shutdown(socket.SHUT_WR)
                else:
                    sock.close()
                await asyncio.sleep(0.2)
            finally:
                sock.close()
        ends = await records(child.lines, 5)
        async with aiohttp.ClientSession() as http, http.get(child.metrics_url / "metrics") as resp:
            exposition = await resp.text()
    assert len(ends) == 5, ends
    assert [e["event"] for e in ends] == ["stream_end"] * 5, ends
    for end in ends:
        assert (end["status"], end["model"], end["outcome"]) == (499, "gpt-early", "client_disconnect"), end
        assert (end["error"], end["end_reason"]) == ("client_disconnect", "client_gone"), end
    # Counted as streams; under `other`, as no answer showed the model real (made-up names sent
    # and hung up on once filled --max-models: metrics._MODEL_KEPT).
    counted = metric_value(
        exposition,
        "sse_audit_streams_total",
        route="chat_completions",
        model="other",
        upstream="baseline",
        outcome="client_disconnect",
    )
    assert counted == 5
