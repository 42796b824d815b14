"""The request body scan hands the JSON parser every string as it is, or as "" when it is
longer than STRING_KEEP, whichever way the body is cut into reads (a whole small body takes
a shortcut; cut mid-string, a long string, an escape take the loop)."""

from __future__ import annotations

import re

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sse_audit_proxy.core.request_info import STRING_KEEP, BodyScanner, RequestInfo

_LONG = re.compile(rb'"[^"]{%d,}"' % (STRING_KEEP + 1))
_TEXT = st.sampled_from(["", "hi", "x" * STRING_KEEP, "y" * (STRING_KEEP + 1), "z" * 3000]) | st.text(
    alphabet=st.characters(blacklist_characters='"\\', blacklist_categories=("Cs", "Cc")), max_size=40
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.text("abc", min_size=1, max_size=3), _TEXT), max_size=6), st.data())
def test_strings_kept_or_emptied_across_reads(fields: list[tuple[str, str]], data: st.DataObject) -> None:
    body = orjson.dumps({"model": "m", **dict(fields), "stream": True})
    assert b"\\" not in body
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=4)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    scanner = BodyScanner()
    assert b"".join(scanner._shorten(p) for p in pieces) == _LONG.sub(b'""', body)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["m", "gpt-4o", 'a\\"b']), st.booleans(), st.integers(0, 40))
def test_small_whole_body_reads_as_orjson_does(model: str, stream: bool, n: int) -> None:
    body = orjson.dumps(
        {
            "model": model,
            "stream": stream,
            "messages": [{"role": "user", "content": "q"}] * n,
            "stream_options": {"include_usage": True},
            "temperature": 0.5,
        }
    )
    scanner = BodyScanner()
    scanner.feed(body)
    assert scanner.info() == RequestInfo.from_body(body)


_ESCAPED = st.tuples(
    st.lists(st.sampled_from(['\\"', "\\\\", "\\n", "\\u0041", "a", " "]), max_size=40), st.integers(1, 60)
).map(lambda drawn: "".join(drawn[0]) * drawn[1])  # up to 14 KB: long ones past STRING_KEEP
# A JSON string token as written: quotes, then escapes or plain bytes, then a quote.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


def _short(match: re.Match[bytes]) -> bytes:
    token = match.group()
    return b'""' if len(token) - 2 > STRING_KEEP else token


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.text("abc", min_size=1, max_size=3), _ESCAPED), max_size=4), st.data())
def test_strings_with_escapes_kept_or_emptied_across_reads(
    fields: list[tuple[str, str]], data: st.DataObject
) -> None:
    """Escaped quotes and backslashes, a read ending inside an escape: the string ends where JSON
    says, and a long one is "" whatever its escapes."""
    members = b"".join(b'"%s":"%s",' % (k.encode(), v.encode()) for k, v in fields)
    body = b'{"model":"m",' + members + b'"stream":true}'
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=4)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    scanner = BodyScanner()
    assert b"".join(scanner._shorten(p) for p in pieces) == _STRING.sub(_short, body)
    whole = BodyScanner()
    for piece in pieces:
        whole.feed(piece)
    assert whole.info().stream is True and whole.info().model == "m"


def test_a_body_of_escaped_quotes_costs_a_step_a_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """8 MB of `\\"` in one prompt: one parse event, so only the string's own scan bounds its
    cost. It takes a step in Python a read, not one per escaped quote (0.16 s a MB of the loop)."""
    body = b'{"model":"m","messages":[{"content":"' + b'\\"' * (4 << 20) + b'"}],"stream":true}'
    steps = 0
    keep = BodyScanner._keep

    def counted(self: BodyScanner, seg: bytes) -> None:
        nonlocal steps
        steps += 1
        keep(self, seg)

    monkeypatch.setattr(BodyScanner, "_keep", counted)
    scanner = BodyScanner()
    reads = range(0, len(body), 1 << 16)
    for i in reads:
        scanner.feed(body[i : i + (1 << 16)])
    assert scanner.info().stream is True
    assert steps <= 3 * len(reads), steps  # a read may begin with an escaped byte
