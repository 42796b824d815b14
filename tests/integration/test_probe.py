"""`sse-audit-proxy probe` against the real demo gateway and the real proxy, over sockets.

Every scenario runs the whole checklist (Chat and Responses, tools, cancellation) with the
gateway's fast timing headers, so one probe run takes about a second.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
import zlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from test_cli import assert_one_line_error
from test_cli import run as run_cli
from yarl import URL

from sse_audit_proxy.cli import main as cli
from sse_audit_proxy.server.listen import listen
from sse_audit_proxy.tools import scenarios
from sse_audit_proxy.tools.gateway import Timing, create_app
from sse_audit_proxy.tools.probe.command import Plan, finish, plan_from, probe_routes
from sse_audit_proxy.tools.probe.gates import Status
from sse_audit_proxy.tools.probe.runner import RouteRun

FAST = [
    "-H",
    "X-Demo-TTFT-Ms: 10",
    "-H",
    "X-Demo-Interval-Ms: 5",
    "-H",
    "X-Demo-Frames: 8",
    "-H",
    "X-Demo-Fault-Ms: 50",
    "-H",
    "X-Demo-Jitter: 0",
]
BOTH = ("chat", "responses")


def gates_of(*names: str, apis: tuple[str, ...] = BOTH) -> set[tuple[str, str]]:
    return {(name, api) for name in names for api in apis}


# Which gate each scenario fails, on each API (an empty set: every gate passes). Decided from
# what the gateway does: faults with a non-streamed form (HTTP errors, reset, hang) fail the
# plain control request, so `route`; the rest fail the gate of the property they break. The
# Responses API has no `[DONE]`, so `no-done` breaks Chat only.
EXPECTED_FAILURES: dict[str, set[tuple[str, str]]] = {
    "healthy": set(),
    "buffered": gates_of("streaming"),
    "truncated": gates_of("framing"),
    "no-usage": gates_of("usage"),
    "no-done": gates_of("framing", apis=("chat",)),
    "no-finish": gates_of("framing"),
    "slow-first-token": set(),
    "stall": set(),
    "error-midstream": gates_of("framing"),
    "tool-call": set(),
    "bad-tool-args": gates_of("tools"),
    "malformed": gates_of("framing"),
    "http-429": gates_of("route"),
    "http-500": gates_of("route"),
    "keepalive": set(),
    "crlf": set(),
    "reset": gates_of("route"),
    "hang": gates_of("route"),
    "cancel": set(),
    "usage-mismatch": gates_of("usage"),
    "error-no-done": gates_of("framing"),
    "late-terminator": set(),
    "wrong-content-type": gates_of("framing"),
    "bursty": set(),  # a note on streaming: a fast decoder with pauses has the same shape
}


def make_plan(url: URL | str, model: str, *args: str, env: dict[str, str] | None = None) -> Plan:
    argv = ["probe", "--base-url", str(url), "--model", model, *args]
    return plan_from(cli.build_parser().parse_args(argv), env or {})


async def run_probe(plan: Plan) -> tuple[int, str, list[RouteRun]]:
    """(exit code, printed table, route runs) of one in-process probe run."""
    out = io.StringIO()
    runs = await probe_routes(plan)
    code = finish(plan, runs, out, colour=False)
    return code, out.getvalue(), runs


def failures(runs: list[RouteRun]) -> set[tuple[str, str]]:
    return {(g.name, g.api) for run in runs for g in run.gates if g.status is Status.FAIL}


def test_every_scenario_has_a_decided_probe_outcome() -> None:
    assert set(EXPECTED_FAILURES) == {s.name for s in scenarios.SCENARIOS}


@pytest.mark.parametrize("scenario", list(EXPECTED_FAILURES))
async def test_each_scenario_fails_exactly_its_own_gate(demo_gateway: Any, scenario: str) -> None:
    gateway = await demo_gateway()
    plan = make_plan(gateway, f"demo-{scenario}", "--tools", "--responses", "--timeout", "0.5", *FAST)
    code, table, runs = await run_probe(plan)
    expected = EXPECTED_FAILURES[scenario]
    assert failures(runs) == expected, table
    assert code == (1 if expected else 0)
    gates = [g for run in runs for g in run.gates]
    assert len(gates) == 12
    for gate in gates:
        if gate.status is Status.FAIL:
            assert gate.problems and all(len(p) > 40 for p in gate.problems), gate
            assert f"FAIL {gate.name} ({gate.api})" in table
        else:
            assert not gate.problems
    if not expected:
        assert all(g.status is Status.PASS for g in gates), table
        assert "result: PASS · 12 passed, 0 failed, 0 skipped" in table


async def test_fault_messages_tell_the_operator_what_to_fix(demo_gateway: Any) -> None:
    gateway = await demo_gateway()
    said = {}
    for scenario in ("no-usage", "buffered", "no-done", "bad-tool-args", "http-500"):
        _, table, _ = await run_probe(make_plan(gateway, f"demo-{scenario}", "--tools", *FAST))
        said[scenario] = table
    assert (
        "no usage chunk although stream_options.include_usage was set: the gateway drops "
        "the usage chunk; finance will see no tokens for streamed calls"
    ) in said["no-usage"]
    assert "buffers the stream" in said["buffered"] and "proxy_buffering off" in said["buffered"]
    assert "CRLF" not in said["buffered"]
    assert "the gateway must end every stream with [DONE]" in said["no-done"]
    assert "which is not a JSON object" in said["bad-tool-args"]
    assert "look up trace ID probe-" in said["http-500"]


async def test_usage_mismatch_shows_the_difference(demo_gateway: Any) -> None:
    gateway = await demo_gateway()
    _, table, runs = await run_probe(make_plan(gateway, "demo-usage-mismatch", *FAST))
    usage = runs[0].gate("usage", "chat")
    assert usage.evidence["difference"] == {
        "completion_tokens": {"non_streamed": 8, "streamed": 11, "delta": 3},
        "total_tokens": {
            "non_streamed": usage.evidence["non_streamed"]["total_tokens"],
            "streamed": usage.evidence["non_streamed"]["total_tokens"] + 3,
            "delta": 3,
        },
    }
    assert "completion_tokens 8 -> 11 (+3)" in table


async def test_healthy_route_passes_through_the_real_proxy_which_records_the_cancel(
    demo_gateway: Any, proxy: Any
) -> None:
    gateway = await demo_gateway()
    running = await proxy(gateway)
    plan = make_plan(
        running.url,
        "demo-healthy",
        "--tools",
        "--responses",
        "--proxy-metrics-url",
        str(running.metrics_url),
        *FAST,
    )
    code, table, runs = await run_probe(plan)
    assert code == 0, table
    assert all(g.status is Status.PASS for g in runs[0].gates), table
    for api in BOTH:
        cancel = runs[0].gate("cancellation", api)
        record = cancel.evidence["proxy"]["record"]
        assert record["outcome"] == "client_disconnect" and record["end_reason"] == "client_gone"
        assert record["trace_id"] == f"{plan.targets[0].trace_prefix}-{api}-cancel"
        assert cancel.evidence["trace_id_echoed"] is True
    assert "proxy recorded client_disconnect" in table
    # The proxy's own sink agrees, independently of its lookup endpoint.
    cancelled = {r.trace_id for r in running.sink.records if r.outcome == "client_disconnect"}
    assert cancelled == {f"{plan.targets[0].trace_prefix}-{api}-cancel" for api in BOTH}
    # Every request the probe sent carries its prefixed trace ID through the proxy.
    seen = {r.trace_id for r in running.sink.records}
    assert {e.trace_id for e in runs[0].exchanges} <= seen
    assert all(t.startswith(f"probe-{plan.run_id}-") for t in seen)


async def test_a_proxy_that_never_saw_the_cancel_fails_the_cancellation_gate(
    demo_gateway: Any, proxy: Any
) -> None:
    gateway = await demo_gateway()
    elsewhere = await proxy(gateway)  # a proxy that is not in the probe's path
    plan = make_plan(gateway, "demo-healthy", "--proxy-metrics-url", str(elsewhere.metrics_url), *FAST)
    code, table, runs = await run_probe(plan)
    assert code == 1
    assert failures(runs) == {("cancellation", "chat")}
    assert "has no record of trace ID" in table and "--proxy-metrics-url" in table


async def _serve(app: web.Application) -> tuple[web.AppRunner, URL]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False, handler_cancellation=True)
    await runner.setup()
    port = await listen(runner, "127.0.0.1", 0)
    return runner, URL(f"http://127.0.0.1:{port}")


async def test_a_route_that_fails_after_a_cancelled_stream_fails_cancellation_only() -> None:
    app = create_app(Timing())
    poisoned = {"next": False}

    @web.middleware
    async def breaks_after_a_cancel(request: web.Request, handler: Any) -> web.StreamResponse:
        # Like a gateway that reuses the half-read upstream connection of a cancelled stream.
        if poisoned["next"]:
            poisoned["next"] = False
            return web.json_response(
                {"error": {"message": "upstream connection reset", "type": "server_error", "code": None}},
                status=502,
            )
        try:
            return await handler(request)  # type: ignore[no-any-return]
        except (asyncio.CancelledError, ConnectionError):
            # The client's leaving shows either as a cancel or, when the gateway was mid-write,
            # as a reset of the write: both leave the half-read connection behind.
            poisoned["next"] = True
            raise

    app.middlewares.append(breaks_after_a_cancel)
    runner, url = await _serve(app)
    try:
        code, table, runs = await run_probe(make_plan(url, "demo-healthy", "--responses", *FAST))
    finally:
        await runner.cleanup()
    assert code == 1
    assert failures(runs) == gates_of("cancellation")
    assert "after a cancelled stream the route failed the next request" in table


async def test_compare_shows_ttft_usage_and_finish_differences(demo_gateway: Any, tmp_path: Path) -> None:
    current = await demo_gateway(ttft=0.01, interval=0.005, jitter=0.0, frames=8)
    # The candidate answers later and longer: its answers hit the probe's max tokens.
    candidate = await demo_gateway(ttft=0.15, interval=0.002, jitter=0.0, frames=150)
    report = tmp_path / "report.json"
    plan = make_plan(candidate, "gpt-4o", "--compare-base-url", str(current), "--json", str(report))
    code, table, runs = await run_probe(plan)
    assert code == 0, table
    assert [r.target.label for r in runs] == ["base", "compare"]
    assert "differences: base" in table
    rows = {r["what"]: r for r in json.loads(report.read_text())["comparison"] if r["api"] == "chat"}
    assert rows["ttft_ms"]["base"] >= 150 > rows["ttft_ms"]["compare"]
    assert rows["ttft_ms"]["delta_ms"] < -100
    assert rows["usage"]["differs"] and rows["usage_streamed"]["differs"]
    assert rows["usage_streamed"]["base"]["completion_tokens"] == 120  # max_tokens
    assert rows["usage_streamed"]["compare"]["completion_tokens"] == 8
    assert rows["finish_reasons"] == {
        "api": "chat",
        "what": "finish_reasons",
        "base": ["length", "length"],
        "compare": ["stop", "stop"],
        "differs": True,
    }
    assert not rows["gate route"]["differs"]
    line = next(x for x in table.splitlines() if "finish (plain / stream" in x)
    assert "length / length" in line and "stop / stop" in line and line.endswith("differs")
    # Both routes' trace IDs are labelled, so each gateway's logs can be searched apart.
    assert {e.trace_id.split("-")[2] for r in runs for e in r.exchanges} == {"base", "compare"}


async def test_json_report_holds_every_gate_measurement_and_trace_id(
    demo_gateway: Any, tmp_path: Path
) -> None:
    gateway = await demo_gateway()
    report = tmp_path / "probe.json"
    plan = make_plan(gateway, "demo-healthy", "--tools", "--responses", "--json", str(report), *FAST)
    code, table, _ = await run_probe(plan)
    assert code == 0
    doc = json.loads(report.read_text())
    assert doc["result"] == "pass" and doc["exit_code"] == 0
    assert doc["gates"] == {"pass": 12, "fail": 0, "skip": 0}
    assert doc["probe"]["model"] == "demo-healthy" and doc["probe"]["tools"] is True
    assert doc["probe"]["trace_id_prefix"] == f"probe-{plan.run_id}"
    assert doc["probe"]["headers"]["X-Demo-Frames"] == "8"
    route = doc["routes"][0]
    assert [(g["gate"], g["api"]) for g in route["gates"]] == [
        (n, a) for a in BOTH for n in ("route", "framing", "streaming", "usage", "tools", "cancellation")
    ]
    purposes = [(r["api"], r["purpose"]) for r in route["requests"]]
    assert purposes == [
        (a, p)
        for a in BOTH
        for p in ("control", "stream", "tool-call", "tool-result", "no-tool", "cancel", "after-cancel")
    ]
    for req in route["requests"]:
        assert req["trace_id"] == f"probe-{plan.run_id}-{req['api']}-{req['purpose']}"
        assert req["request"]["headers"]["X-Client-Request-Id"] == req["trace_id"]
        assert req["response"]["status"] == 200 and req["response"]["request_id"]
    stream = next(r for r in route["requests"] if r["purpose"] == "stream")
    assert stream["audit"]["outcome"] == "complete" and stream["audit"]["content_frames"] == 8
    assert stream["request"]["body"]["temperature"] == 0
    streaming = next(g for g in route["gates"] if g["gate"] == "streaming")
    assert {"ttft_ms", "ttft_share_of_last_content", "content_spacing_mean_ms", "max_gap_ms"} <= set(
        streaming["evidence"]
    )
    assert streaming["evidence"]["content_frames"] == 8
    assert f"report {report}" in table


async def test_save_raw_keeps_each_body_exactly_as_received(demo_gateway: Any, tmp_path: Path) -> None:
    gateway = await demo_gateway()
    raw = tmp_path / "raw"
    plan = make_plan(gateway, "demo-healthy", "--save-raw", str(raw), *FAST)
    code, _, runs = await run_probe(plan)
    assert code == 0
    for ex in runs[0].exchanges:
        body_file = raw / (ex.trace_id + (".sse" if ex.stream else ".json"))
        meta = json.loads((raw / f"{ex.trace_id}.meta.json").read_text())
        assert body_file.read_bytes() == b"".join(c for _, c in ex.chunks)
        assert sum(n for _, n in meta["reads_at"]) == body_file.stat().st_size
        assert meta["capture"] == body_file.name and meta["trace_id"] == ex.trace_id
        assert meta["response"]["headers"]["Content-Type"].startswith(
            "text/event-stream" if ex.stream else "application/json"
        )
    stream = (raw / f"{plan.targets[0].trace_prefix}-chat-stream.sse").read_bytes()
    assert stream.endswith(b"data: [DONE]\n\n") and stream.count(b"data: ") == 8 + 4
    cancel = (raw / f"{plan.targets[0].trace_prefix}-chat-cancel.sse").read_bytes()
    assert b"[DONE]" not in cancel  # cut by the probe after a few frames


async def test_a_route_that_gzips_its_event_stream_is_read_through_the_compression(
    demo_gateway: Any, upstream: Any, tmp_path: Path
) -> None:
    """Like nginx with `gzip on` for text/event-stream, flushing every write."""
    gateway = await demo_gateway()

    async def gzipping(request: web.Request) -> web.StreamResponse:
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in ("host", "content-length", "accept-encoding", "transfer-encoding")
        }
        async with (
            aiohttp.ClientSession(auto_decompress=False) as session,
            session.post(gateway.with_path(request.path), data=await request.read(), headers=headers) as up,
        ):
            resp = web.StreamResponse(
                status=up.status,
                headers={"Content-Type": up.headers["Content-Type"], "Content-Encoding": "gzip"},
            )
            await resp.prepare(request)
            z = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
            async for chunk in up.content.iter_any():
                await resp.write(z.compress(chunk) + z.flush(zlib.Z_SYNC_FLUSH))
            await resp.write(z.flush())
            await resp.write_eof()
            return resp

    url = await upstream(gzipping)
    raw = tmp_path / "raw"
    plan = make_plan(url, "demo-healthy", "--responses", "--save-raw", str(raw), *FAST)
    code, table, runs = await run_probe(plan)
    assert code == 0, table
    framing = runs[0].gate("framing", "chat")
    assert framing.evidence["content_encoding"] == "gzip"
    assert runs[0].gate("streaming", "chat").evidence["content_frames"] == 8
    prefix = plan.targets[0].trace_prefix
    body = zlib.decompress((raw / f"{prefix}-chat-stream.sse.gz").read_bytes(), 16 + zlib.MAX_WBITS)
    assert body.endswith(b"data: [DONE]\n\n")
    assert (
        json.loads(
            zlib.decompress((raw / f"{prefix}-chat-control.json.gz").read_bytes(), 16 + zlib.MAX_WBITS)
        )["object"]
        == "chat.completion"
    )


# The API key ------------------------------------------------------------------------------

KEY = "sk-probe-test-7f3c9a1e5b2d4c6a8e0f"


@pytest.mark.parametrize("header", ["Authorization", "api-key"])
async def test_the_api_key_is_sent_but_never_printed_or_saved(tmp_path: Path, header: str) -> None:
    """A gateway that echoes the key in a header on every answer, and in the message of a
    401 on the Responses route, as some do: the key still reaches no output and no file. In
    the header --api-key-header names (Azure OpenAI's `api-key`: the probe refused `-H api-key`
    and could send a key only as a Bearer token, so such a route could not be probed)."""
    app = create_app(Timing())
    seen: list[str] = []

    @web.middleware
    async def echoes_the_key(request: web.Request, handler: Any) -> web.StreamResponse:
        auth = request.headers.get(header, "")
        seen.append(auth)
        key = auth.removeprefix("Bearer ")
        if request.path.endswith("/responses"):
            return web.json_response(
                {
                    "error": {
                        "message": f"Incorrect API key provided: {key}",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    }
                },
                status=401,
                headers={"X-Echo-Authorization": auth},
            )
        resp: web.StreamResponse = await handler(request)
        return resp

    async def echo_header(request: web.Request, resp: web.StreamResponse) -> None:
        resp.headers["X-Echo-Authorization"] = request.headers.get(header, "")

    app.middlewares.append(echoes_the_key)
    app.on_response_prepare.append(echo_header)
    runner, url = await _serve(app)
    report, raw = tmp_path / "report.json", tmp_path / "raw"
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sse_audit_proxy",
            "probe",
            "--base-url",
            str(url),
            "--model",
            "demo-healthy",
            "--api-key-env",
            "PROBE_TEST_KEY",
            "--api-key-header",
            header,
            "--responses",
            "--tools",
            "--json",
            str(report),
            "--save-raw",
            str(raw),
            *FAST,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PROBE_TEST_KEY": KEY},
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await runner.cleanup()
    assert proc.returncode == 1  # the Responses route refused the key
    sent = f"Bearer {KEY}" if header == "Authorization" else KEY
    assert seen and all(a == sent for a in seen)  # it was sent, every time
    written = [out, err, report.read_bytes(), *(p.read_bytes() for p in raw.iterdir())]
    assert len(written) > 10
    for blob in written:
        assert KEY.encode() not in blob
        assert KEY[8:24].encode() not in blob
    doc = json.loads(report.read_text())
    echoed = doc["routes"][0]["requests"][0]["response"]["headers"]["X-Echo-Authorization"]
    assert echoed == "[redacted]"  # blanked by its name, as evidence blanks it
    assert "Incorrect API key provided: [redacted]" in out.decode()
    assert doc["probe"]["api_key_env"] == "PROBE_TEST_KEY" and doc["probe"]["api_key_sent"]


async def _keyed_gateway(seen: list[str], cookies: list[str] | None = None) -> tuple[web.AppRunner, URL]:
    """The demo gateway, noting each request's Authorization (and Cookie) and echoing it in an
    error's message on the Responses route (as gateways that quote a bad key do)."""
    app = create_app(Timing())

    @web.middleware
    async def note(request: web.Request, handler: Any) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        seen.append(auth)
        if cookies is not None:
            cookies.append(request.headers.get("Cookie", "") + request.headers.get("X-Portkey-Api-Key", ""))
        if request.path.endswith("/responses"):
            message = {"message": f"Incorrect API key provided: {auth}", "type": "x", "code": "x"}
            return web.json_response({"error": message}, status=401)
        resp: web.StreamResponse = await handler(request)
        return resp

    app.middlewares.append(note)
    return await _serve(app)


