"""`sse-audit-proxy bench --smoke`: the benchmark runs end to end and reports sane fields.

It checks that the harness works (processes start, streams flow, CPU and memory are read,
the table and JSON are written), never how fast anything is: speed is the benchmark's
business, measured on a quiet machine, not a test's.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from cli_process import serve_process
from yarl import URL

from sse_audit_proxy.cli.main import main
from sse_audit_proxy.tools.bench import nginx, procs
from sse_audit_proxy.tools.bench.client import Batch
from sse_audit_proxy.tools.bench.harness import Target, _Snapshot, split
from sse_audit_proxy.tools.bench.report import HEADLINE, cpu_ratios_by_repeat, headline, spread_lines
from sse_audit_proxy.tools.bench.workloads import SMOKE, sse_frames

WORKLOADS = ("latency", "throughput", "memory")
BENCH_PAGE = Path(__file__).resolve().parents[2] / "docs/tools/bench.md"
HEADLINE_HEADER = [
    "target",
    "CPU s / 1M paced frames",
    "x nginx",
    "memory / open stream (KiB)",
    "added TTFT p50 (ms)",
    "added p99 frame latency (ms)",
    "batched frames/s per core",
]
needs_nginx = pytest.mark.skipif(
    nginx.find() is None, reason="nginx is not installed (apt-get install -y nginx-light)"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run_bench(*args: str, timeout: float = 150.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sse_audit_proxy",
        "bench",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def split_output(out: str) -> tuple[list[str], list[str]]:
    """The headline table's lines and the detailed table's, which follows a blank line."""
    head, _, detail = out.partition("\n\n")
    return head.splitlines(), detail.splitlines()


def headline_rows(lines: list[str]) -> dict[str, list[str]]:
    """Target -> its cells; columns are two or more spaces apart."""
    header = re.split(r"\s{2,}", lines[0].strip())
    assert header == HEADLINE_HEADER, lines[0]
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines[2:]]
    assert all(len(cells) == len(header) for cells in rows), lines
    return {cells[0]: cells[1:] for cells in rows}


async def test_smoke_bench_measures_direct_proxy_workers_and_another_proxy(tmp_path: Path) -> None:
    gateway_port = free_port()
    report_path = tmp_path / "bench.json"
    # Another proxy in the table: the real `serve` command, in front of the bench's gateway.
    async with serve_process(URL(f"http://127.0.0.1:{gateway_port}")) as other:
        code, out, err = await run_bench(
            "--smoke",
            "--pin",
            "--workers",
            "1,2",
            "--gateway-port",
            str(gateway_port),
            "--against",
            f"other={other.url}",
            "--against-pid",
            str(other.proc.pid),
            "--json",
            str(report_path),
        )
    assert code == 0, err[-2000:]

    head_lines, detail = split_output(out)
    assert list(headline_rows(head_lines)) == ["direct", "proxy", "proxy x2", "other"]
    assert detail[0].split() == ["workload", "metric", "direct", "proxy", "proxy", "x2", "other"]
    for row in (
        "frame latency p99 (ms)",
        "added latency p99 (ms)",
        "added TTFT p50 (ms)",
        "frames/s per proxy core",
        "bottleneck",
        "frames/s vs 1 worker",
        "RSS per open stream (KiB, max)",
    ):
        assert row in "\n".join(detail), row

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

    # The headline carries each target's figures from the summary; with neither nginx nor a
    # baseline in the run there is nothing to divide by.
    head = report["headline"]
    assert head["reference"] is None
    assert all(v is None for v in head["targets"]["direct"].values())
    for name in ("proxy", "proxy x2", "other"):
        row = head["targets"][name]
        assert row["cpu_s_per_million_paced_frames"] == latency[name]["cpu_us_per_frame"] > 0
        # A paced frame costs far more than 1 µs and far less than a second of CPU.
        assert 1 < row["cpu_s_per_million_paced_frames"] < 1e6
        assert row["batched_frames_per_core_s"] == throughput[name]["frames_per_core_s"] > 0
        assert row["rss_per_open_stream_kib"] == memory[name]["rss_per_stream_kib"]
        assert row["added_latency_p99_ms"] == latency[name]["added_latency_p99_ms"]
        assert row["added_ttft_p50_ms"] == latency[name]["added_ttft_p50_ms"]
        assert row["cpu_vs_reference"] is None and row["rss_vs_reference"] is None


@needs_nginx
async def test_smoke_bench_starts_nginx_side_by_side_and_divides_by_it(tmp_path: Path) -> None:
    report_path = tmp_path / "bench.json"
    code, out, err = await run_bench("--smoke", "--pin", "--against", "nginx", "--json", str(report_path))
    assert code == 0, err[-2000:]
    report = orjson.loads(report_path.read_bytes())
    assert [(t["name"], t["kind"]) for t in report["targets"]] == [
        ("direct", "direct"),
        ("proxy", "proxy"),
        ("nginx", "nginx"),
    ]
    for workload in WORKLOADS:
        w = SMOKE[workload]
        (run,) = report["runs"][workload]["nginx"]
        # nginx relayed every stream whole, and its own processes were accounted.
        assert run["streams_ok"] == w.streams and run["streams_failed"] == 0, (workload, run)
        assert run["frames"] == run["frames_expected"] == w.streams * sse_frames(w.frames)
        assert run["target_cpu_s"] > 0
    assert report["summary"]["memory"]["nginx"]["rss_open_bytes"] > 0

    head = report["headline"]
    assert head["reference"] == "nginx"
    rows = head["targets"]
    ours, theirs = rows["proxy"], rows["nginx"]
    assert theirs["cpu_s_per_million_paced_frames"] > 0 and theirs["cpu_vs_reference"] == 1.0
    assert ours["cpu_vs_reference"] == round(
        ours["cpu_s_per_million_paced_frames"] / theirs["cpu_s_per_million_paced_frames"], 3
    )
    # On a loaded machine the smoke memory sample can fall where no stream is open: then there
    # is no per-stream figure, and the ratio must say so rather than divide by nothing.
    if number(ours["rss_per_open_stream_kib"]) and number(theirs["rss_per_open_stream_kib"]):
        assert ours["rss_vs_reference"] == round(
            ours["rss_per_open_stream_kib"] / theirs["rss_per_open_stream_kib"], 3
        )
    else:
        assert ours["rss_vs_reference"] is None
    assert theirs["batched_frames_per_core_s"] > 0
    assert number(theirs["added_latency_p99_ms"]) and number(theirs["added_ttft_p50_ms"])

    # The one repeat's own ratio, from its runs (a smoke run prints no spread line: one value).
    (theirs_run,), (ours_run,) = report["runs"]["latency"]["nginx"], report["runs"]["latency"]["proxy"]
    assert head["cpu_vs_reference_by_repeat"] == {
        "proxy": [round(ours_run["cpu_us_per_frame"] / theirs_run["cpu_us_per_frame"], 2)]
    }
    assert "per repeat" not in out

    # The printed headline shows the same figures, the ratio under `x nginx`.
    table = headline_rows(split_output(out)[0])
    assert list(table) == ["direct", "proxy", "nginx"]
    assert float(table["proxy"][1]) == pytest.approx(ours["cpu_vs_reference"], abs=1e-3)
    assert table["nginx"][1] == "1.000"
    # nginx was stopped and its directory removed.
    assert not [
        p for p in Path("/proc").iterdir() if p.name.isdigit() and b"sse-audit-bench-nginx-" in _cmdline(p)
    ]
    assert not any(Path(os.environ.get("TMPDIR", "/tmp")).glob("sse-audit-bench-nginx-*"))


@needs_nginx
async def test_at_once_loads_every_target_in_the_same_moment(tmp_path: Path) -> None:
    report_path = tmp_path / "bench.json"
    code, out, err = await run_bench(
        "--smoke",
        "--pin",
        "--workloads",
        "latency",
        "--at-once",
        "--latency-frames",
        "3",
        "--against",
        "nginx",
        "--json",
        str(report_path),
    )
    assert code == 0, err[-2000:]
    report = orjson.loads(report_path.read_bytes())
    assert report["options"]["at_once"] is True
    assert report["workloads"]["latency"]["frames"] == 3  # --latency-frames
    runs = {name: by[0] for name, by in report["runs"]["latency"].items()}
    assert set(runs) == {"direct", "proxy", "nginx"}
    w = SMOKE["latency"]
    for name, run in runs.items():
        assert run["streams_ok"] == w.streams, (name, run)
        assert run["frames"] == run["frames_expected"] == w.streams * sse_frames(3), (name, run)
    # Every target's streams ran while every other's did: the spans overlap.
    starts, ends = [r["span"][0] for r in runs.values()], [r["span"][1] for r in runs.values()]
    assert max(starts) < min(ends), runs
    # Each target's CPU is its own: ours and nginx's both measured, over their own frames.
    assert runs["proxy"]["target_cpu_s"] > 0 and runs["nginx"]["target_cpu_s"] > 0
    assert runs["proxy"]["proxy_verdicts"] == {"complete": w.streams}
    assert "latency: all targets at once" in out


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


def test_the_bench_page_shows_the_nginx_template_verbatim() -> None:
    assert f"```nginx\n{nginx.TEMPLATE}```" in BENCH_PAGE.read_text()


def test_the_nginx_config_fills_both_placeholders() -> None:
    conf = nginx.render("127.0.0.1:18000", "127.0.0.1:18081")
    assert "@" not in conf
    assert "server 127.0.0.1:18000; keepalive" in conf
    assert "listen 127.0.0.1:18081 backlog" in conf
    for line in ("proxy_buffering off;", "proxy_http_version 1.1;", "access_log off;", "worker_processes 1;"):
        assert line in conf, line


@needs_nginx
def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx.render("127.0.0.1:18000", "127.0.0.1:18081"))
    binary = nginx.find()
    assert binary is not None
    done = subprocess.run(
        [binary, "-t", "-p", f"{tmp_path}/", "-c", str(conf)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert "syntax is ok" in done.stderr
    # A broken copy is refused: the check can fail.
    conf.write_text(nginx.render("127.0.0.1:18000", "127.0.0.1:18081").replace(";", "", 1))
    done = subprocess.run(
        [binary, "-t", "-p", f"{tmp_path}/", "-c", str(conf)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode != 0


def test_against_nginx_without_nginx_fails_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(nginx, "find", lambda: None)
    assert main(["bench", "--smoke", "--against", "nginx"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sse-audit-proxy: error:") and len(err.splitlines()) == 1
    assert "nginx is not installed" in err and "apt-get install" in err


def _summary(cpu: dict[str, float], kib: dict[str, float]) -> dict[str, dict[str, dict[str, Any]]]:
    return {
        "latency": {
            n: {"cpu_us_per_frame": v, "added_latency_p99_ms": 0.5, "added_ttft_p50_ms": 1.0}
            for n, v in cpu.items()
        },
        "memory": {n: {"rss_per_stream_kib": v} for n, v in kib.items()},
        "throughput": {n: {"frames_per_core_s": 1000} for n in cpu},
    }


def test_headline_divides_by_nginx_else_by_the_baseline() -> None:
    proxy, base = Target("proxy", "proxy"), Target("baseline", "proxy", source="/x")
    started = Target("nginx", "nginx")
    summary = _summary(
        {"proxy": 60.0, "baseline": 40.0, "nginx": 20.0}, {"proxy": 30.0, "baseline": 30.0, "nginx": 15.0}
    )
    head = headline(summary, [Target("direct", "direct"), proxy, base, started])
    assert head["reference"] == "nginx"
    assert head["targets"]["proxy"]["cpu_vs_reference"] == 3.0
    assert head["targets"]["proxy"]["rss_vs_reference"] == 2.0
    assert head["targets"]["baseline"]["cpu_vs_reference"] == 2.0
    assert head["targets"]["direct"]["cpu_vs_reference"] is None
    assert set(head["targets"]["proxy"]) == {f for f, *_ in HEADLINE} | {"rss_vs_reference"}

    head = headline(summary, [proxy, base])
    assert head["reference"] == "baseline"
    assert head["targets"]["proxy"]["cpu_vs_reference"] == 1.5


def test_cpu_ratios_pair_each_repeat_with_the_reference_in_the_same_repeat() -> None:
    def runs(*cpu: float | None) -> list[dict[str, Any]]:
        return [{"cpu_us_per_frame": v} for v in cpu]

    results = {
        "latency": {
            "direct": runs(None, None, None),
            "proxy": runs(30.0, 60.0, 33.0),
            "baseline": runs(40.0, None, 44.0),  # a failed run has no figure: left out
            "nginx": runs(20.0, 30.0, 22.0),
        },
        "memory": {"proxy": [{"rss_per_stream_kib": 10.0}]},
    }
    ratios = cpu_ratios_by_repeat(results, "nginx")
    # Paired per repeat, not the ratio of medians: repeat 2's 60 is over repeat 2's 30.
    assert ratios == {"proxy": [1.5, 2.0, 1.5], "baseline": [2.0, 2.0]}
    assert spread_lines(ratios, "nginx") == [
        "x nginx per repeat (CPU per paced frame), proxy: 1.50, 1.50, 2.00 (median 1.50)",
        "x nginx per repeat (CPU per paced frame), baseline: 2.00, 2.00 (median 2.00)",
    ]
    assert cpu_ratios_by_repeat(results, None) == {}
    assert spread_lines({"proxy": [1.5]}, "nginx") == []  # one repeat: the headline says it all


async def test_bench_refuses_an_unknown_workload_in_one_line() -> None:
    code, _, err = await run_bench("--workloads", "latency,speed", timeout=30.0)
    assert code == 2
    assert err.strip().startswith("sse-audit-proxy: error:") and len(err.strip().splitlines()) == 1
    assert "speed" in err


@pytest.mark.parametrize(("streams", "processes"), [(50, 2), (51, 2), (50, 3), (7, 4), (1, 2), (3, 1)])
def test_split_keeps_the_batchs_starts_evenly_spaced_across_the_client_processes(
    streams: int, processes: int
) -> None:
    """Each process starts its streams `open_over / streams` apart (client.run_batch): dealt
    in turn, the batch's starts stay one step apart. They had come two at an instant."""
    batch = Batch("127.0.0.1", 1, "/v1/chat/completions", streams, 1, 20.0, 0.0, False, 0.0, 0.02 * streams)
    starts = []
    for share in split(batch, processes):
        step = share.open_over / share.streams if share.streams else 0.0
        starts += [share.offset + j * step for j in range(share.streams)]
    assert sorted(starts) == pytest.approx([k * 0.02 for k in range(streams)])


