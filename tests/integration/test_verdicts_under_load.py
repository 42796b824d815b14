"""Verdicts under load equal verdicts at rest: every demo scenario, several times over, all
at once and beside fast bulk streams, through one proxy; each record must carry exactly the
verdict the scenario table documents (the same check test_scenarios makes one at a time)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from test_scenarios import FAST, IDLE_TIMEOUT, chat_request, read_as_client

from sse_audit_proxy.core.audit import Outcome
from sse_audit_proxy.tools.scenarios import SCENARIOS, Scenario

COPIES = 3  # of every scenario, concurrently
BULK_STREAMS = 20  # fast streams beside them, to keep the proxy's loop busy
BULK_FRAMES = 500


async def scenario_stream(http: aiohttp.ClientSession, url: Any, scenario: Scenario, trace_id: str) -> None:
    headers = {**FAST, "X-Client-Request-Id": trace_id}
    async with http.post(
        url / "v1/chat/completions", json=chat_request(scenario.model), headers=headers
    ) as resp:
        await read_as_client(resp, scenario)


async def bulk_stream(http: aiohttp.ClientSession, url: Any, trace_id: str) -> None:
    headers = {
        "X-Demo-Frames": str(BULK_FRAMES),
        "X-Demo-TTFT-Ms": "0",
        "X-Demo-Interval-Ms": "0",
        "X-Demo-Jitter": "0",
        "X-Client-Request-Id": trace_id,
    }
    async with http.post(url / "v1/chat/completions", json=chat_request("bulk"), headers=headers) as resp:
        await resp.read()


async def test_every_scenario_keeps_its_verdict_when_all_run_at_once(demo_gateway: Any, proxy: Any) -> None:
    running = await proxy(await demo_gateway(), idle_timeout=IDLE_TIMEOUT)
    expected = {f"load-{s.name}-{i}": s for s in SCENARIOS for i in range(COPIES)}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        streams = [scenario_stream(http, running.url, s, trace) for trace, s in expected.items()]
        streams += [bulk_stream(http, running.url, f"bulk-{i}") for i in range(BULK_STREAMS)]
        await asyncio.wait_for(asyncio.gather(*streams), 30.0)
    records = await running.sink.wait(len(expected) + BULK_STREAMS, timeout=10.0)

    by_trace = {rec.trace_id: rec for rec in records}
    assert len(by_trace) == len(records) == len(expected) + BULK_STREAMS
    wrong = []
    for trace, scenario in expected.items():
        s = by_trace[trace].stream
        assert s is not None, trace
        got = (s.outcome, sorted(s.anomalies), s.end)
        want = (scenario.outcome, sorted(scenario.anomalies), scenario.end)
        if got != want:
            wrong.append((trace, got, want))
    assert wrong == []
    for i in range(BULK_STREAMS):
        s = by_trace[f"bulk-{i}"].stream
        assert s is not None and (s.outcome, s.anomalies) == (Outcome.COMPLETE, [])
        assert s.content_frames == BULK_FRAMES
