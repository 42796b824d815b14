"""The demo gateway on its own, driven by the official `openai` SDK and raw sockets."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

import aiohttp
import openai
import pytest
from yarl import URL

from sse_audit_proxy.core.sse import SSEDecoder
from sse_audit_proxy.tools.scenarios import SCENARIOS

FAST = {"X-Demo-TTFT-Ms": "5", "X-Demo-Interval-Ms": "1", "X-Demo-Jitter": "0", "X-Demo-Fault-Ms": "10"}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "description": "Find an order",
        "parameters": {
            "type": "object",
            "properties": {
                "order_id": {"type": "string"},
                "items": {"type": "integer"},
                "express": {"type": "boolean"},
            },
            "required": ["order_id"],
        },
    },
}


def client(gateway: URL, **headers: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key="demo", base_url=str(gateway / "v1"), default_headers={**FAST, **headers}, max_retries=0
    )


def messages(text: str = "Summarise the rollout plan.") -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def test_chat_streamed_usage_chunk_equals_the_non_streamed_usage(demo_gateway: Any) -> None:
    sdk = client(await demo_gateway())
    whole = await sdk.chat.completions.create(model="demo-healthy", messages=messages(), seed=7)
    stream = await sdk.chat.completions.create(
        model="demo-healthy", messages=messages(), seed=7, stream=True, stream_options={"include_usage": True}
    )
    text, usage, finish = [], None, None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert usage is not None and whole.usage is not None
    assert usage.model_dump() == whole.usage.model_dump()
    assert usage.completion_tokens == len([t for t in text if t])
    assert "".join(text) == whole.choices[0].message.content
    assert finish == whole.choices[0].finish_reason == "stop"


async def test_completions_streamed_usage_equals_the_non_streamed_usage(demo_gateway: Any) -> None:
    sdk = client(await demo_gateway())
    whole = await sdk.completions.create(model="demo-healthy", prompt="Once upon a canary")
    stream = await sdk.completions.create(
        model="demo-healthy", prompt="Once upon a canary", stream=True, stream_options={"include_usage": True}
    )
    text, usage = [], None
    async for chunk in stream:
        usage = chunk.usage or usage
        text.extend(c.text for c in chunk.choices)
    assert usage is not None and whole.usage is not None
    assert usage.model_dump() == whole.usage.model_dump()
    assert "".join(text) == whole.choices[0].text


async def test_responses_stream_has_the_openai_event_shapes_and_usage(demo_gateway: Any) -> None:
    sdk = client(await demo_gateway())
    whole = await sdk.responses.create(model="demo-healthy", input="Summarise the plan.")
    kinds: list[str] = []
    numbers: list[int] = []
    async with sdk.responses.stream(model="demo-healthy", input="Summarise the plan.") as stream:
        async for event in stream:
            kinds.append(event.type)
            numbers.append(event.sequence_number)
        final = await stream.get_final_response()
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert numbers == list(range(len(kinds)))
    assert final.output_text == whole.output_text and final.status == "completed"
    assert final.usage is not None and whole.usage is not None
    assert final.usage.model_dump() == whole.usage.model_dump()
    assert final.usage.output_tokens == kinds.count("response.output_text.delta")


async def test_responses_function_call_arguments_stream_as_deltas(demo_gateway: Any) -> None:
    sdk = client(await demo_gateway())
    tool = {"type": "function", "name": "lookup_order", "parameters": WEATHER_TOOL["function"]["parameters"]}  # type: ignore[index]
    deltas: list[str] = []
    async with sdk.responses.stream(model="gpt-4.1", input="Where is order 12?", tools=[tool]) as stream:  # type: ignore[list-item]
        async for event in stream:
            if event.type == "response.function_call_arguments.delta":
                deltas.append(event.delta)
        final = await stream.get_final_response()
    call = final.output[0]
    assert call.type == "function_call" and call.name == "lookup_order"
    assert len(deltas) > 1 and "".join(deltas) == call.arguments
    assert set(json.loads(call.arguments)) == {"order_id", "items", "express"}
    follow_up = await sdk.responses.create(
        model="gpt-4.1",
        tools=[tool],
        input=[  # type: ignore[list-item]
            {"role": "user", "content": "Where is order 12?"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "shipped"},
        ],
    )
    assert follow_up.output_text and follow_up.output[0].type == "message"


async def test_streamed_tool_call_assembles_into_json_and_the_follow_up_gets_text(
    demo_gateway: Any,
) -> None:
    sdk = client(await demo_gateway())
    asked = messages("Where is my order?")
    stream = await sdk.chat.completions.create(
        model="gpt-4o", messages=asked, stream=True, tools=[WEATHER_TOOL]
    )  # type: ignore[list-item]
    call_id = name = None
    fragments: list[str] = []
    finish = None
    async for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for call in choice.delta.tool_calls or ():
                call_id = call.id or call_id
                name = (call.function.name if call.function else None) or name
                if call.function and call.function.arguments:
                    fragments.append(call.function.arguments)
    arguments = json.loads("".join(fragments))
    assert call_id and call_id.startswith("call_") and name == "lookup_order"
    assert len(fragments) > 1 and finish == "tool_calls"
    assert isinstance(arguments["order_id"], str) and isinstance(arguments["items"], int)

    follow_up = await sdk.chat.completions.create(
        model="gpt-4o",
        tools=[WEATHER_TOOL],
        messages=[
            *asked,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": "".join(fragments)},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call_id, "content": '{"status": "shipped"}'},
        ],
    )  # type: ignore[list-item]
    choice = follow_up.choices[0]
    assert choice.finish_reason == "stop" and choice.message.content
    assert not choice.message.tool_calls


async def test_same_prompt_gives_the_same_answer_and_another_prompt_does_not(
    demo_gateway: Any,
) -> None:
    sdk = client(await demo_gateway())

    async def answer(text: str, model: str) -> str:
        done = await sdk.chat.completions.create(model=model, messages=messages(text))
        return done.choices[0].message.content or ""

    first = await answer("What changed in the gateway?", "demo-healthy")
    assert first == await answer("What changed in the gateway?", "demo-stall")
    assert first != await answer("What changed in the proxy?", "demo-healthy")


async def test_max_tokens_cuts_the_answer_with_finish_reason_length(demo_gateway: Any) -> None:
    sdk = client(await demo_gateway())
    done = await sdk.chat.completions.create(model="demo-healthy", messages=messages(), max_tokens=3)
    assert done.choices[0].finish_reason == "length"
    assert done.usage is not None and done.usage.completion_tokens == 3


async def test_models_lists_every_scenario(demo_gateway: Any) -> None:
    sdk = client(await demo_gateway())
    listed = [m.id async for m in sdk.models.list()]
    assert listed == [s.model for s in SCENARIOS]


async def test_unknown_scenarios_and_bad_bodies_get_openai_shaped_errors(
    demo_gateway: Any,
) -> None:
    gateway = await demo_gateway()
    sdk = client(gateway)
    with pytest.raises(openai.NotFoundError) as missing:
        await sdk.chat.completions.create(model="demo-nope", messages=messages())
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad_header:
        await client(gateway, **{"X-Demo-Scenario": "nope"}).chat.completions.create(
            model="gpt-4o", messages=messages()
        )
    assert bad_header.value.code == "unknown_scenario"
    with pytest.raises(openai.RateLimitError):
        await sdk.chat.completions.create(model="demo-http-429", messages=messages())
    async with (
        aiohttp.ClientSession() as http,
        http.post(gateway / "v1/chat/completions", data=b"{not json") as resp,
    ):
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert set(error) >= {"message", "type", "code"}


async def test_header_knobs_set_frames_and_time_to_first_token(demo_gateway: Any) -> None:
    gateway = await demo_gateway()
    headers = {"X-Demo-Frames": "5", "X-Demo-TTFT-Ms": "200", "X-Demo-Interval-Ms": "1"}
    body = {"model": "demo-healthy", "stream": True, "messages": messages()}
    decoder = SSEDecoder()
    arrivals: list[tuple[float, bytes]] = []
    async with aiohttp.ClientSession() as http:
        started = time.monotonic()
        async with http.post(gateway / "v1/chat/completions", json=body, headers=headers) as resp:
            async for chunk in resp.content.iter_any():
                arrivals.extend((time.monotonic(), e.data) for e in decoder.feed(chunk))
    tokens = [(t, json.loads(d)) for t, d in arrivals if d != b"[DONE]"]
    content = [(t, c) for t, c in tokens if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(content) == 5
    assert content[0][0] - started >= 0.2


async def test_sent_at_frames_carry_their_send_time(demo_gateway: Any) -> None:
    gateway = await demo_gateway()
    headers = {
        "X-Demo-Frames": "20",
        "X-Demo-TTFT-Ms": "0",
        "X-Demo-Interval-Ms": "20",
        "X-Demo-Jitter": "0",
        "X-Demo-Sent-At": "1",
    }
    body = {"model": "demo-healthy", "stream": True, "messages": messages()}
    decoder = SSEDecoder()
    latencies: list[float] = []
    stamps: list[float] = []
    async with (
        aiohttp.ClientSession() as http,
        http.post(gateway / "v1/chat/completions", json=body, headers=headers) as resp,
    ):
        async for chunk in resp.content.iter_any():
            now = time.time()
            for event in decoder.feed(chunk):
                if event.data != b"[DONE]":
                    stamps.append(json.loads(event.data)["sent_at"])
                    latencies.append(now - stamps[-1])
    assert len(stamps) == 22  # the role chunk, 20 tokens and the finish chunk
    assert stamps == sorted(stamps)
    assert min(latencies) >= 0 and max(latencies) < 0.5
    gaps = [b - a for a, b in itertools.pairwise(stamps[1:-1])]  # between the 20 tokens
    assert sum(gaps) / len(gaps) == pytest.approx(0.020, abs=0.005)


async def test_reset_scenario_sends_a_tcp_reset(demo_gateway: Any) -> None:
    gateway = await demo_gateway()
    assert gateway.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    body = json.dumps({"model": "demo-reset", "stream": True, "messages": messages()}).encode()
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
        b"application/json\r\nX-Demo-Frames: 6\r\nX-Demo-TTFT-Ms: 0\r\n"
        b"X-Demo-Interval-Ms: 2\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    received = b""
    with pytest.raises(ConnectionResetError):
        while chunk := await asyncio.wait_for(reader.read(65536), 5):
            received += chunk
    writer.close()
    assert received.startswith(b"HTTP/1.1 200") and b'"content":" ' in received
    assert b"[DONE]" not in received


# Real servers' wire habits -------------------------------------------------------------------

CHAT = {"stream": True, "stream_options": {"include_usage": True}, "messages": messages()}
ROUTE_BODIES = {
    "chat/completions": CHAT,
    "completions": {
        "stream": True,
        "stream_options": {"include_usage": True},
        "prompt": "Once upon a canary",
    },
    "responses": {"stream": True, "input": "Summarise the plan."},
}


async def timed_stream(
    gateway: URL, route: str, model: str, **headers: str
) -> tuple[aiohttp.ClientResponse, list[tuple[float, bytes]], float]:
    """(response, [(arrival, event data)], when the body ended), times from the request."""
    decoder = SSEDecoder()
    events: list[tuple[float, bytes]] = []
    async with aiohttp.ClientSession() as http:
        started = time.monotonic()
        async with http.post(
            gateway / "v1" / route, json={"model": model, **ROUTE_BODIES[route]}, headers={**FAST, **headers}
        ) as resp:
            async for chunk in resp.content.iter_any():
                now = time.monotonic() - started
                events.extend((now, e.data) for e in decoder.feed(chunk))
            ended = time.monotonic() - started
    return resp, events, ended


@pytest.mark.parametrize(
    ("route", "model", "habits"),
    [
        ("chat/completions", "demo-late-terminator", ""),
        ("responses", "demo-tool-call", "late-terminator"),
        ("completions", "demo-no-usage", "late-terminator,text-plain"),
    ],
)
async def test_late_terminator_ends_the_body_a_while_after_the_last_event(
    demo_gateway: Any, route: str, model: str, habits: str
) -> None:
    gateway = await demo_gateway()
    resp, events, ended = await timed_stream(
        gateway, route, model, **{"X-Demo-Habits": habits, "X-Demo-Terminator-Ms": "400"}
    )
    last_at, last = events[-1]
    assert last == b"[DONE]" or json.loads(last)["type"] == "response.completed"
    assert 0.35 <= ended - last_at < 2.0  # the terminator came in a write of its own
    _, healthy, healthy_end = await timed_stream(gateway, route, "demo-healthy")
    assert resp.status == 200 and healthy_end - healthy[-1][0] < 0.1  # without: at once


@pytest.mark.parametrize(
    ("route", "model", "habits"),
    [
        ("chat/completions", "demo-wrong-content-type", ""),
        ("responses", "demo-tool-call", "text-plain"),
    ],
)
async def test_text_plain_labels_a_real_event_stream_as_plain_text(
    demo_gateway: Any, route: str, model: str, habits: str
) -> None:
    resp, events, _ = await timed_stream(await demo_gateway(), route, model, **{"X-Demo-Habits": habits})
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    last = events[-1][1]
    assert last == b"[DONE]" or json.loads(last)["type"] == "response.completed"


@pytest.mark.parametrize(
    ("route", "model", "habits"),
    [
        ("chat/completions", "demo-bursty", ""),
        ("completions", "gpt-4o-mini", "bursty"),
        ("responses", "demo-healthy", "bursty"),
    ],
)
async def test_bursty_releases_the_tokens_in_clumps_after_silences(
    demo_gateway: Any, route: str, model: str, habits: str
) -> None:
    gateway = await demo_gateway()
    _, events, _ = await timed_stream(gateway, route, model, **{"X-Demo-Habits": habits})
    content = [t for t, data in events if _is_content(data)]
    groups: list[list[float]] = [[content[0]]]
    for a, b in itertools.pairwise(content):
        if b - a < 0.002:
            groups[-1].append(b)
        else:
            assert b - a >= 0.25, "a clump came too soon after the previous one"
            groups.append([b])
    assert len(content) == 50 and len(groups) >= 4
    assert all(10 <= len(g) <= 12 for g in groups)
    usage = _usage(events)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            gateway / "v1" / route,
            headers={**FAST, "X-Demo-Habits": habits},
            json={"model": model, **ROUTE_BODIES[route], "stream": False},
        ) as plain,
    ):
        assert usage == (await plain.json())["usage"]  # the extra tokens are in both answers


async def test_a_busy_loop_does_not_shorten_the_silence_before_the_next_clump(demo_gateway: Any) -> None:
    """The clumps' silences are the scenario: a clump that a busy loop (CI, many streams at once)
    let out late was followed by the next on the old schedule, 0.15 s after it, and the proxy
    rightly judged the stream not bursty (a CI run failed so)."""
    gateway = await demo_gateway()
    # clumps are due about 0.015, 0.315, 0.615 s after the request: hold the loop over the second
    handle = asyncio.get_running_loop().call_later(0.2, time.sleep, 0.25)
    try:
        _, events, _ = await timed_stream(gateway, "chat/completions", "demo-bursty")
    finally:
        handle.cancel()
    content = [t for t, data in events if _is_content(data)]
    silences = [b - a for a, b in itertools.pairwise(content) if b - a >= 0.002]
    assert len(silences) >= 3 and min(silences) >= 0.28, silences


def _is_content(data: bytes) -> bool:
    if data == b"[DONE]":
        return False
    doc = json.loads(data)
    if doc.get("type") == "response.output_text.delta":
        return True
    choice = (doc.get("choices") or [{}])[0]
    return bool(choice.get("text") or (choice.get("delta") or {}).get("content"))


def _usage(events: list[tuple[float, bytes]]) -> dict[str, Any]:
    for _, data in reversed(events):
        doc = json.loads(data) if data != b"[DONE]" else {}
        usage = doc.get("usage") or (doc.get("response") or {}).get("usage")
        if usage:
            return dict(usage)
    raise AssertionError("no usage in the stream")


@pytest.mark.parametrize(
    ("route", "model", "habits"),
    [
        ("chat/completions", "demo-error-no-done", ""),
        ("completions", "demo-healthy", "error-no-done"),
        ("responses", "demo-tool-call", "error-no-done"),
    ],
)
async def test_error_no_done_ends_the_body_after_a_bare_rate_limit_error(
    demo_gateway: Any, route: str, model: str, habits: str
) -> None:
    resp, events, _ = await timed_stream(await demo_gateway(), route, model, **{"X-Demo-Habits": habits})
    last = json.loads(events[-1][1])
    assert set(last) == {"error"} and last["error"]["code"] == "rate_limit_exceeded"
    assert {"message", "type"} <= set(last["error"])
    assert resp.status == 200 and len(events) > 2
    assert not any(data == b"[DONE]" or b"response.completed" in data for _, data in events)


async def test_an_unknown_habit_is_refused_with_an_openai_shaped_error(demo_gateway: Any) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            await demo_gateway() / "v1/chat/completions",
            headers={"X-Demo-Habits": "bursty,nope"},
            json={"model": "demo-healthy", **CHAT},
        ) as resp,
    ):
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert error["code"] == "unknown_habit" and "nope" in error["message"]


async def test_an_http10_keep_alive_client_sees_the_stream_end_at_the_close(demo_gateway: Any) -> None:
    """HTTP/1.0 has no chunked coding: the close ends the body. aiohttp kept a client's
    `Connection: keep-alive` connection open after `[DONE]` (an outside review)."""
    gateway = await demo_gateway()
    reader, writer = await asyncio.open_connection(gateway.host, gateway.port)
    body = json.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    head = "".join(f"{k}: {v}\r\n" for k, v in FAST.items())
    writer.write(
        f"POST /v1/chat/completions HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n{head}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode()
    )
    answer = await asyncio.wait_for(reader.read(), 10)  # to the close
    writer.close()
    assert answer.endswith(b"data: [DONE]\n\n"), answer[-200:]


async def test_a_head_field_of_16_kib_reaches_the_handler(demo_gateway: Any) -> None:
    """The proxy in front allows fields of 16 KiB; the gateway behind it took 8 KiB and answered
    aiohttp's plain-text 400 quoting the field (an outside review)."""
    gateway = await demo_gateway()
    async with (
        aiohttp.ClientSession() as http,
        http.get(gateway / "v1/models", headers={"X-Padding": "p" * 16_300}) as resp,
    ):
        assert resp.status == 200, await resp.text()
