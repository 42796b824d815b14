"""Graceful shutdown (issue 5, item 3), with the real CLI as a subprocess and SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.hostile.relay_support import read_response
from tests.reliability_support import CHAT, Tally, chunk, cli_proxy, streaming_handler

DRAIN = 2.0


async def read_frames(resp: aiohttp.ClientResponse, n: int) -> bytes:
    got = b""
    while got.count(b"\n\n") < n:
        data = await resp.content.readany()
        assert data, "stream ended early"
        got += data
    return got


@pytest.mark.hostile  # in the hostile-peer suite (`pytest -m hostile`)
async def test_sigterm_drains_in_flight_streams_flips_readiness_and_exits_zero(
    upstream: Any, http: aiohttp.ClientSession
) -> None:
    tally = Tally()

    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        n = 8 if body["model"] == "short" else 400  # 0.8 s versus 40 s at 0.1 s a frame
        frames = [chunk(f"t{i}") for i in range(n)] + [chunk(None, "stop"), b"data: [DONE]\n\n"]
        return await streaming_handler(frames, tally, delay=0.1)(request)

    url = await upstream(handler, handler_cancellation=True)
    async with cli_proxy(url, "--drain-timeout", str(DRAIN)) as (child, proxy_url, admin):

        def body(model: str) -> dict[str, Any]:
            return {"model": model, "stream": True, "messages": []}

        short = await http.post(proxy_url / CHAT.lstrip("/"), json=body("short"))
        long = await http.post(proxy_url / CHAT.lstrip("/"), json=body("long"))
        await read_frames(short, 1)
        await read_frames(long, 1)
        async with http.get(admin / "readyz") as r:
            assert r.status == 200

        loop = asyncio.get_running_loop()
        child.send_signal(signal.SIGTERM)
        term_at = loop.time()

        # Readiness turns false at once; liveness stays true while draining.
        while True:
            async with http.get(admin / "readyz") as r:
                if r.status == 503:
                    break
            assert loop.time() - term_at < 1.0, "readyz still 200 a second after SIGTERM"
            await asyncio.sleep(0.02)
        async with http.get(admin / "healthz") as r:
            assert r.status == 200
        async with http.get(admin / "metrics") as r:
            assert (
                'sse_audit_active_streams{route="chat_completions",upstream="baseline"} 2.0' in await r.text()
            )
        # New connections are refused.
        with pytest.raises(aiohttp.ClientConnectorError):
            async with aiohttp.ClientSession() as fresh:
                await fresh.post(proxy_url / CHAT.lstrip("/"), json=body("short"))

        # The short stream finishes cleanly inside the drain window...
        short_body = await short.content.read()
        assert short_body.endswith(b"data: [DONE]\n\n")
        # ...the long one is cut when the window closes: the client sees a cut, not an end.
        with pytest.raises(aiohttp.ClientPayloadError):
            await long.content.read()
        cut_at = loop.time() - term_at
        assert DRAIN - 0.2 < cut_at < DRAIN + 2.0

        code = await asyncio.wait_for(child.wait(), 10)
        out = (await child.stdout.read()).decode()  # type: ignore[union-attr]
        err = (await child.stderr.read()).decode()  # type: ignore[union-attr]
        print(out, err)  # into the captured output the suite-wide secret scan reads
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    ends = {line["model"]: line for line in lines if line["event"] == "stream_end"}
    assert ends["short"]["outcome"] == "complete" and ends["short"]["done"] is True
    assert ends["long"]["outcome"] == "client_disconnect"
    assert ends["long"]["end_reason"] == "aborted"
    assert ends["long"]["content_frames"] >= 1 and ends["long"]["ttft_ms"] is not None
    events = [line["event"] for line in lines]
    assert events[0] == "proxy_draining" and events[-1] == "proxy_stopped"
    assert events.index("proxy_stopped") > max(i for i, e in enumerate(events) if e == "stream_end")
    # The cut is counted as the process ends (no scrape sees the metric): the line says it.
    assert (lines[0]["in_flight"], lines[-1]["cut"]) == (2, 1)
    assert len(tally.closed_at) == 1, "the cut stream's upstream request was closed"


async def test_sigterm_with_nothing_in_flight_exits_zero_at_once(upstream: Any) -> None:
    url = await upstream(streaming_handler([], Tally()))
    async with cli_proxy(url, "--drain-timeout", "30") as (child, _, _):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        child.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(child.wait(), 10)
        assert loop.time() - t0 < 3, "an idle proxy does not wait out the drain timeout"
    assert code == 0


@pytest.mark.hostile
async def test_sigterm_answers_and_records_the_requests_pipelined_behind_a_running_one(
    upstream: Any,
) -> None:
    """The drain waited only for the requests running when it began: two requests pipelined
    behind a slow one were parsed, then dropped with the connection, with no answer and no
    record. Each now gets its own answer (503, the last one closing) and its record; a body
    that has all arrived is dropped unread, not a reason to close on the request after it."""

    async def handler(request: web.Request) -> web.Response:
        if request.path == "/v1/slow":
            await asyncio.sleep(0.8)
        return web.Response(body=b"{}", content_type="application/json")

    url = await upstream(handler)
    async with cli_proxy(url, "--drain-timeout", str(DRAIN)) as (child, proxy_url, _):
        reader, writer = await asyncio.open_connection(proxy_url.host, proxy_url.port)
        writer.write(
            b"GET /v1/slow HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /v1/two HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
            b"GET /v1/three HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        await asyncio.sleep(0.3)
        child.send_signal(signal.SIGTERM)
        signalled = asyncio.get_running_loop().time()
        got = b""
        async with asyncio.timeout(DRAIN + 3):
            while chunk := await reader.read(65536):
                got += chunk
        writer.close()
        out, _ = await asyncio.wait_for(child.communicate(), DRAIN + 5)
        stopped_after = asyncio.get_running_loop().time() - signalled
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", got) == [b"200", b"503", b"503"], got
    assert got.count(b"Connection: close") == 1 and got.endswith(b'"proxy_shutting_down"}}'), got
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    records = [(e["status"], e.get("error")) for e in lines if e["event"] == "request_end"]
    assert records == [(200, None), (503, "proxy_shutting_down"), (503, "proxy_shutting_down")]
    assert child.returncode == 0
    # Done once the last answer is out (the slow request ended 0.5 s after the signal), not
    # held to --drain-timeout by the connection those answers closed.
    assert stopped_after < 0.75 * DRAIN, f"stopped {stopped_after:.2f} s after SIGTERM"


async def test_a_request_still_waiting_for_its_head_when_the_drain_ends_is_recorded_as_shutdown(
    upstream: Any,
) -> None:
    """A request whose upstream had not answered its head when --drain-timeout ran out is cut
    by the shutdown, not by its client: its record is `499` with error `shutdown`, so the
    proxy's own stop is not counted as clients leaving. An outside mutation review found it
    untested: `client_disconnect` written for both passed every test."""
    arrived = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        arrived.set()
        await asyncio.sleep(10)  # no head before the drain ends (cancelled when cut)
        return web.Response(body=b"{}", content_type="application/json")

    url = await upstream(handler, handler_cancellation=True)
    async with cli_proxy(url, "--drain-timeout", "1") as (child, proxy_url, _):
        _, writer = await asyncio.open_connection(proxy_url.host, proxy_url.port)
        writer.write(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        await asyncio.wait_for(arrived.wait(), 5)
        child.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(child.communicate(), 10)
        writer.close()
    assert child.returncode == 0
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    records = [(e["status"], e.get("error")) for e in lines if e["event"] == "request_end"]
    assert records == [(499, "shutdown")], records  # before: client_disconnect


def _sigterm_then_sighups(workers: str) -> tuple[int, int]:
    """`serve`: SIGTERM as soon as it has started, then a SIGHUP every 10 ms until it exits
    (bounded: 10 s). Its exit status, and how many SIGHUPs it got. A plain Popen in a thread:
    asyncio's child watcher once reported an unknown child (255) for a process signalled so."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSE_AUDIT_")}
    argv = [sys.executable, "-m", "sse_audit_proxy", "serve", "--upstream", "http://127.0.0.1:9"]
    argv += ["--port", "0", "--metrics-port", "0", "--workers", workers, "--drain-timeout", "1"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env) as proc:
        try:
            assert proc.stdout is not None and b"proxy_started" in proc.stdout.readline()
            proc.send_signal(signal.SIGTERM)
            hups = 0
            for _ in range(1000):
                if proc.poll() is not None:
                    break
                proc.send_signal(signal.SIGHUP)
                hups += 1
                time.sleep(0.01)
            return proc.wait(10), hups
        finally:
            proc.kill()


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_a_sigterm_at_once_and_sighups_during_the_shutdown_leave_exit_status_0(workers: str) -> None:
    """A SIGHUP re-reads the canary share while serving; one that came late in a shutdown (a
    config reloader during a rollout) found its handler gone with the loop and ended the
    drained process with SIGHUP instead of 0. With --workers, the parent installed its
    handlers after logging `proxy_started`: a SIGTERM right then ended it with the default
    action (-15)."""
    code, hups = await asyncio.to_thread(_sigterm_then_sighups, workers)
    assert code == 0 and hups >= 1, (code, hups)


