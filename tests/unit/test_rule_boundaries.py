"""The verdict and guard rules at their edges: each test here fails if one condition of a rule is
dropped, flipped or moved by one (an outside review's mutation run found these edges untested:
the mutants survived the unit suite and the slower ones)."""

from __future__ import annotations

from chat_streams import DONE, chunk, healthy, tool_call_stream

from sse_audit_proxy.core.audit import End, Outcome, StreamAudit, StreamResult
from sse_audit_proxy.core.dialects.chat import ChatCompletions
from sse_audit_proxy.core.guard import BASELINE_STORE, Guard, GuardSettings, Sample, judge
from sse_audit_proxy.core.record import AuditRecord


def _stream(times: list[float], end: End = End.UPSTREAM_EOF, held: float = 0.0) -> StreamResult:
    """A healthy Chat stream whose content frames arrive at `times` (role chunk at 0.05 s);
    `held`: the relay held the upstream that long for the client, just before the content."""
    audit = StreamAudit(ChatCompletions(), 0.0)
    audit.feed(chunk({"role": "assistant", "content": ""}), 0.05)
    if held:
        audit.client_held(held)
    for i, t in enumerate(times):
        audit.feed(chunk({"content": f"t{i} "}), t)
    last = times[-1] if times else 0.05
    audit.feed(chunk({}, finish="stop"), last + 0.001)
    audit.feed(DONE, last + 0.002)
    return audit.finish(last + 0.003, end)


# buffered ------------------------------------------------------------------------------


def test_a_release_with_one_pause_inside_it_is_buffered_by_its_close_gaps() -> None:
    # 60 frames 10 µs apart after 3 s, one 50 ms pause among them: the mean spacing (0.85 ms)
    # is over --buffered-max-gap, but 58 of 59 gaps are close.
    times = [3.0 + 0.00001 * i + (0.05 if i >= 30 else 0.0) for i in range(60)]
    assert _stream(times).anomalies == ["buffered"]


