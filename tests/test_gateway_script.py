"""The demo gateway's timing scripts and wire shapes, without a socket."""

from __future__ import annotations

import itertools

import orjson

from sse_audit_proxy.audit import End, StreamAudit
from sse_audit_proxy.dialects import dialect_for_route
from sse_audit_proxy.gateway.plan import Prompt, chat_prompt, plan
from sse_audit_proxy.gateway.script import (
    MIN_BUFFERED_HOLD,
    PING,
    EndAction,
    Script,
    Timing,
    compose,
)
from sse_audit_proxy.gateway.shapes import Shape, chat_stream, responses_stream

TIMING = Timing(ttft=0.1, interval=0.01, jitter=0.0, fault_delay=0.5)


def prompt(text: str = "hello") -> Prompt:
    return chat_prompt({"messages": [{"role": "user", "content": text}]})


def script(scenario: str, frames: int = 10, shape: Shape = Shape()) -> Script:  # noqa: B008
    answer = plan(prompt(), frames=frames)
    return compose(chat_stream(answer, "m", include_usage=True, shape=shape), scenario,
                   TIMING, answer.seed)


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
    for scenario, end in (("truncated", EndAction.EOF), ("reset", EndAction.RESET),
                          ("hang", EndAction.HANG)):
        s = script(scenario)
        assert s.end is end
        assert sum(data.count(b'"content":"') for _, data in s.writes) == 1 + 5  # role, tokens
        assert not any(b"[DONE]" in data for _, data in s.writes)


def test_crlf_script_has_no_bare_line_feed() -> None:
    body = b"".join(data for _, data in script("crlf").writes)
    assert b"\r\n\r\n" in body and body.replace(b"\r\n", b"").count(b"\n") == 0


def test_responses_sequence_numbers_never_skip_whatever_the_shape_drops() -> None:
    answer = plan(prompt(), frames=6)
    for shape in (Shape(), Shape(finish=False), Shape(error_at=3), Shape(usage=False),
                  Shape(malformed_at=2)):
        frames = responses_stream(answer, "m", {}, shape=shape)
        body = frames.start + b"".join(frames.content) + frames.tail
        numbers = [orjson.loads(line[6:])["sequence_number"]
                   for line in body.split(b"\n") if line.startswith(b"data: {\"type\"")]
        assert numbers == list(range(len(numbers))), shape


def test_usage_is_the_same_for_a_stream_and_a_whole_answer_and_miscounted_on_purpose() -> None:
    answer = plan(prompt("count me"), frames=7)
    tail = chat_stream(answer, "m", include_usage=True, shape=Shape()).tail
    usage_line = next(line for line in tail.split(b"\n\n") if b'"usage":{' in line)
    assert orjson.loads(usage_line[6:])["usage"] == answer.usage()
    assert answer.usage()["completion_tokens"] == 7
    wrong = chat_stream(answer, "m", include_usage=True, shape=Shape(usage_extra=3)).tail
    assert b'"completion_tokens":10' in wrong
