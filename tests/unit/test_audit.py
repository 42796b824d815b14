"""Verdicts of the pure stream audit: recorded frames with chosen arrival times."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from chat_streams import DONE, USAGE, chunk, frame, healthy, tool_call_stream, usage_chunk

from sse_audit_proxy.core.audit import End, Outcome, StreamAudit, StreamResult, Thresholds
from sse_audit_proxy.core.dialects.chat import ChatCompletions


def run(
    frames: Sequence[bytes],
    times: Sequence[float] | None = None,
    *,
    end: End = End.UPSTREAM_EOF,
    include_usage: bool = False,
    thresholds: Thresholds = Thresholds(),  # noqa: B008
) -> StreamResult:
    audit = StreamAudit(ChatCompletions(), 0.0, include_usage=include_usage, thresholds=thresholds)
    times = times if times is not None else [0.3 + 0.03 * i for i in range(len(frames))]
    for data, t in zip(frames, times, strict=True):
        audit.feed(data, t)
    return audit.finish((times[-1] if times else 0.0) + 0.001, end)


def test_healthy_stream_is_complete_with_no_anomalies() -> None:
    r = run(healthy(), include_usage=True)
    assert r.outcome is Outcome.COMPLETE
    assert r.anomalies == []
    assert r.done and r.finish_reasons == ["stop"] and r.usage == USAGE
    assert (r.prompt_tokens, r.completion_tokens) == (11, 5)


def test_ttfb_and_ttft_ignore_the_role_only_first_chunk() -> None:
    r = run(healthy(3), times=[0.1, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65])
    assert r.ttfb == 0.1
    assert r.ttft == 0.4  # the role chunk has empty content
    assert r.content_frames == 3
    assert abs((r.max_gap or 0) - 0.3) < 1e-9


def test_stream_ending_without_done_is_truncated_and_missing_done() -> None:
    r = run(healthy(done=False))
    assert r.outcome is Outcome.TRUNCATED
    assert r.anomalies == ["missing_done"]


def test_stream_cut_mid_generation_is_truncated_with_missing_finish_reason() -> None:
    r = run(healthy()[:3], end=End.UPSTREAM_BROKEN, include_usage=True)
    assert r.outcome is Outcome.TRUNCATED
    assert r.anomalies == ["missing_done", "missing_finish_reason", "missing_usage"]


def test_missing_usage_only_when_requested() -> None:
    assert run(healthy(usage=False), include_usage=False).anomalies == []
    assert run(healthy(usage=False), include_usage=True).anomalies == ["missing_usage"]


def test_usage_inside_the_last_content_chunk_counts() -> None:
    frames = [chunk({"content": "a"}), chunk({"content": "b"}, finish="stop", usage=USAGE), DONE]
    assert run(frames, include_usage=True).anomalies == []


def test_done_without_any_finish_reason_is_complete_but_flagged() -> None:
    r = run(healthy(finish=None))
    assert r.outcome is Outcome.COMPLETE
    assert r.anomalies == ["missing_finish_reason"]


def test_every_choice_needs_a_finish_reason_when_n_is_above_one() -> None:
    both = [
        chunk({"content": "a"}, index=0),
        chunk({"content": "b"}, index=1),
        chunk({}, "stop", index=0),
        chunk({}, "length", index=1),
        DONE,
    ]
    r = run(both)
    assert r.anomalies == [] and r.finish_reasons == ["stop", "length"]
    one_missing = [f for f in both if b'"length"' not in f]
    assert run(one_missing).anomalies == ["missing_finish_reason"]


def test_buffered_burst_after_a_long_wait_is_flagged() -> None:
    frames = healthy(20)
    times = [2.0 + 0.0001 * i for i in range(len(frames))]
    assert "buffered" in run(frames, times).anomalies


def test_whole_stream_in_one_read_after_a_long_wait_is_buffered() -> None:
    audit = StreamAudit(ChatCompletions(), 0.0)
    audit.feed(b"".join(healthy(20)), 3.0)
    r = audit.finish(3.001, End.UPSTREAM_EOF)
    assert r.outcome is Outcome.COMPLETE and r.anomalies == ["buffered"]


def test_a_stream_the_client_cut_after_its_first_read_is_not_judged_buffered() -> None:
    """A first read of seven tokens after 300 ms (a prefill), then one every 25 ms: a client that
    stopped after three tokens ("stop generating") left behind a stream that looked like one
    withheld release. The whole stream is not buffered, and the cut one is not judged."""
    frames = healthy(30)
    first = 8  # the role chunk and seven tokens, in one read
    times = [0.3 + 0.00001 * i for i in range(first)] + [
        0.3 + 0.025 * i for i in range(1, len(frames) - first + 1)
    ]
    assert "buffered" not in run(frames, times).anomalies
    cut = run(frames[:first], times[:first], end=End.CLIENT_GONE)
    assert cut.outcome is Outcome.CLIENT_DISCONNECT and "buffered" not in cut.anomalies
    # The same first read, the upstream ending there: one withheld release, as before.
    assert "buffered" in run(frames[:first], times[:first], end=End.UPSTREAM_BROKEN).anomalies


def test_slow_first_token_then_real_token_by_token_is_not_buffered() -> None:
    frames = healthy(20)
    times = [5.0 + 0.02 * i for i in range(len(frames))]
    assert run(frames, times).anomalies == []


def test_fast_upstream_with_short_ttft_is_not_buffered() -> None:
    frames = healthy(20)
    times = [0.004 + 0.0001 * i for i in range(len(frames))]
    assert run(frames, times).anomalies == []


def test_too_few_content_frames_are_not_judged_buffered() -> None:
    frames = healthy(3)
    times = [2.0 + 0.0001 * i for i in range(len(frames))]
    assert "buffered" not in run(frames, times).anomalies


def test_buffered_thresholds_are_configurable() -> None:
    frames = healthy(20)
    times = [2.0 + 0.01 * i for i in range(len(frames))]  # 10 ms apart: not buffered by default
    assert "buffered" not in run(frames, times).anomalies
    # Both of what "released at once" means are loosened: on average, and gap by gap.
    loose = Thresholds(buffered_max_spacing=0.05, buffered_max_gap=0.05)
    assert "buffered" in run(frames, times, thresholds=loose).anomalies
    # Frames 10 ms apart each were paced: loosening the average alone does not make them a release.
    assert "buffered" not in run(frames, times, thresholds=Thresholds(buffered_max_spacing=0.05)).anomalies


def _paced(ttft: float, tokens: int, spacing: float, together: int = 1) -> list[float]:
    """A role chunk at once, then `tokens` content frames `spacing` apart after `ttft`, read
    `together` at a time (the proxy coalesces reads when it is busier than the stream is fast),
    then the finish, usage and [DONE] frames."""
    content = [ttft + spacing * (i - i % together + together - 1) for i in range(tokens)]
    return [0.001, *content, *[content[-1]] * 3]  # then finish, usage and [DONE]


@pytest.mark.parametrize(
    "ttft,tokens,rate,together",
    [
        (0.3, 30, 1000, 1),  # the reported cases: a short answer, one chunk per token
        (0.2, 40, 1250, 1),
        (0.25, 100, 1500, 1),
        (0.25, 100, 1000, 2),  # two frames a read: half the gaps are 0
        (0.4, 50, 700, 1),
    ],
)
def test_fast_decoder_short_answer_after_an_ordinary_ttft_is_not_buffered(
    ttft: float, tokens: int, rate: int, together: int
) -> None:
    """Groq speeds: the first token is most of the wait and the mean spacing is under 2 ms,
    yet the tokens were paced, not released: no anomaly."""
    r = run(healthy(tokens), _paced(ttft, tokens, 1.0 / rate, together))
    assert r.content_frames == tokens
    assert r.anomalies == []


@pytest.mark.parametrize(
    "spacing,together",
    [
        (0.0, 1),  # one write, one read (the demo's buffered scenario, nginx with gzip)
        (0.000015, 1),  # uvicorn writing pre-computed chunks, one write each, read one by one
        (0.00014, 1),  # LiteLLM's /v1/responses bridge releasing a whole answer chunk by chunk
        (0.00032, 1),  # ... the same on a busier machine (a 0.2 ms line missed it)
        (0.00014, 3),
        (1 / 3000, 1),  # the documented limit: a 3,000 tokens/s decoder's short answer too
    ],
)
def test_release_written_chunk_by_chunk_is_buffered(spacing: float, together: int) -> None:
    r = run(healthy(30), _paced(0.5, 30, spacing, together))
    assert r.anomalies == ["buffered"]
    assert "of the 29 gaps between them under 0.5 ms" in r.reasons[0]


def test_buffered_thresholds_are_the_documented_defaults() -> None:
    th = Thresholds()
    assert (
        th.buffered_min_frames,
        th.buffered_wait_ratio,
        th.buffered_max_spacing,
        th.buffered_min_ttft,
        th.buffered_max_gap,
        th.buffered_gap_share,
    ) == (5, 0.8, 0.002, 0.05, 0.0005, 0.75)


def test_non_json_frame_is_malformed() -> None:
    frames = [chunk({"content": "a"}), b"data: {not json\n\n", chunk({}, "stop"), DONE]
    assert run(frames).anomalies == ["malformed_frame"]


def test_tool_call_arguments_assemble_into_valid_json() -> None:
    r = run(tool_call_stream(['{"city"', ': "Par', 'is"}']))
    assert r.anomalies == [] and r.tool_calls == 1 and r.finish_reasons == ["tool_calls"]


def test_tool_call_arguments_that_never_assemble_are_flagged() -> None:
    r = run(tool_call_stream(['{"city"', ': "Par']))
    assert r.anomalies == ["invalid_tool_arguments"]


def test_tool_call_delta_counts_as_first_token() -> None:
    frames = tool_call_stream(['{"a":', "1}"])
    r = run(frames, times=[0.2, 0.5, 0.6, 0.7, 0.8])
    assert r.ttft == 0.2  # the id/name delta is the first content


def test_error_frame_is_reported() -> None:
    frames = [chunk({"content": "a"}), frame({"error": {"message": "overloaded", "type": "server_error"}})]
    r = run(frames)
    # The error frame was the upstream's last word: a failure it reported, not a cut.
    assert r.outcome is Outcome.UPSTREAM_ERROR
    assert r.anomalies == ["error_event"]


def test_client_disconnect_and_timeout_do_not_blame_the_upstream_for_missing_parts() -> None:
    partial = healthy()[:3]
    assert run(partial, end=End.CLIENT_GONE, include_usage=True).outcome is Outcome.CLIENT_DISCONNECT
    assert run(partial, end=End.CLIENT_GONE, include_usage=True).anomalies == []
    timed_out = run(partial, end=End.IDLE_TIMEOUT)
    assert timed_out.outcome is Outcome.TIMEOUT and timed_out.anomalies == []


def test_upstream_status_error_is_upstream_error() -> None:
    r = run([], end=End.UPSTREAM_STATUS)
    assert r.outcome is Outcome.UPSTREAM_ERROR and r.ttfb is None and r.frames == 0


def test_keepalive_comments_are_not_frames_or_content() -> None:
    frames = [b": ping\n\n", *healthy(2)]
    r = run(frames, times=[0.1, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert r.keepalives == 1
    assert r.ttfb == 0.1 and r.ttft == 0.6
    assert r.frames == len(frames) - 1


def test_gaps_are_bucketed_one_per_frame_boundary() -> None:
    frames = healthy(4)  # 8 frames
    r = run(frames)
    assert sum(r.gap_counts) == len(frames) - 1
    assert abs(r.gap_sum - 0.03 * (len(frames) - 1)) < 1e-9


def test_verdict_is_independent_of_read_splits() -> None:
    stream = b"".join(healthy(6))
    whole = run([stream], times=[0.5], include_usage=True)
    for size in (1, 3, 17, 64):
        pieces = [stream[i : i + size] for i in range(0, len(stream), size)]
        split = run(pieces, times=[0.5] * len(pieces), include_usage=True)
        assert (split.outcome, split.anomalies, split.frames, split.content_frames, split.usage) == (
            whole.outcome,
            whole.anomalies,
            whole.frames,
            whole.content_frames,
            whole.usage,
        )


def test_usage_chunk_fields_other_than_numbers_are_dropped() -> None:
    frames = [
        chunk({"content": "a"}, "stop"),
        usage_chunk(
            {
                "prompt_tokens": 1,
                "completion_tokens": 1,
                "note": "secret text",
                "prompt_tokens_details": {"cached_tokens": 0},
            }
        ),
        DONE,
    ]
    r = run(frames, include_usage=True)
    assert r.usage == {
        "prompt_tokens": 1,
        "completion_tokens": 1,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def test_the_upstreams_clock_starts_when_the_request_was_sent() -> None:
    """A 1.5 s upload is not the upstream's time: TTFB, TTFT and `buffered` count from the
    request's last byte sent; the duration counts from its arrival."""
    audit = StreamAudit(ChatCompletions(), 1.5, arrived_at=0.0)
    audit.feed(b"".join(healthy(20)), 1.51)
    r = audit.finish(1.52, End.UPSTREAM_EOF)
    assert r.anomalies == []
    assert r.ttfb is not None and r.ttft is not None
    assert (round(r.ttfb, 6), round(r.ttft, 6), round(r.duration, 6)) == (0.01, 0.01, 1.52)


