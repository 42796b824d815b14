"""The metrics sink: exposition equals what per-observation calls would have produced."""

from __future__ import annotations

import itertools

from chat_streams import healthy
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from sse_audit_proxy.core import buckets
from sse_audit_proxy.core.audit import End, StreamAudit
from sse_audit_proxy.core.dialects.chat import ChatCompletions
from sse_audit_proxy.core.record import AuditRecord
from sse_audit_proxy.sinks.metrics import LabelCap, Metrics


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
