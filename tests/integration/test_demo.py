"""`sse-audit-proxy demo` as a person runs it: a real subprocess, its output read as it comes."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time

import aiohttp

# Fast, but tokens still 10 ms apart: the verdicts stay the documented ones.
FAST = [
    "--ttft",
    "0.02",
    "--tokens-per-second",
    "100",
    "--fault-delay",
    "0.3",
    "--idle-timeout",
    "1",
    "--refresh",
    "0.5",
]


class Demo:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    @classmethod
    async def start(cls, *args: str) -> Demo:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sse_audit_proxy",
            "demo",
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def until(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        """Read output lines until one matches `pattern`."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), max(0.1, deadline - time.monotonic()))
            if not line:
                raise AssertionError(f"demo ended without {pattern!r}:\n" + "".join(self.lines))
            self.lines.append(line.decode())
            found = re.search(pattern, self.lines[-1])
            if found:
                return found

    async def finish(self, timeout: float = 20) -> tuple[int, str, str]:
        out, err = await asyncio.wait_for(self.proc.communicate(), timeout)
        assert self.proc.returncode is not None
        return self.proc.returncode, "".join(self.lines) + out.decode(), err.decode()

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


async def test_demo_prints_its_urls_first_serves_traffic_and_ends_with_a_summary() -> None:
    demo = await Demo.start("--duration", "3", "--rate", "20", "--concurrency", "8", *FAST)
    try:
        proxy = (await demo.until(r"^  proxy\s+(http://\S+)")).group(1)
        metrics = (await demo.until(r"^  metrics\s+(http://\S+)")).group(1)
        inspector = (await demo.until(r"^  inspector\s+(http://\S+)")).group(1)
        assert demo.lines[0].startswith("sse-audit-proxy demo")
        await demo.until(r"^\[\s*\d+\.\d+s\] streams [1-9]")  # a plain line: stdout is a pipe
        async with aiohttp.ClientSession() as http:
            async with http.get(metrics) as resp:
                exposition = await resp.text()
            async with http.get(inspector) as resp:  # the page the demo points people to
                assert resp.status == 200 and resp.content_type == "text/html"
                assert "recent streams" in await resp.text()
            async with http.get(proxy + "/v1/models") as resp:
                assert resp.status == 200  # the proxy forwards to the demo gateway
        assert (
            'sse_audit_streams_total{model="demo-healthy",outcome="complete",'
            'route="chat_completions",upstream="baseline"}' in exposition
        )
        code, out, err = await demo.finish()
    finally:
        demo.kill()
    assert code == 0, err
    summary = out[out.index("summary:") :]
    assert re.search(r"summary: \d+ streams audited by the proxy", summary)
    rows = dict(re.findall(r"^\s+(demo-[a-z0-9-]+)\s+\d+\s+.*?(\d+/\d+)", summary, re.M))
    assert {"demo-healthy", "demo-buffered", "demo-truncated"} <= set(rows)
    for model, ratio in rows.items():
        done, checked = ratio.split("/")
        assert done == checked, f"{model} verdicts differ from the scenario table: {ratio}"
    assert "the client saw:" in summary


async def test_ctrl_c_stops_the_demo_cleanly_with_a_summary() -> None:
    demo = await Demo.start("--rate", "10", *FAST)
    try:
        await demo.until(r"^\[\s*\d+\.\d+s\] streams [1-9]")
        demo.proc.send_signal(signal.SIGINT)
        code, out, err = await demo.finish(timeout=15)
    finally:
        demo.kill()
    assert code == 0, err
    assert "summary:" in out and "Traceback" not in err


async def test_no_traffic_demo_audits_a_client_of_your_own() -> None:
    demo = await Demo.start("--no-traffic", "--duration", "2", *FAST)
    try:
        proxy = (await demo.until(r"^  proxy\s+(http://\S+)")).group(1)
        body = {"model": "demo-no-done", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                proxy + "/v1/chat/completions", json=body, headers={"X-Client-Request-Id": "mine-1"}
            ) as resp,
        ):
            await resp.read()
        code, out, err = await demo.finish()
    finally:
        demo.kill()
    assert code == 0, err
    assert "summary: 1 streams audited" in out
    assert re.search(r"demo-no-done\s+1\s+truncated \+ missing_done\s+-", out)


async def test_demo_refuses_a_fault_delay_longer_than_the_idle_timeout() -> None:
    demo = await Demo.start("--fault-delay", "5", "--idle-timeout", "2")
    code, _, err = await demo.finish()
    assert code == 2
    assert err.strip().count("\n") == 0 and "--fault-delay" in err


async def test_demo_canary_shows_the_guard_tripping_and_no_canary_stream_after_it() -> None:
    demo = await Demo.start(
        "--canary", "buffered", "--duration", "8", "--rate", "20", "--concurrency", "8", *FAST
    )
    try:
        header = await demo.until(r"^  canary\s+(http://\S+)\s+plays `buffered`")
        assert header.group(1)
        trip = await demo.until(
            r"canary TRIPPED at [\d.]+s: (\w+), canary ([\d.]+)% bad vs "
            r"baseline ([\d.]+)% \((\d+) vs (\d+) streams\)"
        )
        assert trip.group(1) == "bad_share" and float(trip.group(2)) > float(trip.group(3))
        # the guard's minimum streams, on each side: the side that came to it last trips it
        assert min(int(trip.group(4)), int(trip.group(5))) == 20
        code, out, err = await demo.finish()
    finally:
        demo.kill()
    assert code == 0, err
    # Every refresh after the trip: streams started since then all went to the baseline.
    since = [
        re.search(r"since the trip baseline (\d+), canary (\d+)", line)
        for line in out.splitlines()
        if "since the trip" in line
    ]
    assert since and all(m is not None and m.group(2) == "0" for m in since)
    assert int(since[-1].group(1)) > 0
    summary = out[out.index("summary:") :]
    canary_row = re.search(r"^\s+canary\s+(\d+)\s+\d+\s+(\d+)%.*\s(\d+)$", summary, re.M)
    assert canary_row and canary_row.group(2) == "100" and canary_row.group(3) == "0"
    assert re.search(r"^\s+baseline\s+\d+\s+\d+\s+0%", summary, re.M)
    assert "cut off 0" in out  # the trip cut no stream
