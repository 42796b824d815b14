"""The official `openai` SDK consumes a Responses stream through the proxy."""

from __future__ import annotations

import asyncio
import json
import zlib
from typing import Any

import pytest
from aiohttp import web
from openai import AsyncOpenAI

WORDS = ["The", " weather", " in", " Paris", " is", " mild", "."]
ARGS = ['{"loc', 'ation":', ' "Paris', '"}']
USAGE = {
    "input_tokens": 21,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 11,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 32,
}


def response_events(model: str) -> list[dict[str, Any]]:
    """A Responses stream as OpenAI sends it: a message, then a function call."""
    base = {
        "id": "resp_1",
        "object": "response",
        "created_at": 1741476542,
        "model": model,
        "output": [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "error": None,
        "incomplete_details": None,
        "usage": None,
    }
    text = "".join(WORDS)
    part = {"type": "output_text", "text": text, "annotations": []}
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [part],
    }
    call = {
        "id": "fc_1",
        "type": "function_call",
        "call_id": "call_1",
        "name": "get_weather",
        "arguments": "".join(ARGS),
        "status": "completed",
    }
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": {**base, "status": "in_progress"}},
        {"type": "response.in_progress", "response": {**base, "status": "in_progress"}},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {**message, "status": "in_progress", "content": []},
        },
        {
            "type": "response.content_part.added",
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "part": {**part, "text": ""},
        },
        *(
            {
                "type": "response.output_text.delta",
                "item_id": "msg_1",
                "output_index": 0,
                "content_index": 0,
                "delta": w,
                "logprobs": [],
            }
            for w in WORDS
        ),
        {
            "type": "response.output_text.done",
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "text": text,
            "logprobs": [],
        },
        {
            "type": "response.content_part.done",
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "part": part,
        },
        {"type": "response.output_item.done", "output_index": 0, "item": message},
        {
            "type": "response.output_item.added",
            "output_index": 1,
            "item": {**call, "arguments": "", "status": "in_progress"},
        },
        *(
            {
                "type": "response.function_call_arguments.delta",
                "item_id": "fc_1",
                "output_index": 1,
                "delta": a,
            }
            for a in ARGS
        ),
        {
            "type": "response.function_call_arguments.done",
            "item_id": "fc_1",
            "output_index": 1,
            "arguments": call["arguments"],
        },
        {"type": "response.output_item.done", "output_index": 1, "item": call},
        {
            "type": "response.completed",
            "response": {**base, "status": "completed", "output": [message, call], "usage": USAGE},
        },
    ]
    for seq, event in enumerate(events):
        event["sequence_number"] = seq
    return events


def responses_upstream(encoding: str = "") -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        assert request.path == "/v1/responses" and body["stream"] is True
        headers = {"Content-Type": "text/event-stream"}
        z = None
        if encoding:
            headers["Content-Encoding"] = encoding
            z = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        resp = web.StreamResponse(headers=headers)
        await resp.prepare(request)
        for event in response_events(body["model"]):
            frame = f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
            if z is not None:
                frame = z.compress(frame) + z.flush(zlib.Z_SYNC_FLUSH)
            await resp.write(frame)
            await asyncio.sleep(0.005)  # token by token, as a real model streams
        if z is not None:
            await resp.write(z.flush())
        await resp.write_eof()
        return resp

    return handler


