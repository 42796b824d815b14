"""`serve --workers N`: processes share the port, and the metrics port speaks for all of them."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from datetime import datetime, timedelta

import aiohttp
import pytest
from cli_process import serve_process
from demo_client import FAST, TOKENS, send
from prometheus_client.parser import text_string_to_metric_families

from tests.reliability_support import CHAT, DONE, STREAM_BODY, Tally, chunk, streaming_handler

STREAMS = 40
FRAMES = TOKENS + 4  # role chunk, tokens, finish, usage, [DONE]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and want <= ls)


async def scrape(http: aiohttp.ClientSession, metrics_url) -> str:
    async with http.get(metrics_url / "metrics") as resp:
        assert resp.status == 200
        return await resp.text()


async def spread_streams(url, n: int, prefix: str) -> None:
    # A fresh connection per request: SO_REUSEPORT balances connections, not requests.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:
        gate = asyncio.Semaphore(10)

        async def one(i: int) -> None:
            async with gate:
                assert await send(fresh, url, "healthy", trace_id=f"{prefix}{i}") == 200

        await asyncio.gather(*(one(i) for i in range(n)))


async def recent(http: aiohttp.ClientSession, metrics_url) -> dict:
    async with http.get(metrics_url / "streams/recent", params={"limit": "1000"}) as resp:
        assert resp.status == 200
        return await resp.json()


async def replaced(http: aiohttp.ClientSession, metrics_url, gone: set[int], workers: int) -> None:
    """Wait (20 s at most) until the killed workers are replaced and all are ready."""
    async with asyncio.timeout(20):
        while True:
            await asyncio.sleep(0.2)
            async with http.get(metrics_url / "readyz") as resp:
                if resp.status != 200:
                    continue
            pids = {w["pid"] for w in (await recent(http, metrics_url))["workers"]}
            if not pids & gone and len(pids) == workers:
                return


async def test_workers_share_the_port_and_metrics_add_up_across_them(demo_gateway, http) -> None:
    async with serve_process(await demo_gateway(**FAST), "--workers", "2") as served:
        assert served.started["workers"] == 2
        await spread_streams(served.url, STREAMS, "w")

        answer = await recent(http, served.metrics_url)
        held = {w["pid"]: w["held"] for w in answer["workers"]}
        assert len(held) == 2 and all(n > 0 for n in held.values()), held  # both relayed some
        assert sum(held.values()) == STREAMS
        assert len(answer["streams"]) == STREAMS
        async with http.get(served.metrics_url / "streams/w7") as resp:
            assert (await resp.json())["streams"][0]["outcome"] == "complete"

        found = samples(await scrape(http, served.metrics_url))
        assert total(found, "sse_audit_streams_total", outcome="complete") == STREAMS
        assert total(found, "sse_audit_requests_total", status="200") == STREAMS
        # Pre-bucketed gaps go through histogram internals: exact counts across workers.
        gaps = STREAMS * (FRAMES - 1)
        assert total(found, "sse_audit_inter_chunk_gap_seconds_count") == gaps
        assert total(found, "sse_audit_inter_chunk_gap_seconds_bucket", le="+Inf") == gaps
        assert total(found, "sse_audit_inter_chunk_gap_seconds_sum") > 0
        assert total(found, "sse_audit_time_to_first_token_seconds_count") == STREAMS
        assert total(found, "sse_audit_usage_tokens_total", type="completion") == TOKENS * STREAMS
        assert total(found, "sse_audit_active_streams") == 0
        assert total(found, "sse_audit_worker_exits_total") == 0  # there from the start

        # Workers that die are replaced, those that died together at once (one by one, their
        # exits were seen and logged a restart apart); their counts stay in the totals.
        for victim in held:
            os.kill(victim, signal.SIGKILL)
        await replaced(http, served.metrics_url, set(held), 2)
        exits = [line for line in served.lines if line.get("event") == "worker_exited"]
        assert sorted(line["pid"] for line in exits) == sorted(held)
        assert abs(
            datetime.fromisoformat(exits[0]["timestamp"]) - datetime.fromisoformat(exits[1]["timestamp"])
        ) < timedelta(seconds=0.5)
        await spread_streams(served.url, 10, "after")
        found = samples(await scrape(http, served.metrics_url))
        assert total(found, "sse_audit_streams_total", outcome="complete") == STREAMS + 10
        # Their cut streams have no records: the supervisor counts the deaths (an outside review).
        assert total(found, "sse_audit_worker_exits_total") == 2

        assert await served.stop() == 0


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool missing: .ci/run installs Debian's prometheus package"
)
async def test_every_start_line_names_the_supervisors_metrics_url_and_the_canary(demo_gateway, http) -> None:
    """A worker's `proxy_started` named its private port `metrics`, and came first: a reader who
    took the first line's URL scraped one worker's share (an outside review of the docs). Each
    names the supervisor's now, and its own port `worker_admin`."""
    gateway = await demo_gateway(**FAST)
    args = ("--workers", "2", "--canary", str(gateway), "--canary-percent", "5", "--canary-guard")
    async with serve_process(gateway, *args) as served:
        started = [line for line in served.lines if line["event"] == "proxy_started"]
        workers = [line for line in started if "worker" in line]
        assert len(started) == 3 and len(workers) == 2
        supervisor = served.started
        assert all(line["metrics"] == supervisor["metrics"] for line in workers)
        admins = {line["worker_admin"] for line in workers}
        assert len(admins) == 2 and supervisor["metrics"].removesuffix("/metrics") not in admins
        assert supervisor["canary"] == str(gateway).rstrip("/") and supervisor["canary_percent"] == 5.0
        assert (supervisor["canary_name"], supervisor["upstream_name"]) == ("canary", "baseline")
        assert supervisor["canary_guard"] is True
        # The supervisor's URL speaks for both workers; a worker's admin port for itself alone.
        await spread_streams(served.url, 12, "s")
        answer = await recent(http, served.metrics_url)
        assert len(answer["streams"]) == 12


