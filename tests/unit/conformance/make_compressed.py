"""Rebuild the compressed stream files from their plain sources: `python make_compressed.py`.

Each frame is flushed on its own (Z_SYNC_FLUSH), as a streaming server must do for the
client to see events as they come; `.gzip-members` writes one gzip member per frame, as
some servers do when they compress each write separately.
"""

from __future__ import annotations

import gzip
import pathlib
import zlib

STREAMS = pathlib.Path(__file__).parent / "streams"


def frames(plain: bytes) -> list[bytes]:
    parts = plain.split(b"\n\n")
    return [p + b"\n\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def flushed(plain: bytes, wbits: int) -> bytes:
    z = zlib.compressobj(6, zlib.DEFLATED, wbits)
    out = [z.compress(f) + z.flush(zlib.Z_SYNC_FLUSH) for f in frames(plain)]
    return b"".join(out) + z.flush()


def main() -> None:
    plain = (STREAMS / "chat_basic.sse").read_bytes()
    (STREAMS / "chat_basic.sse.gz").write_bytes(flushed(plain, 16 + zlib.MAX_WBITS))
    (STREAMS / "chat_basic.sse.zlib").write_bytes(flushed(plain, zlib.MAX_WBITS))
    (STREAMS / "chat_basic.sse.rawdeflate").write_bytes(flushed(plain, -zlib.MAX_WBITS))
    members = b"".join(gzip.compress(f, mtime=0) for f in frames(plain))
    (STREAMS / "chat_basic.sse.gzip-members").write_bytes(members)
    responses = (STREAMS / "responses_text.sse").read_bytes()
    (STREAMS / "responses_text.sse.gz").write_bytes(flushed(responses, 16 + zlib.MAX_WBITS))
    error = (STREAMS / "json_error.json").read_bytes()
    (STREAMS / "json_error.json.gz").write_bytes(gzip.compress(error, mtime=0))


if __name__ == "__main__":
    main()