def test_a_release_read_two_frames_a_read_is_buffered_by_its_mean_spacing() -> None:
    # Half the gaps are 0 (two frames a read), half 0.6 ms: fewer than 75 % close, but the
    # mean spacing is 0.3 ms.
    times = [3.0 + 0.0006 * (i // 2) for i in range(30)]
    assert _stream(times).anomalies == ["buffered"]


def test_buffered_needs_five_content_frames_and_a_50_ms_first_token() -> None:
    assert _stream([2.0] * 5).anomalies == ["buffered"]
    assert _stream([2.0] * 4).anomalies == []
    assert _stream([0.05] * 20).anomalies == ["buffered"]  # --buffered-min-ttft is inclusive
    assert _stream([0.049] * 20).anomalies == []


def test_a_stream_that_meets_both_timing_rules_is_buffered_not_bursty() -> None:
    # A 3 s wait, then three clumps of 100 frames 0.25 s apart: withheld (86 % of the time
    # to the last frame was the wait), and three bursts.
    times = [3.0 + 0.25 * c + 0.00001 * i for c in range(3) for i in range(100)]
    assert _stream(times).anomalies == ["buffered"]


# bursty --------------------------------------------------------------------------------


def test_exactly_three_clumps_are_bursty_the_first_and_the_last_counted() -> None:
    # The first clump's silence is the time to first token; the last one closes at the end.
    times = [0.3 + 0.25 * c + 0.00001 * i for c in range(3) for i in range(10)]
    assert _stream(times).anomalies == ["bursty"]
    assert _stream(times[:20]).anomalies == []  # two clumps are not


def test_clumps_a_slow_client_made_are_not_bursty() -> None:
    times = [0.3 + 0.25 * c + 0.00001 * i for c in range(4) for i in range(10)]
    assert _stream(times).anomalies == ["bursty"]
    assert _stream(times, held=0.3).anomalies == []


# invalid_tool_arguments and error documents ---------------------------------------------


def test_tool_arguments_cut_by_the_client_leaving_or_a_timeout_are_not_judged() -> None:
    frames = tool_call_stream(['{"city": ', '"Par'])[:3]  # the call begun, no finish, no [DONE]
    for end in (End.CLIENT_GONE, End.IDLE_TIMEOUT):
        audit = StreamAudit(ChatCompletions(), 0.0)
        for i, f in enumerate(frames):
            audit.feed(f, 0.1 + 0.01 * i)
        assert "invalid_tool_arguments" not in audit.finish(0.5, end).anomalies


def test_tool_arguments_broken_when_the_client_left_after_the_finish_are_judged() -> None:
    """LiteLLM's Anthropic client closes at `message_delta`, before `message_stop`, and hands the
    arguments on: every stream was `client_disconnect`, never judged, and the guard counted none
    of the broken ones (outside review)."""
    broken = tool_call_stream(['{"city": ', '"Paris"'])[:-1]  # the finish, then the client left
    whole = tool_call_stream(['{"city": ', '"Paris"}'])[:-1]
    for frames, anomalies in ((broken, ["invalid_tool_arguments"]), (whole, [])):
        audit = StreamAudit(ChatCompletions(), 0.0)
        for i, f in enumerate(frames):
            audit.feed(f, 0.1 + 0.01 * i)
        r = audit.finish(0.5, End.CLIENT_GONE)
        assert (r.outcome, r.anomalies) == (Outcome.CLIENT_DISCONNECT, anomalies)
        record = AuditRecord("t", "chat_completions", "POST", "m", 200, 0.0, 0.51, 0, r)
        record.request_sent = 0.01
        assert judge(record) is (True if anomalies else None)


def test_a_json_error_answered_with_an_error_status_has_no_anomaly() -> None:
    # The status says it all: neither `error_event` (an error instead of a stream, with a
    # success status) nor `not_streamed` (a whole answer to a stream request).
    body = b'{"error": {"message": "bad key", "type": "invalid_request_error"}}'
    audit = StreamAudit(ChatCompletions(), 0.0, event_stream=False)
    audit.feed(body, 0.1)
    r = audit.finish(0.2, End.UPSTREAM_STATUS)
    assert (r.outcome, r.anomalies) == (Outcome.UPSTREAM_ERROR, [])
    audit = StreamAudit(ChatCompletions(), 0.0, event_stream=False)
    audit.feed(body, 0.1)
    assert audit.finish(0.2, End.UPSTREAM_EOF).anomalies == ["error_event"]


# the guard -----------------------------------------------------------------------------


def test_a_side_forgets_the_ttfts_of_streams_that_leave_it() -> None:
    guard = Guard(GuardSettings(window=5))  # each side keeps BASELINE_STORE windows
    store = guard.baseline.store
    assert store == 5 * BASELINE_STORE
    for i in range(store + 200):
        guard.baseline.add(Sample(f"b{i}", False, float(i)))
    assert guard.baseline.ttfts == [float(i) for i in range(200, store + 200)]
    for i in range(store):
        guard.baseline.add(Sample(f"n{i}", i % 2 == 0, None))  # no TTFT: the old ones go
    assert guard.baseline.ttfts == [] and guard.baseline.bad == store // 2
    guard.baseline.since(float("inf"))  # ... and out of the span: kept, no longer counted
    assert guard.baseline.bad == 0 and len(guard.baseline.older) == store


def test_the_ttft_rule_waits_for_min_streams_canary_ttfts() -> None:
    guard = Guard()
    for i in range(200):
        guard.observe(False, Sample(f"b{i}", False, 0.1))
    for i in range(17):  # streams without a first token (not bad, say nothing of TTFT)
        assert guard.observe(True, Sample(f"n{i}", False, None)) is None
    for i in range(19):
        assert guard.observe(True, Sample(f"s{i}", False, 5.0)) is None, i
    trip = guard.observe(True, Sample("s19", False, 5.0))
    assert trip is not None and trip.rule == "ttft_p95"


def _left_waiting(after: float, held: float) -> AuditRecord:
    audit = StreamAudit(ChatCompletions(), 0.0)
    if held:
        audit.client_held(held)
    rec = AuditRecord(
        "t", "chat_completions", "POST", "m", 200, 0.0, after + 0.01, 0, audit.finish(after, End.CLIENT_GONE)
    )
    rec.request_sent = 0.01
    return rec


def test_a_wait_the_client_itself_held_up_is_no_wait_for_a_first_token() -> None:
    assert judge(_left_waiting(3.0, 0.0)) is True
    assert judge(_left_waiting(3.0, 2.5)) is None  # 0.5 s of the upstream's own


# gap buckets, pinned ------------------------------------------------------------------


def test_each_gap_lands_in_its_bucket() -> None:
    from sse_audit_proxy.core.buckets import GAP

    frames = healthy(4)  # 8 frames, 7 gaps: 0.4, 1.5, 8, 40, 140, 450 ms and 2 s
    gaps = [0.0004, 0.0015, 0.008, 0.04, 0.14, 0.45, 2.0]
    times = [0.3 + sum(gaps[:i]) for i in range(8)]
    audit = StreamAudit(ChatCompletions(), 0.0)
    for f, t in zip(frames, times, strict=True):
        audit.feed(f, t)
    r = audit.finish(3.01, End.UPSTREAM_EOF)
    # Each in the first bucket whose bound (`le`) it does not pass.
    assert [GAP[k] for k, count in enumerate(r.gap_counts) if count] == [
        0.0005,
        0.002,
        0.01,
        0.05,
        0.15,
        0.5,
        2.5,
    ]
    assert sum(r.gap_counts) == 7


def test_a_client_that_left_on_a_silence_says_how_long_it_was() -> None:
    """A client's read timeout ends a hung stream as `client_disconnect`: its reason names the
    silence it gave up on (a second or more), which nothing else in the line did."""
    for quiet, said in ((2.0, "2.00 s after the upstream's last frame"), (0.5, None)):
        audit = StreamAudit(ChatCompletions(), 0.0)
        for i in range(3):
            audit.feed(chunk({"content": f"t{i} "}), 0.1 + 0.02 * i)
        reason = audit.finish(0.14 + quiet, End.CLIENT_GONE).reasons[0]
        assert reason.startswith("client_disconnect: the client went away")
        assert (said in reason) if said else ("last frame" not in reason), reason


def test_a_client_that_left_mid_arguments_after_an_early_finish_says_nothing() -> None:
    """Some upstreams send a finish reason before the answer's end (Open WebUI's on reasoning
    chunks, a finish after each tool call): a client that leaves in a later call's arguments
    cut them itself, and the guard must not count that against the upstream (second pass)."""
    first = tool_call_stream(['{"city": "Paris"}'])[:-1]  # a whole call and its finish
    later = chunk(
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"ci'},
                }
            ]
        }
    )
    audit = StreamAudit(ChatCompletions(), 0.0)
    for i, f in enumerate([*first, later]):
        audit.feed(f, 0.1 + 0.01 * i)
    r = audit.finish(0.5, End.CLIENT_GONE)
    assert (r.outcome, r.anomalies) == (Outcome.CLIENT_DISCONNECT, [])


