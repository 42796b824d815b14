"""Gemini's native route through the real proxy: the URL says the model and whether an event
stream was asked for (`alt=sse`), so a gateway that answers it with a whole body is caught,
and one that answers without `alt=sse` with Gemini's JSON array is not blamed for it."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
from aiohttp import web

ANSWER = {
    "candidates": [{"content": {"parts": [{"text": "Hello"}], "role": "model"}, "finishReason": "STOP"}],
    "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 1, "totalTokenCount": 3},
}
BODY = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


async def _json_answer(request: web.Request) -> web.Response:
    await request.read()
    # Without alt=sse Gemini streams a JSON array of the chunks; a gateway may answer whole.
    doc: Any = [ANSWER] if request.query.get("alt") != "sse" else ANSWER
    return web.Response(body=orjson.dumps(doc), content_type="application/json")


async def test_a_whole_answer_to_alt_sse_is_not_streamed(
    upstream: Any, proxy: Any, http: aiohttp.ClientSession
) -> None:
    running = await proxy(await upstream(_json_answer))
    url = running.url.with_path("/v1beta/models/gemini-2.5-flash:streamGenerateContent").with_query("alt=sse")
    async with http.post(url, json=BODY) as resp:
        assert resp.status == 200 and orjson.loads(await resp.read()) == ANSWER
    (rec,) = await running.sink.wait(1)
    assert (rec.route, rec.model, rec.request.stream) == ("gemini", "gemini-2.5-flash", True)
    assert rec.stream is not None and "not_streamed" in rec.stream.anomalies


async def test_the_json_array_asked_for_without_alt_sse_is_no_stream_fault(
    upstream: Any, proxy: Any, http: aiohttp.ClientSession
) -> None:
    running = await proxy(await upstream(_json_answer))
    url = running.url.with_path("/v1/models/gemini-2.5-pro:streamGenerateContent")
    async with http.post(url, json=BODY) as resp:
        assert resp.status == 200 and orjson.loads(await resp.read()) == [ANSWER]
    (rec,) = await running.sink.wait(1)
    assert (rec.route, rec.model, rec.request.stream) == ("gemini", "gemini-2.5-pro", False)
    assert rec.stream is None  # no stream asked for, none judged


async def test_the_event_stream_is_relayed_byte_for_byte_and_judged(
    upstream: Any, proxy: Any, http: aiohttp.ClientSession
) -> None:
    body = b"data: " + orjson.dumps(ANSWER) + b"\r\n\r\n"

    async def sse(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(body)
        await resp.write_eof()
        return resp

    running = await proxy(await upstream(sse))
    url = running.url.with_path("/v1beta/models/gemini-2.5-flash:streamGenerateContent").with_query(
        "alt=sse&key=AIzaSyExampleExampleExampleExample0123"
    )
    async with http.post(url, json=BODY) as resp:
        assert await resp.read() == body
    (rec,) = await running.sink.wait(1)
    assert rec.stream is not None
    assert (rec.stream.outcome.value, rec.stream.finish_reasons, rec.stream.prompt_tokens) == (
        "complete",
        ["STOP"],
        2,
    )