async def test_at_once_without_the_latency_workload_is_refused_in_one_line() -> None:
    code, _, err = await run_bench("--at-once", "--workloads", "memory,throughput", timeout=30.0)
    assert code == 2
    assert err.strip().startswith("sse-audit-proxy: error:") and len(err.strip().splitlines()) == 1
    assert "--at-once" in err and "latency" in err


def test_a_target_process_gone_during_a_run_has_no_cpu_figure() -> None:
    """A process that ended has no CPU to read: counted as 0, a target that died mid-run came
    out at minus what it had spent (an outside review: nginx at -692 µs a frame)."""
    snap = _Snapshot(
        tree=[11, 12], gateway_tree=[20], rss_idle=0, load=(0.0, 0.0, 0.0), before={11: 1.0, 12: 2.0, 20: 5.0}
    )
    alive = snap.usage({11: 1.5, 12: 2.25, 20: 6.0}, clients=0.0)
    assert (
        not alive.target_gone
        and alive.target_total == pytest.approx(0.75)
        and alive.gateway == pytest.approx(1.0)
    )
    gone = snap.usage({11: 1.5, 20: 6.0}, clients=0.0)
    assert gone.target_gone
    ended = subprocess.Popen(["true"])
    ended.wait()
    assert procs.cpu_by_pid([ended.pid, os.getpid()]).keys() == {os.getpid()}  # no figure for it
