"""The one guarded way to a request's record (server/recording.py), without sockets."""

from __future__ import annotations

import time
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from sse_audit_proxy.core.audit import End, StreamAudit
from sse_audit_proxy.core.dialects.chat import ChatCompletions
from sse_audit_proxy.core.record import AuditRecord
from sse_audit_proxy.server import recording
from sse_audit_proxy.server.recording import Recording

QUOTED = "COMPLETION-TEXT-in-an-exception-message"


class Calls:
    """A sink that notes every call, and raises from the ones named in `failing`."""

    def __init__(self, log: list[str], name: str, failing: frozenset[str] = frozenset()) -> None:
        self.log, self.name, self.failing = log, name, failing

    def _note(self, call: str) -> None:
        self.log.append(f"{self.name}.{call}")
        if call in self.failing:
            raise RuntimeError("sink broke")

    def stream_started(self, rec: AuditRecord) -> None:
        self._note("stream_started")

    def stream_ended(self, rec: AuditRecord) -> None:
        self._note("stream_ended")

    def record(self, rec: AuditRecord) -> None:
        self._note("record")


def new_recording(*sinks: Any) -> Recording:
    rec = AuditRecord("t1", "chat_completions", "POST", "m", 200, time.time(), 0.0, 0, None)
    return Recording(rec, time.monotonic(), tuple(sinks))


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(recording, "_log", structlog.get_logger("sse_audit_proxy"))
    with capture_logs() as captured:
        yield captured


def test_the_record_goes_out_once_and_closes_the_open_stream_first(logs: Any) -> None:
    log: list[str] = []
    r = new_recording(Calls(log, "a"), Calls(log, "b"))
    r.stream_started()
    r.stream_started()  # once per stream
    assert not r.recorded
    r.finish(None, End.UPSTREAM_EOF)
    r.finish(None, End.CLIENT_GONE)  # a second finish (an error path) changes nothing
    r.stream_ended()
    assert r.recorded and r.rec.error is None and r.rec.duration > 0
    assert log == [
        "a.stream_started",
        "b.stream_started",
        "a.stream_ended",
        "b.stream_ended",
        "a.record",
        "b.record",
    ]
    assert logs == []


def test_a_stream_never_opened_is_never_closed_and_none_opens_after_the_record() -> None:
    log: list[str] = []
    r = new_recording(Calls(log, "a"))
    r.stream_ended()
    r.finish(None, End.UPSTREAM_EOF)
    r.stream_started()
    assert log == ["a.record"]


@pytest.mark.parametrize("call", ["stream_started", "stream_ended", "record"])
def test_a_sink_that_raises_stops_no_other_sink_and_is_logged_once(call: str, logs: Any) -> None:
    log: list[str] = []
    r = new_recording(Calls(log, "a", frozenset({call})), Calls(log, "b"))
    r.stream_started()
    r.finish(None, End.UPSTREAM_EOF)
    assert [entry for entry in log if entry.startswith("b.")] == [
        "b.stream_started",
        "b.stream_ended",
        "b.record",
    ]
    assert len(log) == 6  # the failing sink was called once for each, too
    (line,) = logs
    assert (line["event"], line["sink"], line["call"], line["trace_id"]) == (
        "sink_failed",
        "Calls",
        call,
        "t1",
    )


@pytest.mark.parametrize(
    ("end", "error"), [(End.UPSTREAM_EOF, None), (End.UPSTREAM_BROKEN, "upstream_broken")]
)
def test_a_verdict_that_fails_leaves_a_record_without_one_and_one_line_without_text(
    end: End, error: str | None, logs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def summary(self: Any) -> Any:
        raise ValueError(QUOTED)

    monkeypatch.setattr(ChatCompletions, "summary", summary)
    log: list[str] = []
    r = new_recording(Calls(log, "a"))
    audit = StreamAudit(ChatCompletions(), r.started)
    audit.feed(b'data: {"choices": []}\n\n', r.started + 0.1)
    r.finish(audit, end)
    assert log == ["a.record"]
    assert r.rec.stream is None and r.rec.error == error and r.rec.duration > 0
    (line,) = logs
    assert (line["event"], line["trace_id"], line["during"], line["exception"]) == (
        "proxy_failed",
        "t1",
        "finish",
        "ValueError",
    )
    assert line["at"].startswith("test_recording.py:") and line["at"].endswith(" summary")
    assert QUOTED not in repr(line) and "exc_info" not in line


def test_a_record_the_proxy_answered_keeps_its_own_error_code() -> None:
    log: list[str] = []
    r = new_recording(Calls(log, "a"))
    r.rec.error = "upstream_unreachable"
    r.finish(None, End.UPSTREAM_STATUS)
    assert r.rec.error == "upstream_unreachable"
