"""The pure evidence of a stream (issue 15): its timeline, its skeletons, reasons, usage_inconsistent."""

from __future__ import annotations

import itertools
import tracemalloc
from array import array
from typing import Any

import orjson
import pytest
from chat_streams import DONE, chunk, frame, healthy, usage_chunk
from hypothesis import given, settings
from hypothesis import strategies as st

from sse_audit_proxy.core.audit import End, Outcome, StreamAudit, StreamResult
from sse_audit_proxy.core.dialects import dialect_for_route
from sse_audit_proxy.core.dialects.chat import ChatCompletions
from sse_audit_proxy.core.skeleton import split_entry
from sse_audit_proxy.core.timeline import EXACT_FRAMES, MAX_GROUPS, Timeline

SECRET_TEXT = "the-completion-text-nobody-may-see"


def run(
    frames: list[bytes],
    times: list[float],
    *,
    end: End = End.UPSTREAM_EOF,
    route: str = "chat_completions",
    include_usage: bool = True,
) -> StreamResult:
    audit = StreamAudit(dialect_for_route(route)(), 0.0, include_usage=include_usage)
    for data, t in zip(frames, times, strict=True):
        audit.feed(data, t)
    return audit.finish(times[-1] + 0.001 if times else 0.001, end)


def test_timeline_names_each_frame_its_kind_at_its_arrival_offset() -> None:
    frames = [b": keep-alive\n\n", *healthy(2)]
    r = run(frames, [0.010, 0.100, 0.200, 0.300, 0.400, 0.500, 0.600])
    assert r.timeline is not None
    rows = r.timeline.rows()
    assert rows == [
        [10.0, "keepalive"],
        [100.0, "other"],
        [200.0, "content"],
        [300.0, "content"],
        [400.0, "finish"],
        [500.0, "usage"],
        [600.0, "terminal"],
    ]


def test_timeline_kinds_error_and_malformed_frames() -> None:
    frames = [
        chunk({"content": "a"}),
        b"data: {not json\n\n",
        frame({"error": {"message": "overloaded", "type": "server_error"}}),
    ]
    r = run(frames, [0.1, 0.2, 0.3])
    assert r.timeline is not None
    assert [k for _, k in r.timeline.rows()] == ["content", "malformed", "error"]


def test_frames_of_one_read_share_its_arrival_time() -> None:
    r = run([b"".join(healthy(3))], [1.5])
    assert r.timeline is not None
    assert {row[0] for row in r.timeline.rows()} == {1500.0}
    assert len(r.timeline.rows()) == 7


def test_a_long_stream_is_exact_first_then_grouped_with_every_frame_counted() -> None:
    tl = Timeline()
    n = 100_000
    for i in range(n):
        tl.add(i * 0.001, b"\x01" if i != n - 1 else b"\x02")
    rows = tl.rows()
    exact = [r for r in rows if len(r) == 2]
    groups = [r for r in rows if len(r) == 5]
    assert len(exact) == EXACT_FRAMES and len(groups) <= MAX_GROUPS
    assert len(exact) + sum(g[2] for g in groups) == n == tl.frames
    assert groups[-1][1] == "content+terminal"  # the last frame's kind survives the merging
    assert groups[-1][3] == pytest.approx((n - 1) * 1.0, rel=1e-6)


def test_a_100k_frame_timeline_costs_what_a_2k_frame_one_does() -> None:
    def size(frames: int) -> int:
        tl = Timeline()
        for i in range(frames):
            tl.add(i * 0.01, b"\x01")
        return tl.nbytes()

    assert size(100_000) <= size(2_000) * 1.1
    assert size(100_000) < 4096


def test_a_silence_in_the_grouped_part_is_still_visible() -> None:
    tl = Timeline()
    for i in range(5000):
        tl.add(i * 0.001 + (3.0 if i >= 4000 else 0.0), b"\x01")
    rows = [r for r in tl.rows() if len(r) == 5]
    between = [b[0] - a[3] for a, b in itertools.pairwise(rows)]
    assert max(max(between), *(r[4] for r in rows)) == pytest.approx(3001.0, abs=0.5)


