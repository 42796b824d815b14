"""JSON lines into events: one a line, whatever the reads, with the SSE decoder's bounds."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from sse_audit_proxy.core.json_lines import JsonLinesDecoder

BODY = b'{"a":1}\n{"b":2}\r\n\n  \n\x1e{"c":3}\n{"error":"x"}\n'
WANT = [b'{"a":1}', b'{"b":2}', b'{"c":3}', b'{"error":"x"}']


def decode(pieces: list[bytes], limit: int = 1 << 20) -> tuple[list[bytes], JsonLinesDecoder]:
    decoder = JsonLinesDecoder(limit)
    out = [event.data for piece in pieces for event in decoder.feed(piece)]
    return out, decoder


def test_each_line_is_one_event_crlf_blank_lines_and_record_separators_aside() -> None:
    events, decoder = decode([BODY])
    assert events == WANT
    assert not decoder.close() and decoder.oversized == 0 and decoder.comments == 0


@given(st.lists(st.integers(min_value=0, max_value=len(BODY)), max_size=12))
def test_any_split_of_the_body_gives_the_same_events(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(BODY)]
    assert decode([BODY[a:b] for a, b in itertools.pairwise(bounds)])[0] == WANT


def test_a_line_over_the_limit_is_skipped_and_counted_and_never_held_whole() -> None:
    big = b'{"x":"' + b"y" * 100 + b'"}'
    events, decoder = decode([b'{"a":1}\n', big[:50], big[50:], b'\n{"b":2}\n'], limit=64)
    assert events == [b'{"a":1}', b"", b'{"b":2}'] and decoder.oversized == 1  # "": unread
    _, decoder = decode([b"z" * 1000], limit=64)
    assert decoder._tail == b""  # a line past the limit is not held while it goes on


def test_a_last_line_without_its_newline_is_left_unterminated() -> None:
    events, decoder = decode([b'{"a":1}\n{"b":'])
    assert events == [b'{"a":1}'] and decoder.close()
