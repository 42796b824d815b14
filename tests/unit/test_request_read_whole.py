"""read_whole (a whole body's reading in one go, in C) gives exactly what the streaming scan
gives, or None; and it is not None for what clients send (else it saves nothing)."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sse_audit_proxy.core.request_info import STRING_KEEP, BodyScanner, RequestInfo, read_whole
from tests.unit.test_request_shape_scan import _JSON, _KEYS


def streamed(body: bytes, complete: bool = True) -> RequestInfo:
    scanner = BodyScanner()
    scanner.feed(body)
    return scanner.info(complete)


def whole(body: bytes) -> RequestInfo:
    errors: list[Exception] = []
    scanner = BodyScanner(errors.append)
    scanner.feed_whole([body[: len(body) // 2], body[len(body) // 2 :]])
    assert not errors
    return scanner.info()


def written(pairs: list[tuple[str, Any]], style: int) -> bytes:
    """The members as text (a key may repeat), compact or spaced as clients write them."""
    sep, colon = [(b",", b":"), (b", ", b": "), (b",\n  ", b" : ")][style]

    def dump(value: Any) -> bytes:  # json: integers past 64 bits too
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()

    return b"{" + sep.join(dump(k) + colon + dump(v) for k, v in pairs) + b"}"


_TEXT = st.text(max_size=6) | st.sampled_from(
    ["x" * STRING_KEEP, "y" * (STRING_KEEP - 1), "z" * (STRING_KEEP + 1), "é" * 600, '"\\\n']
)
_VALUES = _JSON | _TEXT | st.integers() | st.floats(allow_nan=False) | st.just({"include_usage": True})


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(_KEYS | _TEXT, _VALUES), max_size=12), st.integers(0, 2))
def test_read_whole_is_the_scan_or_nothing(pairs: list[tuple[str, Any]], style: int) -> None:
    body = written(pairs, style)
    got = read_whole(body)
    if got is not None:
        assert got == streamed(body) == streamed(body, complete=False)
    assert whole(body) == streamed(body)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.binary(max_size=8))
def test_read_whole_on_any_bytes_is_the_scan_or_nothing(data: bytes, odd: bytes) -> None:
    for body in (data, b'{"model":"m","stream":true,"x":"' + odd + b'"}', b'{"model":' + data + b"}"):
        got = read_whole(body)
        assert got is None or got == streamed(body)
        assert whole(body) == streamed(body)


_CLIENT_BODIES = [
    # the openai Python SDK (httpx: compact), the npm SDK (JSON.stringify: compact), curl users
    # and Python's json.dumps (spaced), with what real requests carry
    {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi " * 2000}], "stream": True},
    {
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "¿qué? 你好 🙂"}],
        "model": "claude-3-5-sonnet",
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.7,
        "max_tokens": 1024,
        "top_p": 1,
        "n": 1,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "seed": 42,
        "user": "u-1",
        "metadata": None,
    },
    {"model": "text-davinci", "prompt": "p" * 5000, "stream": True, "logprobs": 0, "echo": False},
    {
        "model": "o3",
        "input": [{"role": "user", "content": "x"}],
        "stream": True,
        "reasoning": {"effort": "low"},
    },
]


@pytest.mark.parametrize("doc", _CLIENT_BODIES)
@pytest.mark.parametrize(
    "dump", [orjson.dumps, lambda d: json.dumps(d).encode(), lambda d: json.dumps(d, indent=2).encode()]
)
def test_what_clients_send_is_read_whole(doc: dict[str, Any], dump: Any) -> None:
    body = dump(doc)
    got = read_whole(body)
    assert got is not None
    assert got == streamed(body)
    assert got.model == doc["model"]


@pytest.mark.parametrize(
    "body",
    [
        b'{"model":"a","model":"b"}',  # a key twice: msgspec keeps the last, the shape keeps both
        b'{"m\\u006fdel":"a"}',  # an escape in a key
        b'{"stream_options":{"include_usage":true,"include_usage":false}}',
        b'{"model":"m","x":"\\ud800"}',  # msgspec refuses a lone surrogate, yajl takes it
        b'{"model":"m","stream_options.include_usage":true}',
        b'{"model":"m","n":1e3}',
        b'{"model":"m","n":12345678901234567890}',
        b'{"model":"m","":{"stream":1}}',
        b'{"model":"m","x":"\xed\xa0\x80"}',
        b'{"model":"m"',
        b'{"model":"m"}x',
        b"[1]",
        b"",
    ],
)
def test_what_read_whole_leaves_to_the_scan(body: bytes) -> None:
    assert read_whole(body) is None
    assert whole(body) == streamed(body)


def test_a_defect_of_the_scan_is_reported_and_the_reading_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    from sse_audit_proxy.core import request_info

    def boom(*_: object) -> None:
        raise KeyError("defect")

    monkeypatch.setattr(request_info, "_info", boom)
    errors: list[Exception] = []
    scanner = BodyScanner(errors.append)
    scanner.feed_whole([b'{"model":"m"}'])
    assert scanner.info() == RequestInfo()
    assert [type(e) for e in errors] == [KeyError]
    errors.clear()
    scanner = BodyScanner(errors.append)
    scanner.feed(b'{"model":"m"}')
    assert scanner.info() == RequestInfo()
    assert [type(e) for e in errors] == [KeyError]


@pytest.mark.parametrize(("fmt", "asked"), [("sse", True), ("audio", False), (None, False), (True, False)])
def test_speech_asks_for_a_stream_with_stream_format_sse(fmt: object, asked: bool) -> None:
    """OpenAI's speech asks for an event stream with `stream_format: "sse"`, not `stream`: an
    audio answer to it is `not_streamed`, as for any stream request."""
    doc: dict[str, object] = {"model": "gpt-4o-mini-tts", "input": "hi", "voice": "alloy"}
    if fmt is not None:
        doc["stream_format"] = fmt
    body = orjson.dumps(doc)
    readings = [streamed(body), whole(body), RequestInfo.from_body(body), read_whole(body)]
    assert [r is not None and r.stream for r in readings] == [asked] * 4
    assert {r.model for r in readings if r is not None} == {"gpt-4o-mini-tts"}


def test_a_clients_own_keys_are_written_by_their_length_in_the_shape() -> None:
    """Any key of word characters was kept as the client wrote it, and a client's key can be
    text: a name, a record number, a credential (outside review). Both readings of a body (the
    whole of it, and the scan of a body that streams past) give the same shape."""
    doc = {
        "model": "m",
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.5,
        "sk-proj-SHAPEKEY0123456789": 1,
        "patient-john-doe": [1, 2],
        "patient-jane-roe": 3,
        "stream_options": {"include_usage": True, "note-secret": 1},
    }
    body = orjson.dumps(doc)
    scanner = BodyScanner()
    for i in range(0, len(body), 7):
        scanner.feed(body[i : i + 7])
    for info in (RequestInfo.from_body(body), read_whole(body), scanner.info(complete=True)):
        assert info is not None
        shape = orjson.loads(info.shape)
        assert shape == {
            "model": None,
            "stream": True,
            "messages": 1,
            "temperature": 0.5,
            "<26>": 1,
            "<16>": 2,
            "<16>#2": 3,
            "stream_options.include_usage": True,
            "stream_options.<11>": 1,
        }, info.shape


_GO_SPELLINGS = [
    b'{"model":"a","stream":true,"stream_options":{"include_usage":true},"Stream_Options":null}',
    b'{"model":"tenant-a-ft","MODEL":"llama3","stream":true}',
    b'{"Model":"m","Stream":true}',
    b'{"model":"m","stream":true,"stream_options":{"Include_Usage":false,"include_usage":true}}',
    '{"model":"m","\u017ftream":true}'.encode(),  # long s
    b'{"model":"m","STREAM_FORMAT":"sse"}',
]


@pytest.mark.parametrize("body", _GO_SPELLINGS)
def test_a_key_spelled_in_another_case_makes_the_reading_unknown(body: bytes) -> None:
    """Go's encoding/json (Ollama, gin gateways) reads `Stream` and `\\u017ftream` as `stream` and the
    last of `model`/`MODEL`; Python reads neither. Which the upstream read is not the proxy's
    to guess: model unknown, no usage or stream expected, whichever reader, however cut."""
    unknown = RequestInfo()
    assert RequestInfo.from_body(body) == unknown
    assert whole(body) == unknown
    assert streamed(body) == unknown
    scanner = BodyScanner()
    for i in range(0, len(body), 3):
        scanner.feed(body[i : i + 3])
    assert scanner.info() == unknown


@pytest.mark.parametrize(
    "body",
    [
        '{"model":"m","\ufb06ream":true,"stream":true}'.encode(),  # a ligature Go does not fold
        b'{"model":"m","stream":true,"Include_Usage":true}',  # read only in stream_options
        b'{"model":"m","stream":true,"stream_options":{"Stream":1,"include_usage":true}}',
    ],
)
def test_keys_go_would_not_read_as_the_audits_are_read_as_before(body: bytes) -> None:
    read = RequestInfo.from_body(body)
    assert (read.model, read.stream) == ("m", True)
    assert whole(body) == streamed(body) == read


def test_other_keys_in_other_cases_are_read_as_before() -> None:
    body = b'{"Messages":[],"model":"m","stream":true,"Temperature":1,'
    body += b'"stream_options":{"Extra":1,"include_usage":true}}'
    read = RequestInfo.from_body(body)
    assert (read.model, read.stream, read.include_usage) == ("m", True, True)
    assert whole(body) == streamed(body) == read


@pytest.mark.parametrize("cut", [1, 2, 3, 5, 100])
def test_a_body_that_begins_with_a_byte_order_mark_is_read(cut: int) -> None:
    """Python's json and body-parser read it (PowerShell writes UTF-8 files with one)."""
    body = b'\xef\xbb\xbf{"model":"m","stream":true,"stream_options":{"include_usage":true}}'
    read = RequestInfo.from_body(body)
    assert (read.model, read.stream, read.include_usage) == ("m", True, True)
    assert whole(body) == read
    scanner = BodyScanner()
    scanner.feed(body[:cut])
    scanner.feed(body[cut:])
    # a mark cut across the first reads is not looked for: the body is then unknown
    assert scanner.info() == (read if cut >= 3 else RequestInfo())
