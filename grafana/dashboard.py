"""Generates grafana/dashboards/sse-audit-proxy.json, the canary dashboard.

    python grafana/dashboard.py          # rewrite the JSON
    python grafana/dashboard.py --check  # exit 1 if the committed JSON is not current

The JSON is committed so it can be imported or provisioned as is; a test checks that it is
what this file generates, and the end-to-end test runs every query in it against a real
Prometheus scraping the real proxy. Share panels plot the recording rules of
deploy/prometheus/sse-audit-proxy.rules.yml, so they show exactly what the alerts evaluate.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "dashboards" / "sse-audit-proxy.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'route=~"$route", model=~"$model", upstream=~"$upstream", instance=~"$instance"'
ROUTE_SEL = 'route=~"$route", upstream=~"$upstream", instance=~"$instance"'
RULE_SEL = 'route=~"$route", model=~"$model"'  # recorded ratios are summed over instances
RATE = "$__rate_interval"
WIDTH = 24


def rate(metric: str, by: str, sel: str = SEL) -> str:
    return f"sum by ({by}) (rate({metric}{{{sel}}}[{RATE}]))"


def quantile(q: float, histogram: str, by: str = "le") -> str:
    return f"histogram_quantile({q}, sum by ({by}) (rate({histogram}_bucket{{{SEL}}}[{RATE}])))"


def side_quantiles(histogram: str) -> list[tuple[str, str]]:
    """p50 and p95 per side, both sides on one panel."""
    return [(quantile(q, histogram, "upstream, le"), f"p{round(q * 100)} {{{{upstream}}}}")
            for q in (0.5, 0.95)]


def side_share(numerator: str, by: str = "", denominator: str = "sse_audit_streams_total") -> str:
    """Each side's share of `denominator` (per `by` value too); with no `by`, 0 where a side
    has no such stream."""
    # Divided by the sides with such streams only: a quiet (or rolled back) side's 0/0 drew
    # NaN, or, through `or 0 *`, a healthy-looking 0.
    total = f"({rate(denominator, 'upstream')} > 0)"
    if by:
        return (f"{rate(numerator, f'upstream, {by}')}\n  / ignoring ({by}) group_left ()\n"
                f"{total}")
    return f"(\n  {rate(numerator, 'upstream')}\n  or 0 * {total}\n)\n  / {total}"


# Each side's streams that should carry usage, where there were any.
USAGE_ASKED = f"({rate('sse_audit_usage_requested_streams_total', 'upstream')} > 0)"


def zero_filled(series: str) -> str:
    """A recorded share, or 0 where streams came but the anomaly never happened (nothing for a
    model with no stream in the window)."""
    return (f"{series} or on (job, route, model) "
            f"0 * (job_route_model:sse_audit_streams:rate5m{{{RULE_SEL}}} > 0)")


def target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref,
            "range": True}


def red_above(threshold: float) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [
        {"color": "green", "value": None}, {"color": "red", "value": threshold}]}


def panel(title: str, description: str, targets: list[tuple[str, str]], *, unit: str,
          width: int = 8, threshold: float | None = None, stack: bool = False,
          series_thresholds: tuple[tuple[str, float], ...] = ()) -> dict[str, Any]:
    """`series_thresholds`: (legend prefix, threshold) for series whose alert pages elsewhere
    than `threshold`, so that each line turns red where its own alert fires."""
    defaults: dict[str, Any] = {"unit": unit, "min": 0,
                                "custom": {"fillOpacity": 10, "showPoints": "never",
                                           "stacking": {"mode": "normal" if stack else "none"}}}
    if threshold is not None:
        defaults["thresholds"] = red_above(threshold)
        defaults["custom"]["thresholdsStyle"] = {"mode": "line+area"}
    overrides = [{"matcher": {"id": "byRegexp", "options": f"^{prefix} "},
                  "properties": [{"id": "thresholds", "value": red_above(value)}]}
                 for prefix, value in series_thresholds]
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": defaults, "overrides": overrides},
        "options": {"legend": {"displayMode": "table", "placement": "bottom",
                               "calcs": ["lastNotNull", "max"]},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": [target(expr, legend, chr(ord("A") + i))
                    for i, (expr, legend) in enumerate(targets)],
        "_width": width,
    }


def quantiles(histogram: str, qs: tuple[float, ...] = (0.5, 0.95, 0.99)) -> list[tuple[str, str]]:
    return [(quantile(q, histogram), f"p{round(q * 100)}") for q in qs]


ROWS: list[tuple[str, list[dict[str, Any]]]] = [
    ("Traffic", [
        panel("Requests per second by status",
              "Every proxied request, streamed or not, by the HTTP status the client got. A new "
              "status appearing when the canary takes traffic (429, 502, 504) is the first thing "
              "to look at.",
              [(rate("sse_audit_requests_total", "status", ROUTE_SEL), "{{status}}")],
              unit="reqps", stack=True),
        panel("Streams per second by outcome",
              "Audited event streams by outcome. Healthy traffic is almost all `complete`; "
              "`truncated` means the stream ended before [DONE], `upstream_error` a refused "
              "stream, `client_disconnect` the client left, `timeout` no byte for --idle-timeout.",
              [(rate("sse_audit_streams_total", "outcome"), "{{outcome}}")],
              unit="reqps", stack=True),
        panel("Active streams",
              "Streams being relayed right now, per route. It rises with load and with slow "
              "streams; a climb without more traffic means streams last longer (stalls, slow "
              "tokens).",
              [(f'sum by (route) (sse_audit_active_streams{{{ROUTE_SEL}}})', "{{route}}")],
              unit="short"),
        panel("Upstream error ratio",
              "Share of requests answered 5xx, and 429 (rate limits), over 5 minutes, all "
              "instances and both sides (recording rules: `Side` does not narrow it; the red line is the SSEAuditUpstreamErrors and "
              "SSEAuditUpstreamRateLimited threshold). 502/504: the proxy could not reach the "
              "gateway.",
              [('job_route:sse_audit_upstream_errors:ratio_rate5m{route=~"$route"}',
                "{{route}} 5xx"),
               ('job_route:sse_audit_rate_limited:ratio_rate5m{route=~"$route"}',
                "{{route}} 429")],
              unit="percentunit", width=24, threshold=0.05),
    ]),
    ("Verdicts", [
        panel("Buffered and truncated share",
              "Share of streams over 5 minutes, all instances and both sides (recording rules, "
              "the series the alerts use: `Side` does not narrow it; the Baseline vs canary row "
              "has each side's). Buffered: the completion was withheld and replayed in one burst "
              "(alert above 5 %). Truncated: ended before [DONE] (alert above 1 %). Both should "
              "sit at 0; each series turns red above its own alert's threshold.",
              [(zero_filled('job_route_model_anomaly:sse_audit_stream_anomalies:ratio_rate5m'
                            f'{{anomaly="buffered", {RULE_SEL}}}'), "buffered {{route}} {{model}}"),
               (zero_filled('job_route_model_outcome:sse_audit_streams:ratio_rate5m'
                            f'{{outcome="truncated", {RULE_SEL}}}'),
                "truncated {{route}} {{model}}")],
              unit="percentunit", width=12, threshold=0.01, series_thresholds=(("buffered", 0.05),)),
        panel("Anomalies per second by kind",
              "Anomalies found in streams, by kind (a stream can have several). Use it to see "
              "which fault the gateway has; then GET /streams/recent?anomaly=KIND on the metrics "
              "port for trace IDs.",
              [(rate("sse_audit_stream_anomalies_total", "anomaly"), "{{anomaly}}")],
              unit="cps", width=12, stack=True),
        panel("Missing [DONE] and finish_reason share",
              "Share of streams that ended without data: [DONE], or without any finish_reason "
              "(recording rules, all instances and both sides: `Side` does not narrow it; alerts "
              "above 1 %). Clients that wait for [DONE] "
              "hang; without finish_reason they cannot tell a finished answer from a cut one.",
              [(zero_filled('job_route_model_anomaly:sse_audit_stream_anomalies:ratio_rate5m'
                            f'{{anomaly="missing_done", {RULE_SEL}}}'),
                "no [DONE] {{route}} {{model}}"),
               (zero_filled('job_route_model_anomaly:sse_audit_stream_anomalies:ratio_rate5m'
                            f'{{anomaly="missing_finish_reason", {RULE_SEL}}}'),
                "no finish_reason {{route}} {{model}}")],
              unit="percentunit", threshold=0.01),
        panel("Missing usage share (of streams that asked)",
              "Among streams that should carry usage (the request set "
              "stream_options.include_usage, or a Responses/Messages stream, which always "
              "does) and that the upstream ended, the share that got no usage (recording rule, "
              "all instances and both sides: `Side` does not narrow it; alert above 1 %). Token "
              "accounting and billing lose these requests.",
              [(f'job_route_model:sse_audit_missing_usage:ratio_rate5m{{{RULE_SEL}}}',
                "{{route}} {{model}}")],
              unit="percentunit", threshold=0.01),
        panel("Finish reasons per second",
              "Finish reasons reported per choice. A shift in the mix (more `length`, fewer "
              "`stop`, `tool_calls` vanishing) after the cutover means the gateway changes "
              "requests or responses.",
              [(rate("sse_audit_finish_reasons_total", "finish_reason"), "{{finish_reason}}")],
              unit="cps", stack=True),
    ]),
    ("Latency", [
        panel("Time to first token",
              "From the request all sent to the gateway to the first frame with content, "
              "p50/p95/p99 from the histogram. What users feel as 'it started answering'.",
              quantiles("sse_audit_time_to_first_token_seconds"), unit="s"),
        panel("Time to first byte",
              "From the request all sent to the gateway to its first body byte. When TTFB is "
              "low but TTFT high, the gateway sends headers or role chunks early and content "
              "late; when both rose together, it is slow to answer at all, or it holds the whole "
              "answer (its first byte is then its first token): the buffered share tells which.",
              quantiles("sse_audit_time_to_first_byte_seconds"), unit="s"),
        panel("Time to first token p95 against its baseline",
              "The 5-minute p95 against its median over the last day (recording rules, all "
              "instances and both sides: `Side` does not narrow it). SSEAuditTimeToFirstTokenRegression fires when p95 stays above twice "
              "the baseline and above 0.5 s for 10 minutes.",
              [('job_route_model:sse_audit_time_to_first_token_seconds:p95_rate5m'
                f'{{{RULE_SEL}}}', "p95 {{route}} {{model}}"),
               ('job_route_model:sse_audit_time_to_first_token_seconds:p95_rate5m_median1d'
                f'{{{RULE_SEL}}}', "1-day median {{route}} {{model}}")],
              unit="s"),
    ]),
    ("Streaming smoothness", [
        panel("Inter-chunk gap",
              "Time between consecutive frames, p50/p95/p99 over all gaps. Token-by-token "
              "streaming shows steady gaps of tens of milliseconds; sub-millisecond gaps with a "
              "high TTFT mean bursts (buffering).",
              quantiles("sse_audit_inter_chunk_gap_seconds"), unit="s"),
        panel("Worst gap per stream",
              "The largest gap of each stream, p50/p95/p99 over streams: stalls mid-stream show "
              "up here first. Keep-alives do not end a gap (a reasoning model thinking behind "
              "them shows its whole silence): compare p99 with your clients' read timeouts "
              "only for routes without keep-alives.",
              quantiles("sse_audit_stream_max_gap_seconds"), unit="s"),
        panel("Stream duration",
              "From the request reaching the proxy to the end of the stream, p50/p95/p99.",
              quantiles("sse_audit_stream_duration_seconds"), unit="s"),
        panel("Bursty and buffered share",
              "Share of streams over 5 minutes, all instances and both sides (recording rules, "
              "the series SSEAuditBurstyStreams and SSEAuditBufferedStreams evaluate: `Side` does "
              "not narrow it; alerts above 5 %). "
              "Bursty: the tokens came in clumps (by default at least 3 bursts of 10 or more content "
              "frames arriving less than 2 ms apart after 0.2 s or more without content, holding "
              "at least half of the content); users see the answer jump forward in chunks. "
              "Buffered: the whole answer in one burst after a wait. Both mean something between "
              "the model and the client collects the stream: check nginx `proxy_buffering` (off "
              "for text/event-stream, or `X-Accel-Buffering: no`), gzip or brotli of "
              "text/event-stream without a flush per event, a CDN or WAF in the path, and "
              "gateways that re-batch tokens. GET /streams/recent?anomaly=bursty on the metrics "
              "port gives trace IDs.",
              [(zero_filled('job_route_model_anomaly:sse_audit_stream_anomalies:ratio_rate5m'
                            f'{{anomaly="bursty", {RULE_SEL}}}'), "bursty {{route}} {{model}}"),
               (zero_filled('job_route_model_anomaly:sse_audit_stream_anomalies:ratio_rate5m'
                            f'{{anomaly="buffered", {RULE_SEL}}}'),
                "buffered {{route}} {{model}}")],
              unit="percentunit", width=24, threshold=0.05),
    ]),
    ("Baseline vs canary", [
        panel("Streams per second by side",
              "Audited streams per side (the `upstream` label: --upstream-name and --canary-name, "
              "`baseline` and `canary` by default). Their ratio is the canary share actually in "
              "force; it drops to 0 when the guard trips.",
              [(rate("sse_audit_streams_total", "upstream"), "{{upstream}}")],
              unit="reqps"),
        panel("Bad-stream share by side",
              "Share of each side's streams that the canary guard counts as bad (truncated, "
              "upstream_error, timeout; or buffered, bursty, missing_done, "
              "missing_finish_reason, missing_usage, invalid_tool_arguments, "
              "wrong_content_type, held_open, gzip_members, not_streamed where the API always streams; or left by the client "
              "on a malformed frame or after 1 s without a token). "
              "SSEAuditCanaryRegression fires when the canary's stays 5 points above the "
              "baseline's for 5 minutes.",
              [(side_share("sse_audit_bad_streams_total", denominator="sse_audit_judged_streams_total"),
                "{{upstream}}")],
              unit="percentunit"),
        panel("Canary share and guard",
              "The share of new requests sent to the canary now (sse_audit_canary_percent, 0 "
              "while tripped) and whether the guard has tripped (sse_audit_canary_tripped, "
              "drawn as 100 when tripped, 0 when not). A trip lasts until the percent file "
              "changes or SIGHUP.",
              [('max(sse_audit_canary_percent{instance=~"$instance"})', "canary percent"),
               ('100 * max(sse_audit_canary_tripped{instance=~"$instance"})',
                "tripped (100 = yes)")],
              unit="percent"),
        panel("Outcome share by side",
              "Each outcome's share of each side's streams: `complete` should be equal on both "
              "sides; any other outcome higher on the canary is the canary's doing.",
              [(side_share("sse_audit_streams_total", "outcome"), "{{upstream}} {{outcome}}")],
              unit="percentunit", width=12),
        panel("Anomaly share by side",
              "Each anomaly's share of each side's streams (a stream can have several). An "
              "anomaly that only the canary shows is what the new gateway changed.",
              [(side_share("sse_audit_stream_anomalies_total", "anomaly"),
                "{{upstream}} {{anomaly}}")],
              unit="percentunit", width=12),
        panel("Time to first token by side",
              "p50 and p95 per side. The guard trips when the canary's p95 is above twice the "
              "baseline's (--canary-guard-ttft-ratio), with enough streams to be sure.",
              side_quantiles("sse_audit_time_to_first_token_seconds"), unit="s", width=6),
        panel("Time to first byte by side",
              "p50 and p95 per side: a canary slow to answer at all shows here as well as in "
              "TTFT, and so does one that holds the whole answer (its first byte is its first "
              "token; see the buffered share); one that sends headers early and content late "
              "shows only in TTFT.",
              side_quantiles("sse_audit_time_to_first_byte_seconds"), unit="s", width=6),
        panel("Worst gap p95 by side",
              "p95 over streams of each stream's largest gap between frames, per side: stalls "
              "and bursts on the canary.",
              [(quantile(0.95, "sse_audit_stream_max_gap_seconds", "upstream, le"),
                "p95 {{upstream}}")], unit="s", width=6),
        panel("Usage missing share by side",
              "Among streams that should carry usage, the share without it, per side.",
              [("(\n  " + rate("sse_audit_stream_anomalies_total", "upstream",
                               SEL + ', anomaly="missing_usage"')
                + "\n  or 0 * " + USAGE_ASKED + "\n)\n  / " + USAGE_ASKED,
                "{{upstream}}")],
              unit="percentunit", width=6),
    ]),
    ("Usage", [
        panel("Usage tokens per second",
              "Prompt and completion tokens as reported by the gateway's usage. A drop while "
              "request rates hold means usage is missing (see Missing usage share).",
              [(rate("sse_audit_usage_tokens_total", "type"), "{{type}}")],
              unit="short", width=12, stack=True),
        panel("Completion tokens per stream",
              "Completion tokens reported in usage, over all streams of the route (whatever "
              "their outcome; a stream without usage adds none). A change after the cutover "
              "means different max_tokens, models, truncation upstream or missing usage.",
              [(rate("sse_audit_usage_tokens_total", "route", SEL + ', type="completion"')
                + " / (" + rate("sse_audit_streams_total", "route") + " > 0)",
                "{{route}}")],
              unit="short", width=12),
    ]),
]


def variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {"name": name, "label": label, "type": "query", "datasource": DATASOURCE,
            "query": {"query": query, "refId": f"{name}-values"}, "definition": query,
            "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 1, "options": []}


def build() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    next_id = 1
    for title, row_panels in ROWS:
        panels.append({"type": "row", "title": title, "collapsed": False, "id": next_id,
                       "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": y}, "panels": []})
        next_id += 1
        y += 1
        x = 0
        for p in row_panels:
            p = dict(p)
            w = p.pop("_width")
            if x + w > WIDTH:
                x, y = 0, y + 8
            panels.append({"id": next_id, "gridPos": {"h": 8, "w": w, "x": x, "y": y}, **p})
            next_id += 1
            x += w
        y += 8
    return {
        "uid": "sse-audit-proxy",
        "title": "sse-audit-proxy: canary",
        "description": "Stream verdicts, latency and smoothness measured by sse-audit-proxy in "
                       "front of an OpenAI-compatible gateway.",
        "tags": ["sse-audit-proxy", "llm", "canary"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "",
        "schemaVersion": 39,
        "version": 1,
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts", "type": "dashboard"}]},
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource",
             "query": "prometheus", "refresh": 1, "current": {}, "options": [], "hide": 0},
            variable("route", "Route", "label_values(sse_audit_streams_total, route)"),
            variable("model", "Model",
                     'label_values(sse_audit_streams_total{route=~"$route"}, model)'),
            variable("upstream", "Side", "label_values(sse_audit_requests_total, upstream)"),
            variable("instance", "Instance", "label_values(sse_audit_requests_total, instance)"),
        ]},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is not current: run python grafana/dashboard.py", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
