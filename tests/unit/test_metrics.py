"""The metrics sink: exposition equals what per-observation calls would have produced."""

from __future__ import annotations

import itertools
import re
from dataclasses import replace
from pathlib import Path

from chat_streams import healthy
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from sse_audit_proxy.core import buckets
from sse_audit_proxy.core.audit import End, StreamAudit
from sse_audit_proxy.core.dialects.chat import ChatCompletions
from sse_audit_proxy.core.guard import IGNORED_OUTCOMES, NOT_CLIENT_ERRORS, gave_up_waiting, is_bad
from sse_audit_proxy.core.record import AuditRecord
from sse_audit_proxy.core.request_info import safe_token
from sse_audit_proxy.sinks.metrics import (
    _METHODS,
    ALERTED_ANOMALIES,
    ALERTED_OUTCOMES,
    ALERTED_STATUSES,
    MAX_STATUSES,
    OTHER,
    LabelCap,
    Metrics,
    _add_counts,
)

ROOT = Path(__file__).resolve().parents[2]


def test_pre_bucketed_gaps_match_one_observe_per_gap() -> None:
    times = [0.1, 0.1, 0.1004, 0.103, 0.2, 0.9, 0.9005, 3.0, 30.0, 200.0]
    frames = healthy(len(times) - 4)
    assert len(frames) == len(times)
    audit = StreamAudit(ChatCompletions(), 0.0)
    for data, t in zip(frames, times, strict=True):
        audit.feed(data, t)
    result = audit.finish(200.1, End.UPSTREAM_EOF)

    registry = CollectorRegistry()
    Metrics(registry).record(
        AuditRecord("t", "chat_completions", "POST", "m", 200, 0.0, result.duration, 0, result)
    )
    reference_registry = CollectorRegistry()
    reference = Histogram(
        "sse_audit_inter_chunk_gap_seconds",
        "x",
        ("route", "model", "upstream"),
        buckets=buckets.GAP,
        registry=reference_registry,
    )
    for earlier, later in itertools.pairwise(times):
        reference.labels("chat_completions", "m", "baseline").observe(later - earlier)

    def gap_lines(reg: CollectorRegistry) -> list[str]:
        return [
            line
            for line in generate_latest(reg).decode().splitlines()
            if line.startswith("sse_audit_inter_chunk_gap_seconds_")
            and "_created" not in line
            and "_sum" not in line
        ]

    assert gap_lines(registry) == gap_lines(reference_registry)
    got = registry.get_sample_value(
        "sse_audit_inter_chunk_gap_seconds_sum",
        {"route": "chat_completions", "model": "m", "upstream": "baseline"},
    )
    assert got is not None and abs(got - (times[-1] - times[0])) < 1e-9


def test_label_cap_keeps_known_values_and_folds_new_ones() -> None:
    cap = LabelCap(2)
    assert [cap(v) for v in ("x", "y", "z", "x", "w")] == ["x", "y", "other", "x", "other"]


def _reference_record(m: Metrics, rec: AuditRecord) -> None:
    """What Metrics.record did before the per-label-set children: labels() at every call."""
    method = rec.method if rec.method in _METHODS else OTHER
    side = rec.upstream
    m.requests.labels(rec.route, method, m.statuses(str(rec.status)), side).inc()
    s = rec.stream
    if s is None:
        return
    route, model = (
        rec.route,
        m.models(rec.model, not (400 <= rec.status < 500 and rec.status not in NOT_CLIENT_ERRORS)),
    )
    rm = (route, model, side)
    outcome = s.outcome.value
    m.streams.labels(*rm, outcome).inc()
    refused = outcome == "upstream_error" and 400 <= rec.status < 500 and rec.status not in NOT_CLIENT_ERRORS
    left_badly = outcome in IGNORED_OUTCOMES and ("malformed_frame" in s.anomalies or gave_up_waiting(rec))
    if (outcome not in IGNORED_OUTCOMES and not refused) or left_badly:
        m.judged.labels(*rm).inc()
        if left_badly or is_bad(outcome, s.anomalies):
            m.bad.labels(*rm).inc()
    for anomaly in s.anomalies:
        m.anomalies.labels(*rm, anomaly).inc()
    if s.usage_judged:
        m.usage_requested.labels(*rm).inc()
    if s.ttfb is not None:
        m.ttfb.labels(*rm).observe(s.ttfb)
    if s.ttft is not None:
        m.ttft.labels(*rm).observe(s.ttft)
    if s.frames > 1:
        _add_counts(m.gap.labels(*rm), s.gap_counts, s.gap_sum)  # (pinned by the test above)
    if s.max_gap is not None:
        m.max_gap.labels(*rm).observe(s.max_gap)
    m.duration.labels(*rm).observe(s.duration)
    for reason in s.finish_reasons:
        m.finish.labels(*rm, m.finish_reasons(safe_token(reason, 40) or OTHER)).inc()
    if s.prompt_tokens:
        m.tokens.labels(*rm, "prompt").inc(s.prompt_tokens)
    if s.completion_tokens:
        m.tokens.labels(*rm, "completion").inc(s.completion_tokens)