def test_a_silence_is_counted_from_the_request_sent_when_no_frame_came() -> None:
    audit = StreamAudit(ChatCompletions(), 2.0, arrived_at=0.0)
    r = audit.finish(5.0, End.IDLE_TIMEOUT)
    assert r.outcome is Outcome.TIMEOUT
    assert r.reasons[0].startswith("timeout: no upstream byte for the idle timeout: 3.00 s of silence"), (
        r.reasons
    )


def _held(
    frames: Sequence[bytes], times: Sequence[float], holds: dict[int, float], waited: float | None = None
) -> StreamResult:
    """`run`, the relay holding the upstream for the client `holds[i]` seconds before frame i,
    the upstream's bytes waiting for the last `waited` seconds of each hold (default: all)."""
    audit = StreamAudit(ChatCompletions(), 0.0)
    for i, (data, t) in enumerate(zip(frames, times, strict=True)):
        if i in holds:
            audit.client_held(holds[i], upstream_waited=waited)
        audit.feed(data, t)
    return audit.finish(times[-1] + 0.001, End.UPSTREAM_EOF)


def test_a_hold_for_the_client_is_left_out_of_the_gap_that_spans_it() -> None:
    """A client 4 s behind: the proxy read nothing from the upstream meanwhile, then read what
    it had sent. The gap was the client's, not the upstream's (max_gap 4 s, in the histograms)."""
    frames = healthy(10)
    times = [0.3 + 0.01 * i for i in range(len(frames))]
    times[6:] = [t + 4.0 for t in times[6:]]  # held 4 s before frame 6
    r = _held(frames, times, {6: 4.0})
    plain = run(frames, [0.3 + 0.01 * i for i in range(len(frames))])
    assert r.client_held == 4.0 and plain.client_held == 0.0
    assert r.max_gap == pytest.approx(plain.max_gap) and r.max_gap == pytest.approx(0.01)
    assert r.gap_sum == pytest.approx(plain.gap_sum)
    assert r.duration == pytest.approx(plain.duration + 4.0)  # the wall clock's, still


