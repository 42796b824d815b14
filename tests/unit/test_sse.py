"""The SSE decoder against the WHATWG event-stream rules, fed at every possible split."""

from __future__ import annotations

import pytest

from sse_audit_proxy.core.sse import Event, SSEDecoder


def decode(chunks: list[bytes], max_frame_bytes: int = 1 << 20) -> tuple[list[Event], SSEDecoder]:
    decoder = SSEDecoder(max_frame_bytes)
    events: list[Event] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    return events, decoder


def every_split(stream: bytes) -> list[list[bytes]]:
    """The stream whole, byte by byte, and cut in two at every offset."""
    cuts = [[stream], [stream[i : i + 1] for i in range(len(stream))]]
    cuts += [[stream[:i], stream[i:]] for i in range(1, len(stream))]
    return cuts


def test_lf_cr_and_crlf_line_ends_all_end_lines_at_any_split() -> None:
    for sep in (b"\n", b"\r", b"\r\n"):
        stream = sep.join([b"data: one", b"", b"data: two", b"", b""])
        for chunks in every_split(stream):
            events, _ = decode(chunks)
            assert [e.data for e in events] == [b"one", b"two"], (sep, chunks)


def test_leading_bom_is_skipped_even_when_split() -> None:
    stream = b"\xef\xbb\xbfdata: x\n\n"
    for chunks in every_split(stream):
        events, _ = decode(chunks)
        assert [e.data for e in events] == [b"x"]


def test_bom_is_only_skipped_at_the_start() -> None:
    events, _ = decode([b"data: a\n\n\xef\xbb\xbfdata: b\n\n"])
    assert [e.data for e in events] == [b"a"]  # "\ufeffdata" is an unknown field


def test_data_with_and_without_the_space_and_multiline_join() -> None:
    events, _ = decode([b"data:a\ndata:  b\ndata\n\n"])
    assert events[0].data == b"a\n b\n"


def test_event_and_id_fields_and_ignored_retry() -> None:
    events, _ = decode([b"event: response.completed\nid: 7\nretry: 10\ndata: {}\n\ndata: x\n\n"])
    assert events[0] == Event("response.completed", b"{}", "7")
    assert events[1] == Event("", b"x", "7")  # the last event ID persists, the type does not


def test_comments_are_counted_not_dispatched() -> None:
    events, decoder = decode([b": ping\n\n: OPENROUTER PROCESSING\n\ndata: x\n\n"])
    assert [e.data for e in events] == [b"x"]
    assert decoder.comments == 2


def test_frame_without_data_is_not_dispatched() -> None:
    events, _ = decode([b"event: ping\n\nid: 3\n\n"])
    assert events == []


def test_utf8_split_inside_a_character_decodes_intact() -> None:
    text = 'data: {"content":"héllo 世界 🎉"}\n\n'.encode()
    for chunks in every_split(text):
        events, _ = decode(chunks)
        assert events[0].data.decode() == '{"content":"héllo 世界 🎉"}'


def test_unterminated_frame_at_end_is_reported_not_dispatched() -> None:
    events, decoder = decode([b"data: a\n\ndata: [DONE]\n"])
    assert [e.data for e in events] == [b"a"]
    assert decoder.close() is True


def test_clean_end_reports_no_unterminated_frame() -> None:
    _, decoder = decode([b"data: a\n\n"])
    assert decoder.close() is False


@pytest.mark.parametrize("chunk_size", [1, 7, 1000, 100_000])
def test_oversized_frame_is_counted_skipped_and_memory_stays_bounded(chunk_size: int) -> None:
    cap = 1024
    stream = b"data: ok1\n\ndata: " + b"x" * 50_000 + b"\ndata: more\n\ndata: ok2\n\n"
    decoder = SSEDecoder(cap)
    events: list[Event] = []
    peak = 0
    for i in range(0, len(stream), chunk_size):
        events.extend(decoder.feed(stream[i : i + chunk_size]))
        peak = max(peak, decoder.buffered_bytes)
    # The big frame is an unread event in its place, with its size (its lines and the blank
    # line), whatever the reads were.
    assert [(e.data, e.unread) for e in events] == [(b"ok1", 0), (b"", 50_019), (b"ok2", 0)]
    assert decoder.oversized == 1
    assert peak <= cap + chunk_size


def test_oversized_single_line_split_right_after_a_dropped_part_does_not_end_early() -> None:
    decoder = SSEDecoder(16)
    events = decoder.feed(b"data: " + b"y" * 40)  # dropped mid-line
    events += decoder.feed(b"\ndata: still-the-big-frame\n\ndata: next\n\n")
    assert [(e.data, e.unread) for e in events] == [(b"", 74), (b"next", 0)]
    assert decoder.oversized == 1
