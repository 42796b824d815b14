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


def test_a_long_line_in_small_reads_is_held_in_pieces_and_read_as_if_whole() -> None:
    """Each read used to join and scan the whole line so far again: a 1 MiB frame in 512-byte
    reads cost 1.5 s of the event loop (0.57 s as JSON lines; an outside review). The pieces
    are held and joined once; what is read, and where the cap trips, is as before."""
    from sse_audit_proxy.core.json_lines import JsonLinesDecoder

    for size in (60, 61, 62, 63, 64, 65, 100):
        line = b"data: " + b"q" * (size - 8) + b"\n\n"
        for cap in (62, 63, 64):
            whole = SSEDecoder(cap)
            got_whole = whole.feed(line) + whole.feed(b"data: next\n\n")
            for step in (1, 3, 7):
                pieces = SSEDecoder(cap)
                got = [e for i in range(0, len(line), step) for e in pieces.feed(line[i : i + step])]
                assert pieces.buffered_bytes <= cap
                got += pieces.feed(b"data: next\n\n")
                assert (got, pieces.oversized) == (got_whole, whole.oversized), (size, cap, step)
        record = b'{"a": "' + b"r" * (size - 10) + b'"}'
        for cap in (61, 62, 63):
            whole_lines = JsonLinesDecoder(cap)
            want = whole_lines.feed(record + b"\n{}\n")
            for step in (1, 5):
                split = JsonLinesDecoder(cap)
                got = [e for i in range(0, len(record), step) for e in split.feed(record[i : i + step])]
                assert split.pending == (len(record) <= cap) and split.cut_line == (len(record) <= cap)
                got += split.feed(b"\n{}\n")
                assert (got, split.oversized) == (want, whole_lines.oversized), (size, cap, step)
