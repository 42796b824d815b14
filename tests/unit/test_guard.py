"""The canary guard (pure): trips on a clear regression within its minimum, never on noise."""

from __future__ import annotations

import random

import pytest

from sse_audit_proxy.core.audit import End, StreamAudit
from sse_audit_proxy.core.dialects import dialect_for_route
from sse_audit_proxy.core.dialects.chat import ChatCompletions
from sse_audit_proxy.core.guard import (
    GAVE_UP_AFTER,
    Guard,
    GuardSettings,
    Sample,
    difference_lower_bound,
    first_token_wait,
    is_bad,
    judge,
    judged,
    quantile_bound_ranks,
    wilson,
)
from sse_audit_proxy.core.record import AuditRecord
from sse_audit_proxy.sinks.logs import record_fields


def test_bad_streams_are_the_documented_outcomes_and_anomalies() -> None:
    for outcome in ("truncated", "upstream_error", "timeout"):
        assert is_bad(outcome, [])
    for anomaly in (
        "buffered",
        "bursty",
        "missing_done",
        "missing_finish_reason",
        "missing_usage",
        "invalid_tool_arguments",
        "wrong_content_type",
    ):
        assert is_bad("complete", [anomaly])
    assert not is_bad("complete", [])
    assert not is_bad("complete", ["malformed_frame", "error_event"])


@pytest.mark.parametrize(
    "outcome,status,counted",
    [
        ("complete", 200, True),
        ("truncated", 200, True),
        ("upstream_error", 500, True),
        ("upstream_error", 502, True),
        ("upstream_error", 429, False),  # a rate limit: perhaps the client's own key's quota
        ("upstream_error", 408, False),  # perhaps the client's own slow upload
        ("upstream_error", 401, False),  # the client's key, model or request, not the upstream
        ("upstream_error", 404, False),
        ("upstream_error", 400, False),
        ("upstream_error", 413, False),
        ("client_disconnect", 200, False),
        ("client_disconnect", 499, False),
    ],
)
def test_what_the_guard_judges(outcome: str, status: int, counted: bool) -> None:
    assert judged(outcome, status) is counted


def test_wilson_interval_matches_a_published_value() -> None:
    # Newcombe (1998), table I: 81/263 at 95 % -> 0.2553 to 0.3662.
    lo, hi = wilson(81, 263, 1.959964)
    assert lo == pytest.approx(0.2553, abs=5e-4) and hi == pytest.approx(0.3662, abs=5e-4)


def test_difference_bound_matches_newcombe_method_10() -> None:
    # Newcombe (1998), table II example (56/70 vs 48/80): difference 0.2, 95 % CI 0.0524-0.3339.
    assert difference_lower_bound(56, 70, 48, 80, 1.959964) == pytest.approx(0.0524, abs=5e-4)


def test_quantile_ranks_need_90_samples_for_an_upper_bound_of_a_p95() -> None:
    assert quantile_bound_ranks(89)[1] is None
    assert quantile_bound_ranks(90)[1] == 90
    lower, _ = quantile_bound_ranks(20)
    assert lower == 16  # P(Bin(20, .95) >= 16) = 0.997 >= 0.99


def alternate(
    guard: Guard,
    n: int,
    canary_bad: float,
    baseline_bad: float,
    rng: random.Random,
    ttft: tuple[float, float] = (0.1, 0.1),
) -> int | None:
    """Streams alternate baseline, canary; returns the canary stream count at the trip."""
    for i in range(n):
        canary = i % 2 == 1
        bad = rng.random() < (canary_bad if canary else baseline_bad)
        if guard.observe(canary, Sample(f"t{i}", bad, ttft[canary])) is not None:
            return len(guard.canary.samples)
    return None


def test_a_canary_whose_every_stream_is_bad_trips_at_the_minimum() -> None:
    guard = Guard()
    at = alternate(guard, 200, 1.0, 0.0, random.Random(1))
    assert at == 20  # the --canary-guard-min-streams default
    trip = guard.tripped
    assert trip is not None and trip.rule == "bad_share"
    assert trip.canary["bad_percent"] == 100.0 and trip.baseline["bad_percent"] == 0.0
    assert trip.trace_ids == ["t39", "t37", "t35", "t33", "t31"]  # the newest bad canary streams


