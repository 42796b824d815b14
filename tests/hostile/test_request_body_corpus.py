"""Hostile request bodies through the real proxy: whatever a client sends as a body, the
upstream gets it byte for byte, the client gets the upstream's answer, the request has one
record, and the proxy neither fails nor reports a defect of its own. (Two bodies once made it
answer 500 after sending the request on: an encoded surrogate, an integer past 64 bits.)"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson
import pytest
from yarl import URL

import sse_audit_proxy.server.proxy as proxy_module
from tests.hostile.relay_support import RawRequest, raw_upstream

DONE = b"data: [DONE]\n\n"
REAL = orjson.dumps(
    {
        "model": "gpt-4o",
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "¿qué? 你好 🙂"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.7,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    }
)
# What a hostile or broken client puts into a body: bytes that are not UTF-8 or are UTF-8 forms
# Python refuses, escapes, numbers of every size, nesting, keys that look like paths.
PALETTE = [
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xc0\xaf",
    b"\xff",
    b"\x00",
    b'"',
    b"\\",
    b"\\ud800",
    b"\\u0000",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"1e999999",
    b"-0",
    b"%d" % (1 << 70),
    b"1" * 400,
    b"1.5e-400",
    b"NaN",
    b"null",
    b"true",
    b'"model":"x",',
    b'"stream":false,',
    b'"stream_options":{"include_usage":1e3},',
    b'"a.b":1,',
    b'"":{"model":1},',
    b" " * 70000,
]


def corpus(n: int) -> list[bytes]:
    rnd = random.Random(20261202)
    out = [
        b"[" * 5000 + b"]" * 5000,
        b'{"model":"m","x":' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"model":"m","seed":%d,"n":%s}' % (1 << 70, b"9" * 400),
        b'{"model":"a","model":"b","stream":true,"stream":false}',
        b'{"model":"m","messages":"' + b"x" * 70000 + b'"}',
        b'{"model":"m"' + b" " * 70000 + b"}",
    ]
    while len(out) < n:
        body = bytearray(REAL)
        for _ in range(rnd.randint(1, 4)):
            at = rnd.randint(0, len(body))
            if rnd.random() < 0.2 and len(body) > 2:
                del body[at : at + rnd.randint(1, 8)]
            else:
                body[at:at] = rnd.choice(PALETTE)
        out.append(bytes(body))
    return out


@pytest.mark.timeout(120)
async def test_hostile_bodies_go_through_untouched_with_one_record_each(
    proxy: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    defects: list[tuple[str, str]] = []
    monkeypatch.setattr(
        proxy_module, "audit_failed", lambda _t, during, exc: defects.append((during, repr(exc)))
    )

    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n%s"
            % (len(DONE), DONE)
        )

    bodies = corpus(300)
    async with raw_upstream(script) as up:
        p = await proxy(URL(f"http://127.0.0.1:{up.port}"))
        reader, writer = await asyncio.open_connection("127.0.0.1", p.service.proxy.port)
        for i, body in enumerate(bodies):
            writer.write(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: p\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200 "), (i, head[:40], body[:80])
            assert await asyncio.wait_for(reader.readexactly(len(DONE)), 10) == DONE
            assert up.requests[-1].body == body, i
        writer.close()
        records = await p.sink.wait(len(bodies), timeout=10)
    assert len(records) == len(bodies)
    assert [r.error for r in records if r.error] == []
    assert defects == []