async def test_the_supervisors_start_line_gives_the_percent_files_share(demo_gateway, tmp_path) -> None:
    """It gave the flag's share, 0, while the workers had read the file's (a second review)."""
    gateway = await demo_gateway(**FAST)
    percent = tmp_path / "canary-percent"
    percent.write_text("10\n")
    args = ("--workers", "2", "--canary", str(gateway), "--canary-percent-file", str(percent))
    async with serve_process(gateway, *args) as served:
        started = [line for line in served.lines if line["event"] == "proxy_started"]
        assert [line["canary_percent"] for line in started] == [10.0, 10.0, 10.0]


async def test_merged_worker_metrics_pass_promtool_check_metrics(demo_gateway, http) -> None:
    async with serve_process(await demo_gateway(**FAST), "--workers", "2") as served:
        for scenario in ("healthy", "truncated", "buffered", "http-429"):
            await send(http, served.url, scenario)
        text = await scrape(http, served.metrics_url)
        await served.stop()
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "sse_audit_streams_total" in text


async def test_workers_with_a_taken_port_is_a_one_line_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sse_audit_proxy",
            "serve",
            "--upstream",
            "http://127.0.0.1:1",
            "--port",
            str(port),
            "--metrics-port",
            "0",
            "--workers",
            "2",
            stderr=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode != 0
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "address already in use" in lines[0], err


async def test_a_replaced_worker_adds_no_model_labels_past_the_cap(demo_gateway, http) -> None:
    """A replacement started with empty label caps while the dead worker's series stayed in the
    merged totals: each restart added another --max-models worth of `model` values, without
    end (outside review: 8, 13, 18, ... 33 over five restarts at a cap of 5)."""

    def models(text: str) -> set[str]:
        families = text_string_to_metric_families(text)
        return {s.labels["model"] for f in families for s in f.samples if "model" in s.labels}

    async def spread_models(prefix: str) -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:
            for i in range(20):  # a connection each: both workers get some (fill their caps)
                assert await send(fresh, served.url, "healthy", model=f"{prefix}-{i}") == 200

    async with serve_process(await demo_gateway(**FAST), "--workers", "2", "--max-models", "3") as served:
        await spread_models("before")
        first = models(await scrape(http, served.metrics_url))
        assert 3 < len(first - {"other"}) <= 6  # each worker's cap: 3
        pids = [w["pid"] for w in (await recent(http, served.metrics_url))["workers"]]
        os.kill(pids[0], signal.SIGKILL)
        await replaced(http, served.metrics_url, {pids[0]}, 2)
        await spread_models("after")
        after = models(await scrape(http, served.metrics_url))
        assert after == first  # the replacement took up the cap where the dead worker left it
        assert await served.stop() == 0


async def test_sigterm_to_the_supervisor_lets_a_worker_finish_its_stream(upstream, http) -> None:
    """SIGTERM to `serve --workers 2` is passed on to each worker as SIGTERM, so a worker drains:
    a stream in flight (2 s long, well inside --drain-timeout 5) reaches its client whole, with
    its `[DONE]`, and its record says `complete`. A worker killed instead (SIGKILL) cut it with
    no record at all. An outside mutation review found this untested."""
    tally = Tally()
    frames = [chunk(f"t{i}") for i in range(20)] + [chunk(None, "stop"), DONE]  # 0.1 s apart: ~2 s
    url = await upstream(streaming_handler(frames, tally, delay=0.1))
    async with serve_process(url, "--workers", "2", "--drain-timeout", "5") as served:
        async with http.post(served.url / CHAT.lstrip("/"), json=STREAM_BODY) as resp:
            assert resp.status == 200
            first = await asyncio.wait_for(resp.content.readany(), 10)
            assert first.startswith(b"data: ")  # the stream is running in a worker
            served.proc.send_signal(signal.SIGTERM)
            rest = await asyncio.wait_for(resp.content.read(), 10)
        assert (first + rest).endswith(DONE)
        assert await asyncio.wait_for(served.proc.wait(), 15) == 0
        for _ in range(100):  # the stdout reader takes the last lines (5 s at most)
            ends = [line for line in served.lines if line.get("event") == "stream_end"]
            if ends:
                break
            await asyncio.sleep(0.05)
    assert [(e["outcome"], e["done"]) for e in ends] == [("complete", True)], ends


async def test_a_worker_that_died_just_before_the_shutdown_is_still_logged(demo_gateway, http) -> None:
    """A worker killed a moment before SIGTERM reached the supervisor (the watcher's look not yet
    made) left no `worker_exited` line (a second review)."""
    async with serve_process(await demo_gateway(**FAST), "--workers", "2") as served:
        victim = (await recent(http, served.metrics_url))["workers"][0]["pid"]
        os.kill(victim, signal.SIGKILL)
        await asyncio.sleep(0.05)
        served.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(served.proc.wait(), 20)
        for _ in range(100):  # the stdout reader takes the last lines (5 s at most)
            if any(line.get("event") == "proxy_stopped" for line in served.lines):
                break
            await asyncio.sleep(0.05)
    exits = [line for line in served.lines if line.get("event") == "worker_exited"]
    assert [line["pid"] for line in exits] == [victim], served.lines[-8:]
