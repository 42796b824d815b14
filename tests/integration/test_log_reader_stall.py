"""The real `serve` with a stdout nobody reads, or nobody at all: streams go on.

Before, log lines were written to stdout on the event loop: once a stalled reader (a log
shipper, a paused terminal) let the 64 KiB pipe fill, about 100 streams later every stream
through the proxy froze.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest
from yarl import URL

CHAT = "v1/chat/completions"
STREAMS = 250  # 250 stream_end lines of about 800 bytes: well past a pipe's 64 KiB and the buffer's


def start_serve(
    upstream: URL, *args: str, stderr: int = subprocess.DEVNULL
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSE_AUDIT_")}
    argv = [sys.executable, "-m", "sse_audit_proxy", "serve", "--upstream", str(upstream)]
    argv += ["--port", "0", "--metrics-port", "0", *args]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, env=env)
    assert proc.stdout is not None
    line = orjson.loads(proc.stdout.readline())  # proxy_started; then nobody reads
    assert line["event"] == "proxy_started"
    return proc, line


@pytest.fixture
def stopped() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def stream_once(http: aiohttp.ClientSession, url: URL) -> bytes:
    body = {"model": "demo-healthy", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with http.post(url / CHAT, json=body, timeout=aiohttp.ClientTimeout(total=10)) as resp:
        assert resp.status == 200
        return await resp.read()


async def dropped(http: aiohttp.ClientSession, metrics: URL) -> dict[str, float]:
    async with http.get(metrics.with_path("/metrics")) as resp:
        text = await resp.text()
    return {
        m[1]: float(m[2])
        for m in re.finditer(r'^sse_audit_log_lines_dropped_total\{reason="(\w+)"\} (\S+)$', text, re.M)
    }


async def test_streams_go_on_while_nobody_reads_the_log_and_the_lines_come_later(
    demo_gateway: Any, http: aiohttp.ClientSession, stopped: list[subprocess.Popen[bytes]]
) -> None:
    gateway = await demo_gateway(ttft=0.0, interval=0.0, frames=10)
    proc, started = start_serve(gateway, "--log-buffer-bytes", "64k")  # the least
    stopped.append(proc)
    url, metrics = URL(started["listen"]), URL(started["metrics"])
    for _ in range(STREAMS):  # one after another: each must end while the log is unread
        assert (await stream_once(http, url)).endswith(b"data: [DONE]\n\n")
    counts = await dropped(http, metrics)
    assert counts["buffer_full"] > 0 and counts["output_closed"] == 0

    # The reader comes back: what the pipe and the buffer held, then how many were dropped.
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout is not None
    out = await asyncio.to_thread(proc.stdout.read)
    assert proc.wait(10) == 0
    lines = [orjson.loads(line) for line in out.splitlines()]
    ends = [line for line in lines if line["event"] == "stream_end"]
    notices = [line for line in lines if line["event"] == "log_lines_dropped"]
    # SIGTERM's `proxy_draining` and `proxy_stopped` lines may find the buffer full too, after
    # the metrics were read
    events = {line["event"] for line in lines}
    stop_lines_dropped = sum(event not in events for event in ("proxy_draining", "proxy_stopped"))
    assert sum(n["dropped"] for n in notices) == counts["buffer_full"] + stop_lines_dropped
    assert len(ends) + counts["buffer_full"] == STREAMS
    assert all(line["outcome"] == "complete" for line in ends)
    assert lines[-1]["event"] in ("proxy_stopped", "log_lines_dropped")


async def test_streams_go_on_when_the_log_reader_is_gone(
    demo_gateway: Any, http: aiohttp.ClientSession, stopped: list[subprocess.Popen[bytes]]
) -> None:
    gateway = await demo_gateway(ttft=0.0, interval=0.0, frames=10)
    proc, started = start_serve(gateway, stderr=subprocess.PIPE)
    stopped.append(proc)
    assert proc.stdout is not None
    proc.stdout.close()  # `serve | head -1`: EPIPE on the next line
    url, metrics = URL(started["listen"]), URL(started["metrics"])
    for _ in range(5):
        assert (await stream_once(http, url)).endswith(b"data: [DONE]\n\n")
    counts = await dropped(http, metrics)
    # The writer thread finds the output gone when it next writes, a moment after the stream.
    deadline = time.monotonic() + 5
    while counts.get("output_closed", 0) < 5 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        counts = await dropped(http, metrics)
    assert counts["output_closed"] == 5
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 10) == 0
    assert time.monotonic() - began < 5  # nothing waits for an output that is gone
    # The metrics that counted the lost records end with the process: stderr says how many
    # (the five stream_end lines, proxy_draining and proxy_stopped).
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    assert re.search(r"sse-audit-proxy: ([7-9]|\d\d+) log line\(s\) were not written to stdout", err), err


async def test_lines_a_stalled_reader_never_took_by_the_exit_are_counted_on_stderr(
    demo_gateway: Any, http: aiohttp.ClientSession, stopped: list[subprocess.Popen[bytes]]
) -> None:
    gateway = await demo_gateway(ttft=0.0, interval=0.0, frames=10)
    proc, started = start_serve(gateway, "--log-buffer-bytes", "64k", stderr=subprocess.PIPE)
    stopped.append(proc)
    url = URL(started["listen"])
    for _ in range(STREAMS):  # the pipe and the buffer fill: nobody reads stdout, ever
        await stream_once(http, url)
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 20) == 0
    assert time.monotonic() - began < 10  # the flush waits 5 s for the reader, no more
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    found = re.search(r"sse-audit-proxy: (\d+) log line\(s\) were not written to stdout", err)
    assert found and int(found[1]) > 0, err