def _exposition(registry: CollectorRegistry) -> list[str]:
    return sorted(line for line in generate_latest(registry).decode().splitlines() if "_created" not in line)


def test_record_exports_what_labels_at_every_call_exports() -> None:
    # Varied streams on two sides and three models (one past the cap): which series exist
    # (a child made on first use only) and their values must be the same.
    streams = [
        (healthy(3), End.UPSTREAM_EOF, "m1", "baseline", 200),
        (healthy(2, usage=False, done=False), End.UPSTREAM_EOF, "m1", "baseline", 200),
        (healthy(4, finish=None), End.CLIENT_GONE, "m2", "canary", 200),
        (healthy(1), End.UPSTREAM_EOF, "m3", "canary", 200),
        (healthy(3)[:1], End.IDLE_TIMEOUT, "m2", "baseline", 200),
        ([], End.UPSTREAM_EOF, "m1", "canary", 200),
        ([], End.UPSTREAM_STATUS, "m1", "canary", 404),  # refused as the client's error
        ([], End.UPSTREAM_STATUS, "m1", "canary", 429),
        ([], End.UPSTREAM_STATUS, "m2", "baseline", 503),
    ]
    got_registry, want_registry = CollectorRegistry(), CollectorRegistry()
    got, want = Metrics(got_registry, max_models=2), Metrics(want_registry, max_models=2)
    for frames, end, model, side, status in streams:
        audit = StreamAudit(ChatCompletions(), 0.0, include_usage=True)
        t = 0.0
        for data in frames:
            t += 0.25
            audit.feed(data, t)
        result = audit.finish(t + 0.5, end)
        rec = AuditRecord(
            "t", "chat_completions", "POST", model, status, 0.0, result.duration, 0, result, upstream=side
        )
        got.record(rec)
        _reference_record(want, rec)
    assert _exposition(got_registry) == _exposition(want_registry)


def test_refused_requests_take_no_place_among_the_models() -> None:
    """Streaming requests for made-up models, refused with 404, once filled --max-models: the
    real model that came next was counted as `other` until a restart."""
    registry = CollectorRegistry()
    m = Metrics(registry, max_models=3)

    def stream(model: str, status: int) -> None:
        audit = StreamAudit(ChatCompletions(), 0.0)
        result = audit.finish(0.1, End.UPSTREAM_STATUS if status >= 400 else End.UPSTREAM_EOF)
        m.record(AuditRecord("t", "chat_completions", "POST", model, status, 0.0, 0.1, 0, result))

    for i in range(5):
        stream(f"made-up-{i}", 404)
    stream("gpt-4o", 200)
    stream("gpt-4o", 401)  # counted already: keeps its name when refused
    stream("made-up-9", 404)
    stream("o1", 429)  # a rate limit is the upstream's state: the model is real
    # The client left before an answer: nothing showed the model real (made-up names sent and
    # hung up on filled the list: an outside review); one with a place keeps it.
    stream("o2", 499)
    stream("gpt-4o", 499)
    models = {
        s.labels["model"] for f in registry.collect() if f.name == "sse_audit_streams" for s in f.samples
    }
    assert models == {"other", "gpt-4o", "o1"}
    assert m.models("o3", True) == "o3"  # the place o2 did not take
    assert m.models("o4", True) == "other"  # the cap holds


