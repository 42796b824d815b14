"""Audit-side decoding of compressed event streams: chosen by the first bytes, bounded."""

from __future__ import annotations

import gzip
import zlib

import pytest

from sse_audit_proxy.inflate import Inflater

BODY = b"".join(b"data: {\"n\": %d}\n\n" % i for i in range(200))


def deflated(data: bytes, wbits: int) -> bytes:
    z = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return z.compress(data) + z.flush()


def inflate_all(inflater: Inflater, chunks: list[bytes]) -> bytes:
    return b"".join(piece for chunk in chunks for piece in inflater.feed(chunk))


@pytest.mark.parametrize(("encoding", "wire"), [
    ("gzip", deflated(BODY, 16 + zlib.MAX_WBITS)),
    ("x-gzip", deflated(BODY, 16 + zlib.MAX_WBITS)),
    ("deflate", deflated(BODY, zlib.MAX_WBITS)),
    ("deflate", deflated(BODY, -zlib.MAX_WBITS)),  # raw deflate, mislabelled
    ("Deflate ", deflated(BODY, zlib.MAX_WBITS)),
    ("gzip", gzip.compress(BODY[:100]) + gzip.compress(BODY[100:])),  # two members
    ("gzip", BODY),  # labelled, not compressed
    ("deflate", BODY),
    ("gzip", b"\xef\xbb\xbf" + BODY),
])
def test_body_decodes_the_same_whatever_the_read_sizes(encoding: str, wire: bytes) -> None:
    expected = wire if wire.lstrip(b"\xef\xbb\xbf") == BODY else BODY
    for size in (1, 2, 3, 7, 64, len(wire)):
        inflater = Inflater(encoding, 1 << 20)
        chunks = [wire[i : i + size] for i in range(0, len(wire), size)]
        assert inflate_all(inflater, chunks) == expected, size
        assert not inflater.failed


def test_gzip_label_on_bytes_that_are_neither_gzip_nor_text_fails_once() -> None:
    inflater = Inflater("gzip", 1 << 20)
    assert inflate_all(inflater, [b"\x00\x01\x02\x03\x04\x05", b"more"]) == b""
    assert inflater.failed


def test_garbage_after_the_end_of_a_zlib_body_fails() -> None:
    inflater = Inflater("deflate", 1 << 20)
    assert inflate_all(inflater, [deflated(BODY, zlib.MAX_WBITS) + b"junk"]) == BODY
    assert inflater.failed


def test_a_small_chunk_that_expands_hugely_comes_out_in_bounded_pieces() -> None:
    bomb = deflated(b"data: x\n\n" * (4 << 20), 16 + zlib.MAX_WBITS)  # ~36 MiB from ~36 KiB
    inflater = Inflater("gzip", 64 << 10)
    total = 0
    for piece in inflater.feed(bomb):
        assert len(piece) <= 64 << 10
        total += len(piece)
    assert total == 9 * (4 << 20)


@pytest.mark.parametrize("piece", [1, 2, 5, 16, 59])
def test_output_held_back_by_the_piece_cap_comes_out_before_the_next_chunk(piece: int) -> None:
    # A read may end anywhere inside a compressed block. Once all of it is consumed, zlib
    # may still hold output that the piece cap kept back: it belongs to this read.
    body = b"data: {\"message\": \"" + b"rate limit " * 30 + b"\"}\n\n"
    for encoding, wbits in (("gzip", 16 + zlib.MAX_WBITS), ("deflate", zlib.MAX_WBITS)):
        wire = deflated(body, wbits)
        for cut in range(len(wire) // 2, len(wire)):
            available = zlib.decompressobj(wbits).decompress(wire[:cut])
            inflater = Inflater(encoding, piece)
            assert inflate_all(inflater, [wire[:cut]]) == available, (encoding, cut)
            assert inflate_all(inflater, [wire[cut:]]) == body[len(available):]


def test_gzip_members_are_joined_when_a_member_ends_while_the_piece_cap_holds_input() -> None:
    members = [BODY[:700], BODY[700:1500], BODY[1500:]]
    wire = b"".join(gzip.compress(m, mtime=0) for m in members)
    for piece in (7, 16, 64):
        for size in (40, 97, 256, len(wire)):
            inflater = Inflater("gzip", piece)
            chunks = [wire[i : i + size] for i in range(0, len(wire), size)]
            assert inflate_all(inflater, chunks) == BODY, (piece, size)
            assert not inflater.failed


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress"])
def test_encodings_without_a_decoder_are_reported_unreadable(encoding: str) -> None:
    inflater = Inflater(encoding, 1 << 20)
    assert inflate_all(inflater, [b"\x1b\x00\x00"]) == b""
    assert inflater.failed
