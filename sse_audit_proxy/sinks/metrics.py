"""Prometheus metrics: declared once here, fed with finished audit records.

Nothing here runs per frame: gaps are bucketed by the audit and added in one go per stream.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector

from sse_audit_proxy.core import buckets
from sse_audit_proxy.core.guard import client_error, judge
from sse_audit_proxy.core.record import AuditRecord
from sse_audit_proxy.core.verdict import Anomaly, End, Outcome
from sse_audit_proxy.sinks.line_writer import DROP_REASONS

OTHER = "other"
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})

# Why the proxy closed a client connection: the label values of sse_audit_connections_closed_total.
HEADER_TIMEOUT = "header_timeout"
KEEPALIVE_TIMEOUT = "keepalive_timeout"
TOO_MANY_CONNECTIONS = "too_many_connections"
CLOSE_REASONS = (HEADER_TIMEOUT, KEEPALIVE_TIMEOUT, TOO_MANY_CONNECTIONS)


# The series the shipped alert rules divide, exported at 0 from a (route, model, upstream)'s
# first stream as `judged` and `bad` are: made with their first count, a first burst of
# truncated or buffered streams or of 502s was not in rate() at all, and the alerts fired only
# on a second (an outside review, with a real Prometheus). tests/unit/test_metrics.py holds
# them to the rules file.
ALERTED_OUTCOMES = (Outcome.TRUNCATED.value, Outcome.TIMEOUT.value)
ALERTED_ANOMALIES = (
    Anomaly.ERROR_EVENT.value,
    Anomaly.BUFFERED.value,
    Anomaly.BURSTY.value,
    Anomaly.MISSING_DONE.value,
    Anomaly.MISSING_FINISH_REASON.value,
    Anomaly.MISSING_USAGE.value,
)
ALERTED_STATUSES = ("408", "429", "500", "502", "503", "504")
# Streams the proxy itself cut, whose outcome is client_disconnect: sse_audit_streams_cut_total.
CUT_ENDS = (End.ABORTED, End.SLOW_CLIENT)
BASELINE = "baseline"  # the side's name without --upstream-name (AuditRecord.upstream's default)

_log = structlog.get_logger("sse_audit_proxy")
MAX_STATUSES = 64  # distinct `status` label values; real traffic has about ten


class LabelCap:
    """At most `limit` distinct values of a label; later ones become `other`. `seen`: values
    already taken (a replaced worker's, still in the merged totals)."""

    def __init__(self, limit: int, seen: set[str] | None = None) -> None:
        self._limit = limit
        self._seen: set[str] = set(seen or ())
        self._lock = threading.Lock()

    def __call__(self, value: str, admit: bool = True) -> str:
        """`admit=False`: a value not seen yet is `other` and takes no place."""
        if value in self._seen:
            return value
        if not admit:
            return OTHER
        with self._lock:
            if len(self._seen) >= self._limit:
                return OTHER
            self._seen.add(value)
        return value


def labels_in(directory: str | None, names: Sequence[str]) -> dict[str, set[str]]:
    """The values of these labels already in a multiprocess directory's files: the workers
    before this one. A worker replaced after a crash started with empty caps, and the merged
    `/metrics` gained a cap's worth of `model` values at each restart, without end."""
    found: dict[str, set[str]] = {name: set() for name in names}
    if not directory:
        return found
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    try:
        for family in registry.collect():
            for sample in family.samples:
                for name in names:
                    value = sample.labels.get(name)
                    if value is not None and value != OTHER:
                        found[name].add(value)
    except Exception as exc:  # a file a killed worker left half-made: start as the first did
        _log.warning("metrics_labels_unread", directory=directory, error=type(exc).__name__)
        return {name: set() for name in names}
    return found


# 4xx answers whose model still takes a place among --max-models: a rate limit and a timeout
# (the model is real: quotas or timeouts not migrated are the upstream's state). Other
# refusals (a bad key, a made-up model) take none, so a client cannot fill the list with
# names; nor does a client that left before any answer (499): the model was never shown to
# be real, and made-up names sent and hung up on filled the list (an outside review). A name
# with a place keeps it whatever the status (the canary guard judges no 4xx at all but 499:
# guard.client_error).
_MODEL_KEPT = frozenset({408, 429})


def _names_a_model(status: int) -> bool:
    return not 400 <= status < 500 or status in _MODEL_KEPT


class Metrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        max_models: int = 100,
        multiprocess_dir: str | None = None,
        sides: Sequence[str] = (BASELINE,),
    ) -> None:
        taken = labels_in(multiprocess_dir, ("model", "status", "finish_reason"))
        self.models = LabelCap(max_models, taken["model"])
        # The upstream chooses its statuses: 798 distinct ones once made 14,400 series.
        self.statuses = LabelCap(MAX_STATUSES, taken["status"])
        self.finish_reasons = LabelCap(32, taken["finish_reason"])
        # `upstream`: the side that served it (baseline or canary), never its URL.
        rm = ("route", "model", "upstream")
        self.requests = Counter(
            "sse_audit_requests",
            "Every proxied request.",
            ("route", "method", "status", "upstream"),
            registry=registry,
        )
        self.streams = Counter(
            "sse_audit_streams",
            "Audited streams by outcome.",
            (*rm, "outcome"),
            registry=registry,
        )
        self.anomalies = Counter(
            "sse_audit_stream_anomalies",
            "Anomalies found in audited streams, by kind.",
            (*rm, "anomaly"),
            registry=registry,
        )
        self.ttfb = Histogram(
            "sse_audit_time_to_first_byte_seconds",
            "From the request all sent to the upstream to its first body byte.",
            rm,
            buckets=buckets.LATENCY,
            registry=registry,
        )
        self.ttft = Histogram(
            "sse_audit_time_to_first_token_seconds",
            "From the request all sent to the upstream to the first frame with content.",
            rm,
            buckets=buckets.LATENCY,
            registry=registry,
        )
        self.gap = Histogram(
            "sse_audit_inter_chunk_gap_seconds",
            "Time between consecutive frames of a stream (one observation per gap).",
            rm,
            buckets=buckets.GAP,
            registry=registry,
        )
        self.max_gap = Histogram(
            "sse_audit_stream_max_gap_seconds",
            "The largest gap between consecutive frames (one observation per stream).",
            rm,
            buckets=buckets.GAP,
            registry=registry,
        )
        self.duration = Histogram(
            "sse_audit_stream_duration_seconds",
            "From the request reaching the proxy to the end of the stream.",
            rm,
            buckets=buckets.DURATION,
            registry=registry,
        )
        self.finish = Counter(
            "sse_audit_finish_reasons",
            "Finish reasons reported per choice.",
            (*rm, "finish_reason"),
            registry=registry,
        )
        self.tokens = Counter(
            "sse_audit_usage_tokens",
            "Tokens reported by the upstream's usage.",
            (*rm, "type"),
            registry=registry,
        )
        self.usage_requested = Counter(
            "sse_audit_usage_requested_streams",
            "Streams that expected usage (asked for with stream_options.include_usage, or always "
            "sent on responses and messages) on which missing_usage was judged (event streams "
            "the upstream ended): the denominator of the missing_usage share.",
            rm,
            registry=registry,
        )
        self.judged = Counter(
            "sse_audit_judged_streams",
            "Audited streams the canary guard judges: all but client_disconnect ones and those "
            "the upstream refused as the client's error (a 4xx). The "
            "denominator of the bad share.",
            rm,
            registry=registry,
        )
        self.bad = Counter(
            "sse_audit_bad_streams",
            "Judged streams the canary guard counts as bad: outcome truncated, upstream_error "
            "or timeout, or an anomaly buffered, bursty, missing_done, missing_finish_reason, "
            "missing_usage, invalid_tool_arguments, wrong_content_type or held_open (and more: "
            "docs/operate/metrics.md). Divide by sse_audit_judged_streams for the bad share.",
            rm,
            registry=registry,
        )
        # A connection closes before any request picks a side: no `upstream` label.
        self.connections_closed = Counter(
            "sse_audit_connections_closed",
            "Client connections the proxy closed: a request head not whole within "
            "--header-timeout, idle past --keepalive-timeout, or answered 503 as they came "
            "because the proxy held as many as its open-files limit allows "
            "(too_many_connections). A climbing header_timeout count is a slow-headers "
            "(slowloris) attack.",
            ("reason",),
            registry=registry,
        )
        for reason in CLOSE_REASONS:  # every series exists from the start, at 0
            self.connections_closed.labels(reason)
        # Their outcome is the one of a client that left: a rolling deploy that cut long streams
        # looked like users leaving (an outside review).
        self.streams_cut = Counter(
            "sse_audit_streams_cut",
            "Streams the proxy itself cut (outcome client_disconnect): still open when the "
            "shutdown drain (--drain-timeout) ran out, or the proxy's own failure mid-stream "
            "(aborted); a client that took nothing for --send-timeout with more than "
            "--max-unsent-bytes unread (slow_client).",
            ("end_reason", "upstream"),
            registry=registry,
        )
        self.log_lines_dropped = Counter(
            "sse_audit_log_lines_dropped",
            "Log lines (records, evidence) not written: whatever reads stdout fell "
            "--log-buffer-bytes behind (buffer_full) or went away (output_closed). Streams are "
            "relayed as ever; the dropped records are in the metrics only.",
            ("reason",),
            registry=registry,
        )
        # Counted from the log writer's thread too: the children are made here, once.
        self._dropped_lines = {reason: self.log_lines_dropped.labels(reason) for reason in DROP_REASONS}
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        for side in sides:  # each configured side's (`upstream` label value), at 0 from the start
            for end in CUT_ENDS:
                self._child(self.streams_cut, end.value, side)
        self._series: dict[tuple[str, str, str], _Series] = {}
        self.active = Gauge(
            "sse_audit_active_streams",
            "Streams being relayed now.",
            ("route", "upstream"),
            registry=registry,
            multiprocess_mode="livesum",
        )

    # Sink hooks -----------------------------------------------------------------------

    def _child(self, metric: MetricWrapperBase, *labels: str) -> Any:
        """A labelled child, looked up in prometheus-client once and then reused: `labels()`
        validates and locks on every call, and each stream touches about ten children. The
        memo holds exactly the children the registry already holds (same capped labels)."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def log_line_dropped(self, reason: str) -> None:
        self._dropped_lines[reason].inc()

    def connection_closed(self, reason: str) -> None:
        self._child(self.connections_closed, reason).inc()

    def stream_started(self, rec: AuditRecord) -> None:
        route, side = rec.route, rec.upstream
        self._child(self.active, route, side).inc()
        # The stream's counters are exported at 0 from its start (its model given a place as
        # `record` will give it, by the same status), not first with its count: Prometheus has
        # no sample before a series' first, so rate() and increase() missed the first stream of
        # every (route, model, upstream), and a new canary's first bad streams on each model
        # with it (an outside review: 5 of a canary's 20 bad streams seen, over 15 models).
        if client_error(rec.status):
            return  # a refusal is never judged, and its key may not be record's (_key)
        key = self._key(rec)
        complete = (*key, Outcome.COMPLETE.value)
        if (id(self.streams), complete) not in self._children:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _Series(self, key)
            for name in ("judged", "bad"):
                getattr(series, name)  # made, at 0
            self._child(self.streams, *complete)
            for outcome in ALERTED_OUTCOMES:
                self._child(self.streams, *key, outcome)
            for anomaly in ALERTED_ANOMALIES:
                self._child(self.anomalies, *key, anomaly)
            for end in CUT_ENDS:
                self._child(self.streams_cut, end.value, key[2])
            method = rec.method if rec.method in _METHODS else OTHER
            for status in ALERTED_STATUSES:
                self._child(self.requests, key[0], method, self.statuses(status), key[2])

    def _key(self, rec: AuditRecord) -> tuple[str, str, str]:
        """A stream's (route, model, upstream) labels. A model takes no place from a request the
        upstream refused as the client's error: requests for made-up models, refused with 404,
        once filled --max-models, and a real model that came later was counted as `other` until
        a restart. Nor does a route with a model: 404s for each counted model on each route
        (about 55 series a pair) took 1,500 requests from 13,600 series to 99,000 (an outside
        review); such an answer is counted under `other` where its pair has no series yet."""
        admit = _names_a_model(rec.status)
        key = (rec.route, self.models(rec.model, admit), rec.upstream)
        if admit or key in self._series:
            return key
        return (rec.route, OTHER, rec.upstream)

    def stream_ended(self, rec: AuditRecord) -> None:
        self._child(self.active, rec.route, rec.upstream).dec()

    def record(self, rec: AuditRecord) -> None:
        child = self._child
        method = rec.method if rec.method in _METHODS else OTHER
        side = rec.upstream
        child(self.requests, rec.route, method, self.statuses(str(rec.status)), side).inc()
        s = rec.stream
        if s is None:
            return
        key = self._key(rec)
        route, model, _ = key
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(self, key)
        outcome = s.outcome.value
        child(self.streams, route, model, side, outcome).inc()
        if s.end in CUT_ENDS and s.outcome is Outcome.CLIENT_DISCONNECT:  # (not after its end)
            child(self.streams_cut, s.end.value, side).inc()
        bad = judge(rec)
        if bad is not None:
            series.judged.inc()
            if bad:
                series.bad.inc()
        for anomaly in s.anomalies:
            child(self.anomalies, route, model, side, anomaly).inc()
        if s.usage_judged:
            series.usage_requested.inc()
        if s.ttfb is not None:
            series.ttfb.observe(s.ttfb)
        if s.ttft is not None:
            series.ttft.observe(s.ttft)
        if s.frames > 1:
            _add_counts(series.gap, s.gap_counts, s.gap_sum)
        if s.max_gap is not None:
            series.max_gap.observe(s.max_gap)
        series.duration.observe(s.duration)
        for reason in s.finish_reasons:
            reason = self.finish_reasons(reason)  # a protocol word, or `other` (reason_word)
            child(self.finish, route, model, side, reason).inc()
        if s.prompt_tokens:
            child(self.tokens, route, model, side, "prompt").inc(s.prompt_tokens)
        if s.completion_tokens:
            child(self.tokens, route, model, side, "completion").inc(s.completion_tokens)


class _Series:
    """The children of the metrics labelled (route, model, upstream) alone, for one such label
    set: each stream touches up to seven, one attribute read each (not a memo lookup by
    metric and labels). A child is made on first use, as `labels()` makes it; `judged` and
    `bad` when the label set's first stream opens (Metrics.stream_started)."""

    __slots__ = (
        "_labels",
        "_metrics",
        "bad",
        "duration",
        "gap",
        "judged",
        "max_gap",
        "ttfb",
        "ttft",
        "usage_requested",
    )

    def __init__(self, metrics: Metrics, labels: tuple[str, str, str]) -> None:
        self._metrics = metrics
        self._labels = labels

    def __getattr__(self, name: str) -> Any:
        # Only reached for a slot not set yet (or a name that is no slot: an AttributeError).
        if name not in _Series.__slots__ or name.startswith("_"):
            raise AttributeError(name)
        child = self._metrics._child(getattr(self._metrics, name), *self._labels)
        setattr(self, name, child)
        return child


def _add_counts(child: Histogram, counts: Sequence[int], total: float) -> None:
    """Add pre-bucketed observations (same bounds, +Inf last) to a histogram child at once.

    prometheus-client has no bulk observe, so this adds to the child's per-bucket values
    (internal, but the same in single- and multi-process mode); a test checks the exposition
    matches one observe() per gap. If the internals change we fall back to observe() at
    each bucket's upper bound, which keeps the bucket counts exact and the sum approximate.
    """
    bucket_values = getattr(child, "_buckets", None)
    if bucket_values is None or len(bucket_values) != len(counts):
        bounds = [*buckets.GAP, buckets.GAP[-1]]
        for bound, n in zip(bounds, counts, strict=True):
            for _ in range(n):
                child.observe(bound)
        return
    for value, n in zip(bucket_values, counts, strict=True):
        if n:
            value.inc(n)
    child._sum.inc(total)
