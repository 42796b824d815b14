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
    UNKNOWN_MODEL,
    BodyScanner,
    RequestInfo,
    Said,
    model_name,
    with_target,
)

WANTED = frozenset({b"model", b"stream"})
VALUE_KEEP = 1 << 10  # a longer value is no model name nor a boolean: dropped
MAX_HEAD = 8 << 10  # one part's header lines
MAX_PARTS = 1000
# Boundaries followed by something else, in a file (a random boundary: never, in practice).
# Each costs a few steps in Python: a body made of them (an attacker's) is read no further.
MAX_FALSE_DELIMITERS = 1000
MAX_BOUNDARY = 200  # RFC 2046 allows 70; some clients go further
MAX_PADDING = 64  # spaces and tabs after a delimiter (RFC 2046's transport padding)
# pydantic's reading of a boolean from text (vLLM's and FastAPI's form fields)
TRUE = frozenset({b"true", b"1", b"yes", b"on", b"t", b"y"})

# A header's `; key=value` parameters, values a token or a quoted string (with \-escapes):
# read in order, quotes respected, as python-multipart (Starlette's parser) reads them.
_PARAM = re.compile(rb'[ \t]*;[ \t]*([^=;" \t]+)[ \t]*(?:=[ \t]*(?:"((?:[^"\\]|\\.)*)"|([^;]*)))?', re.S)
_LWSP = b" \t"

# The scan's states: looking for the first delimiter (the preamble), in a part's head, in a
# part's content (kept or skipped), past the close delimiter or given up.
_PREAMBLE, _HEAD, _CONTENT, _DONE = range(4)
_MORE, _CLOSE = -1, -2  # _delimiter: the bytes that decide are not here yet; `--`


def header_params(value: bytes) -> dict[bytes, bytes]:
    """The parameters after a header value's first `;`, keys lower-cased (the last of a
    repeated one wins); reading stops at the first that is not well formed."""
    out: dict[bytes, bytes] = {}
    pos = value.find(b";")
    while pos >= 0:
        m = _PARAM.match(value, pos)
        if m is None:
            break
        quoted = m.group(2)
        if quoted is not None:
            # As python-multipart (email.utils.unquote): only \\ and \" are escapes.
            out[m.group(1).lower()] = quoted.replace(b"\\\\", b"\\").replace(b'\\"', b'"')
        else:
            out[m.group(1).lower()] = (m.group(3) or b"").strip(_LWSP)
        pos = m.end()
        if pos >= len(value):
            break
    return out


def form_boundary(content_type: str | None) -> bytes | None:
    """The boundary of a `multipart/form-data` Content-Type, else None."""
    if not content_type:
        return None
    ctype, _, _ = content_type.partition(";")
    if ctype.strip().lower() != "multipart/form-data":
        return None
    boundary = header_params(content_type.encode("latin-1", "replace")).get(b"boundary")
    return boundary if boundary and len(boundary) <= MAX_BOUNDARY else None


