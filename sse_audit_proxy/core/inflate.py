"""Incremental, bounded decoding of a `Content-Encoding: gzip`/`deflate`/`br` body, for the audit only.

The client always receives the upstream's bytes as they were; this decodes a copy so the
frames can be read. Real gateways get the label wrong often enough that the first bytes
decide, not the header alone:

- gzip magic (1f 8b) -> gzip, including a body of several gzip members (RFC 1952 2.2);
- a valid zlib header (RFC 1950) -> zlib, which is what `deflate` means (RFC 9110 8.4.1.2);
- bytes that already look like an event stream or JSON -> not compressed at all;
- anything else labelled `deflate` -> raw deflate (RFC 1951), as some servers send;
- anything else labelled `br` -> Brotli (RFC 7932), which has no magic number of its own
  (express's `compression` answers `br` to any client that offers it: curl, browsers);
- zstd magic (28 b5 2f fd) -> Zstandard (RFC 8878), including a body of several frames
  (aiohttp's and httpx's clients offer `zstd` when they can decode it).

The header may arrive split over reads: decoding waits for enough bytes to decide. Output
comes in pieces of at most `max_piece` bytes, so a small compressed chunk cannot make the
audit hold a large expansion at once.

Decoding is audit-side work done on the proxy's event loop, between forwarding one read and
taking the next, so each feed does bounded work: at most FEED_MAX_OUT bytes come out (the
most one socket read gives uncompressed), and compressed input left over waits in a backlog
for the next feed. A body that expands absurdly (a decompression bomb) stops being decoded
and is flagged `bomb`:

- more than MAX_RATIO times its compressed size, once MAX_RATIO_AFTER bytes came out;
- more than MAX_INFLATED bytes in all;
- more than MAX_BACKLOG compressed bytes waiting for their turn;
- more still waiting when the body ended than the audit decodes then (`drain`, a feed's worth
  a call: a whole answer that came in one read is read to its end).

Measured (gzip, chat-completion chunks of a few words each): 12-16x when compressed frame
by frame as a streaming server does (Z_SYNC_FLUSH per frame), 25-48x for a whole body at
level 9. A gzip bomb of zeros or of one repeated frame reaches about 1,000x. Auditing costs
4-40 ms per MiB of real frames, up to 430 ms per MiB of tiny malformed ones (`data: x`).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from typing import Any

import brotli

try:  # Python 3.14's own (PEP 784); before it, its backport (the same module)
    from compression.zstd import DecompressionParameter, ZstdDecompressor, ZstdError
except ImportError:
    from backports.zstd import DecompressionParameter, ZstdDecompressor, ZstdError

ENCODINGS = frozenset({"gzip", "x-gzip", "deflate", "br", "zstd"})
# What a failed decoder raises: a corrupt body, or bytes after its end.
_DECODE_ERRORS = (zlib.error, brotli.error, ZstdError, EOFError)
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # RFC 8878 3.1.1
# HTTP's `zstd` coding: a window of 8 MiB at most (RFC 9659 3); a frame that declares more is
# refused rather than decoded into that much memory.
ZSTD_WINDOW_LOG_MAX = 23
_BOM = b"\xef\xbb\xbf"
# An event stream or a JSON error body starts with one of these, then printable text.
# Compressed data does not: its first bytes are a header or look random.
_PLAIN_FIRST = frozenset(b"deir:{[\r\n \t")
_TEXT = frozenset(range(32, 127)) | frozenset(b"\r\n\t")
_SNIFF_BYTES = 5

MAX_RATIO = 200
MAX_RATIO_AFTER = 256 << 10
MAX_INFLATED = 256 << 20
FEED_MAX_OUT = 256 << 10  # asyncio reads at most 256 KiB from a socket at a time
MAX_BACKLOG = 1 << 20
# A Brotli decoder holds its stream's window while the stream is open: up to 4 MiB (WBITS 22,
# the default of Node, Python and Go encoders; nginx's brotli module uses 19). A stream that
# declares a larger one (16 MiB at 24) is not decoded: it is judged as an unreadable body.
MAX_BROTLI_WBITS = 22
# First bytes tried on a throwaway decoder (zlib's or Brotli's). A body labelled `br` whose
# first bytes are text (after a BOM) waits for this many before it is tried at all: a trial on
# fewer could take what the whole would refuse (text often fails only after a dozen bytes), and
# the reading would depend on how the body was cut. A real Brotli stream is never 64 bytes of
# text; a body that ends sooner is decided on as it is (end()).
_TRIAL_BYTES = 64


def coding(content_encoding: str) -> str:
    """The coding a Content-Encoding list applies, `identity` dropped (`gzip, identity` is
    gzip); codings applied one after another stay a list, which nothing here decodes."""
    codings = [c for c in (c.strip().lower() for c in content_encoding.split(",")) if c]
    return ", ".join(c for c in codings if c != "identity")


def wants_inflater(content_encoding: str) -> bool:
    """Whether the body needs decoding before its frames can be read."""
    return bool(coding(content_encoding))


class Inflater:
    """Feed compressed chunks; iterate the decoded pieces. `failed` once it cannot go on,
    `bomb` once it will not (the body expands absurdly)."""

    __slots__ = (
        "_backlog",
        "_budget",
        "_encoding",
        "_ended",
        "_head",
        "_later_member",
        "_max",
        "_members",
        "_z",
        "bomb",
        "consumed",
        "failed",
        "gzip_members",
        "inflated",
        "not_compressed",
    )

    def __init__(
        self, content_encoding: str, max_piece: int, feed_max_out: int | None = FEED_MAX_OUT
    ) -> None:
        """`feed_max_out=None`: no bound per feed, for a client reading one body of its own
        (the probe), where there are no other streams to delay and nothing may be left out."""
        self._encoding = coding(content_encoding)
        self._max = max_piece
        self._budget = feed_max_out
        self._head = b""  # first bytes, held until they say what the body is
        self._ended = False  # the body ended (end()): what is held is decided on as it is
        self._z: Any = None  # a zlib decompressobj, or _PLAIN once the body is not compressed
        # gzip and zstd: another member (frame) may follow the end of one, told by its magic
        self._members: tuple[bytes, Callable[[], Any]] | None = None
        # An encoding we cannot decode (br, zstd, ...) leaves the frames unreadable.
        self.failed = self._encoding not in ENCODINGS
        self.bomb = False
        self._backlog = b""  # compressed input a previous feed had no budget left for
        self.consumed = 0  # compressed bytes decoded so far
        self.inflated = 0  # decoded bytes given out
        self.gzip_members = 0  # gzip members that gave output (more than one: see _inflate)
        # Labelled compressed, and not: read as it is, but a client that decodes by the label
        # (the SDKs, browsers) fails on its first bytes.
        self.not_compressed = False
        self._later_member = False  # a gzip member after the first began, and gave nothing yet

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        if self.failed or self.bomb or not chunk:
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
        if self._backlog:
            chunk = self._backlog + chunk
            self._backlog = b""
        yield from self._decode(chunk)

    def drain(self) -> Iterator[bytes]:
        """The body ended with input still waiting (`behind`): decode another feed's worth."""
        if self.behind and not (self.failed or self.bomb):
            chunk, self._backlog = self._backlog, b""
            yield from self._decode(chunk)

    def give_up(self) -> None:
        """Decode no more of what waits: the body expanded beyond what the audit reads."""
        if self.behind:
            self._stop()

    def _decode(self, chunk: bytes) -> Iterator[bytes]:
        try:
            budget = self._budget if self._budget is not None else MAX_INFLATED + 1
            for piece in self._inflate(chunk, budget):
                self.inflated += len(piece)
                yield piece
                if self._expands_absurdly():
                    break  # closes the generator: no more decoding
        except _DECODE_ERRORS:
            self.failed = True
            return
        if self._expands_absurdly():
            self._stop()

    def _stop(self) -> None:
        self.bomb = True
        self._backlog = b""
        self._z = None  # its window and state are not needed any more

    def end(self) -> Iterator[bytes]:
        """The body ended with its first bytes still held: decide on them as they are."""
        head, self._head = self._head, b""
        if head and self._z is None:
            self._ended = True
            yield from self.feed(head)

    @property
    def behind(self) -> bool:
        """Compressed input is still waiting, or output a decoder holds (Brotli takes all of
        a chunk at once): the audit has not seen the whole body."""
        z = self._z
        return bool(self._backlog) or (type(z) in (_Brotli, _Zstd) and z.holding)

    def _expands_absurdly(self) -> bool:
        out = self.inflated
        return (
            out > MAX_INFLATED
            or len(self._backlog) > MAX_BACKLOG
            or (out >= MAX_RATIO_AFTER and out > MAX_RATIO * self.consumed)
        )

    def _choose(self, head: bytes) -> bool:
        """Pick the decoder from the first bytes; False while they are too few to tell (until
        the body has ended)."""
        wait = not self._ended
        br = self._encoding == "br"
        if head.startswith(_GZIP_MAGIC):
            self._z = _gzip()
            self._members = (_GZIP_MAGIC, _gzip)
            self.gzip_members = 1
        elif head.startswith(_ZSTD_MAGIC):
            self._z = _Zstd()
            self._members = (_ZSTD_MAGIC, _Zstd)
        elif (wait and len(head) < len(_ZSTD_MAGIC) and _ZSTD_MAGIC.startswith(head)) or (
            len(head) < 2 and wait
        ):
            # (Zstandard's magic under any label, as above: its first bytes alone were judged
            # not gzip when a read ended inside the magic, decoded when it did not.)
            return False
        elif br and wait and len(head) < _TRIAL_BYTES and _is_text(head):
            return False  # see _TRIAL_BYTES
        elif len(head) > 1 and _is_zlib_header(head) and (not br or _zlib_takes(head)):
            self._z = zlib.decompressobj(zlib.MAX_WBITS)
        elif br and _brotli_window(head[0]) <= MAX_BROTLI_WBITS and _brotli_start(head):
            # Brotli has no magic number, and its first bytes can be a `[` and text: labelled
            # `br`, a body that is not gzip nor zlib and that Brotli does not refuse is Brotli.
            # (A larger window, held for the stream's life, or a body Brotli refuses, goes on
            # to the text sniff: failed unless it is text.)
            self._z = _Brotli()
        elif head.startswith(_BOM[: len(head)]):
            if len(head) < len(_BOM) and wait:
                return False
            self._z = _PLAIN
            self.not_compressed = True
        elif head[0] in _PLAIN_FIRST and all(
            b in _TEXT for b in head[: _TRIAL_BYTES if br else _SNIFF_BYTES]
        ):
            if len(head) < _SNIFF_BYTES and wait:
                return False
            self._z = _PLAIN
            self.not_compressed = True
        elif self._encoding == "deflate":
            self._z = zlib.decompressobj(-zlib.MAX_WBITS)
        else:
            self.failed = True  # labelled gzip or br, yet neither that nor plain
        return True

    def _inflate(self, chunk: bytes, budget: int) -> Iterator[bytes]:
        """Decode up to `budget` bytes; input left over goes to the backlog."""
        z = self._z
        while True:
            if budget <= 0:
                # Out of budget: the input left waits for the next feed; output zlib still
                # holds back comes out first when it is given more input.
                self._backlog = chunk
                return
            cap = min(self._max, budget)
            given = len(chunk)
            piece = z.decompress(chunk, cap)
            chunk = z.unconsumed_tail
            self.consumed += given - len(chunk)
            budget -= len(piece)
            if piece:
                if self._later_member:  # one that gives something: what httpx never reads
                    self._later_member = False
                    self.gzip_members += 1
                yield piece
            if not z.eof:
                if chunk or len(piece) >= cap:
                    continue  # input left, or output held back by the cap: ask again
                return
            rest = z.unused_data  # all input past the end, what was left of `chunk` included
            if not rest:
                return
            self.consumed -= len(rest)  # counted above, decoded below
            members = self._members
            if members is None or not rest.startswith(members[0][: len(rest)]):
                raise zlib.error("data after the end of the compressed body")
            # Another gzip member (RFC 1952 2.2) or zstd frame (RFC 8878 3) follows: decode it
            # as part of the body, as Node's fetch and aiohttp do. httpx (the openai and
            # anthropic Python SDKs) and curl decode a gzip body's first member only: one that
            # gives output is counted, for the verdict (gzip_members); an empty one costs them
            # nothing.
            z = self._z = members[1]()
            self._later_member = members[0] is _GZIP_MAGIC
            chunk = rest


