"""The demo gateway's timing scripts and wire shapes, without a socket."""

from __future__ import annotations

import itertools

import orjson

from sse_audit_proxy.core.audit import End, StreamAudit
from sse_audit_proxy.core.dialects import dialect_for_route
from sse_audit_proxy.tools.gateway.plan import Prompt, chat_prompt, plan
from sse_audit_proxy.tools.gateway.script import (
    BURST_FRAMES,
    BURSTY_MIN_FRAMES,
    MIN_BUFFERED_HOLD,
    MIN_BURST_SILENCE,
    PING,
    EndAction,
    Script,
    Timing,
    clumps,
    compose,
)
from sse_audit_proxy.tools.gateway.shapes import (
    RATE_LIMITED,
    Shape,
    chat_stream,
    completions_stream,
    responses_stream,
)

TIMING = Timing(ttft=0.1, interval=0.01, jitter=0.0, fault_delay=0.5)


def prompt(text: str = "hello") -> Prompt:
    return chat_prompt({"messages": [{"role": "user", "content": text}]})


def script(
    scenario: str,
    frames: int = 10,
    shape: Shape = Shape(),  # noqa: B008
    timing: Timing = TIMING,
    **habits: bool,
) -> Script:
    answer = plan(prompt(), frames=frames)
    return compose(
        chat_stream(answer, "m", include_usage=True, shape=shape), scenario, timing, answer.seed, **habits
    )


def content_frames(data: bytes) -> int:
    return data.count(b'{"content":"') - data.count(b'{"content":""')  # not the role chunk


def replay(s: Script) -> tuple[str, list[str]]:
    """What the proxy's audit makes of a script, fed at its own times."""
    audit = StreamAudit(dialect_for_route("chat_completions")(), 0.0, include_usage=True)
    for at, data in s.writes:
        if data:
            audit.feed(data, at)
    end = End.UPSTREAM_BROKEN if s.end is EndAction.RESET else End.UPSTREAM_EOF
    result = audit.finish(s.writes[-1][0], end)
    return result.outcome.value, sorted(result.anomalies)


def test_healthy_script_sends_tokens_one_interval_apart_after_the_ttft() -> None:
    s = script("healthy")
    times = [t for t, _ in s.writes]
    assert times[0] == TIMING.ttft and len(s.writes) == 11  # 10 tokens and the tail
    assert all(abs((b - a) - TIMING.interval) < 1e-9 for a, b in itertools.pairwise(times))
    assert s.writes[-1][1].endswith(b"data: [DONE]\n\n") and s.end is EndAction.EOF
    assert replay(s) == ("complete", [])


def test_buffered_script_is_one_late_write_of_everything() -> None:
    s = script("buffered", frames=5)
    assert len(s.writes) == 1
    assert s.writes[0][0] >= MIN_BUFFERED_HOLD
    assert s.writes[0][1].count(b"data: ") == 1 + 5 + 3  # role, tokens, finish, usage, [DONE]
    assert replay(s) == ("complete", ["buffered"])


def test_stall_script_opens_one_fault_delay_gap_in_the_middle() -> None:
    times = [t for t, _ in script("stall").writes]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) == TIMING.fault_delay + TIMING.interval
    assert gaps.index(max(gaps)) == 4  # after half of the 10 tokens


def test_keepalive_script_pings_while_waiting_and_between_tokens() -> None:
    s = script("keepalive", frames=25)
    pings = [t for t, data in s.writes if data == PING]
    first_token = next(t for t, data in s.writes if data != PING)
    assert first_token == TIMING.fault_delay
    assert len([t for t in pings if t < first_token]) == 4
    assert len([t for t in pings if t > first_token]) == 2  # after the 10th and 20th token
    assert replay(s) == ("complete", [])


def test_truncated_and_reset_scripts_stop_after_half_the_tokens() -> None:
    for scenario, end in (("truncated", EndAction.EOF), ("reset", EndAction.RESET), ("hang", EndAction.HANG)):
        s = script(scenario)
        assert s.end is end
        assert sum(data.count(b'"content":"') for _, data in s.writes) == 1 + 5  # role, tokens
        assert not any(b"[DONE]" in data for _, data in s.writes)


def test_crlf_script_has_no_bare_line_feed() -> None:
    body = b"".join(data for _, data in script("crlf").writes)
    assert b"\r\n\r\n" in body and body.replace(b"\r\n", b"").count(b"\n") == 0


def test_responses_sequence_numbers_never_skip_whatever_the_shape_drops() -> None:
    answer = plan(prompt(), frames=6)
    for shape in (
        Shape(),
        Shape(finish=False),
        Shape(error_at=3),
        Shape(usage=False),
        Shape(malformed_at=2),
        Shape(error_at=3, rate_limited=True),
    ):
        frames = responses_stream(answer, "m", {}, shape=shape)
        body = frames.start + b"".join(frames.content) + frames.tail
        numbers = [
            orjson.loads(line[6:])["sequence_number"]
            for line in body.split(b"\n")
            if line.startswith(b'data: {"type"')
        ]
        assert numbers == list(range(len(numbers))), shape