class FormScanner:
    """BodyScanner's counterpart for forms: feed it the body in pieces, then ask info().

    What it reads does not depend on how the body was cut into pieces: every limit is applied
    to a bounded window of the bytes, found or not."""

    __slots__ = (
        "_buf",
        "_delim",
        "_false",
        "_fields",
        "_keep",
        "_names",
        "_parts",
        "_state",
        "_target",
        "_value",
    )

    def __init__(self, boundary: bytes, target: Said = None) -> None:
        self._target = target
        self._delim = b"--" + boundary
        self._state = _PREAMBLE
        self._buf = b""  # bytes not yet settled: a delimiter or a head may go on in the next piece
        self._keep = False  # the current part's content is kept (a wanted field)
        self._value = bytearray()
        self._names: bytes = b""
        self._fields: dict[bytes, bytes | None] = {}  # field name -> value (None: not kept)
        self._parts = 0
        self._false = 0  # boundaries seen that were not delimiters

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
            if self._state == _HEAD:
                start = self._head_at(buf, pos)
                if start < 0:  # the head goes on in the next piece
                    pos = -start - 1
                    break
                pos = start
                continue
            # After the first delimiter every one is preceded by CRLF, which belongs to it.
            delim = self._delim if self._state == _PREAMBLE else b"\r\n" + self._delim
            at, after = self._next_delimiter(buf, pos, delim)
            if at < 0:
                # What may be the start of a delimiter split between pieces stays; the rest
                # of a kept value is taken, of anything else dropped.
                cut = max(pos, len(buf) - len(delim) + 1)
                self._take(buf[pos:cut])
                pos = cut
                break
            self._take(buf[pos:at])
            pos = at
            if after == _MORE:
                break
            self._end_part()
            if after == _CLOSE:
                self._state = _DONE
            elif self._state != _DONE:
                self._state, pos = _HEAD, after
        self._buf = b"" if self._state == _DONE else buf[pos:]

    def _next_delimiter(self, buf: bytes, pos: int, delim: bytes) -> tuple[int, int]:
        """The first delimiter at or after `pos` and what follows it (_delimiter); (-1, 0)
        when there is none. A boundary followed by anything else is content (a file's)."""
        at = buf.find(delim, pos)
        while at >= 0:
            after = self._delimiter(buf, at + len(delim))
            if after is not None:
                return at, after
            self._false += 1
            if self._false > MAX_FALSE_DELIMITERS:
                self._state = _DONE  # too dear to read on: what was read stays
                return -1, 0
            at = buf.find(delim, at + 1)
        return -1, 0

    def _delimiter(self, buf: bytes, after: int) -> int | None:
        """What follows a boundary at `after`: where the part's head starts (past transport
        padding and CRLF), _CLOSE for the close delimiter (`--`), _MORE when the bytes that
        decide are not here yet, None when it is no delimiter."""
        n = len(buf)
        if n - after < 2:
            return _MORE
        if buf[after : after + 2] == b"--":
            return _CLOSE
        j = after
        while j < n and buf[j] in _LWSP:
            j += 1
            if j - after > MAX_PADDING:
                return None
        if n - j < 2:
            return _MORE
        return j + 2 if buf[j : j + 2] == b"\r\n" else None

    def _end_part(self) -> None:
        """A delimiter: the part before it (a kept value) ends, a new one may begin."""
        if self._keep:
            self._end_value()
        if self._state != _PREAMBLE:
            self._parts += 1
        if self._parts >= MAX_PARTS:
            self._state = _DONE

    def _head_at(self, buf: bytes, pos: int) -> int:
        """Read the part head at `pos`: where its content starts, or -(pos + 1) when the head
        is not all here yet (the scan gives up on one longer than MAX_HEAD)."""
        if buf[pos : pos + 2] == b"\r\n":  # no header lines at all
            self._head(b"")
            return pos + 2
        end = buf.find(b"\r\n\r\n", pos, pos + MAX_HEAD + 4)
        if end < 0:
            if len(buf) - pos >= MAX_HEAD + 4:
                self._state = _DONE  # a head without end: give up, keep what was read
                return len(buf)
            return -(pos + 1)
        self._head(buf[pos:end])
        return end + 4

    def _head(self, head: bytes) -> None:
        self._state, self._keep = _CONTENT, False
        disposition = None
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip(_LWSP).lower() == b"content-disposition":
                disposition = value  # the last one counts, as for python-multipart
        if disposition is None:
            return
        params = header_params(disposition)
        field = params.get(b"name")
        if field in WANTED and b"filename" not in params:
            self._names, self._keep = field, True
            self._value = bytearray()

    def _take(self, piece: bytes) -> None:
        if not self._keep or not piece:
            return
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
        return with_target(self._read(), self._target)

    def _read(self) -> RequestInfo:
        fields = self._fields
        if not fields:
            return RequestInfo()
        model = fields.get(b"model")
        name = model_name(model.decode("utf-8", "replace").strip()) if model else UNKNOWN_MODEL
        stream = fields.get(b"stream")
        asked = stream is not None and stream.strip().lower() in TRUE
        shape = {k.decode("latin-1"): (asked if k == b"stream" else None) for k in sorted(fields)}
        return RequestInfo(model=name, stream=asked, shape=orjson.dumps(shape).decode())


Scanner = BodyScanner | FormScanner


def scanner_for(
    content_type: str | None, on_error: Callable[[Exception], None] | None = None, target: Said = None
) -> Scanner:
    """The scan for a request body of this Content-Type: a form's fields, else JSON; `target`:
    what the request's target said (Dialect.target_info)."""
    boundary = form_boundary(content_type)
    return BodyScanner(on_error, target) if boundary is None else FormScanner(boundary, target)
