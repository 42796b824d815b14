"""Request smuggling by a hostile client: ambiguous framing is refused, never passed on.

The proxy parses each request itself and sends the upstream a freshly framed one, so a
request hidden in another's body could only get through if the proxy's parser accepted an
ambiguous head. Each variant below must be refused 400 (and the connection closed) with
nothing reaching the upstream; the one legitimate variant (OWS around the value) must be
parsed as exactly the requests it is.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.reliability_support import Tally, raw_exchange, streaming_handler

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


def post(*fields: bytes, body: bytes = b"", sep: bytes = b"\r\n", version: bytes = b"1.1") -> bytes:
    head = [b"POST /v1/chat/completions HTTP/" + version, b"Host: x", *fields]
    return sep.join(head) + sep + sep + body + SMUGGLED


AMBIGUOUS = {
    "cl-and-te": post(b"Content-Length: 4", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
    "te-unknown-coding": post(b"Transfer-Encoding: xchunked", body=b"0\r\n\r\n"),
    "te-chunked-not-last": post(b"Transfer-Encoding: chunked, identity", body=b"0\r\n\r\n"),
    "te-chunked-twice": post(b"Transfer-Encoding: chunked, chunked", body=b"0\r\n\r\n"),
    "te-two-fields": post(b"Transfer-Encoding: chunked", b"Transfer-Encoding: identity", body=b"0\r\n\r\n"),
    "te-space-before-colon": post(b"Transfer-Encoding : chunked", b"Content-Length: 3", body=b"0\r\n\r\n"),
    "te-on-http-1.0": post(b"Transfer-Encoding: chunked", body=b"0\r\n\r\n", version=b"1.0"),
    # codings before chunked: llhttp frames them, the proxy decodes none of them
    "te-gzip-chunked": post(b"Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n"),
    "te-identity-chunked": post(b"Transfer-Encoding: identity, chunked", body=b"0\r\n\r\n"),
    "duplicate-cl": post(b"Content-Length: 0", b"Content-Length: 43"),
    "cl-list": post(b"Content-Length: 0, 43"),
    "cl-signed": post(b"Content-Length: +0"),
    "bare-lf": post(b"Content-Length: 0", sep=b"\n"),
    "obs-fold": post(b"X-A: a", b" Content-Length: 43", b"Content-Length: 0"),
    "space-in-field-name": post(b"Content Length: 43", b"Content-Length: 0"),
    "chunk-size-bare-lf": post(b"Transfer-Encoding: chunked", body=b"2;x\nab\r\n0\r\n\r\n"),
    "nul-in-value": post(b"X-A: a\x00b", b"Content-Length: 0"),
    # RFC 9112 3.2: an HTTP/1.1 request without Host, or with two, MUST be answered 400
    "host-twice": post(b"Host: y", b"Content-Length: 0"),
    "no-host": b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 0\r\n\r\n" + SMUGGLED,
}


@pytest.mark.parametrize("name", sorted(AMBIGUOUS))
async def test_ambiguous_framing_is_refused_and_nothing_reaches_the_upstream(
    name: str, upstream: Any, proxy: Any
) -> None:
    tally = Tally()
    p = await proxy(await upstream(streaming_handler([], tally)))
    raw = await raw_exchange(p.service.proxy.port, AMBIGUOUS[name], timeout=3.0)
    assert raw.split(b" ", 2)[1] == b"400", raw[:60]
    assert raw.count(b"HTTP/1.") == 1  # one answer, then closed: the rest is never parsed
    assert tally.requests == 0
    rec = await p.record()
    assert rec.status == 400 and rec.error == "invalid_http_request"


@pytest.mark.parametrize("name", ["host-twice", "no-host"])
async def test_a_request_without_one_host_is_told_why(name: str, upstream: Any, proxy: Any) -> None:
    # "malformed HTTP request" left an operator with a health check that sends no Host guessing.
    p = await proxy(await upstream(streaming_handler([], Tally())))
    raw = await raw_exchange(p.service.proxy.port, AMBIGUOUS[name], timeout=3.0)
    assert b"the Host header is missing or repeated" in raw.partition(b"\r\n\r\n")[2], raw[-200:]


async def test_an_http_1_0_request_without_host_is_served(upstream: Any, proxy: Any) -> None:
    tally = Tally()
    p = await proxy(await upstream(streaming_handler([], tally)))
    raw = await raw_exchange(
        p.service.proxy.port, b"POST /v1/chat/completions HTTP/1.0\r\nContent-Length: 0\r\n\r\n", timeout=3.0
    )
    assert raw.split(b" ", 2)[1] == b"200", raw[:60]
    assert tally.paths == ["/v1/chat/completions"]


async def test_optional_whitespace_around_chunked_is_parsed_as_the_two_requests_it_is(
    upstream: Any, proxy: Any
) -> None:
    tally = Tally()
    p = await proxy(await upstream(streaming_handler([], tally)))
    raw = await raw_exchange(
        p.service.proxy.port, post(b"Transfer-Encoding:\tchunked ", body=b"0\r\n\r\n"), timeout=2.0
    )
    assert raw.count(b"HTTP/1.1 200") == 2
    # Each reached the upstream framed by the proxy, with the body the proxy parsed.
    assert tally.paths == ["/v1/chat/completions", "/smuggled"]
    assert tally.bodies == [b"", b""]


@pytest.mark.parametrize("version", [b"2.0", b"3.0", b"1.9"])
async def test_a_request_line_of_http_2_is_refused_505_and_nothing_reaches_the_upstream(
    version: bytes, upstream: Any, proxy: Any
) -> None:
    """llhttp reads `HTTP/2.0` and `HTTP/0.9` as versions: 2.0 was served as HTTP/1.1, with a
    second request behind it parsed and forwarded (outside review); it refuses 3.0 and 1.9,
    which got 400. nginx answers 505 to each."""
    tally = Tally()
    p = await proxy(await upstream(streaming_handler([], tally)))
    raw = await raw_exchange(
        p.service.proxy.port,
        b"GET /v1/models HTTP/%s\r\nHost: x\r\n\r\n%s" % (version, SMUGGLED),
        timeout=3.0,
    )
    assert raw.split(b" ", 2)[1] == b"505", raw[:60]
    assert raw.count(b"\r\n\r\n") == 1 and b'"http_version_not_supported"' in raw  # one answer
    assert tally.requests == 0
    rec = await p.record()
    assert rec.status == 505 and rec.error == "http_version_not_supported"