def test_refusals_of_a_counted_model_on_other_routes_make_no_series_of_their_own() -> None:
    """404s for each counted model on each route made about 55 series a (route, model) pair:
    1,500 requests took a proxy from 13,600 series to 99,000 and a 12 MB scrape (an outside
    review). A refusal counts under `other` where its pair has no series; where it has, as
    itself (a real model's 400s on the route it streams on are worth seeing)."""
    registry = CollectorRegistry()
    m = Metrics(registry, max_models=100)
    routes = ("chat_completions", "responses", "anthropic_messages", "ollama_chat", "other")

    def stream(route: str, model: str, status: int) -> None:
        audit = StreamAudit(ChatCompletions(), 0.0)
        result = audit.finish(0.1, End.UPSTREAM_STATUS if status >= 400 else End.UPSTREAM_EOF)
        rec = AuditRecord("t", route, "POST", model, status, 0.0, 0.1, 0, result)
        m.stream_started(rec)
        m.record(rec)
        m.stream_ended(rec)

    models = [f"model-{i}" for i in range(20)]
    for model in models:
        stream("chat_completions", model, 200)
    pairs_before = _pairs(registry)
    for model in models:
        for route in routes:
            stream(route, model, 404)
    stream("chat_completions", "model-0", 400)
    pairs = _pairs(registry)
    assert pairs - pairs_before == {(route, "other") for route in routes if route != "chat_completions"}
    assert (
        _value(
            registry,
            "sse_audit_streams_total",
            route="chat_completions",
            model="model-0",
            outcome="upstream_error",
        )
        == 2.0
    )
    assert (
        _value(
            registry, "sse_audit_streams_total", route="responses", model="other", outcome="upstream_error"
        )
        == 20.0
    )


def test_a_refusal_makes_no_zeros_and_a_later_stream_still_gets_its_own() -> None:
    """A 404 that opened before its model's first 200 on the route ended made `judged`, `bad`
    and `streams{complete}` at 0 under `other`, never counted (the second pass over the fix
    above); and the zeros a stream's first count needs must come even after a refusal (a
    429) made the pair's other series."""
    registry = CollectorRegistry()
    m = Metrics(registry, max_models=100)

    def rec(model: str, status: int) -> AuditRecord:
        result = StreamAudit(ChatCompletions(), 0.0).finish(0.1, End.UPSTREAM_STATUS)
        return AuditRecord("t", "chat_completions", "POST", model, status, 0.0, 0.1, 0, result)

    m.models("gpt-x", True)
    refused, served = rec("gpt-x", 404), rec("gpt-x", 200)
    m.stream_started(refused)
    m.stream_started(served)
    m.record(served)
    m.record(refused)
    assert ("chat_completions", "other") not in _pairs(registry)
    limited = rec("o1", 429)
    m.stream_started(limited)
    m.record(limited)
    m.stream_started(rec("o1", 200))  # open: its zeros are there before its count
    labels = {"route": "chat_completions", "model": "o1", "upstream": "baseline"}
    assert _value(registry, "sse_audit_streams_total", outcome="complete", **labels) == 0.0
    assert _value(registry, "sse_audit_judged_streams_total", **labels) == 0.0


