"""Coverage-guided fuzzing of the SSE decoder and the audit with atheris (libFuzzer).

    pip install -e '.[fuzz]'
    mkdir -p /tmp/sse-corpus
    python tests/fuzz/fuzz_audit.py /tmp/sse-corpus tests/unit/conformance/streams -max_total_time=600

The first bytes of each input choose the frame cap, the route (dialect), the encoding label
and the read cuts; the rest is the body. Checked for every input: nothing raises; the
decoder never holds more than the cap; decoding and the audit's verdict do not depend on
how the body was cut into reads. A failing input is written as `crash-*` and can be
replayed with `python tests/fuzz/fuzz_audit.py crash-...`.
"""

from __future__ import annotations

import itertools
import sys

import atheris

with atheris.instrument_imports():
    from sse_audit_proxy.core.audit import End, StreamAudit, Thresholds
    from sse_audit_proxy.core.dialects import ROUTES, dialect_for_route
    from sse_audit_proxy.core.sse import SSEDecoder

CAPS = [16, 64, 4096]
ENCODINGS = ["", "gzip", "deflate"]


def pieces(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts})
    bounds = [0, *points, len(body)]
    return [body[a:b] for a, b in itertools.pairwise(bounds)]


def decode(chunks: list[bytes], cap: int) -> tuple[object, ...]:
    decoder = SSEDecoder(cap)
    events = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
        if decoder.buffered_bytes > cap:
            raise AssertionError(f"decoder holds {decoder.buffered_bytes} > cap {cap}")
    return events, decoder.comments, decoder.oversized, decoder.close()


def verdict(route: str, chunks: list[bytes], cap: int, encoding: str) -> tuple[object, ...]:
    audit = StreamAudit(
        dialect_for_route(route)(),
        0.0,
        include_usage=True,
        content_encoding=encoding,
        thresholds=Thresholds(max_frame_bytes=cap),
    )
    for i, chunk in enumerate(chunks):
        audit.feed(chunk, 0.01 * (i + 1))
    r = audit.finish(1.0, End.UPSTREAM_EOF)
    anomalies = [a for a in r.anomalies if a != "buffered"]  # timing-dependent by design
    if encoding and "malformed_frame" in anomalies:
        return r.outcome, "malformed_frame"  # what zlib decoded before failing depends on cuts
    return (
        r.outcome,
        anomalies,
        r.frames,
        r.content_frames,
        r.keepalives,
        r.done,
        r.finish_reasons,
        r.usage,
        r.tool_calls,
        r.unterminated_frame,
    )


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    cap = fdp.PickValueInList(CAPS)
    route = fdp.PickValueInList(list(ROUTES))
    encoding = fdp.PickValueInList(ENCODINGS)
    cuts = [fdp.ConsumeIntInRange(0, 1 << 16) for _ in range(fdp.ConsumeIntInRange(0, 12))]
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    split = pieces(body, cuts)
    if decode(split, cap) != decode([body], cap):
        raise AssertionError("decoded events depend on the read cuts")
    whole = verdict(route, [body], cap, encoding)
    cut = verdict(route, split, cap, encoding)
    if whole != cut and not (len(whole) == 2 and cut[0] == whole[0]):
        raise AssertionError(f"verdict depends on the read cuts: {whole} != {cut}")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
