"""The official openai SDK streams through the real `serve` command; client, metrics and log agree."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from chat_streams import chunk, usage_chunk
from conftest import start_app
from openai import AsyncOpenAI

API_KEY = "sk-test-SECRET-do-not-log-1234"
WORDS = ["Hello", ",", " streaming", " world", "!"]


class ServeProcess:
    def __init__(self, proc: asyncio.subprocess.Process, info: dict[str, Any]) -> None:
        self.proc = proc
        self.info = info
        self.lines: list[dict[str, Any]] = []

    async def next_event(self, name: str, timeout: float = 5.0) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            assert self.proc.stdout is not None
            while True:
                raw = await self.proc.stdout.readline()
                assert raw, "serve exited"
                line = orjson.loads(raw)
                self.lines.append(line)
                if line["event"] == name:
                    return line

        return await asyncio.wait_for(read(), timeout)


async def start_serve(upstream: str, *extra: str) -> ServeProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSE_AUDIT_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sse_audit_proxy",
        "serve",
        "--upstream",
        upstream,
        "--port",
        "0",
        "--metrics-port",
        "0",
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    served = ServeProcess(proc, {})
    served.info = await served.next_event("proxy_started", timeout=15)
    return served


@pytest.fixture
async def chat_upstream() -> AsyncIterator[tuple[str, list[bytes]]]:
    sent: list[bytes] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
        assert request.headers["Authorization"] == f"Bearer {API_KEY}"
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        frames = [chunk({"role": "assistant", "content": ""})]
        frames += [chunk({"content": w}) for w in WORDS]
        frames += [chunk({}, finish="stop"), usage_chunk(), b"data: [DONE]\n\n"]
        for data in frames:
            sent.append(data)
            await resp.write(data)
            await asyncio.sleep(0.01)
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner, url = await start_app(app)
    yield str(url), sent
    await runner.cleanup()


async def test_openai_sdk_stream_with_usage_through_serve(chat_upstream) -> None:
    upstream_url, sent = chat_upstream
    served = await start_serve(upstream_url)
    try:
        client = AsyncOpenAI(base_url=served.info["listen"] + "/v1", api_key=API_KEY, max_retries=0)
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "say hello"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"X-Client-Request-Id": "sdk-trace-42"},
        )
        text, finish, usage = [], None, None
        async for event in stream:
            if event.choices:
                text.append(event.choices[0].delta.content or "")
                finish = event.choices[0].finish_reason or finish
            if event.usage:
                usage = event.usage
        await client.close()
        assert "".join(text) == "".join(WORDS)
        assert finish == "stop"
        assert usage is not None and usage.prompt_tokens == 11 and usage.completion_tokens == 5

        line = await served.next_event("stream_end")
        assert line["trace_id"] == "sdk-trace-42"
        assert line["route"] == "chat_completions" and line["model"] == "gpt-4o-mini"
        assert line["status"] == 200 and line["outcome"] == "complete" and line["anomalies"] == []
        assert line["done"] is True and line["finish_reasons"] == ["stop"]
        assert line["usage"] == {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
        assert line["bytes"] == sum(len(f) for f in sent)
        assert line["frames"] == len(sent) and line["content_frames"] == len(WORDS)
        for field in ("ttfb_ms", "ttft_ms", "max_gap_ms", "duration_ms"):
            assert isinstance(line[field], float) and line[field] >= 0
        assert line["ttft_ms"] <= line["duration_ms"]

        async with aiohttp.ClientSession() as http, http.get(served.info["metrics"]) as resp:
            metrics = await resp.text()
        assert (
            'sse_audit_streams_total{model="gpt-4o-mini",outcome="complete",'
            'route="chat_completions",upstream="baseline"} 1.0'
        ) in metrics
        assert (
            'sse_audit_usage_tokens_total{model="gpt-4o-mini",route="chat_completions",'
            'type="completion",upstream="baseline"} 5.0'
        ) in metrics
    finally:
        served.proc.terminate()
        out, err = await asyncio.wait_for(served.proc.communicate(), 10)
    assert served.proc.returncode == 0
    everything = b"".join(orjson.dumps(line) for line in served.lines) + out + err
    assert API_KEY.encode() not in everything
    assert b"say hello" not in everything and b"streaming" not in everything


async def test_the_sdks_own_retries_are_numbered_in_their_records() -> None:
    """The SDK retries a 503 by itself (twice by default); each attempt gets a record of its
    own, and `client_retry` says which attempt it was."""
    attempts: list[str | None] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        attempts.append(request.headers.get("x-stainless-retry-count"))
        if len(attempts) < 3:
            return web.json_response({"error": {"message": "busy", "type": "overloaded"}}, status=503)
        return web.json_response(
            {
                "id": "c",
                "object": "chat.completion",
                "created": 0,
                "model": "gpt-4o-mini",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
                ],
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner, url = await start_app(app)
    served = await start_serve(str(url))
    try:
        client = AsyncOpenAI(base_url=served.info["listen"] + "/v1", api_key=API_KEY, max_retries=2)
        done = await client.chat.completions.create(model="gpt-4o-mini", messages=[])  # ~2 s backoff
        await client.close()
        assert done.choices[0].message.content == "hi"
        lines = [await served.next_event("request_end") for _ in range(3)]
    finally:
        served.proc.terminate()
        await asyncio.wait_for(served.proc.communicate(), 10)
        await runner.cleanup()
    assert attempts == ["0", "1", "2"]
    assert [(line["status"], line.get("client_retry")) for line in lines] == [(503, 0), (503, 1), (200, 2)]
    assert len({line["trace_id"] for line in lines}) == 3
