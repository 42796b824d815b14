"""Incremental, bounded decoding of a `Content-Encoding: gzip`/`deflate` body, for the audit only.

The client always receives the upstream's bytes as they were; this decodes a copy so the
frames can be read. Real gateways get the label wrong often enough that the first bytes
decide, not the header alone:

- gzip magic (1f 8b) -> gzip, including a body of several gzip members (RFC 1952 2.2);
- a valid zlib header (RFC 1950) -> zlib, which is what `deflate` means (RFC 9110 8.4.1.2);
- bytes that already look like an event stream or JSON -> not compressed at all;
- anything else labelled `deflate` -> raw deflate (RFC 1951), as some servers send.

The header may arrive split over reads: decoding waits for enough bytes to decide. Output
comes in pieces of at most `max_piece` bytes, so a small compressed chunk cannot make the
audit hold a large expansion at once.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

ENCODINGS = frozenset({"gzip", "x-gzip", "deflate"})
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"
# An event stream or a JSON error body starts with one of these, then printable text.
# Compressed data does not: its first bytes are a header or look random.
_PLAIN_FIRST = frozenset(b"deir:{[\r\n \t")
_TEXT = frozenset(range(32, 127)) | frozenset(b"\r\n\t")
_SNIFF_BYTES = 5


def wants_inflater(content_encoding: str) -> bool:
    """Whether the body needs decoding before its frames can be read."""
    encoding = content_encoding.strip().lower()
    return bool(encoding) and encoding != "identity"


class Inflater:
    """Feed compressed chunks; iterate the decoded pieces. `failed` once it cannot go on."""

    __slots__ = ("_encoding", "_head", "_max", "_members", "_z", "failed")

    def __init__(self, content_encoding: str, max_piece: int) -> None:
        self._encoding = content_encoding.strip().lower()
        self._max = max_piece
        self._head = b""  # first bytes, held until they say what the body is
        self._z: Any = None  # a zlib decompressobj, or _PLAIN once the body is not compressed
        self._members = False  # gzip: another member may follow the end of one
        # An encoding we cannot decode (br, zstd, ...) leaves the frames unreadable.
        self.failed = self._encoding not in ENCODINGS

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        if self.failed or not chunk:
            return
        if self._z is None:
            head = self._head + chunk
            if not self._choose(head):
                self._head = head
                return
            self._head = b""
            chunk = head
            if self.failed:
                return
        if self._z is _PLAIN:
            yield chunk
            return
        try:
            yield from self._inflate(chunk)
        except zlib.error:
            self.failed = True

    def _choose(self, head: bytes) -> bool:
        """Pick the decoder from the first bytes; False while they are too few to tell."""
        if head.startswith(_GZIP_MAGIC):
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
            self._members = True
        elif len(head) < 2:
            return False
        elif _is_zlib_header(head):
            self._z = zlib.decompressobj(zlib.MAX_WBITS)
        elif head.startswith(_BOM[: len(head)]):
            if len(head) < len(_BOM):
                return False
            self._z = _PLAIN
        elif head[0] in _PLAIN_FIRST and all(b in _TEXT for b in head[:_SNIFF_BYTES]):
            if len(head) < _SNIFF_BYTES:
                return False
            self._z = _PLAIN
        elif self._encoding == "deflate":
            self._z = zlib.decompressobj(-zlib.MAX_WBITS)
        else:
            self.failed = True  # labelled gzip, yet neither gzip nor plain
        return True

    def _inflate(self, chunk: bytes) -> Iterator[bytes]:
        z = self._z
        while True:
            piece = z.decompress(chunk, self._max)
            chunk = z.unconsumed_tail
            if piece:
                yield piece
            if not z.eof:
                if chunk or len(piece) == self._max:
                    continue  # input left, or output held back by the cap: ask again
                return
            rest = z.unused_data  # all input past the end, what was left of `chunk` included
            if not rest:
                return
            if not self._members or not rest.startswith(_GZIP_MAGIC[: len(rest)]):
                raise zlib.error("data after the end of the compressed body")
            # Another gzip member follows (RFC 1952 2.2): decode it as part of the body.
            z = self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
            chunk = rest


def _is_zlib_header(head: bytes) -> bool:
    cmf, flg = head[0], head[1]
    return cmf & 0x0F == 8 and cmf >> 4 <= 7 and (cmf << 8 | flg) % 31 == 0


_PLAIN = object()
