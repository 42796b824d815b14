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
import pytest
import yaml
from cli_process import serve_process
from demo_client import FAST, HEALTHY, drive
from yarl import URL

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "sse-audit-proxy.rules.yml"
DASHBOARD = ROOT / "grafana" / "dashboards" / "sse-audit-proxy.json"
JOB = "sse-audit-proxy"
# Faults the alerts watch for, weighted so each share stays far above its threshold even
# diluted by the healthy phase that came before, plus healthy streams as a real mix has.
# slow-first-token appears three times so the TTFT p95 clears the regression alert's 0.5 s floor.
# buffered and bursty appear twice each; a bursty stream takes about 1.3 s (clumps 0.3 s apart).
FAULTY_MIX = ("healthy", "buffered", "truncated", "slow-first-token", "no-usage", "no-done",
              "no-finish", "slow-first-token", "error-midstream", "bursty", "http-429",
              "http-500", "buffered", "slow-first-token", "truncated", "keepalive", "stall",
              "bursty")
FAULT_ALERTS = {"SSEAuditBufferedStreams", "SSEAuditBurstyStreams", "SSEAuditTruncatedStreams",
                "SSEAuditMissingDone", "SSEAuditMissingFinishReason", "SSEAuditMissingUsage",
                "SSEAuditUpstreamErrors", "SSEAuditTimeToFirstTokenRegression"}
DOWN_ALERTS = {"SSEAuditProxyDown", "SSEAuditProxyAbsent"}

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="prometheus/promtool missing: .ci/run installs Debian's prometheus package")


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


def as_grafana_would(expr: str) -> str:
    # "All" selected for every variable; $__rate_interval for a 1 s scrape interval.
    expr = re.sub(r"\$(route|model|instance)\b", ".*", expr)
    return expr.replace("$__rate_interval", "10s")


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
        async with self.http.get(self.url / "api/v1/label" / label / "values",
                                 params={"match[]": selector}) as resp:
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
async def prometheus(tmp: Path, metrics_port: int,
                     http: aiohttp.ClientSession) -> AsyncIterator[Prometheus]:
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(rules_for_the_test(tmp))],
        "scrape_configs": [{"job_name": JOB,
                            "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
         "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=(tmp / "prometheus.log").open("wb"))
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


async def keep_sending(base: URL, mix: tuple[str, ...], stop: asyncio.Event, *, concurrency: int,
                       pause: float, limit: int = 2000) -> int:
    """Traffic until `stop` (bounded by `limit` requests): batches of `concurrency` requests."""
    sent = 0
    async with aiohttp.ClientSession() as client:
        while not stop.is_set() and sent < limit:
            await drive(client, base, mix[sent % len(mix):] + mix[:sent % len(mix)],
                        count=concurrency, concurrency=concurrency)
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
    assert {r["alert"] for r in rules} == FAULT_ALERTS | DOWN_ALERTS

    async with serve_process(gateway) as served, \
            prometheus(tmp_path, served.metrics_url.port or 0, http) as prom:
        # Healthy mix: every verdict series exists, no alert is pending or firing. One stream at
        # a time, so the faulty shares cross their thresholds a few seconds into the faulty mix.
        stop = asyncio.Event()
        healthy = asyncio.create_task(
            keep_sending(served.url, HEALTHY, stop, concurrency=1, pause=0.1))
        await asyncio.sleep(10)
        assert await poll(10, lambda: prom.has_data(
            'job_route_model_outcome:sse_audit_streams:ratio_rate5m{outcome="complete"}'))
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
        faulty = asyncio.create_task(
            keep_sending(served.url, FAULTY_MIX, stop, concurrency=4, pause=0.05))
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
        assert seen and not empty, (f"alerts reached: {sorted(alerted)}, alert exprs with data: "
                                    f"{sorted(expr_data)}, dashboard queries without data: {empty}")

        # The proxy's own exposition passes promtool's linter.
        check = subprocess.run(["promtool", "check", "metrics"], input=metrics_text,
                               capture_output=True, text=True, timeout=30, check=False)
        assert check.returncode == 0, check.stdout + check.stderr

        # Proxy gone: the down alerts go pending or firing, their expressions return data.
        assert await served.stop() == 0

        async def down_seen() -> bool:
            states = await prom.alert_states()
            reached = {a for a, s in states.items() if s & {"pending", "firing"}}
            with_data = {r["alert"] for r in rules
                         if r["alert"] in DOWN_ALERTS and await prom.has_data(r["expr"])}
            return reached >= DOWN_ALERTS and with_data >= DOWN_ALERTS

        assert await poll(20, down_seen)
    assert time.monotonic() - started < 110