@pytest.mark.parametrize("encoding", ["", "gzip"])
async def test_openai_sdk_consumes_a_responses_stream_through_the_proxy(
    upstream: Any, proxy: Any, encoding: str
) -> None:
    running = await proxy(await upstream(responses_upstream(encoding)))
    client = AsyncOpenAI(base_url=str(running.url / "v1"), api_key="sk-test", max_retries=0)
    try:
        stream = await client.responses.create(
            model="gpt-4.1-mini",
            input="Weather in Paris?",
            stream=True,
            extra_headers={"X-Client-Request-Id": "sdk-responses-1"},
        )
        types: list[str] = []
        text: list[str] = []
        arguments: list[str] = []
        final = None
        async for event in stream:
            types.append(event.type)
            if event.type == "response.output_text.delta":
                text.append(event.delta)
            elif event.type == "response.function_call_arguments.delta":
                arguments.append(event.delta)
            elif event.type == "response.completed":
                final = event.response
    finally:
        await client.close()

    expected = response_events("gpt-4.1-mini")
    assert types == [e["type"] for e in expected]
    assert "".join(text) == "".join(WORDS)
    assert json.loads("".join(arguments)) == {"location": "Paris"}
    assert final is not None and final.usage is not None
    assert (final.usage.input_tokens, final.usage.output_tokens) == (21, 11)

    rec = await running.record()
    assert (rec.trace_id, rec.route, rec.model, rec.status) == (
        "sdk-responses-1",
        "responses",
        "gpt-4.1-mini",
        200,
    )
    s = rec.stream
    assert s is not None
    assert (s.outcome.value, s.anomalies) == ("complete", [])
    assert (s.frames, s.content_frames) == (len(expected), len(WORDS) + len(ARGS))
    assert (s.finish_reasons, s.tool_calls, s.done) == (["completed"], 1, False)
    assert (s.prompt_tokens, s.completion_tokens) == (21, 11)
    assert s.usage == USAGE
    assert s.ttft is not None and s.ttfb is not None and s.ttft >= s.ttfb
    assert s.max_gap is not None and s.max_gap >= 0.004  # frames came one by one
    assert (
        running.metric("sse_audit_streams_total", route="responses", model="gpt-4.1-mini", outcome="complete")
        == 1.0
    )
    assert (
        running.metric(
            "sse_audit_finish_reasons_total",
            route="responses",
            model="gpt-4.1-mini",
            finish_reason="completed",
        )
        == 1.0
    )


def resumed_upstream(cut: bool) -> Any:
    """GET /v1/responses/{id}?stream=true&starting_after=N: the rest of a stored response's
    stream, cut before `response.completed` when `cut`."""

    async def handler(request: web.Request) -> web.StreamResponse:
        assert request.method == "GET" and request.path == "/v1/responses/resp_1"
        assert request.query["stream"] == "true"
        after = int(request.query["starting_after"])
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        events = response_events("gpt-4.1-mini")[after + 1 :]
        for event in events[:-1] if cut else events:
            await resp.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
        await resp.write_eof()
        return resp

    return handler


@pytest.mark.parametrize("cut", [False, True])
async def test_a_resumed_responses_stream_is_judged_as_one(upstream: Any, proxy: Any, cut: bool) -> None:
    running = await proxy(await upstream(resumed_upstream(cut)))
    client = AsyncOpenAI(base_url=str(running.url / "v1"), api_key="sk-test", max_retries=0)
    try:
        stream = await client.responses.retrieve("resp_1", stream=True, starting_after=5)
        types = [event.type async for event in stream]
    finally:
        await client.close()
    assert (types[-1] == "response.completed") is not cut
    rec = await running.record()
    assert (rec.route, rec.method) == ("responses", "GET")
    s = rec.stream
    assert s is not None
    if cut:  # was `complete` on route `other`: a resumed stream had no end marker to miss
        assert (s.outcome.value, s.anomalies) == ("truncated", ["missing_usage"])
    else:
        assert (s.outcome.value, s.anomalies) == ("complete", [])


# gpt-image-1's partial images are base64 PNGs of about 1.5 MB, over --max-frame-bytes (1 MiB).
IMAGE_B64 = "iVBORw0KGgo" * 140_000


def image_upstream(partials: int) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        assert request.path == "/v1/images/generations" and body["stream"] is True
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        common = {"created_at": 1741476542, "size": "1024x1024", "quality": "low", "background": "opaque"}
        for i in range(partials):
            await asyncio.sleep(0.05)  # a partial image a moment apart, as the model refines it
            event = {
                "type": "image_generation.partial_image",
                "b64_json": IMAGE_B64,
                "partial_image_index": i,
            }
            await resp.write(f"event: {event['type']}\ndata: {json.dumps({**event, **common})}\n\n".encode())
        usage = {"input_tokens": 9, "output_tokens": 272, "total_tokens": 281}
        done = {"type": "image_generation.completed", "b64_json": IMAGE_B64, "usage": usage, **common}
        await resp.write(f"event: {done['type']}\ndata: {json.dumps(done)}\n\n".encode())
        await resp.write_eof()
        return resp

    return handler


