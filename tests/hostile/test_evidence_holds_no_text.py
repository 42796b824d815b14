"""What an upstream sends reaches the evidence, the inspector and the log lines only as shape.

Through the real `serve`, from a raw-socket upstream, how it got out:
- a legacy Completions stream with `logprobs`: `top_logprobs` are objects keyed by the token
  text, and frame skeletons kept keys that looked like words, so the completion's tokens were
  in the evidence and the `stream_evidence` line.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
from peers import serve
from relay_support import RawRequest, raw_exchange, raw_upstream
from yarl import URL

# Tokens a completion may hold: none is a field name of the protocols.
TOKENS = ["Patient", "diagnosis", "HIV", "positive", "hunter2", "1987", "Ünïcode", "日本語"]


def sse(doc: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(doc) + b"\n\n"


def chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(body), body)


def logprob_frames() -> bytes:
    frames = b""
    for i, token in enumerate(TOKENS):
        choice = {
            "index": 0,
            "text": token,
            "logprobs": {
                "tokens": [token],
                "token_logprobs": [-0.1],
                "top_logprobs": [{token: -0.1, token + "_alt": -2.0}],
                "text_offset": [i],
            },
            "finish_reason": None,
        }
        frames += sse(
            {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m", "choices": [choice]}
        )
    # No [DONE] and no finish: a stream that went wrong, so its evidence is logged too.
    return frames


def request(path: bytes, trace: bytes) -> bytes:
    body = b'{"model":"m","stream":true,"prompt":"x","logprobs":2}'
    return (
        b"POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Client-Request-Id: %s\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (path, trace, len(body), body)
    )


def answer(head_fields: bytes, body: bytes) -> Any:
    async def script(_: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            + head_fields
            + b"Transfer-Encoding: chunked\r\n\r\n"
        )
        writer.write(chunked(body) + b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    return script


async def evidence_and_page(metrics: URL, trace: str) -> tuple[bytes, bytes]:
    async with aiohttp.ClientSession() as http:
        async with http.get(metrics / "streams" / trace / "evidence") as resp:
            assert resp.status == 200, await resp.text()
            evidence = await resp.read()
        async with http.get(metrics / "ui" / "streams" / trace) as resp:
            assert resp.status == 200
            page = await resp.read()
    return evidence, page


async def test_completion_tokens_keying_logprobs_reach_no_evidence_and_no_log_line() -> None:
    body = logprob_frames()
    async with raw_upstream(answer(b"", body)) as up, serve(URL(f"http://127.0.0.1:{up.port}")) as child:
        got = await asyncio.wait_for(raw_exchange(child.url.port, request(b"/v1/completions", b"lp-1")), 15)
        await asyncio.sleep(0.2)  # the record is written
        evidence, page = await evidence_and_page(child.metrics_url, "lp-1")
    assert chunked(body) in got  # relayed as it was
    logged = child.events("stream_evidence")
    assert len(logged) == 1 and len(child.events("stream_end")) == 1
    top = orjson.loads(evidence)["frames"][0]["skeleton"]["data"]["choices"][0]["logprobs"]["top_logprobs"]
    assert top == [{"<7>": -0.1, "<11>": -2.0}]  # the shape: two alternatives, their numbers
    output = orjson.dumps(child.lines).decode() + child.stderr.decode(errors="replace")
    for token in TOKENS:
        for where, text in (("log", output), ("evidence", evidence.decode()), ("page", page.decode())):
            assert token not in text, (token, where)
            assert orjson.dumps(token).decode()[1:-1] not in text, (token, where)  # as JSON escapes it
