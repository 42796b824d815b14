"""The decoder's frame cap, pinned by the cases the property tests found."""

from __future__ import annotations

from sse_audit_proxy.core.sse import Event, SSEDecoder


def test_an_oversized_frame_does_not_swallow_the_start_of_the_next_one() -> None:
    decoder = SSEDecoder(32)
    first = decoder.feed(b"data: " + b"x" * 40 + b"\n\ndata: o")
    assert first == [Event("", b"", "", unread=48)]  # dispatched unread at its blank line
    assert decoder.feed(b"k\n\n") == [Event("", b"ok")]
    assert decoder.oversized == 1


def test_a_long_comment_is_counted_but_never_held() -> None:
    decoder = SSEDecoder(64)
    decoder.feed(b"data: " + b"y" * 50 + b"\n: " + b"p" * 30)
    assert decoder.buffered_bytes <= 64
    decoder.feed(b"p" * 100)
    assert decoder.buffered_bytes <= 64
    assert decoder.feed(b"\n\n") == [Event("", b"y" * 50)]
    assert (decoder.comments, decoder.oversized) == (1, 0)


def test_the_cap_trips_at_the_same_byte_whether_a_line_comes_whole_or_in_pieces() -> None:
    line = b"data: " + b"z" * 25 + b"\n\n"  # 32 bytes counted: the line and its terminator
    for cap in (31, 32):
        whole = SSEDecoder(cap)
        pieces = SSEDecoder(cap)
        got_whole = whole.feed(line)
        got_pieces = [e for b in line for e in pieces.feed(bytes([b]))]
        assert got_whole == got_pieces
        assert whole.oversized == pieces.oversized == (1 if cap == 31 else 0)