@pytest.mark.hostile
async def test_sigterm_closes_an_idle_kept_alive_connection_at_once_while_a_stream_drains(
    upstream: Any, http: aiohttp.ClientSession
) -> None:
    """SIGTERM with a stream in flight: a kept-alive client connection that has had its answer
    and sends nothing is closed at once, cleanly (the client reads the end of it, and opens a
    new connection elsewhere), not held until the drain ends and then reset. An outside
    mutation review found this untested."""
    frames = [chunk(f"t{i}") for i in range(30)] + [chunk(None, "stop"), b"data: [DONE]\n\n"]
    streaming = streaming_handler(frames, Tally(), delay=0.1)  # ~3 s

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.method == "GET":
            return web.json_response({"object": "list", "data": []})
        return await streaming(request)

    url = await upstream(handler)
    async with cli_proxy(url, "--drain-timeout", "5") as (child, proxy_url, _):
        reader, writer = await asyncio.open_connection(proxy_url.host, proxy_url.port)
        writer.write(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")  # kept alive
        head, body = await asyncio.wait_for(read_response(reader), 5)
        assert head.startswith(b"HTTP/1.1 200") and b'"list"' in body
        long = await http.post(
            proxy_url / CHAT.lstrip("/"), json={"model": "long", "stream": True, "messages": []}
        )
        await read_frames(long, 1)

        child.send_signal(signal.SIGTERM)
        try:
            end = await asyncio.wait_for(reader.read(65536), 1.5)
        except TimeoutError:
            end = b"<still open 1.5 s after SIGTERM>"
        writer.close()
        assert end == b"", end  # a clean end of stream (a reset raises ConnectionResetError)
        assert (await long.content.read()).endswith(b"data: [DONE]\n\n")  # the stream drained
        assert await asyncio.wait_for(child.wait(), 10) == 0