async def test_openai_sdk_image_stream_is_timed_though_its_frames_are_too_large_to_read(
    upstream: Any, proxy: Any
) -> None:
    """Every frame of an image stream is over --max-frame-bytes: relayed unread, each is still
    a frame, and its `event:` name says what it was, so the stream has a TTFT and its content."""
    running = await proxy(await upstream(image_upstream(partials=2)))
    client = AsyncOpenAI(base_url=str(running.url / "v1"), api_key="sk-test", max_retries=0)
    try:
        stream = await client.images.generate(
            model="gpt-image-1",
            prompt="a lighthouse",
            stream=True,
            partial_images=2,
            extra_headers={"X-Client-Request-Id": "sdk-image-1"},
        )
        got = [(event.type, len(event.b64_json)) async for event in stream]
    finally:
        await client.close()
    assert got == [("image_generation.partial_image", len(IMAGE_B64))] * 2 + [
        ("image_generation.completed", len(IMAGE_B64))
    ]
    rec = await running.record()
    assert (rec.trace_id, rec.route) == ("sdk-image-1", "images")
    s = rec.stream
    assert s is not None
    assert (s.outcome.value, s.anomalies) == ("complete", ["oversized_frame"])
    assert (s.frames, s.content_frames) == (3, 2)
    assert s.ttft is not None and s.ttft >= 0.04  # the first partial image, not the stream's head
    assert s.max_gap is not None and s.max_gap >= 0.04


def _without(kind: str, output_index: int | None = None) -> Any:
    def edit(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            e
            for e in events
            if not (e["type"] == kind and (output_index is None or e.get("output_index") == output_index))
        ]

    return edit


def _content_index(index: int) -> Any:
    def edit(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {**e, "content_index": index} if e["type"] == "response.output_text.delta" else e for e in events
        ]

    return edit


def _output_index(index: int) -> Any:
    def edit(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {**e, "output_index": index} if e["type"] == "response.function_call_arguments.delta" else e
            for e in events
        ]

    return edit


def _after(kind: str) -> Any:  # `response.created` moved after the first event of `kind`
    def edit(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        created, rest = events[0], events[1:]
        at = next(i for i, e in enumerate(rest) if e["type"] == kind) + 1
        return [*rest[:at], created, *rest[at:]]

    return edit


def _in_order(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return events


def edited_upstream(edit: Any) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        events = edit(response_events(body["model"]))
        for seq, event in enumerate(events):  # numbered as sent: no sequence_gap
            event = {**event, "sequence_number": seq}
            await resp.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
        await resp.write_eof()
        return resp

    return handler


@pytest.mark.parametrize(
    "edit",
    [
        _in_order,
        _without("response.created"),
        _after("response.in_progress"),
        _without("response.content_part.added"),
        _without("response.output_item.added", 0),  # the message's
        _without("response.output_item.added", 1),  # the function call's
        _content_index(1),  # text deltas for a part never added
        _output_index(3),  # argument deltas for an item never added
    ],
    ids=[
        "in_order",
        "no_created",
        "created_second",
        "no_content_part",
        "no_message_item",
        "no_call_item",
        "text_for_another_part",
        "arguments_for_another_item",
    ],
)
async def test_a_stream_the_sdks_stream_helper_raises_on_is_malformed(
    upstream: Any, proxy: Any, edit: Any
) -> None:
    """Read with the SDK's stream helper (`responses.stream()`, which builds the response from
    the events): the audit calls `malformed_frame` exactly the streams it raises on; raw
    iteration (`responses.create(stream=True)`) reads them all, and the verdict is otherwise
    the same (`complete`)."""
    running = await proxy(await upstream(edited_upstream(edit)))
    client = AsyncOpenAI(base_url=str(running.url / "v1"), api_key="sk-test", max_retries=0)
    raised: BaseException | None = None
    try:
        async with client.responses.stream(model="gpt-4.1-mini", input="Weather in Paris?") as stream:
            async for _ in stream:
                pass
    except (RuntimeError, IndexError, AssertionError, KeyError) as exc:  # what accumulate_event raises
        raised = exc
    finally:
        await client.close()
    rec = await running.record()
    s = rec.stream
    assert s is not None
    assert s.outcome.value == "complete"
    assert ("malformed_frame" in s.anomalies) is (raised is not None), (raised, s.anomalies)
    assert (raised is None) is (edit is _in_order)
