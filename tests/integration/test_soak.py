"""Load and soak (issue 5, item 8): bounded, loopback only, a few seconds.

Hundreds of concurrent streams, some cut by their client, some reset by the upstream, the
rest complete. Afterwards: exactly one audit record per request with the right outcome, no
active stream, no task or connection left behind, and memory back within a small bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import tracemalloc
from collections import Counter
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.reliability_support import CHAT, STREAM_BODY, chunk

FRAMES = 20
CONCURRENCY = 50


def socket_fds() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


async def plan_upstream(request: web.Request) -> web.StreamResponse:
    """Streams FRAMES frames; `X-Test-Reset: k` aborts the connection after k of them."""
    await request.read()
    reset_after = int(request.headers.get("X-Test-Reset", "-1"))
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    try:
        for i in range(FRAMES):
            if i == reset_after:
                assert request.transport is not None
                request.transport.abort()
                return resp
            await resp.write(chunk(f"t{i}"))
            await asyncio.sleep(0.005)
        await resp.write(chunk(None, "stop") + b"data: [DONE]\n\n")
    except (ConnectionError, asyncio.CancelledError):
        pass
    return resp


async def one_stream(http: aiohttp.ClientSession, url: Any, trace_id: str, plan: str, k: int) -> None:
    headers = {"X-Client-Request-Id": trace_id}
    if plan == "reset":
        headers["X-Test-Reset"] = str(k)
    async with http.post(url, json=STREAM_BODY, headers=headers) as resp:
        frames = 0
        try:
            async for _ in resp.content:  # line by line
                frames += 1
                if plan == "disconnect" and frames >= 2 * k:  # data line + blank line
                    resp.close()  # vanish mid-stream
                    return
        except aiohttp.ClientPayloadError:
            assert plan == "reset"


async def soak_round(http: aiohttp.ClientSession, url: Any, n: int, seed: int, prefix: str) -> dict[str, str]:
    rng = random.Random(seed)
    plans = {
        f"{prefix}-{i}": rng.choices(["complete", "disconnect", "reset"], [3, 1, 1])[0] for i in range(n)
    }
    gate = asyncio.Semaphore(CONCURRENCY)

    async def run(trace_id: str, plan: str) -> None:
        async with gate:
            await one_stream(http, url, trace_id, plan, rng.randint(1, FRAMES // 2))

    await asyncio.wait_for(asyncio.gather(*(run(t, p) for t, p in plans.items())), 60)
    return plans


EXPECTED = {"complete": "complete", "disconnect": "client_disconnect", "reset": "truncated"}


@pytest.mark.hostile  # in the hostile-peer suite (`pytest -m hostile`)
async def test_soak_every_request_one_record_nothing_left_open_memory_bounded(
    upstream: Any, proxy: Any
) -> None:
    upstream_url = await upstream(plan_upstream, handler_cancellation=True)
    # The recent-streams ring holds records on purpose (bounded); keep it out of the leak check.
    p = await proxy(upstream_url, recent_streams=1)
    url = p.url / CHAT.lstrip("/")
    server = p.service.proxy._runner.server
    baseline_tasks = set(asyncio.all_tasks())

    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as http:
        await soak_round(http, url, 100, seed=1, prefix="warm")  # label children, pools, caches
    await p.sink.wait(100, timeout=10)
    p.sink.records.clear()
    gc.collect()
    sockets_before = socket_fds()

    tracemalloc.start(1)
    try:
        connector = aiohttp.TCPConnector(limit=CONCURRENCY)
        async with aiohttp.ClientSession(connector=connector) as http:
            plans = await soak_round(http, url, 400, seed=2, prefix="soak")
        records = await p.sink.wait(len(plans), timeout=10)
        await asyncio.sleep(0.2)  # let closed connections finish unwinding

        # Exactly one record per request, with the outcome its plan calls for.
        by_trace = Counter(r.trace_id for r in records)
        assert set(by_trace) == set(plans) and set(by_trace.values()) == {1}
        outcomes = {r.trace_id: r.stream.outcome.value for r in records if r.stream}
        wrong = {t: (plans[t], outcomes.get(t)) for t in plans if outcomes.get(t) != EXPECTED[plans[t]]}
        assert not wrong, wrong
        assert len(set(plans.values())) == 3
        counted = sum(
            p.metric("sse_audit_streams_total", route="chat_completions", model="gpt-test", outcome=o) or 0
            for o in EXPECTED.values()
        )
        assert counted == 500  # both rounds
        assert p.metric("sse_audit_active_streams", route="chat_completions") == 0

        # Nothing left open on the client side of the proxy, nothing in flight.
        assert server.connections == []
        assert p.service.proxy.in_flight == 0

        running_held, _ = tracemalloc.get_traced_memory()  # includes the connection pool

        # Closing the proxy releases its pooled upstream connections; what is still held
        # then (the proxy, metrics and sink objects stay referenced) is what 400 streams
        # leaked. Sockets go back below the pre-soak count, and no task is left.
        p.sink.records.clear()
        del records, by_trace, outcomes, wrong, plans
        await p.service.close()
        await asyncio.sleep(0.2)
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
        if os.environ.get("SOAK_DEBUG"):
            for stat in tracemalloc.take_snapshot().statistics("traceback")[:8]:
                print(stat)
                print("\n".join(stat.traceback.format()[-8:]))
    finally:
        tracemalloc.stop()
    print(f"soak: held with the pool open {running_held} bytes, after close {held} bytes")
    assert held < 256 << 10, f"{held} bytes still held after 400 streams"
    assert socket_fds() < sockets_before
    leftover = {t for t in asyncio.all_tasks() - baseline_tasks if not t.done()}
    assert not leftover, leftover
