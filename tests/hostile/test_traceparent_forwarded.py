"""A client's W3C `traceparent` joins the proxy's log line to its distributed trace: the line
carries the trace and span IDs of a valid one, nothing of an invalid one, and the header reaches
the upstream exactly as the client sent it (the proxy adds no span of its own)."""

from __future__ import annotations

import asyncio

import aiohttp
from peers import serve
from relay_support import RawRequest, raw_upstream
from yarl import URL

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
BODY = b'{"model":"gpt-trace","stream":true,"messages":[{"role":"user","content":"hi"}]}'


async def stream(_: RawRequest, writer: asyncio.StreamWriter) -> None:
    body = (
        b'data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    )
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body), body)
    )


async def test_traceparent_ids_are_logged_and_the_header_forwarded_unchanged() -> None:
    sent = {
        "valid": f"00-{TRACE}-{SPAN}-01",
        "invalid": f"00-{TRACE.upper()}-{SPAN}-01",
        "absent": None,
    }
    async with raw_upstream(stream) as up, serve(URL(f"http://127.0.0.1:{up.port}")) as child:
        async with aiohttp.ClientSession() as http:
            for name, value in sent.items():
                headers = {"Content-Type": "application/json", "X-Client-Request-Id": f"tp-{name}"}
                if value is not None:
                    headers["traceparent"] = value
                async with http.post(child.url / "v1/chat/completions", data=BODY, headers=headers) as resp:
                    assert resp.status == 200
                    await resp.read()
        for _ in range(50):  # bounded: 5 s
            ends = {line["trace_id"]: line for line in child.lines if line.get("event") == "stream_end"}
            if len(ends) == 3:
                break
            await asyncio.sleep(0.1)
    assert (ends["tp-valid"]["otel_trace_id"], ends["tp-valid"]["otel_span_id"]) == (TRACE, SPAN)
    for name in ("invalid", "absent"):
        assert "otel_trace_id" not in ends[f"tp-{name}"] and "otel_span_id" not in ends[f"tp-{name}"]
    forwarded = [r.header(b"traceparent") for r in up.requests]
    assert forwarded == [[sent["valid"].encode()], [sent["invalid"].encode()], []]