def test_memory_of_an_open_stream_with_its_timeline_stays_small() -> None:
    # The `memory` workload's shape: 24 frames, read one at a time (docs/performance.md).
    frames = healthy(20)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    audits = []
    for _ in range(200):
        a = StreamAudit(ChatCompletions(), 0.0, include_usage=True)
        for i, data in enumerate(frames[:-1]):
            a.feed(data, 0.25 * i)
        audits.append(a)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    per_stream = sum(s.size_diff for s in after.compare_to(before, "filename")) / 200
    assert per_stream < 6 * 1024, per_stream


# Skeletons ----------------------------------------------------------------------------------


def test_skeletons_keep_structure_and_protocol_words_never_text() -> None:
    frames = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": SECRET_TEXT}),
        chunk({"content": SECRET_TEXT}),
        chunk({"content": SECRET_TEXT}),
        chunk({"content": SECRET_TEXT}),
        chunk({}, finish="stop"),
        usage_chunk(),
        DONE,
    ]
    r = run(frames, [0.1 * (i + 1) for i in range(len(frames))])
    assert SECRET_TEXT not in "".join(r.skeletons)
    docs = {n: doc for n, _, doc in map(split_entry, r.skeletons)}
    assert sorted(docs) == [1, 2, 6, 7, 8]  # the first 2, then one per new kind
    assert docs[2]["data"]["choices"][0]["delta"]["content"] == f"<{len(SECRET_TEXT)}>"
    assert docs[2]["data"]["object"] == "chat.completion.chunk"
    assert docs[6]["data"]["choices"][0]["finish_reason"] == "stop"
    assert docs[7]["data"]["usage"]["completion_tokens"] == 5
    assert docs[8]["data"] == "[DONE]"


# Reasons ------------------------------------------------------------------------------------


def test_buffered_reason_gives_the_streams_own_figures() -> None:
    r = run([b"".join(healthy(20))], [2.41])
    assert r.anomalies == ["buffered"]
    (reason,) = r.reasons
    assert reason.startswith("buffered: first token after 2.41 s, 100 % of the time to the last")
    assert "20 content frames arrived 0.0 ms apart on average" in reason


def test_truncated_reason_says_what_was_missing_and_how_the_body_ended() -> None:
    frames = healthy(31, done=False, usage=False, finish=None)[:-1]
    r = run(frames, [0.05 * (i + 1) for i in range(len(frames))])
    assert r.outcome is Outcome.TRUNCATED
    assert r.reasons[0] == (
        "truncated: body ended after 31 content frames (32 frames) with no "
        "[DONE] and no finish_reason and no usage; the upstream closed the "
        "connection cleanly"
    )
    assert [x.split(":")[0] for x in r.reasons[1:]] == r.anomalies


def test_reasons_come_outcome_first_then_in_anomaly_order() -> None:
    r = run(healthy(3, done=False), [0.1 * (i + 1) for i in range(6)], end=End.UPSTREAM_BROKEN)
    assert r.outcome is Outcome.TRUNCATED and r.anomalies == ["missing_done"]
    assert r.reasons[0].startswith("truncated: ") and "connection broke" in r.reasons[0]
    assert r.reasons[1].startswith("missing_done: ")


def test_a_complete_stream_without_anomalies_has_no_reasons() -> None:
    r = run(healthy(3), [0.1 * (i + 1) for i in range(7)])
    assert (r.outcome, r.anomalies, r.reasons) == (Outcome.COMPLETE, [], [])


def test_timeout_reason_gives_the_silence_and_where_it_began() -> None:
    r = run(healthy(3)[:3], [0.1, 0.2, 0.3], end=End.IDLE_TIMEOUT)
    assert r.outcome is Outcome.TIMEOUT
    assert r.reasons[0].startswith("timeout: no upstream byte for the idle timeout: ")
    assert "after 3 frames (2 content frames)" in r.reasons[0]


# usage_inconsistent -------------------------------------------------------------------------


def usage_stream(usage: dict[str, Any], n: int = 3) -> StreamResult:
    frames = [*healthy(n, usage=False)[:-1], usage_chunk(usage), DONE]
    return run(frames, [0.05 * (i + 1) for i in range(len(frames))])


