"""`held_open`: the body stayed open after the stream's end marker.

The openai and AI SDKs for Node read on to the body's end after `[DONE]` (the Python SDK closes
at it), so a gateway that kept the body open after it (a slow logging callback after the last
yield, say) made those clients wait, and a wait past --idle-timeout became a `timeout` with no
word of why: the record said `complete` and nothing else (outside review)."""

from __future__ import annotations

from chat_streams import DONE, chunk

from sse_audit_proxy.core.audit import End, Outcome, StreamAudit, StreamResult
from sse_audit_proxy.core.dialects.chat import ChatCompletions
from sse_audit_proxy.core.guard import is_bad


def stream(
    end_at: float, end: End = End.UPSTREAM_EOF, *, done: bool = True, ping_at: float | None = None
) -> StreamResult:
    audit = StreamAudit(ChatCompletions(), 0.0)
    for i in range(6):
        audit.feed(chunk({"content": f"t{i} "}), 0.1 + 0.02 * i)
    audit.feed(chunk({}, finish="stop"), 0.3)
    if done:
        audit.feed(DONE, 0.31)
    if ping_at is not None:
        audit.feed(b": keep-alive\n\n", ping_at)
    return audit.finish(end_at, end)


def test_a_body_ended_a_second_after_done_is_held_open() -> None:
    r = stream(1.31)
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, ["held_open"])
    assert r.reasons == [
        "held_open: the body stayed open 1.00 s after the end marker (upstream_eof ended it)"
    ]
    assert stream(1.30).anomalies == []  # 0.99 s: a server that ends it a write later is fine


def test_keep_alives_after_done_do_not_end_the_wait() -> None:
    assert stream(2.0, ping_at=1.9).anomalies == ["held_open"]


def test_a_proxy_timeout_after_done_says_the_body_was_held_open() -> None:
    r = stream(5.31, End.IDLE_TIMEOUT)
    assert r.outcome is Outcome.TIMEOUT and r.anomalies == ["held_open"]


def test_a_client_that_closed_at_done_or_waited_and_left_is_judged_alike() -> None:
    assert stream(0.32, End.CLIENT_GONE).anomalies == []  # the openai Python SDK
    assert stream(2.0, End.CLIENT_GONE).anomalies == ["held_open"]  # a Node client gave up


def test_without_an_end_marker_a_late_close_is_no_held_open() -> None:
    r = stream(3.0, done=False)
    assert r.outcome is Outcome.TRUNCATED and "held_open" not in r.anomalies


def test_time_the_client_held_the_upstream_up_is_not_the_upstreams() -> None:
    audit = StreamAudit(ChatCompletions(), 0.0)
    audit.feed(chunk({"content": "t "}), 0.1)
    audit.feed(chunk({}, finish="stop"), 0.11)
    audit.feed(DONE, 0.12)
    audit.client_held(0.8)  # the proxy read nothing while the client was behind
    assert audit.finish(1.2, End.UPSTREAM_EOF).anomalies == []


def test_the_canary_guard_counts_a_held_open_stream_as_bad() -> None:
    assert is_bad("complete", ["held_open"]) and not is_bad("complete", [])


def test_a_hold_before_the_end_marker_does_not_hide_the_wait_after_it() -> None:
    """The whole stream's hold was taken off: 5 s of a slow client mid-answer hid a body held
    open 3 s after `[DONE]` (second review). Only a hold after the last frame is the client's."""
    audit = StreamAudit(ChatCompletions(), 0.0)
    audit.feed(chunk({"content": "a "}), 0.1)
    audit.client_held(5.0)  # behind mid-answer: the upstream was not read for 5 s
    audit.feed(chunk({"content": "b "}), 5.2)
    audit.feed(chunk({}, finish="stop"), 5.21)
    audit.feed(DONE, 5.22)
    r = audit.finish(8.22, End.UPSTREAM_EOF)
    assert r.anomalies == ["held_open"]
    assert r.reasons == [
        "held_open: the body stayed open 3.00 s after the end marker (upstream_eof ended it)"
    ]
