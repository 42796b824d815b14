"""The demo's live view: every anomaly the proxy reports, the new ones too, reaches the lines
a person reads, and each demo scenario's verdict is checked against the scenario table."""

from __future__ import annotations

from sse_audit_proxy.core.audit import Anomaly, End, Outcome, StreamResult
from sse_audit_proxy.core.record import AuditRecord
from sse_audit_proxy.tools.demo.live import LiveStats, plain_line, summary, view_lines

PREFIX = "demo-abc"


def record(model: str, outcome: Outcome, anomalies: list[str], n: int) -> AuditRecord:
    stream = StreamResult(
        outcome=outcome,
        end=End.UPSTREAM_EOF,
        anomalies=anomalies,
        ttfb=0.1,
        ttft=0.1,
        max_gap=0.3,
        duration=1.3,
        frames=54,
        content_frames=50,
        keepalives=0,
        bytes=14_000,
        done=True,
        finish_reasons=["stop"],
        usage=None,
        prompt_tokens=None,
        completion_tokens=None,
        tool_calls=0,
        unterminated_frame=False,
    )
    return AuditRecord(
        trace_id=f"{PREFIX}-{n}",
        route="chat_completions",
        method="POST",
        model=model,
        status=200,
        started_at=0.0,
        duration=1.3,
        bytes=14_000,
        stream=stream,
    )


def test_new_anomalies_show_in_every_view_and_are_checked_against_the_scenario_table() -> None:
    stats = LiveStats(checked_prefix=PREFIX)
    stats.record(record("demo-bursty", Outcome.COMPLETE, [Anomaly.BURSTY], 1))
    stats.record(record("demo-bursty", Outcome.COMPLETE, [], 2))  # the rule missed it
    stats.record(record("demo-wrong-content-type", Outcome.COMPLETE, [Anomaly.WRONG_CONTENT_TYPE], 3))
    stats.record(record("demo-error-no-done", Outcome.UPSTREAM_ERROR, [Anomaly.ERROR_EVENT], 4))

    assert "anomalies bursty=1 wrong_content_type=1 error_event=1" in plain_line(stats)
    lines = view_lines(stats)
    assert lines[2].split() == ["anomalies", "bursty", "1", "wrong_content_type", "1", "error_event", "1"]
    assert any("demo-bursty" in line and "complete + bursty" in line for line in lines)
    assert any("complete + wrong_content_type" in line for line in lines)
    rows = {line.split()[0]: line for line in summary(stats).splitlines() if line.strip().startswith("demo-")}
    assert "1/2" in rows["demo-bursty"] and "differs" in rows["demo-bursty"]
    assert rows["demo-wrong-content-type"].rstrip().endswith("1/1")
    assert rows["demo-error-no-done"].rstrip().endswith("1/1")