def test_a_hold_followed_by_keepalives_only_credits_the_next_frame() -> None:
    frames = [*healthy(3)[:4], b": ping\n\n", *healthy(3)[4:]]
    times = [0.3, 0.31, 0.32, 0.33, 2.4, 2.5, 2.51, 2.52]  # the hold: 2 s before the ping
    r = _held(frames, times, {4: 2.0})
    assert r.max_gap == pytest.approx(0.17)  # 0.33 → 2.5, less the 2 s held
    assert r.keepalives == 1


def test_a_long_hold_is_not_judged_for_timing_a_short_one_is() -> None:
    """Held 50 ms or more, the client shaped what the timing rules read; a 3 MiB frame to a
    fast client holds for a few milliseconds and leaves them their say."""
    frames = healthy(20)
    times = [2.0 + 0.0001 * i for i in range(len(frames))]  # a withheld release
    assert "buffered" in _held(frames, times, {3: 0.002}).anomalies
    assert "buffered" not in _held(frames, times, {3: 0.05}).anomalies


def test_the_part_of_a_hold_in_which_the_upstream_sent_nothing_stays_in_the_gap() -> None:
    """The upstream sent all it had, then was silent 2 s, inside a 3 s hold: its bytes waited
    only the last second. A gap of 2 s is the upstream's own, whoever held the stream."""
    frames = healthy(10)
    times = [0.3 + 0.01 * i for i in range(len(frames))]
    times[6:] = [t + 3.0 for t in times[6:]]
    assert _held(frames, times, {6: 3.0}, waited=1.0).max_gap == pytest.approx(2.01)
    assert _held(frames, times, {6: 3.0}, waited=0.0).max_gap == pytest.approx(3.01)
    assert _held(frames, times, {6: 3.0}, waited=0.0).client_held == 3.0


def test_a_hold_before_the_first_token_is_left_out_of_ttft() -> None:
    """An image stream's partial images (not content) fill the client's window; the client
    reads them 3 s later. The upstream had its text ready at 0.1 s: its TTFT, not 3.1 s."""
    frames = healthy(5)
    times = [0.05] + [3.1 + 0.01 * i for i in range(len(frames) - 1)]  # the role chunk, then text
    r = _held(frames, times, {1: 3.0})
    assert r.ttft == pytest.approx(0.1) and r.client_held == 3.0
    assert _held(frames, times, {1: 3.0}, waited=0.0).ttft == pytest.approx(3.1)
