"""`Content-Encoding: zstd` event streams, decoded for the audit like gzip and Brotli.

aiohttp's and httpx's clients offer `zstd` when they can decode it, and a CDN in front of a
gateway then answers with it: every such stream was `complete` + `malformed_frame` with no
frame read, a truncated one included (outside review)."""

from __future__ import annotations

try:
    from compression.zstd import CompressionParameter, ZstdCompressor, compress
except ImportError:
    from backports.zstd import CompressionParameter, ZstdCompressor, compress

import pytest
from chat_streams import DONE, chunk

from sse_audit_proxy.core.audit import End, Outcome, StreamAudit
from sse_audit_proxy.core.dialects.chat import ChatCompletions
from sse_audit_proxy.core.inflate import FEED_MAX_OUT, MAX_RATIO_AFTER, Inflater

FRAMES = [chunk({"content": f"w{i} "}) for i in range(30)] + [chunk({}, finish="stop"), DONE]


def flushed(frames: list[bytes]) -> list[bytes]:
    """zstd as a streaming server writes it: each frame flushed as a block of its own."""
    c = ZstdCompressor()
    out = [c.compress(f, ZstdCompressor.FLUSH_BLOCK) for f in frames]
    out.append(c.flush(ZstdCompressor.FLUSH_FRAME))
    return out


def audit(reads: list[bytes]) -> StreamAudit:
    a = StreamAudit(ChatCompletions(), 0.0, content_encoding="zstd")
    for i, data in enumerate(reads):
        a.feed(data, 0.1 + 0.02 * i)
    return a


def test_a_zstd_stream_flushed_per_frame_is_read_frame_by_frame() -> None:
    r = audit(flushed(FRAMES)).finish(1.0, End.UPSTREAM_EOF)
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, [])
    assert r.done and r.content_frames == 30 and r.frames == 32
    assert r.ttft is not None and abs(r.ttft - 0.1) < 1e-9  # the first read's frame, when it came


def test_a_zstd_stream_cut_before_done_is_truncated() -> None:
    r = audit(flushed(FRAMES[:10])[:-1]).finish(1.0, End.UPSTREAM_EOF)  # no end of frame either
    assert r.outcome is Outcome.TRUNCATED and "missing_done" in r.anomalies
    assert r.content_frames == 10 and "malformed_frame" not in r.anomalies


def test_a_zstd_body_of_several_frames_is_one_body() -> None:
    body = b"".join(FRAMES)
    wire = compress(body[:500]) + compress(body[500:])
    inflater = Inflater("zstd", 1 << 20)
    assert b"".join(inflater.feed(wire)) == body and not inflater.failed


def test_a_zstd_window_past_8_mib_is_not_decoded() -> None:
    wire = compress(b"".join(FRAMES) * 2000, options={CompressionParameter.window_log: 25})
    inflater = Inflater("zstd", 1 << 20)
    assert b"".join(inflater.feed(wire)) == b"" and inflater.failed  # not 32 MiB of memory


@pytest.mark.parametrize("size", [256, 1 << 10])  # the bomb is a few KiB: several reads
def test_a_zstd_bomb_is_flagged_after_bounded_output(size: int) -> None:
    wire = compress(b"data: {}\n\n" * (16 << 20))  # 160 MiB from a few KiB
    inflater = Inflater("zstd", 64 << 10)
    total = 0
    for i in range(0, len(wire), size):
        for piece in inflater.feed(wire[i : i + size]):
            assert len(piece) <= 64 << 10
            total += len(piece)
        if inflater.bomb:
            break
    assert inflater.bomb
    assert total <= MAX_RATIO_AFTER + FEED_MAX_OUT + (64 << 10)


def test_a_zstd_bomb_in_one_read_is_one_once_its_tail_is_caught_up() -> None:
    a = StreamAudit(ChatCompletions(), 0.0, content_encoding="zstd")
    a.feed(compress(b"data: {}\n\n" * (16 << 20)), 0.1)
    turns = 0
    while a.catch_up():  # as the proxy does after the last read, a feed a loop turn
        turns += 1
    assert turns < 64  # the ratio stops it well before the proxy's cap
    r = a.finish(0.2, End.UPSTREAM_EOF)
    assert "compression_bomb" in r.anomalies


def test_a_body_labelled_zstd_that_is_text_is_read_as_text() -> None:
    r = audit([b"".join(FRAMES)]).finish(1.0, End.UPSTREAM_EOF)
    # all in one read after 0.1 s: buffered; a client decoding by the label fails on it
    assert (r.outcome, sorted(r.anomalies)) == (Outcome.COMPLETE, ["buffered", "malformed_frame"])
    assert r.done and r.content_frames == 30
    assert any("labelled compressed and is not" in reason for reason in r.reasons)


def test_zstd_frames_that_each_end_with_a_read_are_one_body() -> None:
    """Each SSE frame compressed as a zstd frame of its own, one a write: the decoder that had
    ended its frame was asked for more and raised, and the audit was switched off (second
    review)."""
    reads = [compress(frame) for frame in FRAMES]
    r = audit(reads).finish(1.0, End.UPSTREAM_EOF)
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, [])
    assert r.done and r.content_frames == 30
    cut = audit(reads[:10]).finish(1.0, End.UPSTREAM_EOF)
    assert cut.outcome is Outcome.TRUNCATED and "malformed_frame" not in cut.anomalies
