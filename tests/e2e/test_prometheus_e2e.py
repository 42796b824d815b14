"""End to end with a real Prometheus: the real proxy scraped every second, the shipped rules
evaluated every second, every dashboard query and every alert expression run through the
HTTP API, and the alerts going from silent (healthy mix) to pending/firing (faulty mix).

The upstream is the demo gateway (fast timing), its scenario selected per request by
`X-Demo-Scenario`; all traffic uses one model name so that the healthy and faulty mixes land on
the same (route, model) series, as a canary going bad would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from cli_process import serve_process
from demo_client import FAST, HEALTHY, drive
from progressive import argo_queries, flagger_queries
from yarl import URL

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "sse-audit-proxy.rules.yml"
DASHBOARD = ROOT / "grafana" / "dashboards" / "sse-audit-proxy.json"
JOB = "sse-audit-proxy"
# Faults the alerts watch for, weighted so each share stays far above its threshold even
# diluted by the healthy phase that came before, plus healthy streams as a real mix has.
# slow-first-token appears three times so the TTFT p95 clears the regression alert's 0.5 s floor.
# buffered and bursty appear twice each; a bursty stream takes about 1.3 s (clumps 0.3 s apart).
FAULTY_MIX = (
    "healthy",
    "buffered",
    "truncated",
    "slow-first-token",
    "no-usage",
    "no-done",
    "no-finish",
    "slow-first-token",
    "error-midstream",
    "bursty",
    "http-429",
    "http-500",
    "buffered",
    "slow-first-token",
    "truncated",
    "keepalive",
    "stall",
    "bursty",
    # 5xx and 429 are two alerts, each over 5 % of requests: each twice.
    "http-429",
    "http-500",
    # In-band errors over 5 % of streams (with the one above); a stream cut by the idle timeout.
    "error-midstream",
    "hang",
)
FAULT_ALERTS = {
    "SSEAuditBufferedStreams",
    "SSEAuditBurstyStreams",
    "SSEAuditTruncatedStreams",
    "SSEAuditStreamTimeouts",
    "SSEAuditErrorEvents",
    "SSEAuditMissingDone",
    "SSEAuditMissingFinishReason",
    "SSEAuditMissingUsage",
    "SSEAuditUpstreamErrors",
    "SSEAuditUpstreamRateLimited",
    "SSEAuditTimeToFirstTokenRegression",
}
DOWN_ALERTS = {"SSEAuditProxyDown", "SSEAuditProxyAbsent"}
CANARY_ALERTS = {"SSEAuditCanaryRegression", "SSEAuditCanaryTripped"}
# Its rule's own test is in the rules' unit tests (the e2e proxy's stdout is always read).
LOG_ALERTS = {"SSEAuditLogLinesDropped"}
# Its rule's own test is in the rules' unit tests (the e2e proxy runs one process; the metric
# is tested in tests/integration/test_workers.py).
WORKER_ALERTS = {"SSEAuditWorkerExits"}
# Its rule's own test is in the rules' unit tests (the e2e canary truncates streams, answering 200).
CANARY_ERROR_ALERTS = {"SSEAuditCanaryUpstreamErrors", "SSEAuditCanaryRateLimited"}
# Its rule's own test is in the rules' unit tests (the e2e canary's percent file stays good).
PERCENT_FILE_ALERTS = {"SSEAuditCanaryPercentFileRejected"}

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="prometheus/promtool missing: .ci/run installs Debian's prometheus package",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def rules_for_the_test(tmp: Path) -> Path:
    """The shipped rules with every `for:` cut to 1 s; the expressions stay exactly as shipped."""
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "1s"
    path = tmp / "rules.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    copied = [r for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]
    shipped = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    assert [r["expr"] for r in copied] == [r["expr"] for r in shipped]
    return path


def dashboard_queries() -> tuple[list[tuple[str, str]], list[str]]:
    """(panel title, expr) for every target, and every template variable query."""
    dash = json.loads(DASHBOARD.read_text())
    exprs = [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", ())]
    variables = [v["query"]["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    return exprs, variables


def as_grafana_would(expr: str, rate_interval: str = "10s") -> str:
    # "All" selected for every variable; $__rate_interval for a 1 s scrape interval.
    expr = re.sub(r"\$(route|model|upstream|instance)\b", ".*", expr)
    return expr.replace("$__rate_interval", rate_interval)


class Prometheus:
    def __init__(self, http: aiohttp.ClientSession, url: URL) -> None:
        self.http = http
        self.url = url

    async def query(self, expr: str) -> list[dict[str, Any]]:
        async with self.http.get(self.url / "api/v1/query", params={"query": expr}) as resp:
            body = await resp.json()
        assert body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def has_data(self, expr: str) -> bool:
        return any(_finite(s["value"][1]) for s in await self.query(expr))

    async def label_values(self, selector: str, label: str) -> list[str]:
        async with self.http.get(
            self.url / "api/v1/label" / label / "values", params={"match[]": selector}
        ) as resp:
            body = await resp.json()
        assert body["status"] == "success", body
        values: list[str] = body["data"]
        return values

    async def alert_states(self) -> dict[str, set[str]]:
        async with self.http.get(self.url / "api/v1/alerts") as resp:
            body = await resp.json()
        states: dict[str, set[str]] = {}
        for alert in body["data"]["alerts"]:
            states.setdefault(alert["labels"]["alertname"], set()).add(alert["state"])
        return states


def _finite(value: str) -> bool:
    return value not in ("NaN", "+Inf", "-Inf")


@contextlib.asynccontextmanager
async def prometheus(tmp: Path, metrics_port: int, http: aiohttp.ClientSession) -> AsyncIterator[Prometheus]:
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(rules_for_the_test(tmp))],
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp / "prometheus.log").open("wb"),
    )
    url = URL(f"http://127.0.0.1:{port}")
    try:
        async with asyncio.timeout(30):
            while True:
                assert proc.poll() is None, (tmp / "prometheus.log").read_text()
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(url / "-/ready") as resp:
                        if resp.status == 200:
                            break
                await asyncio.sleep(0.2)
        yield Prometheus(http, url)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def keep_sending(
    base: URL, mix: tuple[str, ...], stop: asyncio.Event, *, concurrency: int, pause: float, limit: int = 2000
) -> int:
    """Traffic until `stop` (bounded by `limit` requests): batches of `concurrency` requests."""
    sent = 0
    async with aiohttp.ClientSession() as client:
        while not stop.is_set() and sent < limit:
            await drive(
                client,
                base,
                mix[sent % len(mix) :] + mix[: sent % len(mix)],
                count=concurrency,
                concurrency=concurrency,
            )
            sent += concurrency
            await asyncio.sleep(pause)
    return sent


async def poll(seconds: float, check: Any) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.5)
    return False


async def test_dashboards_and_alerts_against_a_real_prometheus(demo_gateway, tmp_path) -> None:
    async with aiohttp.ClientSession() as http:
        await run_canary(await demo_gateway(**FAST), http, tmp_path)


async def run_canary(gateway: URL, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    started = time.monotonic()
    panels, variables = dashboard_queries()
    rules = alert_rules()
    assert {r["alert"] for r in rules} == (
        FAULT_ALERTS
        | DOWN_ALERTS
        | CANARY_ALERTS
        | LOG_ALERTS
        | WORKER_ALERTS
        | CANARY_ERROR_ALERTS
        | PERCENT_FILE_ALERTS
    )

    async with (
        # An idle timeout above the faults' 1.2 s delays: the `hang` stream is cut at 2 s.
        serve_process(gateway, "--idle-timeout", "2") as served,
        prometheus(tmp_path, served.metrics_url.port or 0, http) as prom,
    ):
        # Healthy mix: every verdict series exists, no alert is pending or firing. One stream at
        # a time, so the faulty shares cross their thresholds a few seconds into the faulty mix.
        stop = asyncio.Event()
        healthy = asyncio.create_task(keep_sending(served.url, HEALTHY, stop, concurrency=1, pause=0.1))
        await asyncio.sleep(10)
        assert await poll(
            10,
            lambda: prom.has_data(
                'job_route_model_outcome:sse_audit_streams:ratio_rate5m{outcome="complete"}'
            ),
        )
        await asyncio.sleep(2)  # a few more evaluations of every rule on healthy data
        stop.set()
        assert await healthy > 20
        assert await prom.alert_states() == {}
        for rule in rules:
            if rule["alert"] in FAULT_ALERTS:
                assert await prom.query(rule["expr"]) == [], rule["alert"]

        # Faulty mix on the same route and model: each fault alert goes pending or firing,
        # and each alert expression returns data.
        stop = asyncio.Event()
        faulty = asyncio.create_task(keep_sending(served.url, FAULTY_MIX, stop, concurrency=4, pause=0.05))
        alerted: set[str] = set()
        expr_data: set[str] = set()

        async def faults_seen() -> bool:
            states = await prom.alert_states()
            alerted.update(a for a, s in states.items() if s & {"pending", "firing"})
            for rule in rules:
                if rule["alert"] in FAULT_ALERTS and await prom.has_data(rule["expr"]):
                    expr_data.add(rule["alert"])
            return alerted >= FAULT_ALERTS and expr_data >= FAULT_ALERTS

        seen = await poll(40, faults_seen)
        # Every dashboard query returns data while the faulty traffic flows.
        empty = [title for title, expr in panels if not await prom.has_data(as_grafana_would(expr))]
        for query in variables:
            m = re.fullmatch(r"label_values\((.+), (\w+)\)", query)
            assert m, query
            if not await prom.label_values(as_grafana_would(m.group(1)), m.group(2)):
                empty.append(query)
        metrics_text = await (await http.get(served.metrics_url / "metrics")).text()
        stop.set()
        assert await faulty > 40
        assert seen and not empty, (
            f"alerts reached: {sorted(alerted)}, alert exprs with data: "
            f"{sorted(expr_data)}, dashboard queries without data: {empty}"
        )

        # The process's own figures: an operator sees descriptors run out before clients do.
        assert re.search(r"^process_open_fds \d", metrics_text, re.M)
        assert re.search(r"^process_max_fds \d", metrics_text, re.M)
        # The proxy's own exposition passes promtool's linter.
        check = subprocess.run(
            ["promtool", "check", "metrics"],
            input=metrics_text,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert check.returncode == 0, check.stdout + check.stderr

        # Proxy gone: the down alerts go pending or firing, their expressions return data.
        assert await served.stop() == 0

        async def down_seen() -> bool:
            states = await prom.alert_states()
            reached = {a for a, s in states.items() if s & {"pending", "firing"}}
            with_data = {
                r["alert"] for r in rules if r["alert"] in DOWN_ALERTS and await prom.has_data(r["expr"])
            }
            return reached >= DOWN_ALERTS and with_data >= DOWN_ALERTS

        assert await poll(20, down_seen)
    assert time.monotonic() - started < 110


def canary_row() -> list[tuple[str, str]]:
    """(panel title, expr) of the dashboard's Baseline vs canary row."""
    dash = json.loads(DASHBOARD.read_text())
    out: list[tuple[str, str]] = []
    inside = False
    for p in dash["panels"]:
        if p["type"] == "row":
            inside = p["title"] == "Baseline vs canary"
        elif inside:
            out += [(p["title"], t["expr"]) for t in p["targets"]]
    assert out
    return out


