"""The request body scan hands the JSON parser every string as it is, or as "" when it is
longer than STRING_KEEP, whichever way the body is cut into reads (a whole small body takes
a shortcut; cut mid-string, a long string, an escape take the loop)."""

from __future__ import annotations

import re

import orjson
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