def _pairs(registry: CollectorRegistry) -> set[tuple[str, str]]:
    return {
        (s.labels["route"], s.labels["model"])
        for f in registry.collect()
        for s in f.samples
        if "route" in s.labels and "model" in s.labels
    }


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def test_a_streams_counters_are_exported_at_zero_from_its_start() -> None:
    """A series that first appears with its first count has that count missed by Prometheus'
    rate() and increase() (no sample before it): a new canary's first bad stream on each model
    went unseen by the dashboard, the alerts and the rollout's analysis (an outside review)."""
    registry = CollectorRegistry()
    m = Metrics(registry, max_models=2)
    series = {"route": "chat_completions", "model": "m1", "upstream": "canary"}
    assert _value(registry, "sse_audit_bad_streams_total", **series) is None
    rec = AuditRecord("t", "chat_completions", "POST", "m1", 200, 0.0, 0.0, 0, None, upstream="canary")
    m.stream_started(rec)
    assert _value(registry, "sse_audit_bad_streams_total", **series) == 0
    assert _value(registry, "sse_audit_judged_streams_total", **series) == 0
    assert _value(registry, "sse_audit_streams_total", outcome="complete", **series) == 0
    assert _value(registry, "sse_audit_active_streams", route="chat_completions", upstream="canary") == 1
    audit = StreamAudit(ChatCompletions(), 0.0)
    audit.feed(healthy(3)[0], 0.1)
    rec.stream = audit.finish(0.2, End.UPSTREAM_EOF)  # cut: truncated, a bad stream
    m.stream_ended(rec)
    m.record(rec)
    assert _value(registry, "sse_audit_bad_streams_total", **series) == 1
    assert _value(registry, "sse_audit_judged_streams_total", **series) == 1
    assert _value(registry, "sse_audit_streams_total", outcome="truncated", **series) == 1
    assert _value(registry, "sse_audit_active_streams", route="chat_completions", upstream="canary") == 0
    # A stream refused as the client's error (a made-up model) takes no place at its start
    # either, and makes no zeros (it is never judged)
    m.stream_started(AuditRecord("t", "chat_completions", "POST", "made-up", 404, 0.0, 0.0, 0, None))
    m.stream_started(AuditRecord("t", "chat_completions", "POST", "m2", 200, 0.0, 0.0, 0, None))
    assert m.models("m2", False) == "m2"
    assert _value(registry, "sse_audit_judged_streams_total", model="made-up") is None
    assert _value(registry, "sse_audit_judged_streams_total", model="other") is None


def test_the_series_the_alerts_divide_are_at_zero_from_a_streams_start() -> None:
    """The rules' shares of truncated, buffered, ... streams and of 5xx answers: with the series
    made by their first count, a first burst of them (three 500s, three buffered streams) was
    not in `rate()` and no alert fired until a second (an outside review, real Prometheus)."""
    registry = CollectorRegistry()
    m = Metrics(registry)
    series = {"route": "chat_completions", "model": "m1", "upstream": "canary"}
    m.stream_started(
        AuditRecord("t", "chat_completions", "POST", "m1", 200, 0.0, 0.0, 0, None, upstream="canary")
    )
    for outcome in ("complete", "truncated"):
        assert _value(registry, "sse_audit_streams_total", outcome=outcome, **series) == 0
    for anomaly in ("buffered", "bursty", "missing_done", "missing_finish_reason", "missing_usage"):
        assert _value(registry, "sse_audit_stream_anomalies_total", anomaly=anomaly, **series) == 0
    for status in ("408", "429", "500", "502", "503", "504"):
        assert (
            _value(
                registry,
                "sse_audit_requests_total",
                route="chat_completions",
                method="POST",
                status=status,
                upstream="canary",
            )
            == 0
        )
    assert _value(registry, "sse_audit_stream_anomalies_total", anomaly="held_open") is None  # no rule's


def test_the_series_made_at_zero_are_the_ones_the_rules_read() -> None:
    """Every outcome, anomaly and status the shipped rules select on is made at 0 (a rule added
    on another would miss its first burst again), and no more (each is a series per model)."""
    rules = (ROOT / "deploy" / "prometheus" / "sse-audit-proxy.rules.yml").read_text()
    selected = {
        label: set(re.findall(label + r'="([a-z_0-9]+)"', rules))
        for label in ("outcome", "anomaly", "status")
    }
    assert selected["outcome"] - {"complete"} == set(ALERTED_OUTCOMES)
    assert selected["anomaly"] == set(ALERTED_ANOMALIES)
    statuses = set(selected["status"])
    for pattern in re.findall(r'status=~"([^"]+)"', rules):
        statuses |= {str(s) for s in range(100, 600) if re.fullmatch(pattern, str(s))}
    common = {"408", "429", "500", "502", "503", "504"}  # of the 5xx, those gateways send
    assert common <= statuses
    assert set(ALERTED_STATUSES) == common


def test_the_status_label_is_bounded() -> None:
    """The upstream chooses its statuses: 798 distinct ones once made 14,400 series."""
    registry = CollectorRegistry()
    m = Metrics(registry)
    for status in range(100, 900):
        m.record(AuditRecord("t", "other", "GET", "unknown", status, 0.0, 0.1, 0, None))
    statuses = {
        s.labels["status"] for f in registry.collect() if f.name == "sse_audit_requests" for s in f.samples
    }
    assert len(statuses) == MAX_STATUSES + 1 and "other" in statuses and {"100", "163"} <= statuses


