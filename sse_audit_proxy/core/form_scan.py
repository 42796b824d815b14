"""What a `multipart/form-data` request asks for, read as its body streams past.

OpenAI's audio transcriptions and translations and its image edits are forms: the model is a
field, and a stream is asked for with a field `stream` of `true` (the SDKs send `true`; a
pydantic server such as vLLM's also takes `1`, `yes`, `on`). Read as JSON, such a request
named no model and asked for no stream, so a gateway that answered it with one JSON document
instead of the stream was not caught (`not_streamed`).

Only the small text fields named in WANTED are kept, up to VALUE_KEEP bytes each; a file's
content and every other part are skipped with a substring search for the boundary, never
held. Parts are read up to MAX_PARTS (each costs a few steps in Python): what was read before
stays. Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import orjson

from sse_audit_proxy.core.request_info import (
    MAX_MODEL,
    UNKNOWN_MODEL,
    BodyScanner,
    RequestInfo,
    safe_token,
)

WANTED = frozenset({b"model", b"stream"})
VALUE_KEEP = 1 << 10  # a longer value is no model name nor a boolean: dropped
MAX_HEAD = 8 << 10  # one part's header lines
MAX_PARTS = 1000
MAX_BOUNDARY = 200  # RFC 2046 allows 70; some clients go further
# pydantic's reading of a boolean from text (vLLM's and FastAPI's form fields)
TRUE = frozenset({b"true", b"1", b"yes", b"on", b"t", b"y"})

_BOUNDARY = re.compile(
    rb';\s*boundary\s*=\s*(?:"([^"]{1,%d})"|([^\s;"]{1,%d}))' % (MAX_BOUNDARY, MAX_BOUNDARY), re.I
)
_NAME = re.compile(rb'(?:^|;)\s*name\s*=\s*(?:"([^"]*)"|([^\s;]+))', re.I)
_FILENAME = re.compile(rb";\s*filename\*?\s*=", re.I)

# The scan's states: looking for the first delimiter (the preamble), in a part's head, in a
# part's content (kept or skipped), past the close delimiter or given up.
_PREAMBLE, _HEAD, _CONTENT, _DONE = range(4)


def form_boundary(content_type: str | None) -> bytes | None:
    """The boundary of a `multipart/form-data` Content-Type, else None."""
    if not content_type or not content_type.lstrip().lower().startswith("multipart/form-data"):
        return None
    found = _BOUNDARY.search(content_type.encode("latin-1", "replace"))
    if found is None:
        return None
    return found.group(1) or found.group(2)


class FormScanner:
    """BodyScanner's counterpart for forms: feed it the body in pieces, then ask info()."""

    __slots__ = ("_buf", "_delim", "_fields", "_keep", "_names", "_parts", "_state", "_value")

    def __init__(self, boundary: bytes) -> None:
        # After the first delimiter every one is preceded by CRLF, which belongs to it.
        self._delim = b"--" + boundary
        self._state = _PREAMBLE
        self._buf = b""  # bytes not yet settled: a delimiter or a head may go on in the next piece
        self._keep = False  # the current part's content is kept (a wanted field)
        self._value = bytearray()
        self._names: bytes = b""
        self._fields: dict[bytes, bytes | None] = {}  # field name -> value (None: not kept)
        self._parts = 0

    def feed_whole(self, parts: list[bytes]) -> None:
        for part in parts:
            self.feed(part)

    def release(self) -> None:
        self._state, self._buf, self._value = _DONE, b"", bytearray()

    def feed(self, data: bytes) -> None:
        if self._state == _DONE or not data:
            return
        buf = self._buf + data if self._buf else data
        pos = 0
        while self._state != _DONE:
            state = self._state
            if state == _HEAD:
                if len(buf) - pos < 2:
                    break
                # A part with no header lines: the blank line follows the delimiter's at once.
                end = pos - 2 if buf[pos : pos + 2] == b"\r\n" else buf.find(b"\r\n\r\n", pos)
                if end < 0:
                    if len(buf) - pos > MAX_HEAD:
                        self._state = _DONE  # a head without end: give up, keep what was read
                    break
                self._head(buf[pos:end] if end >= pos else b"")
                pos = end + 4
                continue
            delim = self._delim if state == _PREAMBLE else b"\r\n" + self._delim
            at = buf.find(delim, pos)
            if at < 0:
                # Keep what may be the start of a delimiter split between pieces; the rest of
                # a kept value is taken, of anything else dropped.
                cut = max(pos, len(buf) - len(delim) - 1)
                if self._keep:
                    self._take(buf[pos:cut])
                pos = cut
                break
            if self._keep:
                self._take(buf[pos:at])
                self._end_value()
            after = at + len(delim)
            if len(buf) - after < 2:
                pos = at  # what follows the delimiter is not here yet
                break
            if buf[after : after + 2] == b"--":
                self._state = _DONE  # the close delimiter
                break
            # Transport padding, then CRLF (RFC 2046): the part's head begins on the next line.
            eol = buf.find(b"\r\n", after)
            if eol < 0:
                if len(buf) - after > MAX_BOUNDARY:
                    self._state = _DONE
                else:
                    pos = at
                break
            self._parts += 1
            if self._parts > MAX_PARTS:
                self._state = _DONE
                break
            self._state = _HEAD
            pos = eol + 2
        self._buf = b"" if self._state == _DONE else buf[pos:]

    def _head(self, head: bytes) -> None:
        self._state, self._keep = _CONTENT, False
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() != b"content-disposition":
                continue
            found = _NAME.search(value)
            if found is None:
                return
            field = found.group(1) if found.group(1) is not None else found.group(2)
            if field in WANTED and _FILENAME.search(value) is None:
                self._names, self._keep = field, True
                self._value = bytearray()
            return

    def _take(self, piece: bytes) -> None:
        value = self._value
        if len(value) + len(piece) > VALUE_KEEP:
            self._keep = False
            self._fields[self._names] = None  # too long to be what we look for
            self._value = bytearray()
            return
        value += piece

    def _end_value(self) -> None:
        self._fields[self._names] = bytes(self._value)  # the last of a repeated field wins
        self._keep = False
        self._value = bytearray()

    def info(self, complete: bool = True) -> RequestInfo:
        """What the fields read so far say (a form cut short still named what it named)."""
        del complete
        fields = self._fields
        if not fields:
            return RequestInfo()
        model = fields.get(b"model")
        name = safe_token(model.decode("utf-8", "replace").strip(), MAX_MODEL) if model else ""
        stream = fields.get(b"stream")
        asked = stream is not None and stream.strip().lower() in TRUE
        shape = {k.decode("latin-1"): (asked if k == b"stream" else None) for k in sorted(fields)}
        return RequestInfo(model=name or UNKNOWN_MODEL, stream=asked, shape=orjson.dumps(shape).decode())


Scanner = BodyScanner | FormScanner


def scanner_for(content_type: str | None, on_error: Callable[[Exception], None] | None = None) -> Scanner:
    """The scan for a request body of this Content-Type: a form's fields, else JSON."""
    boundary = form_boundary(content_type)
    return BodyScanner(on_error) if boundary is None else FormScanner(boundary)
