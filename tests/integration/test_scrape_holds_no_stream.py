"""A scrape of many series does not hold the streams.

prometheus-client renders the exposition in Python, about 8 µs a sample line: with
`--max-models` models on three routes and two sides a scrape took 0.7 s, and on the event loop
every stream stood still that long (and its frames looked read together to the audit).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import aiohttp
from reliability_support import ask_without_reading, read_what_is_left

from sse_audit_proxy.server import admin

CHAT = "v1/chat/completions"
FRAMES = 60
INTERVAL = 0.02


def many_series(metrics: Any, models: int = 100) -> None:
    """The series a proxy holds after `models` models were streamed on three routes, two sides."""
    for m in range(models):
        for route in ("chat_completions", "responses", "messages"):
            for side in ("baseline", "canary"):
                labels = (route, f"model-{m}", side)
                for histogram in (metrics.ttfb, metrics.ttft, metrics.gap, metrics.max_gap, metrics.duration):
                    histogram.labels(*labels).observe(0.1)
                metrics.streams.labels(*labels, "complete").inc()


async def test_a_long_scrape_does_not_stand_the_streams_still(
    demo_gateway: Any, proxy: Any, http: aiohttp.ClientSession
) -> None:
    p = await proxy(await demo_gateway(ttft=0.0, interval=INTERVAL, jitter=0.0, frames=FRAMES))
    many_series(p.service.metrics)
    scrapes: list[float] = []
    streaming = True

    async def scrape() -> None:
        while streaming:
            began = time.monotonic()
            async with http.get(p.metrics_url / "metrics") as resp:
                assert resp.status == 200
                assert b"model-99" in await resp.read()
            scrapes.append(time.monotonic() - began)
            await asyncio.sleep(0.05)

    scraper = asyncio.create_task(scrape())
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    arrivals: list[float] = []
    try:
        async with http.post(p.url / CHAT, json=body) as resp:
            async for _ in resp.content:  # one line at a time, as they come
                arrivals.append(time.monotonic())
    finally:
        streaming = False
        await scraper
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    longest_scrape = max(scrapes)
    assert longest_scrape > 0.2, "too few series to show anything on this machine"
    # On the loop, a frame behind a scrape waited for all of it; now a few GIL turns, which a
    # busy machine (two test workers on two cores) can stretch to 0.2 s: still well under it.
    assert max(gaps) < max(0.15, longest_scrape / 3), (max(gaps), longest_scrape)
    record = await p.record()
    assert record.stream is not None and record.stream.outcome.value == "complete"


async def test_a_scraper_that_never_reads_is_let_go(
    demo_gateway: Any, proxy: Any, http: aiohttp.ClientSession, monkeypatch: Any
) -> None:
    """A scraper that asks for /metrics and reads nothing held its connection, and the rendered
    body (MBs with many models), for ever: a few dozen held hundreds of MB. It gets
    SEND_TIMEOUT; a scraper that reads is answered in full meanwhile."""
    monkeypatch.setattr(admin, "SEND_TIMEOUT", 1.0)
    p = await proxy(await demo_gateway())
    many_series(p.service.metrics)
    sock = await ask_without_reading(p.metrics_url.host, p.metrics_url.port, b"/metrics")
    await asyncio.sleep(0.2)
    async with http.get(p.metrics_url / "metrics") as resp:  # another scraper, meanwhile
        assert resp.status == 200 and b"model-99" in await resp.read()
    # Not read for longer than SEND_TIMEOUT, then drained: the proxy cut the answer short.
    await asyncio.sleep(1.5)
    declared, body = await read_what_is_left(sock)
    assert declared > 1 << 20 and body < declared  # the connection was closed, not finished
