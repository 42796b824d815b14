"""Optional inbound auth (issue 5, item 7): --require-key / --require-key-file."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web

from sse_audit_proxy.cli.main import build_parser
from tests.conftest import TEST_KEYS
from tests.reliability_support import (
    CHAT,
    STREAM_BODY,
    Tally,
    cli_proxy,
    complete_stream,
    raw_exchange,
    status_and_json,
    streaming_handler,
)

KEY = TEST_KEYS[0]
OTHER_KEY = TEST_KEYS[1]


async def test_request_without_an_allowed_key_gets_401_and_never_reaches_upstream(
    upstream: Any, proxy: Any, http: aiohttp.ClientSession
) -> None:
    tally = Tally()
    p = await proxy(await upstream(streaming_handler(complete_stream(1), tally)), require_keys=(KEY,))
    for headers in (
        {},
        {"Authorization": "Bearer sk-wrong-0123456789abcdef"},
        {"Authorization": KEY},
    ):  # no Bearer scheme: not a presented key
        async with http.post(p.url / CHAT.lstrip("/"), json=STREAM_BODY, headers=headers) as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"] == "Bearer"
            error = (await resp.json())["error"]
            assert error == {
                "message": "missing or invalid API key for this proxy",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
            }
    records = await p.sink.wait(3)
    assert [(r.status, r.error) for r in records] == [(401, "invalid_api_key")] * 3
    assert tally.requests == 0
    assert p.metric("sse_audit_requests_total", route="chat_completions", method="POST", status="401") == 3


@pytest.mark.parametrize("header", ["Authorization", "api-key", "x-api-key"])
async def test_allowed_key_in_any_key_header_passes_and_is_forwarded_unchanged(
    header: str, upstream: Any, proxy: Any, http: aiohttp.ClientSession
) -> None:
    tally = Tally()
    p = await proxy(
        await upstream(streaming_handler(complete_stream(2), tally)), require_keys=(OTHER_KEY, KEY)
    )
    value = f"Bearer {KEY}" if header == "Authorization" else KEY
    async with http.post(p.url / CHAT.lstrip("/"), json=STREAM_BODY, headers={header: value}) as resp:
        assert resp.status == 200
        await resp.read()
    rec = await p.record()
    assert rec.stream is not None and rec.stream.outcome == "complete"
    assert tally.headers[0][header] == value


@pytest.mark.parametrize(
    "field",
    [b"Authorization: Bearer sek\xffrit", b"x-api-key: \xfe\xff", b"api-key: caf\xc3"],
)
async def test_a_presented_key_that_is_not_utf8_is_refused_401(
    field: bytes, upstream: Any, proxy: Any
) -> None:
    """Header values are read as bytes escaped into str: a key with a byte that is not UTF-8
    raised as its digest was taken (500, and a traceback line quoting the key's bytes)."""
    tally = Tally()
    p = await proxy(await upstream(streaming_handler(complete_stream(1), tally)), require_keys=(KEY,))
    raw = await raw_exchange(
        p.service.proxy.port, b"GET /v1/models HTTP/1.1\r\nHost: x\r\n%s\r\nConnection: close\r\n\r\n" % field
    )
    status, body = status_and_json(raw)
    assert status == 401 and body["error"] == {
        "message": "missing or invalid API key for this proxy",
        "type": "invalid_request_error",
        "code": "invalid_api_key",
    }
    rec = await p.record()
    assert (rec.status, rec.error) == (401, "invalid_api_key")
    assert tally.requests == 0


async def test_a_key_that_is_not_ascii_passes_as_its_utf8_bytes(upstream: Any, proxy: Any) -> None:
    key = "sk-cl\u00e9-SECRET-0123456789abcdef"
    p = await proxy(await upstream(streaming_handler(complete_stream(1), Tally())), require_keys=(key,))
    raw = await raw_exchange(
        p.service.proxy.port,
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nx-api-key: %s\r\nConnection: close\r\n\r\n" % key.encode(),
    )
    assert raw.startswith(b"HTTP/1.1 200 ")


async def test_a_refused_head_request_gets_a_401_head_without_its_body(upstream: Any, proxy: Any) -> None:
    """The proxy's own answer to HEAD (here the 401 of a request without a key) is its head
    alone: a body after it is read by a keep-alive client as the start of the next answer,
    so two pipelined HEADs desynchronised the connection. An outside mutation review found it
    untested: writing the body for HEAD too passed every test."""
    tally = Tally()
    p = await proxy(await upstream(streaming_handler(complete_stream(1), tally)), require_keys=(KEY,))
    reader, writer = await asyncio.open_connection("127.0.0.1", p.service.proxy.port)
    try:
        writer.write(b"HEAD /v1/models HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert first.startswith(b"HTTP/1.1 401 ") and b"\r\nContent-Length: " in first, first
        after = await asyncio.wait_for(reader.readexactly(len(b"HTTP/1.1 401 ")), 5)
        assert after == b"HTTP/1.1 401 ", after  # before: the first answer's JSON body
        second = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b"\r\nWWW-Authenticate: Bearer\r\n" in second, second
    finally:
        writer.close()
    records = await p.sink.wait(2)
    assert [(r.status, r.error) for r in records] == [(401, "invalid_api_key")] * 2
    assert tally.requests == 0


async def test_openai_sdk_with_an_allowed_key_streams_through(upstream: Any, proxy: Any) -> None:
    p = await proxy(await upstream(streaming_handler(complete_stream(3), Tally())), require_keys=(KEY,))
    client = openai.AsyncOpenAI(base_url=str(p.url / "v1"), api_key=KEY, max_retries=0)
    stream = await client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    text = "".join([part.choices[0].delta.content or "" async for part in stream])
    await client.close()
    assert text == "t0t1t2"
    bad = openai.AsyncOpenAI(base_url=str(p.url / "v1"), api_key="sk-wrong-0123456789abcdef", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        await bad.chat.completions.create(model="gpt-test", messages=[], stream=True)
    await bad.close()
    assert raised.value.code == "invalid_api_key"


@pytest.mark.parametrize("bom", [False, True])
async def test_key_file_keys_are_accepted_by_the_cli(
    upstream: Any, http: aiohttp.ClientSession, tmp_path: Any, bom: bool
) -> None:
    keys = tmp_path / "keys.txt"
    if bom:  # an editor's byte-order mark: the first key was refused 401 (an outside review)
        keys.write_text(f"\ufeff{KEY}\n# proxy keys\n{OTHER_KEY}\n", encoding="utf-8")
    else:
        keys.write_text(f"# proxy keys\n\n{OTHER_KEY}\n{KEY}\n")
    url = await upstream(streaming_handler(complete_stream(1), Tally()))
    async with cli_proxy(url, "--require-key-file", str(keys)) as (child, proxy_url, admin):
        assert admin.host == "127.0.0.1", "the metrics port is loopback unless told otherwise"
        async with http.post(
            proxy_url / CHAT.lstrip("/"), json=STREAM_BODY, headers={"x-api-key": KEY}
        ) as resp:
            assert resp.status == 200
            await resp.read()
        async with http.post(proxy_url / CHAT.lstrip("/"), json=STREAM_BODY) as resp:
            assert resp.status == 401
        await asyncio.sleep(0.1)
        child.terminate()
        out = (await child.stdout.read()).decode()
        print(out)
    statuses = [json.loads(line).get("status") for line in out.splitlines()]
    assert 200 in statuses and 401 in statuses


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("# only a comment\n\n", "no keys in"),
    ],
)
def test_unusable_key_file_is_a_one_line_config_error(
    content: str | None, message: str, tmp_path: Any
) -> None:
    path = tmp_path / "keys.txt"
    if content is not None:
        path.write_text(content)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "sse_audit_proxy",
            "serve",
            "--upstream",
            "http://127.0.0.1:9",
            "--require-key-file",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], run.stderr