def test_a_canary_bad_at_60_percent_trips_soon_against_a_2_percent_baseline() -> None:
    trips = [alternate(Guard(), 200, 0.6, 0.02, random.Random(seed)) for seed in range(5)]
    assert all(t is not None and t <= 40 for t in trips), trips


def test_fewer_streams_than_the_minimum_never_trip() -> None:
    guard = Guard(GuardSettings(min_streams=20))
    assert alternate(guard, 38, 1.0, 0.0, random.Random(1)) is None  # 19 canary streams


def test_a_difference_within_the_margin_does_not_trip() -> None:
    # 3 points worse, margin 5: a real but tolerated difference, over many streams.
    assert alternate(Guard(), 4000, 0.08, 0.05, random.Random(3)) is None


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("fault_rate,canary_share", [(0.05, 0.5), (0.3, 0.1), (0.5, 0.5), (0.2, 0.9)])
def test_equal_sides_under_the_same_random_faults_never_trip_in_2000_streams(
    seed: int, fault_rate: float, canary_share: float
) -> None:
    rng = random.Random(seed)
    guard = Guard()
    for i in range(2000):
        canary = rng.random() < canary_share
        # Heavy-tailed TTFTs, the same distribution on both sides.
        sample = Sample(f"t{i}", rng.random() < fault_rate, rng.lognormvariate(-1.0, 1.0))
        assert guard.observe(canary, sample) is None, (i, guard.canary.figures(), guard.baseline.figures())


def test_a_canary_three_times_slower_trips_the_ttft_rule() -> None:
    rng = random.Random(2)
    guard = Guard()
    for i in range(400):
        canary = i % 2 == 1
        ttft = rng.lognormvariate(-1.0, 0.3) * (3.0 if canary else 1.0)
        if guard.observe(canary, Sample(f"t{i}", False, ttft)) is not None:
            break
    trip = guard.tripped
    assert trip is not None and trip.rule == "ttft_p95"
    # It waits for the 90 baseline TTFTs an upper bound of a p95 needs, and no longer.
    assert 90 <= len(guard.baseline.samples) <= 100
    assert trip.canary["ttft_p95_ms"] > 2 * trip.baseline["ttft_p95_ms"]
    assert len(trip.trace_ids) == 5


def test_a_trip_is_reported_once_and_reset_starts_over() -> None:
    guard = Guard()
    assert alternate(guard, 200, 1.0, 0.0, random.Random(1)) == 20
    assert guard.observe(True, Sample("later", True, 0.1)) is None  # already tripped
    guard.reset()
    assert guard.tripped is None and len(guard.canary.samples) == 0
    assert alternate(guard, 200, 1.0, 0.0, random.Random(1)) == 20


def test_the_window_forgets_old_streams() -> None:
    guard = Guard(GuardSettings(window=50))
    alternate(guard, 100, 0.0, 0.0, random.Random(1))
    assert len(guard.canary.samples) == 50 and guard.canary.bad == 0
    # 50 bad canary streams push every good one out of the window.
    for i in range(50):
        guard.canary.add(Sample(f"b{i}", True, None))
    assert guard.canary.bad == 50


