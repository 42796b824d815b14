"""What an upstream sends reaches the evidence, the inspector and the log lines only as shape.

Through the real `serve`, from a raw-socket upstream, three ways it got out:
- a legacy Completions stream with `logprobs`: `top_logprobs` are objects keyed by the token
  text, and frame skeletons kept keys that looked like words, so the completion's tokens were
  in the evidence and the `stream_evidence` line;
- response headers whose credentials the redactor had no word for (`X-Goog-Api-Key`,
  `Location: https://user:password@...?key=...`, `{"api_key": ...}` in a value, AWS's
  `Credential=`) were shown as they were;
- header bytes 0x80-0x9f (decoded as latin-1: C1 controls, U+009B is a terminal's CSI) and a
  tab inside a value (llhttp refuses the other C0 controls and DEL) were written raw into the
  JSON lines, the evidence and the inspector.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from peers import serve
from relay_support import RawRequest, raw_exchange, raw_upstream
from yarl import URL

# Tokens a completion may hold: none is a field name of the protocols, and none can turn up by
# chance in a log line (a bare "1987" did, inside a pid: "vm/19872").
TOKENS = ["Patient", "diagnosis", "HIV", "positive", "hunter2", "1987!", "Ünïcode", "日本語"]


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


SECRETS = {
    b"X-Goog-Api-Key": b"AIzaSyEXAMPLEKEY0123456789abcdefGHIJ",
    b"Anthropic-Api-Key": b"sk-ant-api03-SHORT",
    b"X-Access-Token": b"ya29.GOOGLEOAUTHTOKENSECRET",
    b"X-Upstream-Cookie": b"session=COOKIEECHOSECRET",
    b"Location": b"https://admin:hunter2pass@internal.example/p?key=AIzaSyQUERYKEY99999&api_key=QSECRET2&page=2",
    b"X-Json-Trace-Id": b'{"api_key": "JSONSECRET123", "token": "JSONTOKEN456", "n": 3}',
    b"X-Debug-Trace-Id": b"a=1; session=SESSIONVALUE77; b=2",
    b"X-Amz-Auth": b"AWS4-HMAC-SHA256 Credential=AKIAEXAMPLEAKID/2024/us-east-1/s3/aws4_request, "
    b"Signature=ABCDEF0123",
}
CREDENTIALS = [
    "AIzaSyEXAMPLEKEY0123456789abcdefGHIJ",
    "sk-ant-api03-SHORT",
    "GOOGLEOAUTHTOKENSECRET",
    "COOKIEECHOSECRET",
    "hunter2pass",
    "AIzaSyQUERYKEY99999",
    "QSECRET2",
    "JSONSECRET123",
    "JSONTOKEN456",
    "SESSIONVALUE77",
    "AKIAEXAMPLEAKID",
    "ABCDEF0123",
]
# What evidence is for: rate limits, their token counts, timings. Never blanked.
KEPT = {
    "x-ratelimit-limit-tokens": "30000",
    "x-ratelimit-remaining-tokens": "29000",
    "x-ratelimit-reset-tokens": "6ms",
    "anthropic-ratelimit-input-tokens-remaining": "1000",
    "anthropic-ratelimit-tokens-reset": "2026-01-01T00:00:00Z",
    "openai-processing-ms": "123",
    "x-request-id": "req_abc123",
}


async def test_credentials_in_response_headers_are_redacted_and_rate_limits_kept() -> None:
    fields = b"".join(k + b": " + v + b"\r\n" for k, v in SECRETS.items())
    fields += b"".join(f"{k}: {v}\r\n".encode() for k, v in KEPT.items())
    body = sse({"choices": [{"index": 0, "delta": {"content": "x"}}]})  # no [DONE]: logged
    async with raw_upstream(answer(fields, body)) as up, serve(URL(f"http://127.0.0.1:{up.port}")) as child:
        await asyncio.wait_for(raw_exchange(child.url.port, request(b"/v1/chat/completions", b"hd-1")), 15)
        await asyncio.sleep(0.2)
        evidence, page = await evidence_and_page(child.metrics_url, "hd-1")
    headers = dict(orjson.loads(evidence)["response"]["headers"])
    assert [(k, headers.get(k)) for k in KEPT] == list(KEPT.items())
    # A URL without its query (a redirect may carry a prompt); the rest of a scrubbed value stays.
    assert headers["Location"] == "https://[redacted]@internal.example/p?<47>"
    assert headers["X-Debug-Trace-Id"] == "a=1; session=[redacted]; b=2"
    assert len(child.events("stream_evidence")) == 1
    output = orjson.dumps(child.lines).decode() + child.stderr.decode(errors="replace")
    for secret in CREDENTIALS:
        for where, text in (("log", output), ("evidence", evidence.decode()), ("page", page.decode())):
            assert secret not in text, (secret, where)


CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


async def test_control_characters_in_header_bytes_reach_no_sink_raw() -> None:
    fields = b"Server: \x9b2J\x9b31mFAKE LOG LINE\x9d0;title\x9c\r\nVia: a\x85b\tc\r\n"
    body = sse({"choices": [{"index": 0, "delta": {"content": "x"}}]})
    async with raw_upstream(answer(fields, body)) as up, serve(URL(f"http://127.0.0.1:{up.port}")) as child:
        got = await asyncio.wait_for(
            raw_exchange(child.url.port, request(b"/v1/chat/completions", b"c1-1")), 15
        )
        await asyncio.sleep(0.2)
        evidence, page = await evidence_and_page(child.metrics_url, "c1-1")
    assert b"\x9b2J" in got  # relayed as it was
    headers = dict(orjson.loads(evidence)["response"]["headers"])
    assert headers["Server"] == "\\x9b2J\\x9b31mFAKE LOG LINE\\x9d0;title\\x9c"
    assert headers["Via"] == "a\\x85b\\x09c"
    assert child.events("stream_evidence")
    found = [s for s in strings(child.lines) + strings(orjson.loads(evidence)) if CONTROLS.search(s)]
    assert found == []
    assert not re.search("[\x80-\x9f\x1b\x7f]", page.decode())


# A request's own credentials, none of a well-known shape: Azure's keys are 32 hex digits, as a
# trace ID may be.
OWN = {
    b"api-key": b"9f8e7d6c5b4a39281706f5e4d3c2b1a0",
    b"x-api-key": b"ANTHROPICSTYLEKEY987",
    b"Authorization": b"Bearer gw-tenant-7f3a9c1e5b2d",
    b"Cookie": b"session=s1; csrftoken=COOKIEVALUE42",
    b"X-Custom-Secret": b"CUSTOMSECRETvv1234",  # named by --secret-headers
}


def echoing(body: bytes) -> Any:
    """An upstream that echoes the caller's credentials under fields of ordinary names (of a
    kind whose values evidence shows, request IDs: scrubbed, not only measured)."""

    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        echoed = b"".join(
            b"X-Echo-%d-Request-Id: %s\r\n" % (i, value)
            for i, name in enumerate(OWN)
            for value in req.header(name)
        )
        # Percent-encoded, as a debug header or a redirect's URL would carry them.
        echoed += (
            b"X-Echo-Quoted-Request-Id: %s\r\n" % quote(req.header(b"Authorization")[0], safe="").encode()
        )
        echoed += b"X-Echo-Query-Request-Id: %s\r\n" % req.target.partition(b"?")[2]
        await answer(echoed, body)(req, writer)

    return script


async def test_an_upstream_echoing_the_requests_credentials_gets_them_nowhere() -> None:
    """Evidence showed response fields by their names' word for a secret (`X-Debug-Key`) and by
    the shape of their values; an upstream that echoed the caller's key, cookie or a
    --secret-headers value under another name (`X-Debug-Caller`) got it into the evidence, the
    `stream_evidence` line and the inspector. And a client that sent its key as its trace ID
    (Azure's 32 hex digits pass for one) had it shown on every line and page."""
    body = sse({"choices": [{"index": 0, "delta": {"content": "x"}}]})  # no [DONE]: logged
    fields = b"".join(k + b": " + v + b"\r\n" for k, v in OWN.items())
    upstream_url = URL("http://127.0.0.1")
    async with (
        raw_upstream(echoing(body)) as up,
        serve(upstream_url.with_port(up.port), "--secret-headers", "x-custom-secret") as child,
    ):
        path = b"/v1/chat/completions?api-version=2024-10-21&key2=QUERYKEY7788zz"
        sent = request(path, b"echo-1").replace(b"Host: x\r\n", b"Host: x\r\n" + fields)
        got = await asyncio.wait_for(raw_exchange(child.url.port, sent), 15)
        keyed = sent.replace(b"echo-1", OWN[b"api-key"])  # the key as the trace ID
        await asyncio.wait_for(raw_exchange(child.url.port, keyed), 15)
        head, _, body_sent = sent.replace(b"echo-1", b"echo-3").partition(b"\r\n\r\n")
        keyed_body = body_sent.replace(b'"model":"m"', b'"model":"%s"' % OWN[b"api-key"])
        head = head.replace(b"Content-Length: %d" % len(body_sent), b"Content-Length: %d" % len(keyed_body))
        as_model = head + b"\r\n\r\n" + keyed_body  # the key pasted as the model
        await asyncio.wait_for(raw_exchange(child.url.port, as_model), 15)
        await asyncio.sleep(0.2)
        evidence, page = await evidence_and_page(child.metrics_url, "echo-1")
        async with aiohttp.ClientSession() as http:
            async with http.get(child.metrics_url / "streams" / "recent") as resp:
                recent = await resp.text()
            async with http.get(child.metrics_url / "metrics") as resp:
                metrics = await resp.text()
    assert b"X-Echo-4-Request-Id: CUSTOMSECRETvv1234" in got  # the client gets them as they came
    ends = child.events("stream_end")
    assert len(ends) == 3 and ends[0]["trace_id"] == "echo-1"
    assert ends[1]["trace_id"] != OWN[b"api-key"].decode()  # a new one: the key is no ID
    assert ends[2]["model"] == "[redacted]" and ends[0]["model"] == "m"  # nor a model name
    headers = dict(orjson.loads(evidence)["response"]["headers"])
    assert headers["X-Echo-0-Request-Id"] == "[redacted]"
    assert headers["X-Echo-3-Request-Id"] == "session=[redacted]; csrftoken=[redacted]"  # pair by pair
    assert headers["X-Echo-Quoted-Request-Id"] == "[redacted]"
    assert headers["X-Echo-Query-Request-Id"] == "api-version=2024-10-21&key2=[redacted]"  # the rest stays
    output = orjson.dumps(child.lines).decode() + child.stderr.decode(errors="replace")
    secrets = ["9f8e7d6c5b4a39281706f5e4d3c2b1a0", "ANTHROPICSTYLEKEY987", "gw-tenant-7f3a9c1e5b2d"]
    for secret in [*secrets, "COOKIEVALUE42", "CUSTOMSECRETvv1234", "QUERYKEY7788zz"]:
        for where, text in (
            ("log", output),
            ("evidence", evidence.decode()),
            ("page", page.decode()),
            ("recent", recent),
            ("metrics", metrics),
        ):
            assert secret not in text, (secret, where)