def test_the_method_label_is_a_standard_method_or_other() -> None:
    """The client chooses its method: PROPFIND, MKCOL or a made-up one would each be a series
    (a third mutation review found no test holding this)."""
    registry = CollectorRegistry()
    m = Metrics(registry)
    for method in ("PROPFIND", "MKCOL", "ZZMETHODA", "POST", "GET"):
        m.record(AuditRecord("t", "other", method, "unknown", 200, 0.0, 0.1, 0, None))
    methods = {
        s.labels["method"] for f in registry.collect() if f.name == "sse_audit_requests" for s in f.samples
    }
    assert methods == {"POST", "GET", "other"}


def test_the_finish_reason_label_is_bounded() -> None:
    """The upstream chooses its finish reasons: any protocol word (`reason_17`) is kept as one,
    so the label's cap is the only bound on its series (a third mutation review)."""
    registry = CollectorRegistry()
    m = Metrics(registry)
    for i in range(45):
        audit = StreamAudit(ChatCompletions(), 0.0)
        audit.feed(b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"reason_%d"}]}\n\n' % i, 0.1)
        audit.feed(b"data: [DONE]\n\n", 0.2)
        result = audit.finish(0.3, End.UPSTREAM_EOF)
        assert result.finish_reasons == [f"reason_{i}"]
        m.record(AuditRecord("t", "chat_completions", "POST", "m", 200, 0.0, 0.3, 0, result))
    reasons = {
        s.labels["finish_reason"]
        for f in registry.collect()
        if f.name == "sse_audit_finish_reasons"
        for s in f.samples
    }
    assert len(reasons) == 33 and "other" in reasons, sorted(reasons)


def _cut_stream(end: End, frames: int | None) -> AuditRecord:
    """A healthy stream cut after `frames` frames (None: all of them, `[DONE]` included)."""
    audit = StreamAudit(ChatCompletions(), 0.0)
    for i, data in enumerate(healthy(4)[:frames]):
        audit.feed(data, 0.1 * (i + 1))
    result = audit.finish(1.0, end)
    return AuditRecord("t", "chat_completions", "POST", "m", 200, 0.0, 1.0, 0, result)


def test_streams_the_proxy_cut_are_counted_by_end_reason() -> None:
    """Their outcome is a client's that left: a rolling deploy that cut long streams looked
    like users leaving (an outside review)."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)

    def cut(reason: str, side: str = "baseline") -> float | None:
        labels = {"end_reason": reason, "upstream": side}
        return registry.get_sample_value("sse_audit_streams_cut_total", labels)

    assert (cut("aborted"), cut("slow_client")) == (0.0, 0.0)  # from the start
    for end in (End.ABORTED, End.ABORTED, End.SLOW_CLIENT, End.CLIENT_GONE):
        rec = _cut_stream(end, 2)
        assert rec.outcome == "client_disconnect" and rec.upstream == "baseline"
        metrics.record(rec)
    whole = _cut_stream(End.ABORTED, None)  # its [DONE] had reached the client: not a cut
    assert whole.outcome == "complete"
    metrics.record(whole)
    assert (cut("aborted"), cut("slow_client"), cut("client_gone")) == (2.0, 1.0, None)
    # The canary's own series (a contract: every stream metric has `upstream`), at 0 from its
    # first stream, so a drain that cuts only canary streams is seen as the canary's.
    canary = replace(_cut_stream(End.SLOW_CLIENT, 2), upstream="canary")
    metrics.stream_started(canary)
    assert (cut("aborted", "canary"), cut("slow_client", "canary")) == (0.0, 0.0)
    metrics.record(canary)
    assert (cut("slow_client", "canary"), cut("slow_client")) == (1.0, 1.0)
    named = CollectorRegistry()
    Metrics(named, sides=("blue", "green"))  # --upstream-name and --canary-name
    (family,) = [f for f in named.collect() if f.name == "sse_audit_streams_cut"]
    series = {sample.labels["upstream"] for sample in family.samples}
    assert series == {"blue", "green"}