def test_broken_arguments_whose_last_fragment_shares_the_finish_frame_are_judged() -> None:
    """A whole call and its finish in one chunk, the client gone before `[DONE]`: the finish
    ends the answer, so its arguments are judged (third pass: it counted as content after)."""
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1'}}
    frames = [chunk({"role": "assistant", "content": ""}), chunk({"tool_calls": [call]}, finish="tool_calls")]
    audit = StreamAudit(ChatCompletions(), 0.0)
    for i, f in enumerate(frames):
        audit.feed(f, 0.1 + 0.01 * i)
    r = audit.finish(0.5, End.CLIENT_GONE)
    assert (r.outcome, r.anomalies) == (Outcome.CLIENT_DISCONNECT, ["invalid_tool_arguments"])
    assert not r.last_frame_content  # nor is the client's wait after it a stall to the guard


def test_a_finish_reason_on_every_chunk_says_nothing_of_the_end() -> None:
    """Open WebUI (up to 0.6.18) puts `finish_reason: "stop"` on reasoning chunks; some
    gateways put one on every chunk. A finish then ends nothing: a client that waited on such a
    stream's silence gave up on a hang, and one that left mid-arguments cut them itself
    (fourth pass: both were read as after the end)."""
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":'}}
    frames = [chunk({"reasoning_content": f"r{i} "}, finish="stop") for i in range(6)]
    frames.append(chunk({"tool_calls": [call]}, finish="tool_calls"))
    audit = StreamAudit(ChatCompletions(), 0.0)
    for i, f in enumerate(frames):
        audit.feed(f, 0.1 + 0.01 * i)
    r = audit.finish(5.2, End.CLIENT_GONE)  # five seconds of silence after the last
    # LangChain joins the repeated reasons (`stopstop...`): said, though nothing of the end.
    assert (r.outcome, r.anomalies, r.last_frame_content) == (
        Outcome.CLIENT_DISCONNECT,
        ["repeated_finish_reason"],
        True,
    )
    rec = AuditRecord("t", "chat_completions", "POST", "m", 200, 0.0, 5.2, 0, r)
    rec.request_sent = 0.01
    assert judge(rec) is True  # a hang the client gave up on
