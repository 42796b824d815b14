"""W3C `traceparent`: which values join a log line to the client's trace (the spec's rules)."""

from __future__ import annotations

import pytest

from sse_audit_proxy.core.request_info import client_retry, traceparent_ids

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


@pytest.mark.parametrize(
    "value",
    [
        f"00-{TRACE}-{SPAN}-01",
        f"00-{TRACE}-{SPAN}-00",  # not sampled: still the client's trace
        f" 00-{TRACE}-{SPAN}-01\t",  # optional whitespace around a header value
        f"cc-{TRACE}-{SPAN}-01-what-a-future-version-adds",  # a later version may add fields
    ],
)
def test_a_valid_traceparent_gives_its_trace_and_span(value: str) -> None:
    assert traceparent_ids(value) == (TRACE, SPAN)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        f"00-{TRACE.upper()}-{SPAN}-01",  # hex must be lowercase
        f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace ID
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero span ID
        f"ff-{TRACE}-{SPAN}-01",  # version ff is invalid
        f"00-{TRACE}-{SPAN}-01-extra",  # version 00 has exactly four fields
        f"00-{TRACE[:-1]}-{SPAN}-01",
        f"00-{TRACE}-{SPAN}-1",
        f"00-{TRACE}-{SPAN}-01, 00-{TRACE}-{SPAN}-01",  # two headers joined: invalid
        f"00-{TRACE}-{SPAN}-01\n",  # no control characters
        "00-" + "a" * 600,
    ],
)
def test_an_invalid_traceparent_gives_nothing(value: str | None) -> None:
    assert traceparent_ids(value) is None


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("0", 0),
        ("2", 2),
        (" 1 ", 1),
        ("999", 999),
        (None, None),
        ("", None),
        ("-1", None),
        ("1.5", None),
        ("1000", None),
        ("٣", None),
        ("x", None),
    ],
)
def test_client_retry_is_a_small_whole_number_or_nothing(value: str | None, want: int | None) -> None:
    assert client_retry(value) == want