def left(after: float, *, answered: bool = True, ttft: float | None = None) -> AuditRecord:
    """A stream its client left `after` seconds after the upstream had the request (or while
    its upload was still going: `answered` False), with no token or one at `ttft`."""
    audit = StreamAudit(ChatCompletions(), 0.0)
    if ttft is not None:
        audit.feed(b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n', ttft)
    result = audit.finish(after, End.CLIENT_GONE)
    rec = AuditRecord("t", "chat_completions", "POST", "m", 200, 0.0, after + 0.01, 0, result)
    rec.request_sent = 0.01 if answered else None
    return rec


def test_a_client_that_gave_up_waiting_for_a_first_token_left_a_bad_stream() -> None:
    # A canary that hangs until clients give up (read timeouts of seconds; --idle-timeout is
    # minutes): every stream ended `client_disconnect`, which the guard did not count, and an
    # outside review's stuck canary ran on with 66 of 66 streams failed.
    assert judge(left(3.0)) is True
    assert judge(left(GAVE_UP_AFTER)) is True
    # A wait cut short says nothing; nor one while the upload was going (no upstream's time).
    assert judge(left(0.2)) is None
    assert judge(left(3.0, answered=False)) is None


def test_a_client_that_gave_up_on_a_stream_stalled_mid_way_left_a_bad_stream() -> None:
    # An outside review's canary froze after its first tokens until clients timed out: 46 of
    # 46 streams ended `client_disconnect` after a token, none judged, no trip.
    stalled = left(3.0, ttft=0.1)
    assert judge(stalled) is True
    assert judge(left(0.1 + GAVE_UP_AFTER, ttft=0.1)) is True
    # The stall is in its log line, where max_gap_ms (between frames) has none of it.
    assert stalled.stream is not None and stalled.stream.max_gap is None
    assert record_fields(stalled)["quiet_at_end_ms"] == pytest.approx(2900.0)
    # A client that left while tokens were coming (a stop button) says nothing.
    assert judge(left(0.5, ttft=0.1)) is None
    assert judge(left(3.0, ttft=2.9)) is None


def _left_after(
    frames: list[tuple[float, bytes]], after: float, route: str = "chat_completions"
) -> AuditRecord:
    audit = StreamAudit(dialect_for_route(route)(), 0.0)
    for t, data in frames:
        audit.feed(data, t)
    rec = AuditRecord(
        "t", route, "POST", "m", 200, 0.0, after + 0.01, 0, audit.finish(after, End.CLIENT_GONE)
    )
    rec.request_sent = 0.01
    return rec


TOKEN = b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n'


def test_a_pause_of_the_stream_s_own_that_the_user_stopped_in_is_no_stall() -> None:
    # A second review: Claude accumulates a tool's input for seconds with only pings, and a
    # user may press Stop then; a stream between tokens (a tool call's start, a finish
    # waiting for [DONE]) is in a pause of its own too.
    assert judge(_left_after([(0.1, TOKEN)], 3.0)) is True
    assert judge(_left_after([(0.1, TOKEN), (1.0, b": ping\n\n")], 3.0)) is None
    finish = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    assert judge(_left_after([(0.1, TOKEN), (0.2, finish)], 3.0)) is None
    # The same with the last token and the finish in one read (one arrival time): the last
    # frame is still the finish (a third review: equal times had read as a token last).
    assert judge(_left_after([(0.1, TOKEN + finish)], 3.0)) is None
    assert judge(_left_after([(0.1, finish + TOKEN)], 3.0)) is True
    ping = b'event: ping\ndata: {"type": "ping"}\n\n'
    text = (
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"hi"}}\n\n'
    )
    start = (
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
        b'"content_block":{"type":"text","text":""}}\n\n'
    )
    begin = b'event: message_start\ndata: {"type":"message_start","message":{"usage":{}}}\n\n'
    messages = [(0.04, begin), (0.05, start), (0.1, text)]
    assert judge(_left_after(messages, 3.0, "messages")) is True
    assert judge(_left_after([*messages, (2.0, ping)], 3.0, "messages")) is None


def test_a_canary_whose_clients_all_give_up_waiting_trips_the_bad_share_rule() -> None:
    guard = Guard()
    for i in range(200):
        canary = i % 2 == 1
        bad = judge(left(3.0)) if canary else False
        assert bad is not None
        if guard.observe(canary, Sample(f"t{i}", bad, None if canary else 0.05)) is not None:
            break
    assert guard.tripped is not None and guard.tripped.rule == "bad_share"
    assert guard.tripped.canary["streams"] == 20


