"""Every demo scenario, sent through the real proxy, gets exactly the verdict the docs
(docs/tools/scenarios.md) promise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from sse_audit_proxy.core.audit import End, Outcome, StreamResult
from sse_audit_proxy.core.sse import SSEDecoder
from sse_audit_proxy.tools import scenarios
from sse_audit_proxy.tools.gateway.script import BURSTY_MIN_FRAMES, MIN_BURST_SILENCE
from sse_audit_proxy.tools.scenarios import SCENARIOS, Scenario

FRAMES = 8
FAULT = 0.3
# Fast but still token by token: 10 ms apart is far from the 2 ms `buffered` spacing.
FAST = {
    "X-Demo-Frames": str(FRAMES),
    "X-Demo-TTFT-Ms": "20",
    "X-Demo-Interval-Ms": "10",
    "X-Demo-Jitter": "0",
    "X-Demo-Fault-Ms": str(int(FAULT * 1000)),
}
IDLE_TIMEOUT = 1.0  # longer than the fault delay (stall) and shorter than `hang`


def chat_request(model: str) -> dict[str, Any]:
    return {
        "model": model,
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "How is the canary doing?"}],
    }


async def read_as_client(resp: aiohttp.ClientResponse, scenario: Scenario) -> bool:
    """Read the body the way the scenario's client does; True when the stream was cut."""
    if scenario.name == "cancel":
        # One read, then away: with 8 fast frames, a client that read on would leave only when
        # the proxy already has [DONE] (on a busy loop), which is then rightly `complete`.
        await resp.content.readany()
        resp.close()  # the client goes away mid-stream
        return False
    try:
        await resp.read()
    except aiohttp.ClientPayloadError:
        return True
    return False


def check_details(name: str, s: StreamResult) -> None:
    """What each scenario shows besides its verdict (timings, counts)."""
    if name in (
        "healthy",
        "crlf",
        "no-finish",
        "no-usage",
        "no-done",
        "usage-mismatch",
        "late-terminator",
        "wrong-content-type",
    ):
        assert s.content_frames == FRAMES
    if name in (
        "healthy",
        "crlf",
        "buffered",
        "slow-first-token",
        "stall",
        "keepalive",
        "late-terminator",
        "wrong-content-type",
    ):
        assert s.done and s.finish_reasons == ["stop"]
        assert s.usage is not None and s.completion_tokens == FRAMES
    if name == "bursty":  # more tokens than asked for, so that there are clumps to see
        assert s.content_frames == s.completion_tokens == BURSTY_MIN_FRAMES
        assert s.done and s.finish_reasons == ["stop"]
        assert s.max_gap is not None and s.max_gap >= MIN_BURST_SILENCE - 0.01
    if name == "usage-mismatch":
        assert s.completion_tokens == FRAMES + 3
    if name in ("slow-first-token", "keepalive"):
        assert s.ttft is not None and s.ttft >= FAULT
    if name == "keepalive":
        assert s.keepalives >= 4
        assert s.ttfb is not None and s.ttfb < s.ttft
    if name == "stall":
        assert s.max_gap is not None and s.max_gap >= FAULT
    if name in ("tool-call", "bad-tool-args"):
        assert s.tool_calls == 1 and s.finish_reasons == ["tool_calls"]
    if name in ("truncated", "reset", "hang", "error-midstream", "error-no-done"):
        assert 0 < s.content_frames < FRAMES
    if name in ("error-midstream", "error-no-done"):  # vLLM ends with [DONE], LiteLLM does not
        assert s.done == (name == "error-midstream") and s.finish_reasons == []


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
async def test_scenario_through_the_proxy_gets_its_documented_verdict(
    scenario: Scenario, demo_gateway: Any, proxy: Any, http: aiohttp.ClientSession
) -> None:
    gateway = await demo_gateway()
    running = await proxy(gateway, idle_timeout=IDLE_TIMEOUT)
    async with http.post(
        running.url / "v1/chat/completions", json=chat_request(scenario.model), headers=FAST
    ) as resp:
        cut = await read_as_client(resp, scenario)
        status = resp.status

    rec = await running.record()
    s = rec.stream
    assert s is not None
    assert (s.outcome, sorted(s.anomalies), s.end) == (
        scenario.outcome,
        sorted(scenario.anomalies),
        scenario.end,
    )
    assert rec.model == scenario.model and rec.route == "chat_completions"
    assert status == {"http-429": 429, "http-500": 500}.get(scenario.name, 200)
    # A broken upstream stream must reach the client as a cut, never as a clean end.
    assert cut == (scenario.end in (End.UPSTREAM_BROKEN, End.IDLE_TIMEOUT))
    check_details(scenario.name, s)
    assert (
        running.metric(
            "sse_audit_streams_total",
            route="chat_completions",
            model=scenario.model,
            outcome=scenario.outcome.value,
        )
        == 1
    )


async def test_scenario_header_overrides_the_model_and_keeps_its_name(
    demo_gateway: Any, proxy: Any, http: aiohttp.ClientSession
) -> None:
    running = await proxy(await demo_gateway())
    headers = {**FAST, scenarios.SCENARIO_HEADER: "no-done"}
    async with http.post(
        running.url / "v1/chat/completions", json=chat_request("gpt-4o-mini"), headers=headers
    ) as resp:
        body = await resp.read()
    rec = await running.record()
    assert rec.model == "gpt-4o-mini" and b'"model":"gpt-4o-mini"' in body
    assert rec.stream is not None and rec.stream.anomalies == ["missing_done"]


def test_the_docs_scenario_table_is_generated_from_the_scenario_table() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs/tools/scenarios.md").read_text()
    assert scenarios.markdown_table() in page


@pytest.mark.parametrize("route", ["chat", "responses"])
async def test_a_client_that_leaves_right_after_the_end_marker_still_gets_complete(
    route: str, demo_gateway: Any, proxy: Any, http: aiohttp.ClientSession
) -> None:
    """uvicorn servers end the chunked body in a later write; the openai SDK closes a chat
    stream as soon as it has read [DONE], before that write. On Responses the client here
    leaves right after `response.completed`."""
    running = await proxy(await demo_gateway())
    headers = {**FAST, "X-Demo-Terminator-Ms": "1000", "X-Demo-Habits": "late-terminator"}
    if route == "chat":
        sdk = openai.AsyncOpenAI(
            api_key="demo", base_url=str(running.url / "v1"), max_retries=0, default_headers=headers
        )
        stream = await sdk.chat.completions.create(
            model="demo-healthy",
            stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "How is the canary doing?"}],
        )
        chunks = [chunk async for chunk in stream]
        assert chunks[-1].usage is not None
    else:
        async with http.post(
            running.url / "v1/responses",
            headers=headers,
            json={"model": "demo-healthy", "stream": True, "input": "How is it doing?"},
        ) as resp:
            decoder = SSEDecoder()
            async for chunk in resp.content.iter_any():
                if any(b'"response.completed"' in e.data for e in decoder.feed(chunk)):
                    break
            resp.close()  # before the body's end, which comes a second later
    rec = await running.record()
    assert rec.stream is not None
    assert (rec.stream.outcome, rec.stream.anomalies) == (Outcome.COMPLETE, [])
