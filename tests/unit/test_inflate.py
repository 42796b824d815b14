"""Audit-side decoding of compressed event streams: chosen by the first bytes, bounded."""

from __future__ import annotations

import gzip
import random
import zlib

import brotli
import orjson
import pytest

from sse_audit_proxy.core.inflate import FEED_MAX_OUT, MAX_RATIO, MAX_RATIO_AFTER, Inflater

WORDS = [
    b"alpha",
    b"beta",
    b"gamma",
    b"delta",
    b"tokens",
    b"stream",
    b"proxy",
    b"audit",
    b"the",
    b"of",
    b"and",
    b"model",
    b"answer",
    b"question",
    b"because",
    b"however",
]
BODY = b"".join(b'data: {"n": %d}\n\n' % i for i in range(200))


def deflated(data: bytes, wbits: int) -> bytes:
    z = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return z.compress(data) + z.flush()


def brotli_streamed(frames: list[bytes]) -> bytes:
    """Brotli as a streaming server writes it: each frame flushed (express's `compression`)."""
    c = brotli.Compressor()
    return b"".join(c.process(f) + c.flush() for f in frames) + c.finish()


def inflate_all(inflater: Inflater, chunks: list[bytes]) -> bytes:
    return b"".join(piece for chunk in chunks for piece in inflater.feed(chunk))


@pytest.mark.parametrize(
    ("encoding", "wire"),
    [
        ("gzip", deflated(BODY, 16 + zlib.MAX_WBITS)),
        ("x-gzip", deflated(BODY, 16 + zlib.MAX_WBITS)),
        ("deflate", deflated(BODY, zlib.MAX_WBITS)),
        ("deflate", deflated(BODY, -zlib.MAX_WBITS)),  # raw deflate, mislabelled
        ("Deflate ", deflated(BODY, zlib.MAX_WBITS)),
        ("gzip", gzip.compress(BODY[:100]) + gzip.compress(BODY[100:])),  # two members
        ("gzip", BODY),  # labelled, not compressed
        ("deflate", BODY),
        ("gzip", b"\xef\xbb\xbf" + BODY),
        ("br", brotli.compress(BODY)),
        ("br", brotli_streamed([BODY[:700], BODY[700:]])),
        ("br", BODY),  # labelled, not compressed
    ],
)
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
    assert total <= FEED_MAX_OUT  # one feed never does more than a bounded amount of work
    assert inflater.bomb  # ~1,000x: not audited further
    assert list(inflater.feed(bomb)) == []


def test_each_feed_does_bounded_work_and_the_rest_waits_for_the_next() -> None:
    rng = random.Random(7)
    body = b"".join(b'data: {"c": "%s"}\n\n' % rng.choice(WORDS) for _ in range(200000))
    wire = deflated(body, 16 + zlib.MAX_WBITS)
    assert len(body) / len(wire) < MAX_RATIO
    inflater = Inflater("gzip", 1 << 20)
    out = b""
    for i in range(0, len(wire), 64 << 10):  # reads that expand past the per-feed bound
        decoded = b"".join(inflater.feed(wire[i : i + (64 << 10)]))
        assert len(decoded) <= FEED_MAX_OUT
        out += decoded
    assert inflater.behind  # the rest waits: nothing skipped, nothing decoded twice
    assert out == body[: len(out)]
    assert not inflater.bomb and not inflater.failed


def test_real_streams_are_not_bombs() -> None:
    # Measured bounds: frame-by-frame flushed gzip ~15x, whole-body level 9 ~48x.
    rng = random.Random(1)
    frames = [
        b"data: "
        + orjson.dumps(
            {
                "id": "chatcmpl-9a8b7c6d5e4f3a2b1c0d",
                "object": "chat.completion.chunk",
                "created": 1733100000,
                "model": "gpt-4o-mini",
                "choices": [
                    {
                        "index": 0,
                        "delta": {"content": " " + rng.choice(WORDS).decode()},
                        "finish_reason": None,
                    }
                ],
            }
        )
        + b"\n\n"
        for _ in range(5000)
    ]
    body = b"".join(frames)
    flushing = zlib.compressobj(6, zlib.DEFLATED, 31)
    streamed = (
        b"".join(flushing.compress(f) + flushing.flush(zlib.Z_SYNC_FLUSH) for f in frames) + flushing.flush()
    )
    whole = gzip.compress(body, 9)
    assert len(body) / len(streamed) < 20 and len(body) / len(whole) < MAX_RATIO
    # Reads of a buffered whole body are decoded whole while each expands to at most
    # FEED_MAX_OUT (larger ones are audited over later feeds; see the test above).
    for wire, read in ((streamed, 8 << 10), (whole, 2 << 10)):
        inflater = Inflater("gzip", 1 << 20)
        chunks = [wire[i : i + read] for i in range(0, len(wire), read)]
        assert inflate_all(inflater, chunks) == body
        assert not inflater.bomb and not inflater.behind