def test_a_sticky_client_that_gives_up_sooner_than_either_side_answers_trips_nothing() -> None:
    """Both sides take 1.5 s to a first token (a reasoning model); one client, sticky to the
    canary, gives up after 1.2 s every time: every one of its streams was bad, and a healthy
    canary was rolled back after 20 (an outside review). It would have given up on the baseline
    too. A wait longer than the baseline's median first token still counts; one the guard
    cannot compare yet (the baseline has too few first tokens) waits until it can."""
    impatient = left(1.2)
    assert judge(impatient) is True and first_token_wait(impatient) == pytest.approx(1.2)
    assert first_token_wait(left(1.2, ttft=0.5)) is None  # it had a token

    def run(waited: float, baseline_ttft: float | None) -> Guard:
        guard = Guard()
        for i in range(200):
            canary = i % 2 == 1
            sample = (
                Sample(f"t{i}", True, None, waited=waited)
                if canary
                else Sample(f"t{i}", False, baseline_ttft)
            )
            if guard.observe(canary, sample) is not None:
                break
        return guard

    assert run(1.19, 1.5).tripped is None
    assert run(4.0, 1.5).tripped is not None  # the canary hangs past what the baseline takes
    assert run(4.0, None).tripped is None  # nothing to compare with
    # Both sides starting at once, the impatient client's streams ending first: they wait for
    # the baseline's first tokens (20 of them), then are judged: not counted here...
    guard = Guard()
    for i in range(20):
        guard.observe(True, Sample(f"c{i}", True, None, waited=1.19))
    for i in range(60):
        assert guard.observe(False, Sample(f"b{i}", False, 1.5)) is None
        assert guard.observe(True, Sample(f"c{i}", True, None, waited=1.19)) is None
    assert guard.canary.bad == 0 and len(guard.canary.samples) == 0
    # ... and counted when the canary hangs: the first 20 are not lost (a second review: a
    # hanging canary's first streams were dropped, and 50 users were hurt, not 20).
    guard = Guard()
    for i in range(20):
        assert guard.observe(True, Sample(f"c{i}", True, None, waited=5.0)) is None
    trip = None
    for i in range(20):
        trip = trip or guard.observe(False, Sample(f"b{i}", False, 1.5))
    assert trip is not None and trip.canary["streams"] == 20 and trip.canary["bad"] == 20


