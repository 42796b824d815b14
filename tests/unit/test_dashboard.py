"""The Grafana dashboard: generated from grafana/dashboard.py, current, and wired to the rules."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
JSON = ROOT / "grafana" / "dashboards" / "sse-audit-proxy.json"
RULES = ROOT / "deploy" / "prometheus" / "sse-audit-proxy.rules.yml"


def generator():
    spec = importlib.util.spec_from_file_location("dashboard", ROOT / "grafana" / "dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_dashboard_json_is_what_the_generator_makes() -> None:
    assert JSON.read_text() == generator().render(), "run: python grafana/dashboard.py"


def test_dashboard_has_the_canary_variables_and_a_described_panel_for_each_concern() -> None:
    dash = json.loads(JSON.read_text())
    names = [v["name"] for v in dash["templating"]["list"]]
    assert names == ["datasource", "route", "model", "upstream", "instance"]
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert all(p["description"] and p["datasource"]["uid"] == "${datasource}" for p in panels)
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    for needed in (
        "sse_audit_requests_total",
        "sse_audit_streams_total",
        "sse_audit_stream_anomalies_total",
        "sse_audit_time_to_first_token_seconds",
        "sse_audit_time_to_first_byte_seconds",
        "sse_audit_inter_chunk_gap_seconds",
        "sse_audit_stream_max_gap_seconds",
        "sse_audit_finish_reasons_total",
        "sse_audit_usage_tokens_total",
        "sse_audit_active_streams",
        "histogram_quantile(0.5,",
        "histogram_quantile(0.95,",
        "histogram_quantile(0.99,",
        'anomaly="buffered"',
        'anomaly="bursty"',
        'outcome="truncated"',
        "missing_usage",
        "upstream_errors",
    ):
        assert needed in exprs, needed
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_every_recorded_series_the_dashboard_plots_is_defined_in_the_rules() -> None:
    recorded = {
        r["record"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "record" in r
    }
    exprs = [t["expr"] for p in json.loads(JSON.read_text())["panels"] for t in p.get("targets", ())]
    used = {name for e in exprs for name in re.findall(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b", e)}
    assert used and used <= recorded, used - recorded


def test_the_baseline_vs_canary_row_shows_both_sides_on_the_same_panels() -> None:
    dash = json.loads(JSON.read_text())
    rows = [p for p in dash["panels"] if p["type"] == "row"]
    titles = [r["title"] for r in rows]
    assert "Baseline vs canary" in titles
    start = dash["panels"].index(rows[titles.index("Baseline vs canary")])
    following = dash["panels"][start + 1 :]
    row = following[: next((i for i, p in enumerate(following) if p["type"] == "row"), len(following))]
    exprs = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in row}
    # Every panel but the share/guard one splits by side, so both sides share each panel.
    for title, expr in exprs.items():
        if title != "Canary share and guard":
            assert "by (upstream" in expr, title
    joined = " ".join(exprs.values())
    for needed in (
        "sse_audit_streams_total",
        "sse_audit_bad_streams_total",
        "sse_audit_stream_anomalies_total",
        "sse_audit_time_to_first_token_seconds",
        "sse_audit_time_to_first_byte_seconds",
        "sse_audit_stream_max_gap_seconds",
        'anomaly="missing_usage"',
        "sse_audit_canary_percent",
        "sse_audit_canary_tripped",
        "histogram_quantile(0.5,",
        "histogram_quantile(0.95,",
    ):
        assert needed in joined, needed


def test_bursty_panel_plots_what_its_alert_evaluates_and_tells_the_operator_what_to_check() -> None:
    dash = json.loads(JSON.read_text())
    found = [p for p in dash["panels"] if p["title"] == "Bursty and buffered share"]
    assert len(found) == 1
    panel = found[0]
    exprs = [t["expr"] for t in panel["targets"]]
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    alert = next(r for r in rules if r.get("alert") == "SSEAuditBurstyStreams")
    series, threshold = alert["expr"].splitlines()[0].rsplit(" > ", 1)
    assert series.replace('{anomaly="bursty"}', "") in exprs[0] and 'anomaly="bursty"' in exprs[0]
    assert 'anomaly="buffered"' in exprs[1]
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1]["value"] == float(threshold)
    assert all("route" in t["legendFormat"] and "model" in t["legendFormat"] for t in panel["targets"])
    for needed in ("proxy_buffering", "gzip", "CDN", "re-batch", "anomaly=bursty"):
        assert needed in panel["description"], needed


def _alert_thresholds() -> dict[tuple[str, str], float]:
    """(recording series, its anomaly/outcome matcher) -> the share above which its alert fires."""
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    out: dict[tuple[str, str], float] = {}
    for rule in rules:
        first = rule.get("expr", "").splitlines()[0] if rule.get("expr") else ""
        found = re.fullmatch(r"\s*([\w:]+)(\{[^}]*\})?\s*>\s*([\d.]+)\s*", first)
        if "alert" in rule and found:
            out[found.group(1), found.group(2) or "{}"] = float(found.group(3))
    return out


def _red_line_for(panel: dict[str, Any], legend: str) -> float | None:
    """Where Grafana draws the red line for a series: its override, else the panel's default."""
    config = panel["fieldConfig"]
    for override in config["overrides"]:
        if override["matcher"]["id"] == "byRegexp" and re.match(override["matcher"]["options"], legend):
            [prop] = [p for p in override["properties"] if p["id"] == "thresholds"]
            return float(prop["value"]["steps"][-1]["value"])
    steps = config["defaults"].get("thresholds", {}).get("steps")
    return float(steps[-1]["value"]) if steps else None


def test_every_series_an_alert_watches_turns_red_where_that_alert_fires() -> None:
    """A panel plotting two series whose alerts fire at different shares (buffered 5 %,
    truncated 1 %) must not show one of them red while nothing pages, nor green while it does."""
    alerts = _alert_thresholds()
    assert len(alerts) >= 6
    checked = 0
    for panel in json.loads(JSON.read_text())["panels"]:
        for t in panel.get("targets", []):
            for (series, matcher), threshold in alerts.items():
                label = matcher.strip("{}")
                if series in t["expr"] and (
                    not label or label.replace('"', "") in t["expr"].replace('"', "")
                ):
                    legend = t["legendFormat"].replace("{{route}}", "chat").replace("{{model}}", "m")
                    assert _red_line_for(panel, legend) == threshold, (panel["title"], legend)
                    checked += 1
    assert checked >= 6