class _Brotli:
    """A Brotli decoder with the part of zlib's decompressobj interface `_inflate` uses.

    Brotli takes all of a chunk at once and holds what it cannot give out yet; its output
    stops growing at the cap (it may pass it by a block), and until it can take more input,
    it is asked with none: the chunk waits as the unconsumed tail."""

    __slots__ = ("_d", "eof", "holding", "unconsumed_tail", "unused_data")

    def __init__(self) -> None:
        self._d = brotli.Decompressor()
        self.eof = False
        # The last call stopped at the cap: more output may be held, given when asked again.
        self.holding = False
        self.unconsumed_tail = b""
        self.unused_data = b""  # Brotli raises on bytes after its end: there are never any

    def decompress(self, data: bytes, cap: int) -> bytes:
        d = self._d
        if d.can_accept_more_data():
            piece: bytes = d.process(data, output_buffer_limit=cap)
            self.unconsumed_tail = b""
        else:
            piece = d.process(b"", output_buffer_limit=cap)
            self.unconsumed_tail = data
        self.eof = d.is_finished()
        self.holding = not self.eof and len(piece) >= cap
        return piece


class _Zstd:
    """A Zstandard decoder with the part of zlib's decompressobj interface `_inflate` uses.

    Like Brotli's, it takes all of a chunk at once and holds what it cannot give out yet; until
    it needs input again, it is asked with none: the chunk waits as the unconsumed tail."""

    __slots__ = ("_d", "eof", "holding", "unconsumed_tail", "unused_data")

    def __init__(self) -> None:
        self._d = ZstdDecompressor(options={DecompressionParameter.window_log_max: ZSTD_WINDOW_LOG_MAX})
        self.eof = False
        self.holding = False  # the last call stopped at the cap: more output is held
        self.unconsumed_tail = b""
        self.unused_data = b""  # bytes after the frame's end: perhaps the next frame

    def decompress(self, data: bytes, cap: int) -> bytes:
        d = self._d
        if d.eof:  # the frame ended with the last read: what comes is the next frame's
            self.unused_data, self.unconsumed_tail = data, b""
            return b""
        if d.needs_input:
            piece: bytes = d.decompress(data, cap)
            self.unconsumed_tail = b""
        else:
            piece = d.decompress(b"", cap)
            self.unconsumed_tail = data
        self.eof = d.eof
        if self.eof:
            self.unused_data = d.unused_data + self.unconsumed_tail
            self.unconsumed_tail = b""
        self.holding = not self.eof and not d.needs_input
        return piece