def test_total_that_is_not_prompt_plus_completion_is_usage_inconsistent() -> None:
    r = usage_stream({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 25})
    assert r.anomalies == ["usage_inconsistent"]
    assert r.reasons == ["usage_inconsistent: total_tokens 25 is not prompt 10 + completion 5 (= 15)"]


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},  # OpenAI, vLLM
        # Gemini's OpenAI layer: reasoning outside completion_tokens, inside the total
        {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "total_tokens": 75,
            "completion_tokens_details": {"reasoning_tokens": 60},
        },
        # Anthropic through LiteLLM / Bedrock: cache tokens outside prompt_tokens, in the total
        {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "total_tokens": 1515,
            "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 500,
        },
        {
            "prompt_tokens": 1010,
            "completion_tokens": 5,
            "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 1000},
        },
        {"prompt_tokens": 10, "completion_tokens": 5},  # no total (Anthropic): nothing to compare
    ],
)
def test_documented_usage_conventions_are_not_inconsistent(usage: dict[str, Any]) -> None:
    assert usage_stream(usage).anomalies == []


def test_zero_completion_tokens_for_streamed_output_is_usage_inconsistent() -> None:
    r = usage_stream({"prompt_tokens": 10, "completion_tokens": 0, "total_tokens": 10}, n=6)
    assert r.anomalies == ["usage_inconsistent"]
    assert r.reasons == [
        "usage_inconsistent: 0 completion tokens reported (and 10 prompt "
        "tokens) for 6 content frames that carried output"
    ]


@pytest.mark.parametrize(
    "usage",
    [
        # A hop that re-chunks text below a token (LiteLLM's mock: 3 characters a frame).
        {"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10},
        # All zeros: a placeholder (mock servers, gateways that do not count).
        {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        {"input_tokens": 0, "output_tokens": 0},
    ],
)
def test_more_content_frames_than_tokens_or_zero_usage_is_not_inconsistent(usage: dict[str, Any]) -> None:
    assert usage_stream(usage, n=6).anomalies == []


def test_a_cut_streams_early_usage_is_not_judged_against_its_frames() -> None:
    # Anthropic's message_start carries output_tokens 1; the stream is cut before the rest.
    start = {"type": "message_start", "message": {"usage": {"input_tokens": 5, "output_tokens": 1}}}
    block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    deltas = [{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}}] * 4
    body = [b"data: " + orjson.dumps(d) + b"\n\n" for d in (start, block, *deltas)]
    r = run(body, [0.1 * (i + 1) for i in range(len(body))], route="messages")
    assert r.outcome is Outcome.TRUNCATED and "usage_inconsistent" not in r.anomalies


def test_skeletons_of_a_stream_that_varies_its_frames_stay_bounded() -> None:
    from sse_audit_proxy.core.audit import MAX_SKELETON_CHARS

    # Every frame a new kind and shape: error, usage, finish, malformed ... in all combinations.
    frames = []
    for i in range(200):
        doc: dict[str, Any] = {
            "choices": [
                {"index": 0, "delta": {"content": "x" * (i % 7)}, "finish_reason": "stop" if i % 2 else None}
            ],
            "pad": {f"field{j}": j for j in range(60)},
            "n": i,
        }
        if i % 3:
            doc["usage"] = {"prompt_tokens": i, "completion_tokens": i, "total_tokens": 2 * i}
        if i % 5 == 0:
            doc["error"] = {"message": "z" * 40}
        frames.append(frame(doc))
    r = run(frames, [0.01 * (i + 1) for i in range(len(frames))])
    assert r.timeline is not None
    kinds = {kind for _, kind in r.timeline.rows()}
    assert len(kinds) > len(r.skeletons) > 0  # the bound, not the kinds, stopped it
    assert sum(map(len, r.skeletons)) <= MAX_SKELETON_CHARS


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(allow_nan=False), max_size=40))
def test_held_reads_offsets_are_stored_as_array_f_would_store_them(offsets: list[float]) -> None:
    # add_ones packs the offsets with struct (array.extend costs 3x as much per item): the
    # stored float32s must be the array's own, infinities and values beyond float32 included.
    timeline = Timeline()
    timeline.add_ones(offsets, bytes(len(offsets)))
    assert timeline._r_t.tobytes() == array("f", offsets).tobytes()
    assert timeline.frames == len(offsets)