@pytest.mark.parametrize("size", [1 << 10, 16 << 10, 64 << 10, 256 << 10])
def test_bombs_are_flagged_after_bounded_output_whatever_the_read_size(size: int) -> None:
    wire = deflated(b"data: {}\n\n" * (16 << 20), 16 + zlib.MAX_WBITS)  # 160 MiB
    inflater = Inflater("gzip", 1 << 20)
    total = 0
    for i in range(0, len(wire), size):
        total += sum(len(p) for p in inflater.feed(wire[i : i + size]))
        if inflater.bomb:
            break
    assert inflater.bomb
    assert total <= MAX_RATIO_AFTER + FEED_MAX_OUT


@pytest.mark.parametrize("piece", [1, 2, 5, 16, 59])
def test_output_held_back_by_the_piece_cap_comes_out_before_the_next_chunk(piece: int) -> None:
    # A read may end anywhere inside a compressed block. Once all of it is consumed, zlib
    # may still hold output that the piece cap kept back: it belongs to this read.
    body = b'data: {"message": "' + b"rate limit " * 30 + b'"}\n\n'
    for encoding, wbits in (("gzip", 16 + zlib.MAX_WBITS), ("deflate", zlib.MAX_WBITS)):
        wire = deflated(body, wbits)
        for cut in range(len(wire) // 2, len(wire)):
            available = zlib.decompressobj(wbits).decompress(wire[:cut])
            inflater = Inflater(encoding, piece)
            assert inflate_all(inflater, [wire[:cut]]) == available, (encoding, cut)
            assert inflate_all(inflater, [wire[cut:]]) == body[len(available) :]


def test_gzip_members_are_joined_when_a_member_ends_while_the_piece_cap_holds_input() -> None:
    members = [BODY[:700], BODY[700:1500], BODY[1500:]]
    wire = b"".join(gzip.compress(m, mtime=0) for m in members)
    for piece in (7, 16, 64):
        for size in (40, 97, 256, len(wire)):
            inflater = Inflater("gzip", piece)
            chunks = [wire[i : i + size] for i in range(0, len(wire), size)]
            assert inflate_all(inflater, chunks) == BODY, (piece, size)
            assert not inflater.failed


def test_brotli_that_is_not_brotli_or_has_bytes_after_its_end_fails() -> None:
    inflater = Inflater("br", 1 << 20)
    assert inflate_all(inflater, [b"\xff" * 64]) == b""
    assert inflater.failed
    inflater = Inflater("br", 1 << 20)
    assert inflate_all(inflater, [brotli.compress(BODY), b"junk"]) == BODY
    assert inflater.failed


@pytest.mark.parametrize("size", [1 << 10, 64 << 10, 256 << 10])
def test_a_brotli_bomb_is_flagged_after_bounded_output(size: int) -> None:
    wire = brotli.compress(b"data: {}\n\n" * (16 << 20), quality=5)  # 160 MiB from a few KiB
    inflater = Inflater("br", 64 << 10)
    total = 0
    for i in range(0, len(wire), size):
        for piece in inflater.feed(wire[i : i + size]):
            # Brotli stops growing its output at the cap, and may pass it by one block.
            assert len(piece) <= 2 * (64 << 10)
            total += len(piece)
        if inflater.bomb:
            break
    assert inflater.bomb
    assert total <= MAX_RATIO_AFTER + FEED_MAX_OUT + (64 << 10)


def test_a_brotli_stream_flushed_per_frame_decodes_each_frame_as_it_comes() -> None:
    frames = [b'data: {"n": %d}\n\n' % i for i in range(50)]
    c = brotli.Compressor()
    inflater = Inflater("br", 1 << 20)
    for frame in frames:
        assert inflate_all(inflater, [c.process(frame) + c.flush()]) == frame
    assert inflate_all(inflater, [c.finish()]) == b""
    assert not inflater.failed and not inflater.bomb


@pytest.mark.parametrize("encoding", ["compress", "zstd, gzip"])  # a list of codings: not undone
def test_encodings_without_a_decoder_are_reported_unreadable(encoding: str) -> None:
    inflater = Inflater(encoding, 1 << 20)
    assert inflate_all(inflater, [b"\x1b\x00\x00"]) == b""
    assert inflater.failed


def test_without_a_per_feed_bound_a_reader_of_its_own_body_gets_all_of_it() -> None:
    # The probe reads one body of its own: nothing to delay, nothing may be left out.
    rng = random.Random(3)
    body = b"".join(b'data: {"c": "%s"}\n\n' % rng.choice(WORDS) for _ in range(100000))
    wire = deflated(body, 16 + zlib.MAX_WBITS)
    bounded, unbounded = Inflater("gzip", 1 << 20), Inflater("gzip", 1 << 20, feed_max_out=None)
    chunks = [wire[i : i + (64 << 10)] for i in range(0, len(wire), 64 << 10)]
    assert inflate_all(unbounded, chunks) == body and not unbounded.behind
    assert len(inflate_all(bounded, chunks)) < len(body) and bounded.behind


def _chat_body(rnd: random.Random) -> bytes:
    return b"".join(
        b'data: {"choices":[{"delta":{"content":"%s"}}]}\n\n'
        % bytes(rnd.choice(b"abcdefgh ") for _ in range(rnd.randint(1, 12)))
        for _ in range(rnd.randint(1, 3000))
    )


def test_brotli_whose_first_bytes_look_like_text_is_still_brotli() -> None:
    """Brotli has no magic number: at the default window a body can begin with `[` and text
    (2.5 % of whole bodies), which the sniff took for a plain body (outside review)."""
    rnd = random.Random(7)
    looks_plain = 0
    for _ in range(400):
        body, quality = _chat_body(rnd), rnd.choice((4, 5, 11))
        if quality == 11:
            body = body[: 1 << 14]  # the best quality costs a hundred times the others a byte
        wire = brotli.compress(body, quality=quality, lgwin=rnd.choice((16, 19, 22)))
        looks_plain += wire[0] == ord("[")
        inflater = Inflater("br", 1 << 22, feed_max_out=None)
        assert inflate_all(inflater, [wire]) == body
        assert not inflater.failed
    assert looks_plain  # the case is among them


def test_brotli_output_held_back_by_the_feed_budget_leaves_the_audit_behind() -> None:
    """Brotli takes a whole read at once: what the budget held back was in the decoder, not
    in the backlog, and the audit took the body for all seen (a healthy stream `truncated`)."""
    body = b"".join(b'data: {"n": %d, "pad": "%s"}\n\n' % (i, b"y" * 150) for i in range(3000))
    inflater = Inflater("br", 1 << 20)
    out = inflate_all(inflater, [brotli.compress(body)])
    assert len(out) < len(body) and body.startswith(out)
    assert inflater.behind and not inflater.failed


@pytest.mark.parametrize("lgwin", [23, 24])
def test_a_brotli_window_past_4_mib_is_not_decoded(lgwin: int) -> None:
    """The decoder holds the window for the stream's life (16 MiB at 24): such a body is left
    unread, as an encoding without a decoder is."""
    inflater = Inflater("br", 1 << 20)
    assert inflate_all(inflater, [brotli.compress(BODY, lgwin=lgwin)]) == b""
    assert inflater.failed


@pytest.mark.parametrize("wbits", [16 + zlib.MAX_WBITS, zlib.MAX_WBITS], ids=["gzip", "zlib"])
@pytest.mark.parametrize("size", [1, 3, 10, 1 << 20])
def test_gzip_or_zlib_labelled_br_is_still_decoded(wbits: int, size: int) -> None:
    """Brotli takes nearly any first byte or three: tried before gzip's magic and zlib's
    header, it took such bodies for its own (third review)."""
    wire = deflated(BODY, wbits)
    inflater = Inflater("br", 1 << 20)
    assert inflate_all(inflater, [wire[i : i + size] for i in range(0, len(wire), size)]) == BODY
    assert not inflater.failed


@pytest.mark.parametrize(
    "body",
    [b'data: {"n": 1}\n\ndata: [DONE]\n\n', b"\xef\xbb\xbfdata: [DONE]\n\n", b"     \x00\x00\x00"],
    ids=["text", "bom-text", "not-text"],
)
def test_a_short_body_labelled_br_reads_the_same_however_it_is_cut(body: bytes) -> None:
    # Brotli was tried on whatever had come: on `     \x00` it passed, on the whole it failed
    # (then the text sniff took it for plain), so the reading depended on the cut (hypothesis).
    # Text waits for 64 bytes or the body's end, where what is held is decided on as it is.
    readings = set()
    for cut in range(len(body) + 1):
        inflater = Inflater("br", 1 << 20)
        out = inflate_all(inflater, [body[:cut], body[cut:]]) + b"".join(inflater.end())
        readings.add((out, inflater.failed))
    assert len(readings) == 1, readings
    out, failed = readings.pop()
    assert failed == (body == b"     \x00\x00\x00")
    if not failed:
        assert out == body  # plain, as it came (the decoder of events reads past a BOM)


def test_brotli_is_still_read_from_a_small_first_read() -> None:
    # The wait is for text only: a real Brotli stream's first flush (a few dozen bytes, less
    # than a trial's 64) is decoded when it comes, so the frame is timed when it arrived.
    c = brotli.Compressor()
    first = c.process(b"data: {}\n\n") + c.flush()
    assert len(first) < 64
    inflater = Inflater("br", 1 << 20)
    assert inflate_all(inflater, [first]) == b"data: {}\n\n"
