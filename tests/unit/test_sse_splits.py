"""The decoder gives the same events however the stream is cut into reads.

Fed byte by byte the decoder only ever sees single lines (its line-by-line rules); fed in
larger reads it takes whole single-`data:`-line frames on its fast path. Both must agree on
every event, keep-alive count, oversized count and unterminated frame, for any stream.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sse_audit_proxy.core.sse import Event, SSEDecoder

CAP = 64  # small, so oversized frames and lines occur often
LINES = st.sampled_from(
    [
        b'data: {"choices":[{"delta":{"content":"hi"}}]}',
        b"data:x",
        b"data: ",
        b"data",
        b"data: [DONE]",
        b"event: message",
        b"event: response.completed",
        b"id: 7",
        b"id: a\x00b",
        b"retry: 10",
        b": ping",
        b":",
        b"",
        b"",
        b"",
        b"unknown: field",
        b"data: " + b"y" * 80,
        b"\xef\xbb\xbfdata: bom",
        b"data: caf\xc3\xa9",
    ]
)
ENDINGS = st.sampled_from([b"\n", b"\n", b"\n", b"\r\n", b"\r"])


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(st.tuples(LINES, ENDINGS), max_size=30))
    body = b"".join(line + end for line, end in lines)
    if draw(st.booleans()):
        body = b"\xef\xbb\xbf" + body
    return body + draw(st.sampled_from([b"", b"\n", b"data: tail"]))


def decode(chunks: list[bytes]) -> tuple[list[Event], int, int, bool]:
    decoder = SSEDecoder(CAP)
    events: list[Event] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
        assert decoder.buffered_bytes <= CAP + len(chunk)
    return events, decoder.comments, decoder.oversized, decoder.close()


@settings(max_examples=500, deadline=None)
@given(streams(), st.lists(st.integers(min_value=1, max_value=200), max_size=20))
def test_events_do_not_depend_on_how_the_stream_is_split(stream: bytes, cuts: list[int]) -> None:
    by_byte = decode([stream[i : i + 1] for i in range(len(stream))])
    assert decode([stream]) == by_byte
    chunks, at = [], 0
    for size in cuts:
        chunks.append(stream[at : at + size])
        at += size
    chunks.append(stream[at:])
    assert decode([c for c in chunks if c]) == by_byte


def test_whole_single_line_frames_in_one_read_are_all_dispatched() -> None:
    frames = b"".join(b'data: {"n":%d}\n\n' % i for i in range(100))
    events, _, _, unterminated = decode([frames])
    assert [e.data for e in events] == [b'{"n":%d}' % i for i in range(100)]
    assert not unterminated


def test_a_frame_begun_in_one_read_is_finished_by_the_next_at_every_cut() -> None:
    # A read ending after `event:` or a first `data:` line leaves a frame open; the next read's
    # first frame then looks like a lone `data:` line but must keep what came before it.
    stream = b"event: message\ndata: a\n\ndata: b1\ndata: b2\n\nid: 9\ndata: c\n\nevent: done\n\ndata: d\n\n"
    whole = decode([stream])
    assert [(e.event, e.data, e.id) for e in whole[0]] == [
        ("message", b"a", ""),
        ("", b"b1\nb2", ""),
        ("", b"c", "9"),
        ("", b"d", "9"),
    ]
    for i in range(1, len(stream)):
        for j in range(i + 1, len(stream) + 1):
            assert decode([stream[:i], stream[i:j], stream[j:]]) == whole, (i, j)


def test_a_frame_at_the_cap_is_judged_the_same_whole_or_byte_by_byte() -> None:
    for size in range(CAP - 3, CAP + 3):  # the data line's length, around the cap
        stream = b"data:" + b"x" * (size - 5) + b"\n\ndata: ok\n\n"
        by_byte = decode([stream[i : i + 1] for i in range(len(stream))])
        assert decode([stream]) == by_byte, size
        assert by_byte[0][-1].data == b"ok"
