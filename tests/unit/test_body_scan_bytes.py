"""The request body scan takes any bytes, cut anywhere, without raising: what is not valid
JSON (invalid UTF-8 included, which yajl passes to Python's strict decoder) reads as unknown."""

from __future__ import annotations

import tracemalloc

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sse_audit_proxy.core.request_info import MAX_DEPTH, BodyScanner, RequestInfo

# UTF-8 forms yajl's own check lets through that Python refuses, and plain invalid bytes.
ODD = [b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xff", b"\xc3("]


def scan(pieces: list[bytes], complete: bool = True) -> RequestInfo:
    defects: list[Exception] = []
    scanner = BodyScanner(defects.append)
    for piece in pieces:
        scanner.feed(piece)
    info = scanner.info(complete=complete)
    assert defects == []  # what is not JSON is no defect of the scan
    whole = BodyScanner(defects.append)
    whole.feed_whole(pieces)
    assert whole.info(complete=complete) == info
    assert defects == []
    return info


def cut(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted(min(c, len(body)) for c in cuts)
    return [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]


@pytest.mark.parametrize("odd", ODD)
@pytest.mark.parametrize("where", ["value", "key", "nested"])
def test_invalid_utf8_in_a_string_reads_as_unknown(odd: bytes, where: str) -> None:
    inner = {
        "value": b'"messages":[{"role":"user","content":"a%sb"}]' % odd,
        "key": b'"messages":[{"a%sb":"c"}]' % odd,
        "nested": b'"tools":[{"function":{"name":"%s"}}]' % odd,
    }[where]
    body = b'{"model":"m","stream":true,%s}' % inner
    for i in range(len(body) + 1):  # every cut, the odd bytes split too
        assert scan([body[:i], body[i:]]) == RequestInfo()
        scan([body[:i], body[i:]], complete=False)  # nor does a cut-short body raise


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=4), st.booleans())
def test_any_bytes_cut_anywhere_never_raise(data: bytes, cuts: list[int], complete: bool) -> None:
    body = b'{"model":"m","x":"' + data + b'"}'
    for candidate in (data, body):
        info = scan(cut(candidate, cuts), complete)
        assert isinstance(info, RequestInfo)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-(10**400), max_value=10**400), st.booleans())
def test_integers_of_any_size_read_into_the_shape(n: int, nested: bool) -> None:
    # The shape is orjson text; an int past 64 bits once made it raise (and the request fail).
    field = b'"stream_options":{"x":%d}' % n if nested else b'"seed":%d' % n
    info = scan([b'{"model":"m",%s}' % field])
    assert info.model == "m"
    shape = orjson.loads(info.shape)
    got = shape["stream_options.x" if nested else "seed"]
    if -(1 << 63) <= n < (1 << 64):
        assert got == n and type(got) is int
    elif abs(n) < 10**308:
        assert got == float(n)
    else:
        assert got is None  # past a float's range


def test_a_body_of_too_many_tokens_is_read_no_further(monkeypatch: pytest.MonkeyPatch) -> None:
    # 30 MB of one-word messages cost the loop 5 s to read: the scan stops at a budget of
    # parse events, and the model after them is unknown, as for a body that is not JSON.
    monkeypatch.setattr("sse_audit_proxy.core.request_info.MAX_SCAN_EVENTS", 2_000)
    messages = orjson.dumps([{"role": "user", "content": "x"}] * 400)  # about 3,600 events
    body = b'{"messages":' + messages + b',"model":"m","stream":true}'
    over = BodyScanner()
    for i in range(0, len(body), 1000):
        over.feed(body[i : i + 1000])
    assert over.info() == RequestInfo()
    # Within the budget, and a long string costs one event whatever its length.
    few = b'{"messages":' + orjson.dumps([{"role": "user", "content": "x" * 100_000}] * 100)
    under = BodyScanner()
    under.feed(few + b',"model":"m","stream":true}')
    info = under.info()
    assert (info.model, info.stream) == ("m", True)


@pytest.mark.parametrize("closed", [False, True], ids=["open", "closed"])
def test_a_body_nested_too_deep_is_read_no_further(closed: bool) -> None:
    # Each parse event carries its path, which grows with the nesting: 30 KB of `[` held the
    # loop for a second and took 2 GB. Past MAX_DEPTH the scan stops before the parser sees it.
    deep = 30_000
    body = b'{"model":"m","stream":true,"x":' + b"[" * deep + (b"]" * deep + b"}" if closed else b"")
    tracemalloc.start()
    try:
        info = scan(cut(body, [7_000, 20_000]), complete=closed)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info == RequestInfo()
    assert peak < 4 << 20, peak  # (it was about 2 GB)


def test_nesting_up_to_the_limit_is_read_and_brackets_in_strings_do_not_count() -> None:
    # msgspec (read_whole) reads up to Python's recursion limit: the scan reads that deep too.
    inner = b'"[{[{"' * 300  # brackets inside strings are no nesting
    for depth, read in ((MAX_DEPTH - 1, True), (MAX_DEPTH + 1, False)):
        value = b"[" * depth + inner.replace(b'""', b'","') + b"]" * depth
        body = b'{"x":' + value + b',"model":"m","stream":true}'
        info = scan(cut(body, [len(body) // 3, len(body) // 2]))
        assert (info.model == "m") is read, depth


def test_long_keys_at_every_level_cost_the_scan_little() -> None:
    # Under both limits (1,000 levels, keys of 1,000 characters, 1 MB) the paths of the parse
    # events took 500 MB and the loop 0.7 s, 6.8 s with array items at the bottom. Below the
    # top-level values' own values nothing is read: long strings there reach the parser as "".
    key = b"k" * 1000
    body = b'{"model":"m","stream":true,"x":' + b'{"%s":' % key * 1000 + b"[" + b"0," * 20_000 + b"0]"
    body += b"}" * 1000 + b"}"
    tracemalloc.start()
    try:
        info = scan(cut(body, [len(body) // 3, len(body) // 2]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (info.model, info.stream) == ("m", True)
    assert peak < 16 << 20, peak  # (it was about 500 MB)


def test_short_keys_far_down_add_a_byte_a_level_to_the_paths() -> None:
    # 16-byte keys at each of 1,000 levels made paths of 17 KB, copied for each key at the
    # bottom (3 MB of keys there: 4.7 s, five times a shallow body's cost). Past DEEP_LEVELS a
    # key reaches the parser as "": the open paths then hold under 1 MB, not 8.5.
    body = b'{"model":"m","stream":true,"x":' + b'{"k%015d":' * 1000 % tuple(range(1000)) + b"1"
    body += b"}" * 1000 + b"}"
    tracemalloc.start()
    try:
        info = scan(cut(body, [len(body) // 2]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (info.model, info.stream) == ("m", True)
    assert peak < 2 << 20, peak