def test_a_few_slow_baseline_streams_do_not_hide_a_canary_that_never_answers() -> None:
    """With the baseline's p95 first token as the yardstick, 11 streams in 200 slower than the
    clients' timeout (an attacker's, sticky to the baseline; or a reasoning model's share)
    made every hung canary stream not count, and it was never rolled back (a second review).
    Against the median, up to half the baseline may be slow."""
    for slow_share in (0.06, 0.3, 0.45):
        guard = Guard()
        trip = None
        for i in range(800):
            if i % 2:
                trip = trip or guard.observe(True, Sample(f"c{i}", True, None, waited=5.0))
            else:
                ttft = 6.0 if (i // 2) % 100 < slow_share * 100 else 0.2
                trip = trip or guard.observe(False, Sample(f"b{i}", False, ttft))
        assert trip is not None and trip.rule == "bad_share", slow_share
    # The baseline's own impatient clients, as quick to leave: weighed alike, not counted.
    guard = Guard()
    for i in range(100):
        guard.observe(False, Sample(f"b{i}", False, 1.5))
        guard.observe(False, Sample(f"g{i}", True, None, waited=1.19))
    assert guard.baseline.bad == 0


def test_impatient_clients_on_both_sides_weigh_alike_after_a_new_share() -> None:
    """Both sides alike: every fourth client gives up after 1.5 s, first tokens otherwise 0.5
    to 1.2 s. Weighed against the canary's first tokens, the baseline's give-ups waited for a
    new canary's 20 while the canary's counted at once: a healthy canary was rolled back after
    20 streams against a baseline with none bad (a fourth review). With every client giving up
    at 1.2 s it was rolled back every time."""

    def stream(i: int, tag: str, t: float, waited: float) -> Sample:
        if i % 4 == 3:
            return Sample(f"{tag}{i}", True, None, at=t, waited=waited)
        return Sample(f"{tag}{i}", False, (0.5, 1.0, 1.2)[i % 4], at=t)

    for waited in (1.5, 1.2):
        guard, t, trip = Guard(), 0.0, None
        for i in range(400):
            t += 1
            guard.observe(False, stream(i, "b", t, waited))
        guard.reset()  # the operator sets 10 %
        for i in range(400):
            for j in range(9):
                t += 1
                trip = trip or guard.observe(False, stream(i * 9 + j, "b", t, waited))
            t += 1
            trip = trip or guard.observe(True, stream(i, "c", t, waited))
        assert trip is None, (waited, trip)


def test_a_canary_whose_event_stream_is_labelled_otherwise_is_bad() -> None:
    # An event stream labelled text/plain (EventSource refuses it, hops may buffer it): an
    # outside review's canary gave 146 of 146 such streams, and the guard held on.
    assert is_bad("complete", ["wrong_content_type"])
    guard = Guard()
    for i in range(200):
        canary = i % 2 == 1
        bad = is_bad("complete", ["wrong_content_type"] if canary else [])
        if guard.observe(canary, Sample(f"t{i}", bad, 0.05)):
            break
    assert guard.tripped is not None and guard.tripped.rule == "bad_share"


def test_a_stream_the_client_left_on_a_malformed_frame_is_judged() -> None:
    # The openai Python SDK raises on a keep-alive comment after `id:` lines and closes: every
    # stream ends `client_disconnect`, which alone says nothing of the upstream.
    assert not judged("client_disconnect", 200)
    assert not judged("client_disconnect", 200, ["buffered"])
    assert judged("client_disconnect", 200, ["malformed_frame"])
    assert is_bad("client_disconnect", ["malformed_frame"])
    assert not is_bad("complete", ["malformed_frame"])  # as before: the client read on
    # A whole answer to a stream request is OpenAI's own way with whisper-1: not bad there.
    assert not is_bad("complete", ["not_streamed"])
    assert not is_bad("complete", ["not_streamed"], route="audio_transcriptions")


@pytest.mark.parametrize("route", ["chat_completions", "completions", "responses", "messages"])
def test_a_canary_that_answers_stream_requests_whole_is_bad_where_the_api_always_streams(route: str) -> None:
    # An outside review's canary answered every chat stream request with one JSON body after
    # 0.5 s: 101 of 101 `complete` + `not_streamed`, judged good, and the guard held at 50 %.
    assert is_bad("complete", ["not_streamed"], route=route)
    guard = Guard()
    for i in range(200):
        canary = i % 2 == 1
        bad = is_bad("complete", ["not_streamed"] if canary else [], route=route)
        if guard.observe(canary, Sample(f"t{i}", bad, 0.05)):
            break
    assert guard.tripped is not None and guard.tripped.rule == "bad_share"


def test_the_bad_share_waits_for_as_many_baseline_streams_as_canary_ones() -> None:
    # An outside review: one client sticky to the canary, over its own quota (429s), tripped a
    # healthy canary against 3 baseline streams. A handful of baseline streams says little.
    guard = Guard()
    for i in range(3):
        assert guard.observe(False, Sample(f"b{i}", False, 0.05)) is None
    for i in range(40):
        assert guard.observe(True, Sample(f"c{i}", True, 0.05)) is None
    trip = None
    for i in range(3, 20):
        trip = guard.observe(False, Sample(f"b{i}", False, 0.05))
    assert trip is not None and trip.rule == "bad_share"  # the 20th baseline stream
    assert trip.baseline["streams"] == 20


def test_a_fast_canary_farther_away_is_not_rolled_back_for_its_round_trips() -> None:
    """A gateway whose first token takes 30-80 ms, the canary 150 ms of round trip farther: its
    p95 is near 3x the baseline's, but 150 ms more is the network, not a fault (an outside
    review's run tripped and set the share to 0). The floor keeps it; 0 restores the ratio."""
    rng = random.Random(3)

    def run(settings: GuardSettings) -> Guard:
        guard = Guard(settings)
        for i in range(400):
            canary = i % 2 == 1
            ttft = rng.uniform(0.03, 0.08) + (0.15 if canary else 0.0)
            if guard.observe(canary, Sample(f"t{i}", False, ttft)) is not None:
                break
        return guard

    assert run(GuardSettings()).tripped is None
    tripped = run(GuardSettings(ttft_floor=0.0)).tripped
    assert tripped is not None and tripped.rule == "ttft_p95"


def test_a_fast_gateway_four_times_slower_to_its_first_token_still_trips() -> None:
    """0.1-0.15 s against 0.4-0.6 s: the floor (0.25 s) is under what it added (a second
    pass: a 0.5 s floor let it through)."""
    rng = random.Random(4)
    guard = Guard()
    for i in range(400):
        canary = i % 2 == 1
        ttft = rng.uniform(0.1, 0.15) * (4.0 if canary else 1.0)
        if guard.observe(canary, Sample(f"t{i}", False, ttft)) is not None:
            break
    assert guard.tripped is not None and guard.tripped.rule == "ttft_p95"


def _ended(route: str, body: bytes, end: End = End.UPSTREAM_EOF, status: int = 200) -> AuditRecord:
    lines = not body.startswith(b"data:")  # JSON lines, else an event stream
    audit = StreamAudit(dialect_for_route(route)(), 0.0, json_lines=lines, event_stream=not lines)
    audit.feed(body, 0.05)
    result = audit.finish(0.06, end)
    return AuditRecord("t", route, "POST", "m", status, 0.0, 0.07, len(body), result)


def test_an_error_line_on_a_route_with_no_dialect_says_nothing_but_a_cut_does() -> None:
    """Ollama's `/api/pull` of a model that does not exist answers 200 and an error line: one
    client pulling it through the canary tripped a healthy one (an outside review, 16 of 46
    canary streams bad against 0 of 30), as a 404 for an unknown model cannot."""
    pull = _ended(
        "other", b'{"status":"pulling manifest"}\n{"error":"pull model manifest: file does not exist"}\n'
    )
    assert pull.stream is not None and pull.stream.outcome.value == "upstream_error"
    assert judge(pull) is None
    # On a route whose dialect knows the shape, an error frame is the upstream's failure.
    chat = _ended("chat_completions", b'data: {"error": {"message": "overloaded"}}\n\n')
    assert chat.stream is not None and chat.stream.outcome.value == "upstream_error"
    assert judge(chat) is True
    # A body broken on the unknown route is the transport's word: still bad; an error status too.
    broken = _ended("other", b'{"status":"pulling"}\n', End.UPSTREAM_BROKEN)
    assert broken.stream is not None and broken.stream.outcome.value == "truncated"
    assert judge(broken) is True
    assert judged("upstream_error", 503, route="other") and is_bad("upstream_error", [], route="other")
    # A client that left there says nothing either: a pull's silent digest check is no hang.
    assert not judged("client_disconnect", 200, [], gave_up=True, route="other")
    assert judged("client_disconnect", 200, [], gave_up=True, route="chat_completions")
    # Timing anomalies there are the endpoint's nature (a pull's progress lines in a clump).
    assert not is_bad("complete", ["buffered", "bursty"], route="other")
    assert is_bad("complete", ["buffered"], route="chat_completions")


def test_a_stream_not_of_its_routes_provider_is_judged_as_on_a_route_with_no_dialect() -> None:
    """LM Studio's `/api/v1/chat` (its error event for a model not loaded, status 200) is on
    Cohere v1's route by its path, read as on `other`: the guard judged it as Cohere's, and one
    client asking for a missing model could trip a healthy canary again (a fourth review)."""
    lmstudio = _ended(
        "cohere_v1_chat", b'data: {"type": "chat.start"}\n\nevent: error\ndata: {"error": "no model"}\n\n'
    )
    assert lmstudio.stream is not None and lmstudio.stream.outcome.value == "upstream_error"
    assert lmstudio.stream.read_as_other and judge(lmstudio) is None
    not_ollama = _ended("ollama", b'{"type":"x"}\n{"error":"missing"}\n')
    assert not_ollama.stream is not None and not_ollama.stream.read_as_other and judge(not_ollama) is None
    # Cohere's own v1 stream ending in a failed generation is the upstream's failure.
    cohere = _ended(
        "cohere_v1_chat",
        b'{"is_finished":false,"event_type":"stream-start"}\n'
        b'{"is_finished":true,"event_type":"stream-end","finish_reason":"ERROR"}\n',
    )
    assert cohere.stream is not None and not cohere.stream.read_as_other
    assert cohere.stream.outcome.value == "upstream_error" and judge(cohere) is True


def test_baseline_give_ups_from_before_a_canary_are_not_counted_in_its_time() -> None:
    """Held until a canary had first tokens, 200 of the baseline's give-ups from long before
    it were counted in its time when it started: the baseline read 88 % bad, and a bad canary
    ran up to ten times longer (a third review). With no canary first tokens to weigh them
    against, they are not kept."""
    guard = Guard()
    for i in range(200):
        guard.observe(False, Sample(f"g{i}", True, None, at=float(i), waited=5.0))
    for i in range(200, 2200):
        guard.observe(False, Sample(f"b{i}", False, 0.3, at=float(i)))
    guard.reset()
    for i in range(25):
        guard.observe(True, Sample(f"c{i}", False, 0.3, at=2200.0 + i))
    assert guard.baseline.bad == 0 and guard._recent.bad == 0
    # A canary bad at 60 % still trips at its minimum against that baseline.
    trip = None
    for i in range(100):
        trip = trip or guard.observe(True, Sample(f"x{i}", i % 5 < 3, 0.3, at=2300.0 + i))
        trip = trip or guard.observe(False, Sample(f"y{i}", False, 0.3, at=2300.0 + i))
    assert trip is not None and trip.rule == "bad_share", guard.canary.figures()