def _gzip() -> Any:
    return zlib.decompressobj(16 + zlib.MAX_WBITS)


def _zlib_takes(head: bytes) -> bool:
    """Whether zlib takes these first bytes (a Brotli stream's first two can pass for a zlib
    header: 1 in 31 of those with a 64 KiB window). One byte of output at most."""
    try:
        zlib.decompressobj(zlib.MAX_WBITS).decompress(head[:_TRIAL_BYTES], 1)
    except zlib.error:
        return False
    return True


def _brotli_start(head: bytes) -> bool:
    """Whether Brotli takes these first bytes (a real Brotli body always does; text, which is
    what a mislabelled body is, nearly always fails within a dozen bytes). Tried on a decoder
    of its own that gives out a byte, once per stream (the window is checked first: a
    bomb's first 64 bytes cost about 10 ms to decode into a 4 MiB window)."""
    try:
        brotli.Decompressor().process(head[:_TRIAL_BYTES], output_buffer_limit=1)
    except brotli.error:
        return False
    return True


def _brotli_window(first: int) -> int:
    """The window bits (WBITS) a Brotli stream's first byte declares (RFC 7932 9.1)."""
    if not first & 1:
        return 16
    if n := (first >> 1) & 7:
        return 17 + n
    m = (first >> 4) & 7
    return 17 if m == 0 else 8 + m  # m == 1: the large-window extension, refused by Brotli


def _is_text(head: bytes) -> bool:
    """Whether these first bytes are text so far, after a byte order mark (or part of one)."""
    if head.startswith(_BOM):
        head = head[len(_BOM) :]
    elif _BOM.startswith(head):
        return True
    return all(b in _TEXT for b in head)


def _is_zlib_header(head: bytes) -> bool:
    cmf, flg = head[0], head[1]
    return cmf & 0x0F == 8 and cmf >> 4 <= 7 and (cmf << 8 | flg) % 31 == 0


_PLAIN = object()
