"""Streaming JSON lines (Ollama's native API) are streams, not ordinary bodies.

Ollama's `POST /api/chat` and `/api/generate` with `"stream": true` answer
`Content-Type: application/x-ndjson`, one JSON object per line, token by token. `serve`
judged such a stream `complete` + `not_streamed` ("the upstream answered ... an ordinary
body, not an event stream"): a false alarm on every request, counted in
sse_audit_stream_anomalies_total{anomaly="not_streamed"}. Now a body labelled a streaming
JSON-lines type is a stream whose lines are read as frames: on Ollama's routes (`ollama`) it
ends with the `"done": true` line (a body that ends cleanly before it is `truncated`, as
Ollama's own clients say), elsewhere its outcome comes from the connection; `not_streamed`
stays for ordinary bodies.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
from peers import Child, metric_value, serve
from relay_support import RawRequest, raw_upstream
from yarl import URL

WORDS = ["Hel", "lo", "!"]


def line(doc: dict[str, object]) -> bytes:
    return json.dumps(doc).encode() + b"\n"


def ollama_lines(key: str) -> list[bytes]:
    def part(text: str) -> dict[str, object]:
        return {"message": {"role": "assistant", "content": text}} if key == "message" else {"response": text}

    out = [line({"model": "llama3", **part(w), "done": False}) for w in WORDS]
    out.append(line({"model": "llama3", **part(""), "done_reason": "stop", "done": True, "eval_count": 3}))
    return out


def chunked(piece: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(piece), piece)


async def ollama(req: RawRequest, writer: asyncio.StreamWriter) -> None:
    """Ollama's native streaming answer, a line a chunk; `/broken` resets after two lines,
    `/failing` writes an error line after two (server/routes.go: a failure mid-generation is one
    more line, `{"error": ...}`, and a clean end), `/cut` ends cleanly after two, `/plain`
    answers an ordinary JSON body."""
    target = req.target.decode()
    if target.startswith("/plain"):
        body = line({"model": "llama3", "message": {"role": "assistant", "content": "Hello!"}, "done": True})
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        writer.write(body)
        return
    ctype = b"application/x-ndjson" if "generate" not in target else b"application/x-ndjson; charset=utf-8"
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nTransfer-Encoding: chunked\r\n\r\n" % ctype)
    lines = ollama_lines("message" if target.endswith("/chat") else "response")
    for i, piece in enumerate(lines):
        if target.startswith("/broken") and i == 2:
            writer.transport.abort()  # a reset mid-stream: no terminating chunk
            return
        if target.startswith("/cut") and i == 2:
            break  # a clean end before the done line
        if target.startswith("/failing") and i == 2:
            writer.write(chunked(line({"error": "an error was encountered while running the model"})))
            break
        writer.write(chunked(piece))
        await writer.drain()
        await asyncio.sleep(0.02)
    writer.write(b"0\r\n\r\n")


async def post_all(
    http: aiohttp.ClientSession, child: Child, requests: dict[str, object]
) -> dict[str, bytes]:
    """Each request's body as the client got it (`cut` if it broke), once every request has
    its record (5 s at most)."""
    bodies = {}
    for path, payload in requests.items():
        async with http.post(child.url / path.lstrip("/"), json=payload) as resp:
            assert resp.status == 200
            try:
                bodies[path] = await asyncio.wait_for(resp.read(), 10)
            except aiohttp.ClientPayloadError:
                bodies[path] = b"cut"
    for _ in range(50):
        if len(child.events("stream_end")) + len(child.events("request_end")) >= len(requests):
            break
        await asyncio.sleep(0.1)
    return bodies


async def test_ollama_native_streams_are_streams_not_ordinary_bodies() -> None:
    requests = {
        "/api/chat": {"model": "llama3", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        "/api/generate": {"model": "llama3", "prompt": "hi", "stream": True},
        "/broken/api/chat": {
            "model": "llama3",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
        },
        "/plain/api/chat": {
            "model": "llama3",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
        },
        "/failing/api/chat": {
            "model": "llama3",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
        },
        "/cut/api/generate": {"model": "llama3", "prompt": "hi", "stream": True},
    }
    async with (
        raw_upstream(ollama) as up,
        serve(URL(f"http://127.0.0.1:{up.port}")) as child,
        aiohttp.ClientSession() as http,
    ):
        bodies = await post_all(http, child, requests)
        async with http.get(child.metrics_url / "metrics") as resp:
            exposition = await resp.text()
    ends = child.events("stream_end")
    assert len(ends) == len(requests), child.lines
    assert not child.events("request_end")
    by_model = [(e["route"], e["model"], e["outcome"], e["anomalies"], e["end_reason"]) for e in ends]
    assert by_model == [
        ("ollama", "llama3", "complete", [], "upstream_eof"),
        ("ollama", "llama3", "complete", [], "upstream_eof"),
        ("ollama", "llama3", "truncated", [], "upstream_broken"),
        ("ollama", "llama3", "complete", ["not_streamed"], "upstream_eof"),  # application/json
        ("ollama", "llama3", "upstream_error", ["error_event"], "upstream_eof"),  # an error line
        # A clean end before the `"done": true` line: Ollama's own clients raise on it.
        ("ollama", "llama3", "truncated", [], "upstream_eof"),
    ]
    assert ends[0]["finish_reasons"] == ["stop"] and ends[0]["usage"] == {"completion_tokens": 3}
    assert "no end line" in ends[5]["reasons"][0], ends[5]["reasons"]
    # Relayed byte for byte, line by line as they came.
    assert bodies["/api/chat"] == b"".join(ollama_lines("message"))
    assert bodies["/api/generate"] == b"".join(ollama_lines("response"))
    # Each line is read as a frame: timed (the first token), an error line an in-band failure.
    # (the done line carries no text: not content)
    assert (ends[0]["frames"], ends[0]["content_frames"]) == (len(WORDS) + 1, len(WORDS))
    assert ends[0]["ttft_ms"] is not None and ends[0]["ttfb_ms"] is not None
    assert (ends[4]["frames"], ends[4]["content_frames"]) == (3, 2)
    not_streamed = metric_value(
        exposition,
        "sse_audit_stream_anomalies_total",
        route="ollama",
        model="llama3",
        upstream="baseline",
        anomaly="not_streamed",
    )
    assert not_streamed == 1  # only the ordinary JSON answer


async def test_ollama_streams_by_default_so_a_request_without_stream_is_audited_too() -> None:
    """Ollama's `/api/chat` and `/api/generate` stream unless told `"stream": false`, and its
    docs' and CLI's requests leave the field out. Such a stream got no `stream_end` at all,
    only a `request_end`: no TTFT, and a failure written as an error line went unrecorded."""
    chat = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}
    requests = {
        "/api/chat": chat,
        "/api/generate": {"model": "llama3", "prompt": "hi"},
        "/failing/api/chat": chat,
        "/plain/api/chat": {**chat, "stream": False},  # an ordinary JSON answer: no stream
    }
    async with (
        raw_upstream(ollama) as up,
        serve(URL(f"http://127.0.0.1:{up.port}")) as child,
        aiohttp.ClientSession() as http,
    ):
        bodies = await post_all(http, child, requests)
    assert bodies["/api/chat"] == b"".join(ollama_lines("message"))
    ends = [(e["route"], e["outcome"], e["anomalies"]) for e in child.events("stream_end")]
    assert ends == [
        ("ollama", "complete", []),
        ("ollama", "complete", []),
        ("ollama", "upstream_error", ["error_event"]),
    ], child.lines
    first = child.events("stream_end")[0]
    assert (first["frames"], first["content_frames"]) == (len(WORDS) + 1, len(WORDS))
    assert first["ttft_ms"] is not None
    assert [e["status"] for e in child.events("request_end")] == [200]  # the `"stream": false` one


async def batch_results(req: RawRequest, writer: asyncio.StreamWriter) -> None:
    """Anthropic's `GET /v1/messages/batches/{id}/results`: a JSON-lines download."""
    body = b"".join(line({"custom_id": f"r{i}", "result": {"type": "succeeded"}}) for i in range(50))
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-jsonl\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    writer.write(body)


async def test_a_json_lines_download_is_no_stream() -> None:
    """A GET's JSON-lines body is a file (batch results, a file's content): judged as a stream
    it was `buffered`, an error line in it `upstream_error`, and the guard counted them
    (second review)."""
    async with (
        raw_upstream(batch_results) as up,
        serve(URL(f"http://127.0.0.1:{up.port}")) as child,
        aiohttp.ClientSession() as http,
    ):
        async with http.get(child.url / "v1/messages/batches/b1/results") as resp:
            assert resp.status == 200 and len(await resp.read()) > 0
        for _ in range(50):
            if child.events("request_end") or child.events("stream_end"):
                break
            await asyncio.sleep(0.1)
    assert not child.events("stream_end")
    assert [e["status"] for e in child.events("request_end")] == [200]