@pytest.mark.parametrize("named", [False, True])
async def test_a_compare_route_on_another_host_gets_a_key_only_when_one_is_named_for_it(named: bool) -> None:
    """The candidate's key was sent to the --compare-base-url host too: one party's key handed
    to another, or a 401 where the routes' keys differ (an outside review)."""
    base_seen: list[str] = []
    compare_seen: list[str] = []
    base_cookies: list[str] = []
    compare_cookies: list[str] = []
    base, base_url = await _keyed_gateway(base_seen, base_cookies)
    other, other_url = await _keyed_gateway(compare_seen, compare_cookies)  # another port: another origin
    compare_key = "sk-compare-route-1b2c3d4e5f6a7b8c9d0e"
    env = {"PROBE_TEST_KEY": KEY, "OLD_ROUTE_KEY": compare_key}
    named_flag = ["--compare-api-key-env", "OLD_ROUTE_KEY"] if named else []
    args = ["--api-key-env", "PROBE_TEST_KEY", "--compare-base-url", str(other_url), "--responses"]
    args += ["-H", "Cookie: sess=candidate-session-4711", "-H", "X-Portkey-Api-Key: pk-candidate-0815"]
    try:
        plan = make_plan(base_url, "demo-healthy", *args, *named_flag, *FAST, env=env)
        code, table, _ = await run_probe(plan)
    finally:
        await base.cleanup()
        await other.cleanup()
    assert base_seen and set(base_seen) == {f"Bearer {KEY}"}
    assert compare_seen and set(compare_seen) == ({f"Bearer {compare_key}"} if named else {""})
    # Credential headers given with -H are the candidate's too (a second pass): never elsewhere.
    assert set(base_cookies) == {"sess=candidate-session-4711pk-candidate-0815"}
    assert compare_cookies and set(compare_cookies) == {""}
    assert "-H headers with a secret's name not sent to the compare route" in table
    assert code == 1  # the Responses routes refuse
    assert KEY not in table and compare_key not in table and compare_key[8:24] not in table
    assert "Incorrect API key provided: Bearer [redacted]" in table
    said = "no API key sent to the compare route"
    assert (said in table) is not named


