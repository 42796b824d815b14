"""`sse-audit-proxy bench --smoke`: the benchmark runs end to end and reports sane fields.

It checks that the harness works (processes start, streams flow, CPU and memory are read,
the table and JSON are written), never how fast anything is: speed is the benchmark's
business, measured on a quiet machine, not a test's.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path
from typing import Any

import orjson
from cli_process import serve_process
from yarl import URL

from sse_audit_proxy.bench.workloads import SMOKE, sse_frames

WORKLOADS = ("latency", "throughput", "memory")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run_bench(*args: str, timeout: float = 150.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sse_audit_proxy", "bench", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


async def test_smoke_bench_measures_direct_proxy_workers_and_another_proxy(tmp_path: Path) -> None:
    gateway_port = free_port()
    report_path = tmp_path / "bench.json"
    # Another proxy in the table: the real `serve` command, in front of the bench's gateway.
    async with serve_process(URL(f"http://127.0.0.1:{gateway_port}")) as other:
        code, out, err = await run_bench(
            "--smoke", "--pin", "--workers", "1,2", "--gateway-port", str(gateway_port),
            "--against", f"other={other.url}", "--against-pid", str(other.proc.pid),
            "--json", str(report_path))
    assert code == 0, err[-2000:]

    header = out.splitlines()[0].split()
    assert header == ["workload", "metric", "direct", "proxy", "proxy", "x2", "other"]
    for row in ("frame latency p99 (ms)", "added latency p99 (ms)", "added TTFT p50 (ms)",
                "frames/s per proxy core", "bottleneck", "frames/s vs 1 worker",
                "RSS per open stream (KiB, max)"):
        assert row in out, row

    report = orjson.loads(report_path.read_bytes())
    assert [t["name"] for t in report["targets"]] == ["direct", "proxy", "proxy x2", "other"]
    assert report["options"]["smoke"] is True
    assert len(report["machine"]["load_average_before"]) == 3
    runs, summary = report["runs"], report["summary"]
    for workload in WORKLOADS:
        w = SMOKE[workload]
        for name, target_runs in runs[workload].items():
            if workload == "memory" and name == "direct":
                assert target_runs == []  # no proxy, no proxy memory
                continue
            (run,) = target_runs  # --smoke: one repeat
            assert run["streams_ok"] == w.streams and run["streams_failed"] == 0, (workload, run)
            assert run["frames"] == run["frames_expected"] == w.streams * sse_frames(w.frames)
            if name.startswith("proxy"):
                # The proxy audited every bench stream and judged each one complete.
                assert run["proxy_verdicts"] == {"complete": w.streams}, run

    latency = summary["latency"]
    for name in ("direct", "proxy", "proxy x2", "other"):
        assert latency[name]["samples"] == SMOKE["latency"].streams * (SMOKE["latency"].frames + 3)
        assert 0 <= latency[name]["latency_p50_ms"] <= latency[name]["latency_p99_ms"]
        assert latency[name]["ttft_p50_ms"] > 0
    assert number(latency["proxy"]["added_latency_p99_ms"])
    assert number(latency["other"]["added_ttft_p50_ms"])

    throughput = summary["throughput"]
    assert throughput["direct"]["frames_per_s"] > 0
    assert "frames_per_core_s" not in throughput["direct"]  # no process of its own to account
    for name in ("proxy", "proxy x2", "other"):
        t = throughput[name]
        assert t["target_cpu_s"] > 0 and t["frames_per_core_s"] > 0
        assert t["cpu_s_per_million_frames"] > 0
        assert t["bottleneck"] in ("proxy", "harness", "proxy+harness", "none")
    assert number(throughput["proxy x2"]["scaling"])

    memory = summary["memory"]
    for name in ("proxy", "proxy x2", "other"):
        assert 0 <= memory[name]["open_at_sample"] <= SMOKE["memory"].streams
        assert memory[name]["rss_open_bytes"] > 0
        assert "rss_per_stream_kib" in memory[name]


async def test_bench_refuses_an_unknown_workload_in_one_line() -> None:
    code, _, err = await run_bench("--workloads", "latency,speed", timeout=30.0)
    assert code == 2
    assert err.strip().startswith("sse-audit-proxy: error:") and len(err.strip().splitlines()) == 1
    assert "speed" in err
