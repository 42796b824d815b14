"""The log writer over a real pipe: a stalled reader costs lines, never a wait."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

import pytest

from sse_audit_proxy.sinks.line_writer import BUFFER_FULL, OUTPUT_CLOSED, LineWriter

LINE = b"x" * 999 + b"\n"  # a stream_end line's size
PIPE = 64 << 10  # Linux's default pipe capacity


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        with contextlib.suppress(OSError):
            os.close(fd)


def read_until(fd: int, n: int, timeout: float = 5.0) -> bytes:
    got = b""
    deadline = time.monotonic() + timeout
    os.set_blocking(fd, False)
    while len(got) < n and time.monotonic() < deadline:
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            time.sleep(0.005)
            continue
        if not data:
            break
        got += data
    return got


def notice(count: int) -> bytes:
    return b"dropped %d\n" % count


def test_a_stalled_reader_costs_lines_not_time(pipe: tuple[int, int]) -> None:
    r, w = pipe
    reasons: list[str] = []
    writer = LineWriter(w, limit=16 * len(LINE), notice=notice)
    writer.on_drop = reasons.append
    n = PIPE // len(LINE) + 100  # the pipe fills, then the buffer, then lines are dropped
    started = time.monotonic()
    for i in range(n):
        writer.write(b"%06d" % i + LINE[6:])
    assert time.monotonic() - started < 0.5  # the pipe was full long before: nothing waited
    assert writer.dropped > 0 and reasons == [BUFFER_FULL] * writer.dropped
    assert writer.pending <= 16 * len(LINE)
    written = n - writer.dropped
    out = read_until(r, written * len(LINE) + len(notice(writer.dropped)))
    lines = out.splitlines(keepends=True)
    assert len(lines) == written + 1
    # Whole, in order: the first ones (new lines are dropped while the buffer is full).
    assert [int(line[:6]) for line in lines[:-1]] == list(range(written))
    assert lines[-1] == notice(writer.dropped)  # said once the writer caught up
    assert writer.close(1.0) == 0  # nothing lost that was not said


def test_lines_past_the_limit_are_taken_again_once_the_reader_catches_up(pipe: tuple[int, int]) -> None:
    r, w = pipe
    writer = LineWriter(w, limit=4 * len(LINE), notice=notice)
    for _ in range(PIPE // len(LINE) + 20):
        writer.write(LINE)
    first = writer.dropped
    assert first > 0
    read_until(r, 1 << 30, timeout=0.5)  # drain everything, notice included
    writer.write(b"after\n")
    assert read_until(r, 6) == b"after\n"
    assert writer.dropped == first


def test_a_reader_that_went_away_drops_every_line_and_the_writer_stays_quick(pipe: tuple[int, int]) -> None:
    r, w = pipe
    reasons: list[str] = []
    writer = LineWriter(w, notice=notice)
    writer.on_drop = reasons.append
    os.close(r)  # EPIPE from now on (Python ignores SIGPIPE)
    writer.write(LINE)
    deadline = time.monotonic() + 5
    while not writer.closed and time.monotonic() < deadline:
        time.sleep(0.005)
    assert writer.closed
    for _ in range(10):
        writer.write(LINE)
    assert writer.dropped == 11
    assert reasons == [OUTPUT_CLOSED] * 11
    assert writer.close(1.0) == 11  # lost, and no line could say so: for stderr at exit


def test_close_waits_for_a_stalled_reader_at_most_its_timeout(pipe: tuple[int, int]) -> None:
    _r, w = pipe
    writer = LineWriter(w, notice=notice)
    count = PIPE // len(LINE) + 10
    for _ in range(count):
        writer.write(LINE)
    started = time.monotonic()
    lost = writer.close(0.3)  # the reader never read: lines are left
    assert 0 < lost <= count
    assert 0.25 < time.monotonic() - started < 2.0


def test_close_writes_out_what_is_buffered(pipe: tuple[int, int]) -> None:
    r, w = pipe
    writer = LineWriter(w, notice=notice)
    for i in range(50):
        writer.write(f"line {i}\n")  # text too (the console format and library warnings)
    assert writer.close(2.0) == 0
    out = read_until(r, 1 << 20, timeout=0.5)
    assert out.splitlines() == [b"line %d" % i for i in range(50)]


def test_each_stall_says_what_it_dropped_since_the_last_notice(pipe: tuple[int, int]) -> None:
    """A notice counts the lines dropped since the one before it: the running total counted the
    first stall's losses again in the second's notice (a third mutation review)."""
    r, w = pipe
    said: list[int] = []

    def counted(count: int) -> bytes:
        said.append(count)
        return notice(count)

    writer = LineWriter(w, limit=4 * len(LINE), notice=counted)
    stalls = []
    for _ in range(2):
        before = writer.dropped
        for _ in range(PIPE // len(LINE) + 20):  # the pipe and the buffer fill; lines drop
            writer.write(LINE)
        stalls.append(writer.dropped - before)
        read_until(r, 1 << 30, timeout=0.5)  # the reader catches up: the notice goes out
        writer.write(b"after\n")  # (a write is when the writer looks again)
        read_until(r, 1 << 30, timeout=0.3)
    assert stalls[0] > 0 and stalls[1] > 0
    assert said == stalls, (said, stalls)