async def test_a_compare_route_on_the_same_host_gets_the_same_key() -> None:
    seen: list[str] = []
    runner, url = await _keyed_gateway(seen)
    env = {"PROBE_TEST_KEY": KEY}
    try:
        plan = make_plan(
            url,
            "demo-healthy",
            "--api-key-env",
            "PROBE_TEST_KEY",
            "--compare-base-url",
            str(url / "v1"),
            *FAST,
            env=env,
        )
        code, table, runs = await run_probe(plan)
    finally:
        await runner.cleanup()
    assert code == 0, table
    assert [r.target.label for r in runs] == ["base", "compare"]
    assert len(seen) > 4 and set(seen) == {f"Bearer {KEY}"}
    with pytest.raises(Exception, match="--compare-api-key-env needs --compare-base-url"):
        make_plan(url, "m", "--compare-api-key-env", "PROBE_TEST_KEY", env=env)
    # The default port written or not is the same place (yarl's origins differ).
    for base_url, other in (
        ("http://127.0.0.1/v1", "http://127.0.0.1:80/v1"),
        ("https://gw/v1", "https://GW:443/x"),
    ):
        plan = make_plan(
            base_url, "m", "--compare-base-url", other, "--api-key-env", "PROBE_TEST_KEY", env=env
        )
        assert [(t.api_key, t.elsewhere) for t in plan.targets] == [(KEY, False), (KEY, False)]
    plan = make_plan("http://127.0.0.1/v1", "m", "--compare-base-url", "http://127.0.0.1:8080/v1", env=env)
    assert plan.targets[1].elsewhere


