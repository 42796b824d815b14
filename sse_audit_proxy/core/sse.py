"""Incremental Server-Sent Events decoder: bytes in, events out, no I/O.

Follows the WHATWG "event stream interpretation" rules
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation)
but works on bytes: line terminators are ASCII and never occur inside a multi-byte
UTF-8 sequence, so splitting on them is safe at any read boundary and `data` stays
bytes for the JSON parser. Memory is bounded by `max_frame_bytes`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_MAX_FRAME_BYTES = 1 << 20
_BOM = b"\xef\xbb\xbf"
BOM_HEAD = 16  # bytes kept after a leading BOM: enough for the first line's field name
LOOSE_LINES = 32  # a frame's `data:` lines held each as it came, before they are folded


@dataclass(slots=True)
class Event:
    """One dispatched event. `event` is "" when the frame had no `event:` field. `unread`: the
    frame was larger than `max_frame_bytes`, so it was skipped, not read: `event` is its name
    if its `event:` line came before the cap, `data` the `"type"` its data began with (a JSON
    object's first key; else empty), and `unread` is about its size in bytes (an image in a
    stream: its name still says what it was)."""

    event: str
    data: bytes
    id: str = ""
    unread: int = 0


def one_data_frame(chunk: bytes, max_frame_bytes: int) -> bytes | None:
    """The data of `chunk` when it is exactly one frame of a single `data:` line (nearly every
    read of a stream), else None. Its only LF is the first of the blank line at its end and it
    has no CR, so a decoder with nothing pending would make that one event of it; the caller
    checks that nothing is pending (SSEDecoder.idle). A `data:` line without its space is left to
    the decoder, which counts it (SSEDecoder.other_lines)."""
    if chunk[:6] != b"data: " or chunk[-1] != 0x0A or chunk[-2] != 0x0A:
        return None
    data = chunk[6:-2]
    if 0x0A in data or 0x0D in data or len(chunk) - 2 >= max_frame_bytes:
        return None
    return data


class SSEDecoder:
    """Feed it chunks as they arrive; it returns the events each chunk completed.

    Comment lines (keep-alives) are not events; they are counted in `comments` so a caller
    can notice them without an allocation. A frame over `max_frame_bytes` is skipped, never
    held, and dispatched at its blank line as an unread event (Event.unread), also counted in
    `oversized`.
    """

    __slots__ = (
        "_bom_checked",
        "_data",
        "_discarding",
        "_event",
        "_frame_len",
        "_last_id",
        "_max",
        "_more",
        "_retry",
        "_skip_lf",
        "_tail",
        "_tail_comment",
        "_tail_dropped",
        "_unread_event",
        "_unread_size",
        "_unread_type",
        "bom_head",
        "comments",
        "empty_events",
        "idle",
        "last_unread",
        "other_lines",
        "oversized",
    )

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self._max = max_frame_bytes
        self._tail = b""  # the current, not yet terminated line
        # ... and the reads that went on with it since, gathered in one buffer and joined to it
        # when it ends: joined and scanned again at each read, a long line in small reads cost
        # its square, a 1 MiB frame in 512-byte reads 1.5 s of the event loop. (One buffer, not
        # a list of reads: a list of 2-byte HTTP chunks held 28 MiB for a 1 MiB line.)
        self._more = bytearray()
        self._tail_dropped = False  # part of the current line was discarded (oversized)
        self._tail_comment = False  # the current line is a comment: counted, never held
        # The frame's `data:` lines; past LOOSE_LINES of them they are folded into the first,
        # so a frame of short lines holds its bytes, not an object a line (one held 7x the
        # frame cap so: an outside review).
        self._data: list[bytes | bytearray] = []
        # Bytes the current frame has taken so far: every line plus one for its terminator, so
        # the cap trips at the same byte whether a line arrives whole or in pieces.
        self._frame_len = 0
        self._event = ""
        self._last_id = ""
        self._bom_checked = False
        # The body began with a byte order mark, taken off as the spec says: the bytes after it,
        # up to BOM_HEAD or the first line's end (None: no BOM). The Python SDKs read the mark
        # as part of that line's field name, and lose the line (bom_line, Dialect.loses_to_bom).
        self.bom_head: bytes | None = None
        self._skip_lf = False  # last chunk ended in CR: a leading LF belongs to it
        self._discarding = False  # skipping the rest of an oversized frame
        # None of the above is pending (BOM checked, no partial line or frame): the fast path's
        # precondition, kept up to date by every call that is not the fast path. Public: the
        # audit's own fast path (StreamAudit.feed) checks it too.
        self.idle = False
        self.comments = 0
        self.oversized = 0
        # Blank lines that end no data, after which the openai Python SDK still hands its
        # caller an event, with empty data, that it fails to parse: a frame with an `event:` or
        # a `retry:` line and no `data:`, or any such blank line once an `id:` was seen (it
        # keeps the last ID, as the spec says, and dispatches whenever it has one). The spec
        # dispatches nothing there, so they are counted, not made events.
        self.empty_events = 0
        self._retry = False  # the current frame has a `retry:` line with a number
        # Lines of frames other than `data: ...` and comments: `event:`, `id:`, `retry:`, unknown
        # fields, `data:` without its space. The spec's readers take them; google-genai reads
        # each as JSON and raises (Dialect.data_lines_only).
        self.other_lines = 0
        # The last event was an unread one (Event.unread). Keep-alives after it leave it so.
        self.last_unread = False
        # The frame being skipped (see Event.unread): its name and the bytes it had so far.
        self._unread_event = ""
        self._unread_type = b""  # its data's leading `"type"`, if it began with one
        self._unread_size = 0

    def feed(self, chunk: bytes) -> list[Event]:
        # The common read: exactly one `data:` frame, nothing pending: the general path below
        # would make the same single event; this skips its splits and state checks (profiled:
        # the decoder is a fifth of the audit's time per frame).
        if self.idle:
            data = one_data_frame(chunk, self._max)
            if data is not None:
                self.last_unread = False
                return [Event("", data, self._last_id)]
        events = self._feed(chunk)
        if events:
            self.last_unread = events[-1].unread > 0
        self.idle = self._bom_checked and not (
            self._tail
            or self._frame_len
            or self._skip_lf
            or self._discarding
            or self._tail_dropped
            or self._tail_comment
        )
        return events

    def _feed(self, chunk: bytes) -> list[Event]:
        if not chunk:
            return []
        if not self._bom_checked:
            chunk = self._start(chunk)
            if not chunk:
                return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
                if not chunk:
                    return []
        if self._tail:
            if (
                0x0A not in chunk
                and 0x0D not in chunk
                and self._frame_len + len(self._tail) + len(self._more) + len(chunk) < self._max
            ):
                self._more += chunk  # the line goes on
                return []
            if self._more:
                self._tail = b"".join((self._tail, self._more))
                self._more = bytearray()
        buf = self._tail + chunk if self._tail else chunk
        self._tail = b""  # now part of buf
        if 0x0D in buf:  # an int membership test is a plain memchr: cheaper than b"\r" in buf
            # CR and CRLF both end a line; a CR at the very end may be half of a CRLF.
            self._skip_lf = buf[-1] == 0x0D
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events: list[Event] = []
        rest = buf
        if not (self._discarding or self._tail_dropped or self._tail_comment):
            # Whole frames first, split on the blank line that ends each (one C call); a
            # frame that is a single `data:` line (nearly all) becomes an event without the
            # per-line loop. What follows the last blank line goes line by line.
            frames = buf.split(b"\n\n")
            rest = frames.pop()
            limit = self._max
            for frame in frames:
                if (
                    frame[:6] == b"data: "
                    and 0x0A not in frame
                    and len(frame) < limit
                    and not self._frame_len
                ):
                    events.append(Event("", frame[6:], self._last_id))
                else:
                    self._frame(frame, events)
            if not rest:
                return events
        lines = rest.split(b"\n")
        self._tail = lines.pop()
        if lines and (self._tail_dropped or self._tail_comment):
            # The first piece finishes a line whose start was not kept: not a blank line.
            if self._tail_comment:
                self.comments += 1
            elif self._discarding:
                self._unread_size += len(lines[0]) + 1
            self._tail_dropped = self._tail_comment = False
            del lines[0]
        for line in lines:
            self._line(line, events)
        tail = self._tail
        if tail:
            if self._discarding:
                self._unread_size += len(tail)
                self._tail = b""  # part of a frame being skipped: not held
                self._tail_dropped = True
            elif self._tail_comment or tail[0] == 0x3A:  # a comment: nothing in it is needed
                self._tail = b""
                self._tail_comment = True
            elif self._frame_len + len(tail) + 1 > self._max:
                self._overflow(self._frame_len + len(tail), tail)
                self._tail = b""
                self._tail_dropped = True
        return events

    def _start(self, chunk: bytes) -> bytes:
        """The body's first bytes: a BOM taken off, and what follows it kept (bom_head) until
        the first line's field name is known. What is left to decode; b"" to wait for more."""
        head = self.bom_head
        if head is not None:  # after a BOM
            self.bom_head = head + chunk[: BOM_HEAD - len(head)]
        else:
            chunk = self._tail + chunk
            self._tail = b""
            if len(chunk) < len(_BOM) and _BOM.startswith(chunk):
                self._tail = chunk  # could still become a BOM
                return b""
            if not chunk.startswith(_BOM):
                self._bom_checked = True
                return chunk
            chunk = chunk[len(_BOM) :]
            self.bom_head = chunk[:BOM_HEAD]
        head = self.bom_head
        self._bom_checked = len(head) >= BOM_HEAD or 0x0A in head or 0x0D in head
        return chunk

    def _frame(self, frame: bytes, events: list[Event]) -> None:
        """A complete frame (without its blank line) that needs the line-by-line rules."""
        for line in frame.split(b"\n"):
            self._line(line, events)
        self._line(b"", events)

    def close(self) -> bool:
        """End of stream. True when a frame was left unterminated (it is not dispatched)."""
        pending = bool(
            self._tail or self._frame_len or self._discarding or self._tail_dropped or self._tail_comment
        )
        self._reset_frame()
        self._tail = b""
        self._more = bytearray()
        self._tail_dropped = self._tail_comment = self._discarding = False
        self.idle = self._bom_checked and not self._skip_lf
        return pending

    @property
    def buffered_bytes(self) -> int:
        """What the current frame holds: never more than `max_frame_bytes`."""
        return self._frame_len + len(self._tail) + len(self._more)

    def _line(self, line: bytes, events: list[Event]) -> None:
        if not line:
            if self._discarding:
                self._discarding = False
                size = self._unread_size + 1
                events.append(Event(self._unread_event, self._unread_type, self._last_id, size))
            elif self._data:
                events.append(Event(self._event, b"\n".join(self._data), self._last_id))
            elif self._event or self._retry or self._last_id:
                self.empty_events += 1
            self._reset_frame()
            return
        if self._discarding:
            self._unread_size += len(line) + 1
            return
        if line[0] == 0x3A:  # ":" comment, used as keep-alive; not part of the frame
            self.comments += 1
            return
        size = self._frame_len + len(line) + 1  # as the tail check in feed() counts it
        if size > self._max:
            self._overflow(size, line)
            return
        self._frame_len = size
        if line.startswith(b"data:"):
            data = self._data  # (_add_data in place: a call a line costs more than its work)
            if line[5:6] == b" ":
                data.append(line[6:])
            else:
                data.append(line[5:])
                self.other_lines += 1
            if len(data) > LOOSE_LINES:
                self._fold()
            return
        self.other_lines += 1
        field, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if field == b"event":
            self._event = value.decode("utf-8", "replace")
        elif field == b"id":
            if b"\x00" not in value:
                self._last_id = value.decode("utf-8", "replace")
        elif field == b"retry":
            self._retry = _an_int(value)
        elif field == b"data":  # "data" with no colon: an empty data line
            self._add_data(b"")
        elif field == b"error":
            # Not an SSE field (clients ignore it), but llama.cpp's server sent its failures
            # mid-generation so until 2025, then `[DONE]`: read as an error event, or the
            # failed answer was `complete`.
            self._event = "error"
            self._add_data(value)
        # Unknown fields are ignored, as the spec says (and `retry`, but for empty_events).

    def _add_data(self, value: bytes) -> None:
        self._data.append(value)
        if len(self._data) > LOOSE_LINES:
            self._fold()

    def _fold(self) -> None:
        """The frame's data lines as one buffer, extended in place (each byte copied once)."""
        data = self._data
        first = data[0] if data[0].__class__ is bytearray else bytearray(data[0])
        first += b"\n"
        first += b"\n".join(data[1:])
        self._data = [first]

    @property
    def bom_line(self) -> bytes | None:
        """The start of the line a leading BOM was on (BOM_HEAD bytes at most, any further BOMs
        taken off: the Python SDKs lose the line to those too); None when there was no BOM."""
        head = self.bom_head
        if head is None:
            return None
        while head.startswith(_BOM):
            head = head[len(_BOM) :]
        return head.split(b"\n", 1)[0].split(b"\r", 1)[0]

    def _overflow(self, size: int, line: bytes) -> None:
        """The current frame outgrew the cap at `size` bytes (`line`: the line, or its start,
        that took it over): skip it up to its blank line, which dispatches it as an unread
        event, named by its `event:` line, or else by its data's leading `"type"`."""
        self.oversized += 1
        self._unread_event = self._event  # named before the cap (`event:` comes first)
        # A gateway that drops `event:` lines leaves the type in the JSON, its first key in
        # OpenAI's streams, where the openai SDKs read it: a 3 MiB partial image went unnamed,
        # its stream judged as if it had no content (an outside review).
        self._unread_type = _leading_type(
            self._data[0][:TYPE_HEAD] if self._data else _data_value(line[: TYPE_HEAD + 6])
        )
        self._unread_size = size
        self._reset_frame()
        self._discarding = True

    def _reset_frame(self) -> None:
        self._data = []
        self._frame_len = 0
        self._event = ""
        self._retry = False


# How much of an oversized frame's data is looked at for its leading `"type"`.
TYPE_HEAD = 256
# An event type as the leading type is taken: a protocol word, no text (tools/case.py checks
# evidence's against it too).
TYPE_NAME = "[A-Za-z0-9_.:-]{1,80}"
_LEADING_TYPE = re.compile(rb'\A[ \t\n]*\{[ \t\n]*"type"[ \t\n]*:[ \t\n]*"(%s)"' % TYPE_NAME.encode())


def _data_value(line: bytes) -> bytes:
    """A `data:` line's value (b"" for another line)."""
    if line[:5] != b"data:":
        return b""
    return line[6:] if line[5:6] == b" " else line[5:]


def _leading_type(data: bytes | bytearray) -> bytes:
    """The `"type"` a JSON object's data begins with (b"" if it does not begin so)."""
    found = _LEADING_TYPE.match(bytes(data))
    return found.group(1) if found else b""


def _an_int(value: bytes) -> bool:
    """Whether the openai Python SDK takes a `retry:` value (`int()` of its text)."""
    try:
        int(value.decode("utf-8", "replace"))
    except ValueError:
        return False
    return True