def test_usage_is_the_same_for_a_stream_and_a_whole_answer_and_miscounted_on_purpose() -> None:
    answer = plan(prompt("count me"), frames=7)
    tail = chat_stream(answer, "m", include_usage=True, shape=Shape()).tail
    usage_line = next(line for line in tail.split(b"\n\n") if b'"usage":{' in line)
    assert orjson.loads(usage_line[6:])["usage"] == answer.usage()
    assert answer.usage()["completion_tokens"] == 7
    wrong = chat_stream(answer, "m", include_usage=True, shape=Shape(usage_extra=3)).tail
    assert b'"completion_tokens":10' in wrong


def test_bursty_script_releases_clumps_of_10_to_12_frames_in_one_write_each() -> None:
    s = script("healthy", frames=BURSTY_MIN_FRAMES, bursty=True)
    writes = [(t, data) for t, data in s.writes if data]
    sizes = [content_frames(data) for _, data in writes]
    assert sizes == [10] * 5 and sum(sizes) == BURSTY_MIN_FRAMES
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(writes)]
    assert min(gaps) >= MIN_BURST_SILENCE - 1e-9  # the fast timing is slowed to clumps
    assert writes[-1][1].endswith(b"data: [DONE]\n\n")  # the tail leaves with the last clump
    answer = plan(prompt(), frames=BURSTY_MIN_FRAMES)  # the same bytes as the healthy stream
    frames = chat_stream(answer, "m", include_usage=True, shape=Shape())
    bursty, healthy = (compose(frames, "healthy", TIMING, answer.seed, bursty=b) for b in (True, False))
    assert b"".join(d for _, d in bursty.writes) == b"".join(d for _, d in healthy.writes)


def test_bursty_clumps_go_when_their_last_token_is_made_at_a_slow_pace() -> None:
    slow = Timing(ttft=0.1, interval=0.05, jitter=0.0)
    writes = [t for t, data in script("healthy", 60, timing=slow, bursty=True).writes if data]
    # 12 tokens 50 ms apart take 0.55 s, more than the minimum silence: no extra wait.
    assert [round(t, 6) for t in writes] == [round(0.1 + 0.05 * (12 * k + 11), 6) for k in range(5)]


def test_bursty_clumps_hold_10_to_12_frames_for_every_length_from_the_minimum() -> None:
    for n in range(BURSTY_MIN_FRAMES, 400):
        content = [b"x"] * n
        sizes = [len(data) for _, data in clumps([0.0] * (n + 1), content, b"")]
        assert sum(sizes) == n and len(sizes) >= 4, n
        assert min(sizes) >= 10 and max(sizes) <= BURST_FRAMES, (n, sizes)


def test_bursty_script_is_judged_bursty_and_not_buffered() -> None:
    assert replay(script("healthy", BURSTY_MIN_FRAMES, bursty=True)) == ("complete", ["bursty"])


def test_late_terminator_ends_the_body_one_delay_after_the_last_frame() -> None:
    timing = Timing(ttft=0.1, interval=0.01, jitter=0.0, terminator_delay=0.4)
    s = script("healthy", timing=timing, late_terminator=True)
    *frames, (end_at, end) = s.writes
    assert end == b"" and s.end is EndAction.EOF
    assert frames[-1][1].endswith(b"data: [DONE]\n\n")
    assert abs(end_at - frames[-1][0] - 0.4) < 1e-9
    # A reset or a hang has no terminator to delay.
    reset, late_reset = script("reset"), script("reset", late_terminator=True)
    assert [t for t, _ in late_reset.writes] == [t for t, _ in reset.writes]


def test_error_no_done_shape_is_a_bare_rate_limit_error_then_the_end_on_every_route() -> None:
    answer = plan(prompt(), frames=10)
    shape = Shape(error_at=5, done=False, rate_limited=True)
    chat = chat_stream(answer, "m", include_usage=True, shape=shape)
    completions = completions_stream(answer, "m", include_usage=True, shape=shape)
    responses = responses_stream(answer, "m", {}, shape=shape)
    error = b"data: " + orjson.dumps({"error": RATE_LIMITED}) + b"\n\n"
    assert RATE_LIMITED["code"] == "rate_limit_exceeded"
    for frames in (chat, completions, responses):
        assert len(frames.content) == 5
        assert frames.tail == error  # no finish reason, usage, [DONE] or response.completed
    vllm = chat_stream(answer, "m", include_usage=True, shape=Shape(error_at=5))
    assert vllm.tail.endswith(b"data: [DONE]\n\n") and b"internal_error" in vllm.tail