# The command line -------------------------------------------------------------------------


def test_bad_usage_is_a_one_line_error_with_exit_status_2(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")
    cases: list[tuple[list[str], dict[str, str], str]] = [
        (["probe", "--base-url", "http://127.0.0.1:1"], {}, "--model"),
        (["probe", "--model", "m"], {}, "--base-url"),
        (["probe", "--base-url", "ftp://x", "--model", "m"], {}, "--base-url"),
        # Each of the next four was a traceback mid-run, or (traffic) nothing sent and exit 0.
        (["probe", "--base-url", "http://" + "a" * 64 + ":1", "--model", "m"], {}, "--base-url"),
        (
            ["probe", "--base-url", "http://127.0.0.1:1", "--model", "m", "-H", "X-A: a\r\nX-B: b"],
            {},
            "line break",
        ),
        (
            ["probe", "--base-url", "http://127.0.0.1:1", "--model", "m", "--api-key-env", "PROBE_BAD_KEY"],
            {"PROBE_BAD_KEY": "a\nb"},
            "PROBE_BAD_KEY",
        ),
        (["traffic", "--base-url", "http://127.0.0.1:1", "-H", "X-A: a\nX-B: b"], {}, "line break"),
        (
            ["traffic", "--base-url", "http://127.0.0.1:1", "--concurrency", "1" + "0" * 28],
            {},
            "--concurrency",
        ),
        (
            ["probe", "--base-url", "http://127.0.0.1:1", "--model", "m", "--api-key-env", "PROBE_UNSET_KEY"],
            {},
            "PROBE_UNSET_KEY",
        ),
        (
            ["probe", "--base-url", "http://127.0.0.1:1", "--model", "m", "-H", "Authorization: Bearer sk-x"],
            {},
            "--api-key-env",
        ),
        (
            ["probe", "--base-url", "http://127.0.0.1:1", "--model", "m", "--save-raw", str(a_file / "sub")],
            {},
            "--save-raw",
        ),
        (
            [
                "probe",
                "--base-url",
                "http://127.0.0.1:1",
                "--model",
                "m",
                "--json",
                str(tmp_path / "missing" / "r.json"),
            ],
            {},
            "--json",
        ),
        (
            [
                "probe",
                "--base-url",
                "http://127.0.0.1:1",
                "--model",
                "m",
                "--compare-proxy-metrics-url",
                "http://127.0.0.1:2",
            ],
            {},
            "--compare-base-url",
        ),
    ]
    for argv, env, needle in cases:
        proc = run_cli(*argv, env=env)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert_one_line_error(proc, needle)
        assert "sk-x" not in proc.stderr


def test_unreachable_route_fails_the_route_gate_with_what_to_check() -> None:
    proc = run_cli(
        "probe",
        "--base-url",
        "http://127.0.0.1:1/v1",
        "--model",
        "m",
        "--timeout",
        "2",
        env={"OPENAI_API_KEY": ""},
    )
    assert proc.returncode == 1, proc.stderr
    assert "route         chat  FAIL" in proc.stdout
    assert "could not connect to 127.0.0.1:1" in proc.stdout and "check --base-url" in proc.stdout
    assert "(no API key sent: OPENAI_API_KEY is not set)" in proc.stdout
    assert "\x1b[" not in proc.stdout  # no colour when stdout is not a terminal


def test_the_docs_document_every_probe_flag_and_every_scenarios_gates() -> None:
    section = (Path(__file__).resolve().parents[2] / "docs/tools/probe.md").read_text()
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    probe_parser = sub.choices["probe"]  # type: ignore[index]
    flags = [
        s for a in probe_parser._actions for s in a.option_strings if s.startswith("--") and s != "--help"
    ]
    assert len(flags) >= 12
    for flag in flags:
        assert f"`{flag}" in section, flag
    table = section.split("\n### Against the demo gateway\n", 1)[1].split("\n## ", 1)[0]
    for scenario, failing in EXPECTED_FAILURES.items():
        row = next(line for line in table.splitlines() if f"`{scenario}`" in line)
        for name, _ in failing:
            assert f"`{name}`" in row.split("|")[2], (scenario, row)
        if not failing:
            assert "every gate passes" in row


async def test_probe_side_checks_the_canary_and_the_baseline_through_one_proxy(
    demo_gateway: Any, proxy: Any
) -> None:
    from sse_audit_proxy.server.canary import CanaryConfig

    baseline = await demo_gateway()
    canary = await demo_gateway(scenario="buffered")
    running = await proxy(
        baseline, canary=CanaryConfig(url=str(canary), percent=0.0, side_header="X-SSE-Audit-Side")
    )
    plan = make_plan(running.url, "gpt-4o", "--side", "canary", "--compare-side", "baseline", *FAST)
    code, table, runs = await run_probe(plan)
    assert code == 1, table
    base, compare = runs
    # The canary buffers; the baseline, asked through the same proxy, passes every gate.
    assert failures([base]) == gates_of("streaming", apis=("chat",))
    assert failures([compare]) == set()
    assert "(side canary) vs compare" in table
    sides = {r.trace_id: r.upstream for r in running.sink.records}
    assert {sides[e.trace_id] for e in base.exchanges} == {"canary"}
    assert {sides[e.trace_id] for e in compare.exchanges} == {"baseline"}


async def test_the_side_header_is_ignored_unless_the_proxy_enables_it(demo_gateway: Any, proxy: Any) -> None:
    from sse_audit_proxy.server.canary import CanaryConfig

    baseline = await demo_gateway()
    canary = await demo_gateway(scenario="buffered")
    running = await proxy(baseline, canary=CanaryConfig(url=str(canary), percent=0.0))
    plan = make_plan(running.url, "gpt-4o", "--side", "canary", *FAST)
    code, table, _ = await run_probe(plan)
    assert code == 0, table  # a client cannot pick the canary: it got the baseline
    assert {r.upstream for r in running.sink.records} == {"baseline"}
    assert "side 'canary' is not confirmed: give --proxy-metrics-url" in table


@pytest.mark.parametrize(("enabled", "side"), [(False, "canary"), (True, "canry")])
async def test_a_side_the_proxy_did_not_honour_fails_the_route_gate(
    demo_gateway: Any, proxy: Any, enabled: bool, side: str
) -> None:
    """The report said "(side canary)" and PASS while the baseline answered every request: the
    proxy without --canary-side-header, or a side it does not know (an outside review). Its
    own records, read with --proxy-metrics-url, say which side answered."""
    from sse_audit_proxy.server.canary import CanaryConfig

    baseline = await demo_gateway()
    canary = await demo_gateway(scenario="buffered")
    header = "X-SSE-Audit-Side" if enabled else None
    running = await proxy(baseline, canary=CanaryConfig(url=str(canary), percent=0.0, side_header=header))
    plan = make_plan(
        running.url, "gpt-4o", "--side", side, "--proxy-metrics-url", str(running.metrics_url), *FAST
    )
    code, table, runs = await run_probe(plan)
    assert code == 1, table
    assert runs[0].gate("route", "chat").status is Status.FAIL
    assert f"to baseline, not to side '{side}'" in table and "--canary-side-header" in table


async def test_a_side_with_no_records_at_the_metrics_url_is_said_unconfirmed(
    demo_gateway: Any, proxy: Any
) -> None:
    """The wrong proxy's metrics URL (or records evicted) found none: the side passed silently
    (a second review)."""
    from sse_audit_proxy.server.canary import CanaryConfig

    baseline = await demo_gateway()
    running = await proxy(
        baseline, canary=CanaryConfig(url=str(baseline), percent=0.0, side_header="X-SSE-Audit-Side")
    )
    elsewhere = await proxy(baseline)  # not in the probe's path
    plan = make_plan(
        running.url, "gpt-4o", "--side", "canary", "--proxy-metrics-url", str(elsewhere.metrics_url), *FAST
    )
    _, table, runs = await run_probe(plan)
    notes = runs[0].gate("route", "chat").notes
    assert any("not confirmed: the proxy's records of these requests were not found" in n for n in notes), (
        table
    )


async def test_a_bursty_route_passes_streaming_with_a_note_on_its_clumps(demo_gateway: Any) -> None:
    """It passed with `bursty` in its own evidence and no word (outside review); failing it
    failed fast providers that pause now and then as well (second review): a note says it."""
    gateway = await demo_gateway()
    code, table, runs = await run_probe(make_plan(gateway, "demo-bursty", *FAST))
    assert code == 0, table
    gate = runs[0].gate("streaming", "chat")
    assert gate.status is Status.PASS and "bursty" in gate.evidence["anomalies"]
    assert any(note.startswith("the answer came in clumps") for note in gate.notes), gate.notes


def _wire_server(
    *,
    repeat_call_fields: bool,
    done: bool,
    honours_tool_choice: bool,
    capped: bool = False,
    held_crlf: bool = False,
) -> Any:
    """A Chat route shaped as real inference servers stream: llama-cpp-python (and LiteLLM in
    front of it) repeat a tool call's id and name in every delta; transformers serve ends with
    no `[DONE]`, answers a forced tool_choice with text, and (`capped`) says `stop` of an answer
    cut at the request's token limit; `held_crlf`: events with CRLF line ends, held and sent
    at once (what Portkey's gateway does to them, splitting events only on LF LF)."""
    words = ["one", "two", "three", "four", "five", "six"]
    spent = 120 if capped else len(words)  # the probe's max tokens
    usage = {"prompt_tokens": 50, "completion_tokens": spent, "total_tokens": 50 + spent}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-x1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            message = {"role": "assistant", "content": " ".join(words)}
            return web.json_response(
                {
                    "id": "chatcmpl-x1",
                    "object": "chat.completion",
                    "created": 1,
                    "model": "m",
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                    "usage": usage,
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        held: list[bytes] = []

        async def send(doc: dict[str, Any]) -> None:
            if held_crlf:
                held.append(b"data: " + json.dumps(doc).encode() + b"\r\n\r\n")
                return
            await resp.write(b"data: " + json.dumps(doc).encode() + b"\n\n")
            await asyncio.sleep(0.005)

        await send(chunk({"role": "assistant"}))
        if isinstance(body.get("tool_choice"), dict) and honours_tool_choice:
            for i, piece in enumerate(['{"city"', ': "Paris"}']):
                call: dict[str, Any] = {"index": 0, "function": {"arguments": piece}}
                if i == 0 or repeat_call_fields:
                    call |= {"id": "call_0", "type": "function"}
                    call["function"]["name"] = "get_weather"
                await send(chunk({"tool_calls": [call]}))
            await send(chunk({}, "tool_calls"))
        else:
            for word in words:
                await send(chunk({"content": word + " "}))
            await send(chunk({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            last = chunk({})
            last["choices"], last["usage"] = [], usage
            await send(last)
        if held:
            await asyncio.sleep(0.6)
            await resp.write(b"".join(held))
        if done:
            await resp.write(b"data: [DONE]\r\n\r\n" if held_crlf else b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


async def _probe_wire(**shape: bool) -> tuple[int, str, list[RouteRun]]:
    """`probe --tools` against a _wire_server of that shape."""
    runner, url = await _serve(_wire_server(**shape))
    try:
        return await run_probe(make_plan(url, "m", "--tools"))
    finally:
        await runner.cleanup()


async def test_a_tool_call_that_repeats_its_id_and_name_fails_the_tools_gate() -> None:
    """llama-cpp-python sends the call's id and name in every delta: the openai SDK's stream
    helper joined them into `call_0call_0`, `get_weatherget_weather`, and the probe said PASS
    (an outside review); the proxy's own audit says `repeated_tool_call_fields`."""
    for repeated in (True, False):
        code, table, runs = await _probe_wire(
            repeat_call_fields=repeated, done=True, honours_tool_choice=True
        )
        if repeated:
            assert code == 1 and failures(runs) == {("tools", "chat")}, table
            assert "repeats its `id` or `function.name`" in table
        else:
            assert code == 0 and failures(runs) == set(), table


async def test_a_route_with_no_done_still_has_its_tool_call_judged() -> None:
    """transformers serve sends no `[DONE]` and answers a forced tool_choice with text: the
    tools gate said SKIP ("it broke like the main stream") and hid the missing tool call (an
    outside review). The framing gate says what the missing `[DONE]` means for the SDKs."""
    code, table, runs = await _probe_wire(repeat_call_fields=False, done=False, honours_tool_choice=False)
    assert code == 1 and failures(runs) == {("framing", "chat"), ("tools", "chat")}, table
    assert "no tool call streamed although tool_choice named get_weather" in table
    assert "after every choice's finish_reason: the openai SDKs stop at the body's end" in table


async def test_a_buffered_stream_with_crlf_line_ends_says_a_hop_may_not_split_them() -> None:
    # Behind Portkey a CRLF upstream is held until its end: the advice named only buffering
    # settings (an outside review).
    code, table, runs = await _probe_wire(
        repeat_call_fields=False, done=True, honours_tool_choice=True, held_crlf=True
    )
    assert code == 1 and ("streaming", "chat") in failures(runs), table
    assert "its events end in CRLF" in table and "proxy_buffering off" in table


async def test_an_answer_that_used_every_token_allowed_yet_says_stop_is_pointed_out() -> None:
    # transformers serve answers `completed` (Responses), `stop` (Chat) at the cap: a client
    # cannot tell a cut answer from a whole one (an outside review).
    for capped in (True, False):
        code, table, _ = await _probe_wire(
            repeat_call_fields=False, done=True, honours_tool_choice=True, capped=capped
        )
        assert code == 0, table
        assert ("used all 120 tokens the probe allowed, yet its finish is 'stop'" in table) is capped, table