async def send_plain(http: aiohttp.ClientSession, base: URL, n: int) -> None:
    """Streams that name no scenario: each gateway plays its own (healthy, or forced)."""
    body = orjson.dumps(
        {
            "model": "gpt-canary",
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
            "stream_options": {"include_usage": True},
        }
    )

    async def one() -> None:
        with contextlib.suppress(aiohttp.ClientPayloadError):
            async with http.post(
                base / "v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
            ) as resp:
                await resp.read()

    await asyncio.gather(*(one() for _ in range(n)))


async def test_canary_row_alerts_and_rollout_templates_against_a_real_prometheus(
    demo_gateway, tmp_path
) -> None:
    """A healthy baseline and a truncating canary at 50 %, guard on: the guard trips, both canary
    alerts go pending or firing, every query of the Baseline vs canary row returns data for both
    sides, and the Argo Rollouts and Flagger queries return data that fails the rollout."""
    started = time.monotonic()
    baseline = await demo_gateway(**FAST)
    canary = await demo_gateway(scenario="truncated", **FAST)
    rules = {r["alert"]: r for r in alert_rules() if r["alert"] in CANARY_ALERTS}
    async with (
        aiohttp.ClientSession() as http,
        serve_process(
            baseline,
            "--canary",
            str(canary),
            "--canary-percent",
            "50",
            # Enough canary streams to span a few scrapes before the trip.
            "--canary-guard",
            "--canary-guard-min-streams",
            "60",
        ) as served,
        prometheus(tmp_path, served.metrics_url.port or 0, http) as prom,
    ):
        await asyncio.sleep(2)  # a scrape of the idle proxy first: rates start from zero
        sent = 0
        while not any(line.get("event") == "canary_tripped" for line in served.lines):
            assert sent < 400, "the guard never tripped"
            await send_plain(http, served.url, 4)
            sent += 4
            # Paced over several scrapes: a counter's increments before its first scrape
            # are not part of any rate.
            await asyncio.sleep(0.25)
        # Baseline traffic goes on (everything goes to the baseline now).
        stop = asyncio.Event()

        async def more() -> None:
            while not stop.is_set():
                await send_plain(http, served.url, 2)
                await asyncio.sleep(0.2)

        background = asyncio.create_task(more())
        alerted: set[str] = set()

        async def canary_alerts() -> bool:
            states = await prom.alert_states()
            alerted.update(a for a, s in states.items() if s & {"pending", "firing"})
            return alerted >= CANARY_ALERTS

        if not await poll(30, canary_alerts):
            figures = {
                q: await prom.query(q)
                for q in (
                    "job_role:sse_audit_bad_streams:ratio_rate5m",
                    "job_role:sse_audit_judged_streams:rate5m",
                )
            }
            raise AssertionError(f"alerts reached: {alerted}; {figures}")
        for name, rule in rules.items():
            assert await prom.has_data(rule["expr"]), name

        # The row, with a rate interval wide enough to span the canary's traffic before the trip.
        missing = []
        for title, expr in canary_row():
            result = await prom.query(as_grafana_would(expr, "2m"))
            sides = {s["metric"].get("upstream") for s in result if _finite(s["value"][1])}
            if "Canary share and guard" in title:
                ok = bool(sides)
            elif "Anomaly share" in title:  # a healthy baseline has no anomaly series at all
                ok = "canary" in sides
            else:
                ok = {"baseline", "canary"} <= sides
            if not ok:
                missing.append((title, sorted(map(str, sides))))
        assert not missing, missing
        tripped = await prom.query("max(sse_audit_canary_tripped)")
        assert float(tripped[0]["value"][1]) == 1.0

        # Argo Rollouts and Flagger: data, and values that fail the rollout.
        for name, query in {**argo_queries("5m"), **flagger_queries("1m")}.items():
            result = await prom.query(query)
            assert len(result) == 1 and _finite(result[0]["value"][1]), (name, result)
            value = float(result[0]["value"][1])
            if "bad-stream-share" in name:
                limit = 5.0 if name.startswith("sse-audit-") else 0.05  # Flagger: points
                assert value > limit, (name, value)
            else:
                assert value > 0, (name, value)
        stop.set()
        await background
        assert await served.stop() == 0
    assert time.monotonic() - started < 90
