"""Forms (`multipart/form-data`: transcriptions, translations, image edits) name their model and
ask for a stream in fields; the scan reads them as the body streams past, cut anywhere."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sse_audit_proxy.core.form_scan import MAX_PARTS, VALUE_KEEP, FormScanner, form_boundary
from sse_audit_proxy.core.request_info import RequestInfo

AUDIO = bytes(range(256)) * 400  # 100 KiB of "audio", every byte value, CRLFs and dashes among them


Files = dict[str, tuple[str, bytes, str]]


def encoded(data: dict[str, str], files: Files | None = None) -> tuple[str, bytes]:
    """A form exactly as httpx (the openai SDK's HTTP client) sends it: Content-Type and body
    (with no file, httpx sends the fields urlencoded: a file is always there)."""
    # The oldest-dependencies job has no interop packages: only these tests need httpx.
    httpx = pytest.importorskip("httpx")
    files = files or {"file": ("a.wav", b"RIFF", "audio/wav")}
    request = httpx.Request("POST", "http://x/v1/audio/transcriptions", data=data, files=files)
    return request.headers["content-type"], request.read()


def scan(ctype: str, pieces: list[bytes]) -> RequestInfo:
    boundary = form_boundary(ctype)
    assert boundary is not None
    scanner = FormScanner(boundary)
    for piece in pieces:
        scanner.feed(piece)
    return scanner.info()


def test_the_sdks_transcription_form_asks_for_a_stream() -> None:
    ctype, body = encoded(
        {"model": "gpt-4o-transcribe", "stream": "true", "response_format": "json"},
        {"file": ("speech.wav", AUDIO, "audio/wav")},
    )
    info = scan(ctype, [body])
    assert (info.model, info.stream) == ("gpt-4o-transcribe", True)
    assert orjson.loads(info.shape) == {"model": None, "stream": True}


def test_without_the_field_or_with_false_no_stream() -> None:
    for data in ({"model": "whisper-1"}, {"model": "whisper-1", "stream": "false"}):
        info = scan(*_split(encoded(data, {"file": ("a.wav", AUDIO, "audio/wav")})))
        assert (info.model, info.stream) == ("whisper-1", False)


def _split(pair: tuple[str, bytes]) -> tuple[str, list[bytes]]:
    return pair[0], [pair[1]]


@pytest.mark.parametrize("value", ["true", "True", "1", "yes", "on"])
def test_what_a_pydantic_server_takes_for_true(value: str) -> None:
    ctype, body = encoded({"model": "m", "stream": value})
    assert scan(ctype, [body]).stream


def test_the_file_first_and_the_fields_after_it() -> None:
    """The npm SDK's FormData keeps the caller's key order: the file may come first, and the
    stream field after megabytes of audio."""
    ctype, body = encoded({}, {"file": ("a.wav", AUDIO * 10, "audio/wav")})
    tail = b'\r\nContent-Disposition: form-data; name="stream"\r\n\r\ntrue\r\n--'
    boundary = form_boundary(ctype)
    assert boundary is not None
    body = body[: -len(boundary) - 6] + b"--" + boundary + tail + boundary + b"--\r\n"
    assert scan(ctype, [body]).stream


def test_every_split_point_reads_the_same() -> None:
    fields = {"model": "whisper-1", "stream": "true"}
    ctype, body = encoded(fields, {"file": ("a.wav", AUDIO[:3000], "audio/wav")})
    for cut in range(len(body) + 1):
        info = scan(ctype, [body[:cut], body[cut:]])
        assert (info.model, info.stream) == ("whisper-1", True), cut


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=400))
def test_any_piece_sizes_read_the_same(sizes: list[int]) -> None:
    ctype, body = encoded({"stream": "true", "model": "m-1"}, {"file": ("a.wav", AUDIO[:2000], "audio/wav")})
    pieces, pos = [], 0
    for size in sizes:
        pieces.append(body[pos : pos + size])
        pos += size
    pieces.append(body[pos:])
    info = scan(ctype, pieces)
    assert (info.model, info.stream) == ("m-1", True)


def test_a_file_named_stream_is_not_the_field() -> None:
    ctype, body = encoded({"model": "m"}, {"stream": ("true", b"true", "text/plain")})
    assert not scan(ctype, [body]).stream


def test_a_long_value_is_not_kept_and_not_read_as_true() -> None:
    ctype, body = encoded({"model": "m" * (VALUE_KEEP + 1), "stream": "true"})
    info = scan(ctype, [body])
    assert info.stream and info.model == "unknown"


def test_the_last_of_a_repeated_field_wins() -> None:
    ctype, _ = encoded({"model": "m"})
    boundary = form_boundary(ctype)
    assert boundary is not None
    parts = [
        b'--%s\r\nContent-Disposition: form-data; name="stream"\r\n\r\n%s\r\n' % (boundary, value)
        for value in (b"true", b"false")
    ]
    assert not scan(ctype, [b"".join(parts) + b"--%s--\r\n" % boundary]).stream


def test_too_many_parts_stop_the_scan_and_keep_what_it_read() -> None:
    ctype, _ = encoded({"model": "m"})
    boundary = form_boundary(ctype)
    assert boundary is not None
    part = b'--%s\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n' % boundary
    first = b'--%s\r\nContent-Disposition: form-data; name="stream"\r\n\r\ntrue\r\n' % boundary
    late = b'--%s\r\nContent-Disposition: form-data; name="model"\r\n\r\nlate\r\n' % boundary
    info = scan(ctype, [first + part * MAX_PARTS + late + b"--%s--\r\n" % boundary])
    assert info.stream and info.model == "unknown"


def test_a_head_that_never_ends_is_given_up() -> None:
    ctype, _ = encoded({"model": "m"})
    boundary = form_boundary(ctype)
    assert boundary is not None
    scanner = FormScanner(boundary)
    scanner.feed(b"--%s\r\nX: " % boundary)
    for _ in range(100):
        scanner.feed(b"a" * 1000)
    assert len(scanner._buf) == 0  # bounded: nothing held once given up
    assert scanner.info() == RequestInfo()


def test_a_part_with_no_headers_and_an_empty_value() -> None:
    boundary = b"b0und"
    body = (
        b"--b0und\r\n\r\nanything\r\n"
        b"--b0und\r\nContent-Disposition: form-data; name=stream\r\n\r\n\r\n--b0und--"
    )
    info = FormScanner(boundary)
    info.feed(body)
    assert not info.info().stream
    assert orjson.loads(info.info().shape) == {"stream": False}


@pytest.mark.parametrize(
    ("ctype", "boundary"),
    [
        ("multipart/form-data; boundary=abc", b"abc"),
        ('Multipart/Form-Data; charset=utf-8; boundary="a b:c"', b"a b:c"),
        ("multipart/form-data", None),
        ("application/json", None),
        (None, None),
        ("multipart/mixed; boundary=abc", None),
    ],
)
def test_the_boundary_from_the_content_type(ctype: str | None, boundary: bytes | None) -> None:
    assert form_boundary(ctype) == boundary


B = b"XyZ123"
CT = "multipart/form-data; boundary=XyZ123"


def hand_made(parts: list[tuple[bytes, bytes]], close: bool = True) -> bytes:
    """A form of (Content-Disposition parameters, value) parts, by hand."""
    out = b"".join(b"--%s\r\nContent-Disposition: form-data; %s\r\n\r\n%s\r\n" % (B, p, v) for p, v in parts)
    return out + (b"--%s--\r\n" % B if close else b"")


def test_a_files_content_that_looks_like_a_delimiter_adds_no_field() -> None:
    """A boundary inside a file followed by anything but CRLF (or `--`) is the file's content,
    for a server's parser (python-multipart): a fake `stream` part in it was read as one."""
    fake = b'\r\n--XyZ123junk\r\nContent-Disposition: form-data; name="stream"\r\n\r\ntrue'
    body = hand_made([(b'name="model"', b"whisper-1"), (b'name="file"; filename="a.wav"', b"RIFF" + fake)])
    assert (scan(CT, [body]).model, scan(CT, [body]).stream) == ("whisper-1", False)
    # With transport padding (spaces, tabs) before its CRLF, a delimiter is one.
    padded = body.replace(
        b'--XyZ123\r\nContent-Disposition: form-data; name="model"',
        b'--XyZ123 \t\r\nContent-Disposition: form-data; name="model"',
    )
    assert scan(CT, [padded]).model == "whisper-1"


@pytest.mark.parametrize(
    ("params", "stream"),
    [
        (b'x=";name=stream;"; name="file"', False),  # a `name=` inside another's quotes
        (b'name="stream"; x="; filename=y"', True),  # a `filename=` inside quotes: no file
        (b"name=\"stream\"; filename*=UTF-8''s", True),  # python-multipart: still a field
        (b'name="stream"; filename="s.txt"', False),  # a file
        (b'NAME="stream"', True),
        (b'name="str\\eam"', False),  # python-multipart unescapes only \\ and \"
        (b'name="\\"stream\\""', False),
    ],
)
def test_parameters_are_read_as_a_servers_parser_reads_them(params: bytes, stream: bool) -> None:
    body = hand_made([(b'name="model"', b"m"), (params, b"true")])
    assert scan(CT, [body]).stream is stream


def test_the_last_content_disposition_of_a_part_counts() -> None:
    body = hand_made([(b'name="x"\r\nContent-Disposition: form-data; name="stream"', b"true")])
    assert scan(CT, [body]).stream


def test_a_boundary_inside_another_content_type_parameters_quotes_is_not_it() -> None:
    assert form_boundary('multipart/form-data; x="; boundary=evil"; boundary=XyZ123') == B


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=400),
            st.sampled_from(
                [b"\r\n", b"--", b"--XyZ123", b"\r\n--XyZ123", b"\r\n\r\n", b" ", b";", b'"', b"\r"]
            ),
        ),
        max_size=4,
    ),
    st.lists(st.integers(min_value=0, max_value=450), max_size=8),
)
def test_the_reading_never_depends_on_where_the_reads_were_cut(
    edits: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    """Every limit applies to a bounded window of the bytes whether a search finds what it
    looks for or not: a part with no header lines right after a read boundary, or a head
    that was cut, once lost the fields after it."""
    body = bytearray(
        b"--XyZ123\r\n\r\nno head\r\n"
        + hand_made(
            [
                (b'name="file"; filename="a"', b"\x00\r\n-" * 20),
                (b'name="model"', b"m1"),
                (b'name="stream"', b"true"),
            ]
        )
    )
    for at, token in edits:
        body[at:at] = token
    data = bytes(body)
    whole = scan(CT, [data])
    pieces, last = [], 0
    for cut in sorted(c for c in cuts if c <= len(data)):
        pieces.append(data[last:cut])
        last = cut
    pieces.append(data[last:])
    assert scan(CT, pieces) == whole
    assert scan(CT, [data[i : i + 1] for i in range(len(data))]) == whole


def test_a_body_of_false_delimiters_is_read_no_further() -> None:
    """Each boundary followed by something else is a step in Python: a body made of them (10 MB,
    a million of them) took 0.35 s of the event loop; the scan stops after a thousand."""
    from sse_audit_proxy.core.form_scan import MAX_FALSE_DELIMITERS

    first = hand_made([(b'name="stream"', b"true")], close=False)
    junk = b"\r\n--XyZ123j" * (MAX_FALSE_DELIMITERS + 1)
    scanner = FormScanner(B)
    scanner.feed(first + b'--XyZ123\r\nContent-Disposition: form-data; name="f"; filename="a"\r\n\r\n' + junk)
    scanner.feed(b"\r\n" + hand_made([(b'name="model"', b"late")]))
    info = scanner.info()
    assert info.stream and info.model == "unknown"  # what came before stays; nothing after
    assert scanner._buf == b""  # nothing held