def test_metrics_port_binds_loopback_by_default() -> None:
    args = build_parser().parse_args(["serve", "--upstream", "http://127.0.0.1:9"])
    assert args.metrics_host == "127.0.0.1"


async def test_a_cors_preflight_reaches_the_upstream_without_a_key(
    upstream: Any, proxy: Any, http: aiohttp.ClientSession
) -> None:
    """A browser sends no credentials on a preflight: refused 401, no browser app could call a
    gateway whose own CORS policy allowed it (an outside review). Only a preflight: an OPTIONS
    without `Access-Control-Request-Method`, or with a body, still needs a key."""
    seen: list[str] = []

    async def cors(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Access-Control-Request-Method", ""))
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": "https://app.example",
                "Access-Control-Allow-Headers": "authorization, content-type",
            },
        )

    p = await proxy(await upstream(cors), require_keys=(KEY,))
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    async with http.options(p.url / CHAT.lstrip("/"), headers=preflight) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert resp.headers["Access-Control-Allow-Headers"] == "authorization, content-type"
    assert seen == ["POST"]
    async with http.options(p.url / CHAT.lstrip("/"), headers={"Origin": "https://app.example"}) as resp:
        assert resp.status == 401  # not a preflight
    async with http.options(p.url / CHAT.lstrip("/"), headers=preflight, data=b"{}") as resp:
        assert resp.status == 401  # a preflight has no body
    async with http.post(p.url / CHAT.lstrip("/"), json=STREAM_BODY, headers=preflight) as resp:
        assert resp.status == 401  # nor is it a POST
    for more in ({"X-HTTP-Method-Override": "DELETE"}, {"Access-Control-Request-Method": " "}):
        async with http.options(p.url / CHAT.lstrip("/"), headers={**preflight, **more}) as resp:
            assert resp.status == 401  # no browser's preflight
    assert seen == ["POST"]
    records = await p.sink.wait(6)
    assert [(r.method, r.status, r.error) for r in records] == [
        ("OPTIONS", 204, None),
        *[("OPTIONS", 401, "invalid_api_key")] * 2,
        ("POST", 401, "invalid_api_key"),
        *[("OPTIONS", 401, "invalid_api_key")] * 2,
    ]
