"""`sse-audit-proxy traffic`: the mix, the pacing, and the summary of what the client saw."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from yarl import URL

from sse_audit_proxy.cli import options
from sse_audit_proxy.server.listen import listen
from sse_audit_proxy.tools import traffic
from sse_audit_proxy.tools.gateway import Timing, create_app
from sse_audit_proxy.tools.traffic import TrafficConfig, parse_mix

FAST_HEADERS = [
    "-H",
    "X-Demo-TTFT-Ms: 10",
    "-H",
    "X-Demo-Interval-Ms: 5",
    "-H",
    "X-Demo-Frames: 6",
    "-H",
    "X-Demo-Fault-Ms: 100",
]


async def run_cli(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sse_audit_proxy",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def test_mix_accepts_names_with_or_without_prefix_and_rejects_unknown_ones() -> None:
    assert parse_mix("healthy=8, demo-buffered=1,truncated") == (
        ("healthy", 8),
        ("buffered", 1),
        ("truncated", 1),
    )
    for bad in ("nope=1", "healthy=x", "healthy=-1", "healthy=0"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_mix(bad)


def test_interleave_keeps_the_weights_in_every_cycle_and_spreads_them() -> None:
    mix = (("healthy", 8), ("buffered", 1), ("truncated", 1))
    first = list(itertools.islice(traffic.interleave(mix), 10))
    assert Counter(first) == {"healthy": 8, "buffered": 1, "truncated": 1}
    assert first.index("buffered") not in (first.index("truncated") - 1, first.index("truncated") + 1)


def test_base_url_gets_v1_only_when_it_has_no_path() -> None:
    assert str(options.base_url("http://127.0.0.1:8080")) == "http://127.0.0.1:8080/v1"
    assert str(options.base_url("http://gw/openai/v1")) == "http://gw/openai/v1"


async def test_drive_keeps_to_the_rate_and_the_request_count(demo_gateway: Any) -> None:
    gateway = await demo_gateway(ttft=0.0, interval=0.001, jitter=0.0)
    cfg = TrafficConfig(
        base_url=gateway / "v1", mix=(("healthy", 1),), concurrency=4, rate=20.0, duration=10.0, requests=6
    )
    seen = traffic.Traffic()
    began = asyncio.get_running_loop().time()
    await traffic.drive(cfg, asyncio.Event(), seen)
    took = asyncio.get_running_loop().time() - began
    assert seen.total.n == 6 and seen.total.outcomes == {"complete": 6}
    assert took >= 5 / 20.0  # six starts, 50 ms apart


async def test_traffic_command_reports_what_the_client_saw(demo_gateway: Any, tmp_path: Path) -> None:
    gateway = await demo_gateway()
    report = tmp_path / "summary.json"
    code, out, err = await run_cli(
        "traffic",
        "--base-url",
        str(gateway),
        "--mix",
        "healthy=2,truncated=1,no-usage=1,reset=1,http-500=1,cancel=1",
        "--rate",
        "0",
        "--concurrency",
        "4",
        "--requests",
        "14",
        "--refresh",
        "0.2",
        "--json",
        str(report),
        *FAST_HEADERS,
    )
    assert code == 0, err
    assert "started" in out and "traffic summary: 14 requests" in out
    seen = json.loads(report.read_text())["by_scenario"]
    assert sum(s["requests"] for s in seen.values()) == 14

    def tally(name: str) -> dict[str, Any]:
        return seen[name]  # type: ignore[no-any-return]

    n = tally("healthy")["requests"]
    assert tally("healthy")["done_seen"] == tally("healthy")["usage_seen"] == n == 4
    assert tally("healthy")["verdicts"] == {"complete": n}
    assert tally("truncated")["done_seen"] == tally("truncated")["usage_seen"] == 0
    assert tally("no-usage")["done_seen"] == 2 and tally("no-usage")["usage_seen"] == 0
    assert tally("reset")["cut"] == 2 and tally("reset")["outcomes"] == {"truncated": 2}
    assert tally("http-500")["statuses"] == {"500": 2}
    assert tally("cancel")["outcomes"] == {"client_disconnect": 2}
    assert tally("healthy")["ttft_p50_s"] < 1.0


async def test_traffic_command_fails_in_one_line_when_nothing_answers(unused_port: int) -> None:
    code, _, err = await run_cli(
        "traffic", "--base-url", f"http://127.0.0.1:{unused_port}", "--requests", "2", "--rate", "0"
    )
    assert code == 1
    assert err.strip().splitlines() == [
        f"sse-audit-proxy: error: no request got a response from http://127.0.0.1:{unused_port}/v1"
    ]


async def test_a_server_that_answers_no_http_counts_as_no_response() -> None:
    """aiohttp's error for a status line that is not HTTP killed each worker unnoticed: the
    run stopped at once, counted nothing and exited 0."""

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(b"\x00\xffGARBAGE\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        code, out, err = await run_cli(
            "traffic", "--base-url", f"http://127.0.0.1:{port}", "--requests", "4", "--rate", "0"
        )
    assert code == 1
    assert "4 requests" in out, out
    assert err.strip().splitlines() == [
        f"sse-audit-proxy: error: no request got a response from http://127.0.0.1:{port}/v1"
    ]


async def test_a_redirect_is_counted_as_its_status_and_not_followed(tmp_path: Path) -> None:
    """Followed, it took the requests and their key to another host; read as a stream, its
    empty body was judged a truncated one."""
    asked: list[bytes] = []

    async def redirect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        asked.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(redirect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    report = tmp_path / "summary.json"
    async with server:
        code, _, err = await run_cli(
            "traffic",
            "--base-url",
            f"http://127.0.0.1:{port}",
            "--requests",
            "3",
            "--rate",
            "0",
            "--mix",
            "healthy=1",
            "--json",
            str(report),
        )
    assert code == 0, err
    assert len(asked) == 3 and all(b"/elsewhere" not in head for head in asked)
    seen = json.loads(report.read_text())["by_scenario"]["healthy"]
    assert seen["statuses"] == {"307": 3}
    assert "truncated" not in seen["outcomes"], seen


async def test_traffic_command_rejects_a_bad_mix_in_one_line() -> None:
    code, _, err = await run_cli("traffic", "--base-url", "http://127.0.0.1:1", "--mix", "healthy=1,nope=2")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "unknown scenario 'nope'" in err


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_streams_still_open_when_the_run_ends_are_in_the_summary(demo_gateway: Any) -> None:
    """A stream that hangs is what a load run is for: cancelled after the grace, it was left
    out of the summary altogether (`0 requests` while one had hung for 20 s: an outside
    review); now it is counted, open at the end, as the client left it."""
    gateway = await demo_gateway(ttft=0.0, interval=0.001, jitter=0.0, fault_delay=30.0)
    cfg = TrafficConfig(
        base_url=gateway / "v1",
        mix=(("healthy", 1), ("stall", 2)),
        concurrency=3,
        rate=0.0,
        requests=3,
        duration=0.3,
        grace=0.5,
    )
    seen = traffic.Traffic()
    await traffic.drive(cfg, asyncio.Event(), seen)
    assert seen.started == seen.total.n == 3
    assert seen.total.open_at_end == 2
    stalled = seen.by_scenario["stall"]
    assert stalled.outcomes == {"client_disconnect": 2} and stalled.open_at_end == 2
    assert seen.by_scenario["healthy"].outcomes == {"complete": 1}
    text = traffic.summary(seen)
    assert "2 still open when the run ended" in text
    assert seen.as_dict()["total"]["open_at_end"] == 2


async def test_responses_streams_are_not_counted_short_of_done_and_their_usage_is_expected(
    demo_gateway: Any,
) -> None:
    """They end with their terminal event and always carry usage: the summary said
    `[DONE] 0/5` and usage `-` on healthy Responses streams (an outside review)."""
    gateway = await demo_gateway(ttft=0.0, interval=0.001, jitter=0.0)
    cfg = TrafficConfig(
        base_url=gateway / "v1", mix=(("healthy", 1),), concurrency=2, rate=0.0, requests=3, route="responses"
    )
    seen = await traffic.drive(cfg, asyncio.Event(), traffic.Traffic())
    assert seen.total.outcomes == {"complete": 3}
    assert (seen.total.usage_asked, seen.total.usage_seen, seen.total.done_expected) == (3, 3, 0)
    row = next(line for line in traffic.summary(seen).splitlines() if line.startswith("healthy"))
    assert row.split()[5:8] == ["-", "3/3", "3/3"], row


async def test_a_named_model_without_a_mix_sends_what_a_real_gateway_tells_apart(demo_gateway: Any) -> None:
    """A real gateway ignores the demo's scenario header: with `--model` each demo fault's row
    said what the healthy rows said under its name (`http-500 … complete`)."""
    gateway = await demo_gateway()
    code, out, err = await run_cli(
        "traffic",
        "--base-url",
        str(gateway),
        "--model",
        "demo-healthy",
        "--requests",
        "2",
        "--rate",
        "0",
        *FAST_HEADERS,
    )
    assert code == 0, err
    assert out.splitlines()[0].startswith("traffic: healthy=10,tool-call=2 to "), out
    code, out, err = await run_cli(
        "traffic", "--base-url", str(gateway), "--requests", "1", "--rate", "0", *FAST_HEADERS
    )
    assert code == 0, err
    assert out.splitlines()[0].startswith("traffic: healthy=10,buffered=1,")  # the demo's whole mix


async def test_a_key_goes_in_the_header_named_and_never_on_the_command_line() -> None:
    """As the probe: `-H` takes no key header (shell history, the process list), the key comes
    from --api-key-env and goes in --api-key-header (Azure OpenAI's `api-key`)."""
    code, _, err = await run_cli(
        "traffic", "--base-url", "http://127.0.0.1:1", "-H", "Authorization: Bearer sk-secret"
    )
    assert code == 2 and "Authorization is not taken on the command line" in err
    assert "sk-secret" not in err
    seen: list[dict[str, str]] = []

    @web.middleware
    async def note(request: web.Request, handler: Any) -> web.StreamResponse:
        seen.append(dict(request.headers))
        resp: web.StreamResponse = await handler(request)
        return resp

    app = create_app(Timing(ttft=0.0, interval=0.001, jitter=0.0))
    app.middlewares.append(note)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = await listen(runner, "127.0.0.1", 0)
    cfg = TrafficConfig(
        base_url=URL(f"http://127.0.0.1:{port}/v1"),
        mix=(("healthy", 1),),
        concurrency=1,
        rate=0.0,
        requests=1,
        api_key="sk-azure",
        key_header="api-key",
    )
    try:
        done = await traffic.drive(cfg, asyncio.Event(), traffic.Traffic())
    finally:
        await runner.cleanup()
    assert done.total.outcomes == {"complete": 1}
    assert seen[0]["api-key"] == "sk-azure" and "Authorization" not in seen[0]


async def test_a_header_that_cannot_carry_a_key_is_refused_before_anything_is_sent() -> None:
    """A key sent in `Content-Length` ended in a traceback that printed it (probe), or every
    worker died silently after its first request and the run exited 0 (traffic); in `Host`
    it would reach every access log (a third review)."""
    for tool in ("traffic", "probe"):
        for name in ("Content-Length", "Host", "Transfer-Encoding", "Proxy-Authorization", "X-Demo-Scenario"):
            code, _, err = await run_cli(
                tool, "--base-url", "http://127.0.0.1:1", "--model", "m", "--api-key-header", name
            )
            assert code == 2 and f"{name} cannot carry a key" in err, (tool, name, err)
