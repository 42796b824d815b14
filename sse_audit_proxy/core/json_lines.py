"""Streaming JSON lines (Ollama's native API, `application/x-ndjson`, `jsonl`, RFC 7464 `json-seq`):
bytes -> one event per line, the same events the SSE decoder makes, so the audit reads a JSON-lines
stream as it reads an event stream whose every frame is a `data:` line.

Lines end with LF (a CR before it is dropped); blank lines are skipped (and counted: ollama's
Python client fails on them); RFC 7464's record
separator (0x1E) before a record is dropped, and a byte order mark before the first line
(`bom`: Ollama's Python client fails on it). A line longer than the frame limit is skipped and
counted in `oversized`, as the SSE decoder does with an oversized frame.
"""

from __future__ import annotations

import json

import orjson

from sse_audit_proxy.core.sse import Event

_RS = b"\x1e"
_BOM = b"\xef\xbb\xbf"


class JsonLinesDecoder:
    """Feed it chunks as they arrive; it returns the events (lines) each chunk completed.

    The attributes the audit reads of an SSE decoder are here too: `comments` and
    `empty_events` (JSON lines have none), `other_lines` (blank lines), `idle` (never: the
    audit's fast path reads `data:` frames only), `oversized` and `last_unread`. A line over the
    limit is skipped, never held, and dispatched at its end as an unread event (Event.unread),
    as the SSE decoder does with a frame."""

    __slots__ = (
        "_discarding",
        "_head",
        "_max",
        "_more",
        "_tail",
        "_unread_size",
        "bom",
        "comments",
        "empty_events",
        "idle",
        "last_unread",
        "other_lines",
        "oversized",
    )

    def __init__(self, max_line_bytes: int) -> None:
        self._max = max_line_bytes
        self._tail = b""  # the current line, not yet ended
        self._more = bytearray()  # reads that went on with it since (sse.py says why)
        self._discarding = False  # skipping the rest of an oversized line
        self._unread_size = 0  # its bytes so far
        self._head: bytes | None = b""  # the body's first bytes while they may be a BOM (None: past)
        self.bom = False  # the body began with one (taken off)
        self.comments = 0
        self.empty_events = 0  # (an SSE decoder's: none here)
        self.other_lines = 0  # blank lines (skipped; Dialect.data_lines_only)
        self.idle = False
        self.last_unread = False  # the last event was an unread one
        self.oversized = 0

    def feed(self, chunk: bytes) -> list[Event]:
        if self._head is not None:
            chunk = self._head + chunk
            while True:  # every BOM (two: read as JSON, the second was read as other)
                if len(chunk) < len(_BOM) and _BOM.startswith(chunk):
                    self._head = chunk  # could still become one
                    return []
                if not chunk.startswith(_BOM):
                    break
                self.bom = True
                chunk = chunk[len(_BOM) :]
            self._head = None
        if self._tail:
            if b"\n" not in chunk and len(self._tail) + len(self._more) + len(chunk) <= self._max:
                self._more += chunk  # the line goes on
                return []
            self._join()
        lines = (self._tail + chunk if self._tail else chunk).split(b"\n")
        tail = lines.pop()
        events: list[Event] = []
        if self._discarding and lines:
            events.append(Event("", b"", "", self._unread_size + len(lines[0]) + 1))
            del lines[0]  # the end of the oversized line
            self._discarding = False
        for line in lines:
            record = _record(line)
            if len(record) > self._max:
                self.oversized += 1
                events.append(Event("", b"", "", len(line) + 1))
            elif record:
                events.append(Event("", record))
            else:
                self.other_lines += 1  # a blank line: ollama's Python client fails on it
        if self._discarding or len(tail) > self._max:
            if not self._discarding:
                self.oversized += 1
                self._unread_size = 0
            self._unread_size += len(tail)
            self._discarding = True
            tail = b""
        self._tail = tail
        if events:
            self.last_unread = events[-1].unread > 0
        return events

    def _join(self) -> None:
        if self._more:
            self._tail = b"".join((self._tail, self._more))
            self._more = bytearray()

    @property
    def bom_line(self) -> bytes | None:
        """As SSEDecoder's (the line itself is not kept: a BOM spoils any line of JSON)."""
        return b"" if self.bom else None

    @property
    def pending(self) -> bool:
        """A line has begun and not ended (no LF yet), is not being skipped, and is whole JSON
        (a clean end then makes it a line; a cut one stays unterminated)."""
        self._join()
        record = _record(self._tail)
        if self._discarding or not record:
            return False
        try:
            orjson.loads(record)
        except orjson.JSONDecodeError:
            # What Python's and JavaScript's readers take too: NaN, a lone surrogate, deep nesting.
            try:
                json.loads(record)
            except (ValueError, RecursionError):
                return False
        return True

    @property
    def cut_line(self) -> bool:
        """A line has begun, is not being skipped, and is not whole JSON (called after a clean
        end made a whole one a line): the body stopped inside it."""
        self._join()
        return bool(_record(self._tail)) and not self._discarding

    def close(self) -> bool:
        """End of body. True when a line was left without its LF (it is not read)."""
        self._join()
        pending = bool(_record(self._tail)) or self._discarding or bool(self._head)
        if self._tail and not pending:
            self.other_lines += 1  # blanks after the last LF: a line, to a client that reads them
        self._tail = b""
        self._discarding = False
        return pending


def _record(line: bytes) -> bytes:
    """A line's JSON text: without the record separator, the CR and surrounding blanks."""
    line = line.strip()
    return line[1:].strip() if line[:1] == _RS else line
